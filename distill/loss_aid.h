// distill/loss_aid.h — AID: Adaptive Instance Distillation (Lan & Tian, arXiv 2201.11097),
// kd_losses.md §7. INFERRED weighting on top of FBKD (§6, distill/loss_fbkd.h):
//   w_n = exp(−β·L_T[n]) (constants; L_T = the frozen teacher's own detection loss on image n),
//   loss = Σ_levels Σ_n w_n·(w_feat·l_feat[n] + w_channel·l_channel[n] + w_spatial·l_spatial[n]
//          + w_nonlocal·l_nonlocal[n]), each term with its own root per image.
// Same parameters, terms and mids as FBKD, plus the mid "instance_weights" [N].
#pragma once
#include "distill/loss_fbkd.h"

namespace kdet::kd {

struct AIDConfig {
  FBKDConfig fbkd;
  double beta = 0.1;
};

// exp(−β·teacher_loss), [N].
Tensor aid_instance_weights(const Tensor& teacher_loss, double beta);

class AIDLoss : public FBKDLoss {
 public:
  AIDLoss(int64_t channels, const AIDConfig& cfg) : FBKDLoss(channels, cfg.fbkd), beta_(cfg.beta) {}
  const char* type_name() const override { return "AIDLoss"; }
  KdResult forward(const std::vector<Var>& S, const std::vector<Tensor>& T, const Tensor& teacher_loss,
                   MidSink* mid = nullptr);
  double beta() const { return beta_; }

 private:
  double beta_;
};

}  // namespace kdet::kd
