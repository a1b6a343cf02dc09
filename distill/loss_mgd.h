// distill/loss_mgd.h — MGD: Masked Generative Distillation (Yang et al., ECCV'22), kd_losses.md §2,
// detection variant.
//
// Per level: S ← align(S) iff C_s ≠ C_t; keep K = 1[R ≤ 1−λ] (zero where R > 1−λ) from an explicit
// random tensor R [N,1,H,W] ~ U[0,1) (the caller draws it: nothing inside the loss is random);
//   G = generation(S ⊙ K);  dis_loss = (1/N) Σ (G − T)²;  loss = α·dis_loss; summed over levels.
// Parameters per level: level<i>.align.* (iff C_s≠C_t), level<i>.generation.{0,2}.{weight,bias}
// (Conv3×3 C→C, pad 1, ReLU between). PyTorch default init.
// Terms: level<i>.dis_loss (unweighted), level<i>.loss, dis_loss, (loss). Mids: s_aligned, keep, gen_out.
#pragma once
#include <utility>
#include <vector>

#include "distill/kd_common.h"
#include "engine/random.h"

namespace kdet::kd {

struct MGDConfig {
  double alpha_mgd = 2e-5;
  double lambda_mgd = 0.65;
};

class MGDLoss : public Module {
 public:
  MGDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const MGDConfig& cfg);
  const char* type_name() const override { return "MGDLoss"; }
  // rand[i]: [N, 1, H_i, W_i] uniform [0, 1) of the features' dtype.
  KdResult forward(const std::vector<Var>& S, const std::vector<Tensor>& T, const std::vector<Tensor>& rand,
                   MidSink* mid = nullptr);
  // Draws the rand tensors for a training step (one [N,1,H,W] per level of T).
  static std::vector<Tensor> draw_rand(const std::vector<Tensor>& T, Generator& g);
  const MGDConfig& config() const { return cfg_; }

 private:
  struct Level {
    Conv2d* align = nullptr;
    GeneratorBlock* gen = nullptr;
  };
  MGDConfig cfg_;
  std::vector<Level> levels_;
};

}  // namespace kdet::kd
