// distill/loss_fbkd.h — attention-guided + non-local KD (Zhang & Ma, ICLR'21; "FKD"/"FBKD"),
// kd_losses.md §6, official two-stage code path (= mmrazor FBKDLoss). Requires C_s = C_t = C.
//
// Per level, masks are constants (no gradient, even the student part):
//   M^S = (A^S(T;τ_s) + r·A^S(S;τ_s))/(1+r)  [N,1,H,W],   M^C = (A^C(T;τ_c) + r·A^C(S;τ_c))/(1+r)  [N,C,1,1]
//   l_feat     = sqrt( Σ (T − A(S))² · M^S [· M^C if use_channel_mask] )   (one root over the batch)
//   l_channel  = ‖ GAP(T) − Lin(GAP(S)) ‖_F          GAP = signed mean over H, W
//   l_spatial  = ‖ mean_c T − Conv3×3_{1→1,pad 1}(mean_c S) ‖_F
//   l_nonlocal = ‖ A_nl(NL_s(S)) − NL_t(T) ‖_F       (NL_t is trained too)
//   loss = w_feat·Σ_i l_feat + w_channel·Σ_i l_channel + w_spatial·Σ_i l_spatial + w_nonlocal·Σ_i l_nonlocal
// Non-local block (dot product): θ = theta(x) [N,HW,I]; φ = MaxPool_k(phi(x)), g = MaxPool_k(g(x))
//   (kernel = stride = k, floor mode; k = 1: no pool; M = ⌊H/k⌋·⌊W/k⌋ positions); f = θφ/M; y = f·g;
//   z = x + BN(W(y)) with BN in training mode (batch statistics, biased variance, eps bn_eps).
// Every root/norm uses safe_sqrt: gradient 0 at a zero norm (PyTorch gives NaN for the feature term's
// sum()**0.5 at 0 — a documented deviation; torch.dist gives 0 there, as here).
// Parameters per level (PyTorch names): adaptation.*, channel_adapt.* (Linear C→C), spatial_adapt.*
//   (Conv3×3 1→1), nl_adapt.*, student_nl.{theta,phi,g,W}.*, student_nl.bn.{weight,bias,running_mean,
//   running_var,num_batches_tracked}, teacher_nl.* likewise.
// Terms: kd_feat_loss, kd_channel_loss, kd_spatial_loss, kd_nonlocal_loss (weighted, summed over levels).
// Mids per level: mask_spatial, mask_channel, feat_adapt, gap_adapt, sp_adapt, nl_s, nl_s_adapt, nl_t,
//   l_feat, l_channel, l_spatial, l_nonlocal.
//
// AID (kd_losses.md §7, INFERRED weighting) is the per-image form: forward_weighted takes w [N] and
// computes each term per image (own root per image; BN still uses batch statistics):
//   loss = Σ_levels Σ_n w_n·(w_feat·l_feat[n] + w_channel·l_channel[n] + ...); l_* mids are then [N].
#pragma once
#include <vector>

#include "distill/kd_common.h"
#include "layers/norm.h"

namespace kdet::kd {

struct NonLocalSpec {
  int64_t inter = 64;  // I
  int64_t pool = 1;    // k (1 = no pooling)
};

// The original per-level settings: level 0 (64, 8), level 1 (64, 4), levels >= 2 (128, 2).
std::vector<NonLocalSpec> fbkd_default_nonlocal(size_t levels);

struct FBKDConfig {
  double temp_s = 0.5, temp_c = 0.5;
  double s_ratio = 1.0;
  double w_feat = 7e-5, w_channel = 4e-3, w_spatial = 4e-3, w_nonlocal = 7e-5;
  bool use_channel_mask = false;
  double bn_eps = 1e-5;
  std::vector<NonLocalSpec> nonlocal;  // one per level (sets the number of levels)
};

// The attention core of the dot-product non-local block as one fused op "kd_nonlocal_attention":
//   [θ; φ'; g'] = W_cat·x + b_cat (the three 1×1 convs C→I as one GEMM with stacked weights [3I, C]),
//   φ = MaxPool_k(φ'), g = MaxPool_k(g') (kernel = stride = k, floor; first maximum on ties) [I, M],
//   y = (θᵀφ/M)·gᵀ, computed per image as A·θ with A = g·φᵀ/M [I, I] (the same sums reassociated:
//   O(I²·(HW + M)) instead of O(I·HW·M)). Returns y as [N, I, H, W] (the input of the W conv).
// Backward: dθ = Aᵀ·dy, dA = dy·θᵀ, dφ = dAᵀ·g/M, dg = dA·φ/M (routed to the argmax of each window),
// dW_cat = Σ_n dY·xᵀ, db_cat = Σ dY, dx = W_catᵀ·dY (one GEMM instead of three plus two adds).
// CUDA: the same definition from device ops (cuDNN 1×1 convs, max pooling, batched cuBLAS products), gradients
// by autograd (not one fused op there).
Var nonlocal_attention(const Var& x, const Var& w_theta, const Var& b_theta, const Var& w_phi, const Var& b_phi,
                       const Var& w_g, const Var& b_g, int64_t pool);

class NonLocalBlock : public Module {
 public:
  NonLocalBlock(int64_t channels, const NonLocalSpec& spec, double bn_eps);
  const char* type_name() const override { return "NonLocalBlock"; }
  Var forward(const Var& x);
  // PyTorch default init of the convs; BN weight = bias = 0 (so z = x at the start).
  void init_weights(Generator& g) override;

 private:
  NonLocalSpec spec_;
  Conv2d *theta_, *phi_, *g_, *W_;
  BatchNorm2d* bn_;
};

class FBKDLoss : public Module {
 public:
  FBKDLoss(int64_t channels, const FBKDConfig& cfg);
  const char* type_name() const override { return "FBKDLoss"; }
  KdResult forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid = nullptr);
  // Per-image terms weighted by w [N] (constants): the AID form.
  KdResult forward_weighted(const std::vector<Var>& S, const std::vector<Tensor>& T, const Tensor& w,
                            MidSink* mid = nullptr);
  const FBKDConfig& config() const { return cfg_; }

 private:
  KdResult run(const std::vector<Var>& S, const std::vector<Tensor>& T, const Tensor* w, MidSink* mid);
  struct Level {
    Conv2d* adaptation;
    Linear* channel_adapt;
    Conv2d* spatial_adapt;
    Conv2d* nl_adapt;
    NonLocalBlock* student_nl;
    NonLocalBlock* teacher_nl;
  };
  FBKDConfig cfg_;
  int64_t channels_;
  std::vector<Level> levels_;
};

}  // namespace kdet::kd
