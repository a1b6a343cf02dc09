// distill/loss_fgd.h — FGD: Focal and Global Knowledge Distillation (Yang et al., CVPR'22),
// specs/kd_losses.md §1, exactly as the official code computes it.
//
// Per level (S aligned by a 1×1 conv iff C_s ≠ C_t; T constant):
//   A^S_t, A^C_t = attention of T (τ = temp); A^S_s, A^C_s = attention of align(S)
//   M_fg, M_bg   = fgd_masks(boxes, ref_hw, H, W)            (constants)
//   fg_loss   = (1/N) Σ M_fg·A^S_t·A^C_t·(S−T)²,  bg_loss likewise with M_bg
//   mask_loss = (1/N) Σ|A^C_s − A^C_t| + (1/N) Σ|A^S_s − A^S_t|
//   rela_loss = (1/N) Σ (GC_s(S) − GC_t(T))²     (two trainable GcBlocks; GC_t is trained too)
//   loss      = α·fg + β·bg + γ·mask + λ·rela; summed over levels (no averaging).
// Parameters per level (PyTorch names): level<i>.align.{weight,bias} (iff C_s≠C_t),
//   level<i>.gc_{s,t}.conv_mask.{weight,bias}, .channel_add.0.{weight,bias} (C→C/2),
//   .channel_add.1.{weight,bias} (LayerNorm [C/2,1,1]), .channel_add.3.{weight,bias} (C/2→C).
// Terms: level<i>.{fg,bg,mask,rela}_loss (unweighted), level<i>.loss, and the sums over levels.
// Mids: level<i>.{s_aligned, mask_fg, mask_bg, att_spatial_t, att_channel_t, att_spatial_s,
//   att_channel_s, gc_ctx_s, gc_ctx_t, gc_out_s, gc_out_t}.
#pragma once
#include <utility>
#include <vector>

#include "distill/kd_common.h"

namespace kdet::kd {

// Defaults = RetinaNet config (§1d); the constructor default gamma 0.001 of the official code matches
// no config and is not used.
struct FGDConfig {
  double temp = 0.5;
  double alpha_fgd = 1e-3;
  double beta_fgd = 5e-4;
  double gamma_fgd = 5e-4;
  double lambda_fgd = 5e-6;
  double ln_eps = 1e-5;
};

// Foreground/background masks (§1b.2–3) on an H×W grid, f64 [N, H, W]. boxes[i] is [n_i, 4] (x1, y1,
// x2, y2) in the pixels of the resized image (n_i may be 0); ref_hw [N, 2] holds (h_ref, w_ref) used to
// map pixels to the grid: x' = (x / w_ref)·W, in double. floor/ceil, inclusive ends, area from the
// unclamped extents (+1 each), ends clamped to the grid, max over boxes; negative starts are clamped to 0.
std::pair<Tensor, Tensor> fgd_masks(const std::vector<Tensor>& boxes, const Tensor& ref_hw, int64_t H, int64_t W);

// The global-context block of FGD (children conv_mask, channel_add).
class GcBlock : public Module {
 public:
  GcBlock(int64_t channels, double ln_eps);
  const char* type_name() const override { return "GcBlock"; }
  // out = x + Φ(ctx); *ctx_out (if given) = ctx [N, C].
  Var forward(const Var& x, Var* ctx_out = nullptr);
  // Official init: conv_mask kaiming-normal (fan_in, ReLU gain), bias 0; channel_add.0 PyTorch
  // default; LayerNorm 1/0; channel_add.3 zeros (so the block starts as the identity).
  void init_weights(Generator& g) override;

 private:
  Conv2d* conv_mask_;
  Sequential* channel_add_;
};

class FGDLoss : public Module {
 public:
  FGDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const FGDConfig& cfg);
  const char* type_name() const override { return "FGDLoss"; }
  // boxes: one [n_i, 4] tensor per image; ref_hw [N, 2]. Box arithmetic is done in double.
  KdResult forward(const std::vector<Var>& S, const std::vector<Tensor>& T, const std::vector<Tensor>& boxes,
                   const Tensor& ref_hw, MidSink* mid = nullptr);
  const FGDConfig& config() const { return cfg_; }

 private:
  struct Level {
    Conv2d* align = nullptr;
    GcBlock* gc_s = nullptr;
    GcBlock* gc_t = nullptr;
  };
  FGDConfig cfg_;
  std::vector<Level> levels_;
};

}  // namespace kdet::kd
