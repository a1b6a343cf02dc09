// distill/loss_logit_kd.h — classification-logit KD (specs/kd_losses.md §8b).
//
// Softmax KL (mmrazor KLDivergence):  e = p_t·(log p_t − log p_s), p = softmax(logits / T) over dim 1,
//   BatchMean: T²·Σe/R,  ClassMean (mmdet knowledge_distillation_kl_div_loss): T²·Σe/(R·K),  Sum: T²·Σe.
//   ∂L/∂s = (T/R)(p_s − p_t) for BatchMean.
// Sigmoid BCE (dense sigmoid heads): BCE_rk = softplus(x) − p·x, x = s/T, p = σ(t/T);
//   L = T²·Σ_r w_r Σ_k BCE_rk / avg_factor (w_r = 0 excludes a row). ∂L/∂s = (T·w/avg)(σ(s/T) − σ(t/T)).
// Logits are [R, K], classes along dim 1; teacher logits are constants.
// Mids: KL "p_t", "p_s", "row_kl" (T²·Σ_k e, [R]); BCE "p_t", "p_s", "row_bce" (Σ_k BCE, [R]).
#pragma once
#include "distill/kd_common.h"

namespace kdet::kd {

enum class KLReduction { BatchMean = 0, ClassMean = 1, Sum = 2 };

struct LogitKLConfig {
  double T = 1.0;
  KLReduction reduction = KLReduction::BatchMean;
};

struct LogitBCEConfig {
  double T = 1.0;
  double avg_factor = 1.0;
};

KdResult logit_kd_kl(const Var& s_logits, const Tensor& t_logits, const LogitKLConfig& cfg, MidSink* mid = nullptr);
// row_weights [R]; an undefined tensor means all ones.
KdResult logit_kd_bce(const Var& s_logits, const Tensor& t_logits, const Tensor& row_weights, const LogitBCEConfig& cfg,
                      MidSink* mid = nullptr);

}  // namespace kdet::kd
