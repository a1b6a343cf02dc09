// distill/loss_amd.h — AMD: Adaptive Masked Distillation (arXiv 2301.13538), kd_losses.md §3.
// INFERRED reconstruction (no public code): FGD attention + MGD generator + an SE channel gate.
//
// Per level: S ← align(S) iff C_s ≠ C_t; A = A^S(T; τ) (constant);
//   keep K [N,1,H,W]: TopK -> zero the ⌊ρ·H·W⌋ positions of highest A per image (ties: lower flat
//   index first); Mean -> zero where A > 1.
//   X = S ⊙ K;  gate = σ(fc2(ReLU(fc1(GAP(X)))))  (fc1: C→max(⌊C/r⌋,1), fc2 back to C);
//   G = generation(X ⊙ gate);  dis_loss = (1/N) Σ (G − T)²;  loss = α·dis_loss.
// Parameters per level: align.* (iff C_s≠C_t), se.fc1.*, se.fc2.*, generation.{0,2}.*.
// Terms as MGD. Mids: s_aligned, att_spatial_t, keep, se_gate [N,C], gen_out.
#pragma once
#include <utility>
#include <vector>

#include "distill/kd_common.h"

namespace kdet::kd {

enum class AMDMaskMode { TopK = 0, Mean = 1 };

struct AMDConfig {
  double alpha = 2e-5;
  double temp = 0.5;
  double mask_ratio = 0.65;
  int64_t se_reduction = 16;
  AMDMaskMode mask_mode = AMDMaskMode::TopK;
};

// The channel-adaptive gate: children fc1, fc2 (nn.Linear names).
class SEGate : public Module {
 public:
  SEGate(int64_t channels, int64_t reduction);
  const char* type_name() const override { return "SEGate"; }
  Var forward(const Var& pooled /*[N, C]*/);  // -> gate [N, C] in (0, 1)

 private:
  Linear* fc1_;
  Linear* fc2_;
};

class AMDLoss : public Module {
 public:
  AMDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const AMDConfig& cfg);
  const char* type_name() const override { return "AMDLoss"; }
  KdResult forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid = nullptr);
  const AMDConfig& config() const { return cfg_; }

 private:
  struct Level {
    Conv2d* align = nullptr;
    SEGate* se = nullptr;
    GeneratorBlock* gen = nullptr;
  };
  AMDConfig cfg_;
  std::vector<Level> levels_;
};

}  // namespace kdet::kd
