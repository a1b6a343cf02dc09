// distill/loss_fitnet.h — FitNet-style feature mimic (specs/kd_losses.md §8a).
//
//   L = Σ_levels w · reduce( (A_i(S_i) − T_i)² ),  A_i = Conv1×1(C_s → C_t, bias), always present.
//   reduce: SumOverBatch = Σ/N (mmrazor L2Loss(normalize=False)), Mean = Σ/(N·C·H·W), Sum = Σ.
// Parameters: level<i>.weight [C_t, C_s, 1, 1], level<i>.bias [C_t] (PyTorch default init).
// Terms: "level<i>.loss" (weighted); mids "level<i>.s_aligned".
#pragma once
#include <utility>
#include <vector>

#include "distill/kd_common.h"

namespace kdet::kd {

enum class FitNetReduction { SumOverBatch = 0, Mean = 1, Sum = 2 };

struct FitNetConfig {
  double loss_weight = 1.0;
  FitNetReduction reduction = FitNetReduction::SumOverBatch;
};

class FitNetLoss : public Module {
 public:
  // One adapter per level; channels[i] = {C_s, C_t}.
  FitNetLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const FitNetConfig& cfg);
  const char* type_name() const override { return "FitNetLoss"; }
  KdResult forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid = nullptr);
  const FitNetConfig& config() const { return cfg_; }

 private:
  FitNetConfig cfg_;
  std::vector<Conv2d*> adapters_;
};

}  // namespace kdet::kd
