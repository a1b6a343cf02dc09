// distill/loss_dmkd.h — DMKD: Dual Masked Knowledge Distillation (arXiv 2309.02719), kd_losses.md §4.
// INFERRED reconstruction (no public code).
//
// Per level: S ← align(S) iff C_s ≠ C_t; A^S = A^S(T;τ), A^C = A^C(T;τ) (constants);
//   K_s [N,1,H,W]: zero the ⌊ρ_s·H·W⌋ highest-A^S positions; K_c [N,C,1,1]: zero the ⌊ρ_c·C⌋
//   highest-A^C channels (ties: lower index first);
//   R_s = gen_s(S ⊙ K_s), R_c = gen_c(S ⊙ K_c); (w_s, w_c) = softmax(fuse_logits) (learnable, init 0);
//   F = w_s·R_s + w_c·R_c;  dis_loss = (1/N) Σ (F − T)²;  loss = α·dis_loss.
// Parameters per level: align.* (iff C_s≠C_t), gen_s.{0,2}.*, gen_c.{0,2}.*, fuse_logits [2].
// Mids: s_aligned, att_spatial_t, att_channel_t, keep_spatial, keep_channel, rec_spatial, rec_channel,
//   fuse_weights [2], fused.
#pragma once
#include <utility>
#include <vector>

#include "distill/kd_common.h"

namespace kdet::kd {

struct DMKDConfig {
  double alpha = 2e-5;
  double temp = 0.5;
  double spatial_ratio = 0.65;
  double channel_ratio = 0.65;
};

class DMKDLoss : public Module {
 public:
  DMKDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const DMKDConfig& cfg);
  const char* type_name() const override { return "DMKDLoss"; }
  KdResult forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid = nullptr);
  // Children's PyTorch default init; fuse_logits = 0.
  void init_weights(Generator& g) override;
  const DMKDConfig& config() const { return cfg_; }

 private:
  struct Level {
    Conv2d* align = nullptr;
    GeneratorBlock* gen_s = nullptr;
    GeneratorBlock* gen_c = nullptr;
    Var* fuse = nullptr;
  };
  DMKDConfig cfg_;
  std::vector<Level> levels_;
};

}  // namespace kdet::kd
