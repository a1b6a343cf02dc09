#include "distill/loss_aid.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/unary.h"

namespace kdet::kd {

Tensor aid_instance_weights(const Tensor& teacher_loss, double beta) {
  KDET_CHECK(teacher_loss.ndim() == 1, "aid_instance_weights: teacher loss must be [N], got ", teacher_loss.desc());
  return ops::exp(ops::mul_scalar(teacher_loss, -beta));
}

KdResult AIDLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, const Tensor& teacher_loss,
                          MidSink* mid) {
  KDET_CHECK(!S.empty() && teacher_loss.ndim() == 1 && teacher_loss.size(0) == S[0].size(0), "AIDLoss: teacher loss ",
             teacher_loss.desc(), " must hold one value per image of the batch");
  // The teacher's per-image loss may come from the host (Distiller: teacher_per_image_loss) for device features.
  const Tensor w = aid_instance_weights(teacher_loss.to(S[0].dtype()).to(S[0].device()), beta_);
  put_mid(mid, "instance_weights", w);
  return forward_weighted(S, T, w, mid);
}

}  // namespace kdet::kd
