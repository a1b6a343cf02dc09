#include "distill/loss_logit_kd.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/losses.h"
#include "engine/ops/reduce.h"
#include "engine/ops/softmax.h"
#include "engine/ops/unary.h"

namespace kdet::kd {

namespace {
void check_logits(const char* who, const Var& s, const Tensor& t) {
  KDET_CHECK(s.ndim() == 2 && s.shape() == t.shape() && s.dtype() == t.dtype(), who,
             ": student logits ", s.data().desc(), " and teacher logits ", t.desc(), " must both be [R, K]");
}
}  // namespace

KdResult logit_kd_kl(const Var& s, const Tensor& t, const LogitKLConfig& cfg, MidSink* mid) {
  check_logits("logit_kd_kl", s, t);
  KDET_CHECK(cfg.T > 0, "logit_kd_kl: temperature must be > 0, got ", cfg.T);
  const double T = cfg.T;
  const int64_t R = s.size(0), K = s.size(1);
  const Tensor ts = ops::mul_scalar(t, 1.0 / T);
  const Tensor p_t = ops::softmax(ts, 1);
  const Tensor logp_t = ops::log_softmax(ts, 1);
  Var logp_s = log_softmax(s / T, 1);
  Var e = Var(p_t) * (Var(logp_t) - logp_s);  // [R, K]
  Var tot = sum(e);
  const double denom = cfg.reduction == KLReduction::BatchMean   ? static_cast<double>(R)
                       : cfg.reduction == KLReduction::ClassMean ? static_cast<double>(R * K)
                                                                 : 1.0;
  KdResult r;
  r.loss = tot * (T * T / denom);
  if (mid) {
    put_mid(mid, "p_t", p_t);
    put_mid(mid, "p_s", ops::exp(logp_s.data()));
    put_mid(mid, "row_kl", ops::mul_scalar(ops::sum(e.data(), {1}), T * T));
  }
  return r;
}

KdResult logit_kd_bce(const Var& s, const Tensor& t, const Tensor& w, const LogitBCEConfig& cfg, MidSink* mid) {
  check_logits("logit_kd_bce", s, t);
  KDET_CHECK(cfg.T > 0 && cfg.avg_factor > 0, "logit_kd_bce: T ", cfg.T, " and avg_factor ", cfg.avg_factor,
             " must be > 0");
  const double T = cfg.T;
  const int64_t R = s.size(0);
  const Tensor p = ops::sigmoid(ops::mul_scalar(t, 1.0 / T));
  Var x = s / T;
  Var bce = binary_cross_entropy_with_logits(x, p);  // softplus(x) − p·x
  Var row = sum(bce, {1});                            // [R]
  Var weighted = row;
  if (w.defined()) {
    KDET_CHECK(w.ndim() == 1 && w.size(0) == R && w.dtype() == s.dtype(), "logit_kd_bce: row weights ", w.desc(),
               " must be [", R, "] of the logits' dtype");
    weighted = row * Var(w);
  }
  KdResult r;
  r.loss = sum(weighted) * (T * T / cfg.avg_factor);
  if (mid) {
    put_mid(mid, "p_t", p);
    put_mid(mid, "p_s", ops::sigmoid(x.data()));
    put_mid(mid, "row_bce", row.data());
  }
  return r;
}

}  // namespace kdet::kd
