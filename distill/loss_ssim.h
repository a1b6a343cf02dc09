// distill/loss_ssim.h — SSIM-KD: structural KD (de Rijk et al., NeurIPS'22), kd_losses.md §5.
//
// Per level: x = φ(f_i(S_i)), y = φ(T_i); f_i = 1×1 adapter (always present); φ = per-(image, channel)
// min-max over H×W: (v − min)/(max − min + ε). SSIM per element with a w×w Gaussian window (σ), applied
// depthwise with zero "same" padding ⌊w/2⌋ (so levels smaller than the window work):
//   μ = g∗x, σ² = g∗x² − μ², σ_xy = g∗(xy) − μ_xμ_y,
//   SSIM = ((2μ_xμ_y + C1)(2σ_xy + C2)) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)), C1 = (K1·L)², C2 = (K2·L)².
//   ssim_loss_i = mean over N·C·H·W of (1 − SSIM);  loss = λ·Σ_i ssim_loss_i.
// Parameters: level<i>.weight [C_t, C_s, 1, 1], level<i>.bias [C_t].
// Terms: level<i>.ssim_loss, ssim_loss. Mids: "window" [w, w]; level<i>.{s_aligned, s_norm, t_norm, ssim_map}.
#pragma once
#include <utility>
#include <vector>

#include "distill/kd_common.h"

namespace kdet::kd {

struct SSIMConfig {
  double loss_weight = 1.0;
  int64_t window_size = 11;
  double sigma = 1.5;
  double K1 = 0.01, K2 = 0.03, L = 1.0;
  double minmax_eps = 1e-12;
};

// g_j = exp(−(j − ⌊w/2⌋)²/(2σ²)) normalised to sum 1 (length w, odd), and the window outer(g, g) [w, w] f64.
std::vector<double> gaussian_kernel_1d(int64_t w, double sigma);
Tensor gaussian_window(int64_t w, double sigma);

// Depthwise filtering of x [N, C, H, W] with the separable window outer(g, g), zero "same" padding
// ⌊w/2⌋ (engine/ops/sep_filter2d.h; g must be symmetric).
Var gaussian_filter(const Var& x, const std::vector<double>& g);

class SSIMKDLoss : public Module {
 public:
  SSIMKDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const SSIMConfig& cfg);
  const char* type_name() const override { return "SSIMKDLoss"; }
  KdResult forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid = nullptr);
  const SSIMConfig& config() const { return cfg_; }

 private:
  SSIMConfig cfg_;
  std::vector<Conv2d*> adapters_;
};

// Per-(image, channel) min-max rescaling of x [N, C, H, W] (differentiable; torch amin/amax gradient
// rule, split evenly between tied extrema). One fused op "kd_minmax_normalize": with R = max − min + ε
// per plane, dx_j = g_j/R + [x_j = min]·Σ_i g_i·(−(1−x̂_i)/R)/#min + [x_j = max]·Σ_i g_i·(−x̂_i/R)/#max.
Var minmax_normalize(const Var& x, double eps);
// The SSIM map of x and y [N, C, H, W] with the window outer(g, g) (x differentiable, y a constant: a y
// that requires a gradient is an error). Fused op "kd_ssim_map": per plane the five filtered maps
// μ_x, μ_y, g∗x², g∗y², g∗xy and the formula in one pass; backward (kd_losses.md §5c) with the
// coefficient maps a, b, c saved by the forward: dx = g∗(G·a) + y⊙g∗(G·b) + x⊙g∗(G·c).
Var ssim_map(const Var& x, const Var& y, const std::vector<double>& g, double C1, double C2);
// mean over all elements of (1 − SSIM(x, y)) as one fused op "kd_ssim_loss" (same kernels, the upstream
// gradient is the constant −1/numel); *map receives the SSIM map when non-null.
Var ssim_loss(const Var& x, const Tensor& y, const std::vector<double>& g, double C1, double C2,
              Tensor* map = nullptr);
// CUDA (distill/loss_ssim_cuda.cu): minmax_normalize, ssim_map and ssim_loss with the same expressions; the
// Gaussian filtering runs as one depthwise cuDNN conv of [x, y, x², y², xy].

}  // namespace kdet::kd
