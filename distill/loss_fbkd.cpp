#include "distill/loss_fbkd.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/pool2d.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"

namespace kdet::kd {

std::vector<NonLocalSpec> fbkd_default_nonlocal(size_t levels) {
  std::vector<NonLocalSpec> v;
  for (size_t i = 0; i < levels; ++i) v.push_back(i == 0 ? NonLocalSpec{64, 8} : i == 1 ? NonLocalSpec{64, 4}
                                                                                         : NonLocalSpec{128, 2});
  return v;
}

NonLocalBlock::NonLocalBlock(int64_t c, const NonLocalSpec& spec, double bn_eps) : spec_(spec) {
  KDET_CHECK(spec.inter >= 1 && spec.pool >= 1, "NonLocalBlock: inter channels ", spec.inter, " and pool ", spec.pool,
             " must be >= 1");
  theta_ = &register_module("theta", std::make_unique<Conv2d>(c, spec.inter, 1));
  phi_ = &register_module("phi", std::make_unique<Conv2d>(c, spec.inter, 1));
  g_ = &register_module("g", std::make_unique<Conv2d>(c, spec.inter, 1));
  W_ = &register_module("W", std::make_unique<Conv2d>(spec.inter, c, 1));
  bn_ = &register_module("bn", std::make_unique<BatchNorm2d>(c, bn_eps));
}

void NonLocalBlock::init_weights(Generator& g) {
  Module::init_weights(g);
  bn_->weight().data().fill_(0.0);
  bn_->bias().data().fill_(0.0);
}

Var NonLocalBlock::forward(const Var& x) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), I = spec_.inter, k = spec_.pool;
  KDET_CHECK(H >= k && W >= k, "NonLocalBlock: a ", H, "x", W, " feature map is smaller than the pool ", k);
  Var th = reshape(theta_->forward(x), {N, I, H * W});
  Var ph = phi_->forward(x);
  Var gx = g_->forward(x);
  if (k > 1) {
    ph = max_pool2d(ph, k, k, 0);
    gx = max_pool2d(gx, k, k, 0);
  }
  const int64_t M = ph.size(2) * ph.size(3);
  Var f = matmul(transpose(th, 1, 2), reshape(ph, {N, I, M})) / static_cast<double>(M);  // [N, HW, M]
  Var y = matmul(f, transpose(reshape(gx, {N, I, M}), 1, 2));                             // [N, HW, I]
  y = reshape(transpose(y, 1, 2), {N, I, H, W});
  return x + bn_->forward(W_->forward(y));
}

FBKDLoss::FBKDLoss(int64_t c, const FBKDConfig& cfg) : cfg_(cfg), channels_(c) {
  KDET_CHECK(!cfg.nonlocal.empty(), "FBKDLoss: config has no levels (nonlocal is empty)");
  for (size_t i = 0; i < cfg.nonlocal.size(); ++i) {
    auto h = std::make_unique<LevelModule>();
    Level L;
    L.adaptation = &h->add("adaptation", std::make_unique<Conv2d>(c, c, 1));
    L.channel_adapt = &h->add("channel_adapt", std::make_unique<Linear>(c, c));
    L.spatial_adapt = &h->add("spatial_adapt", std::make_unique<Conv2d>(1, 1, 3, 1, 1));
    L.nl_adapt = &h->add("nl_adapt", std::make_unique<Conv2d>(c, c, 1));
    L.student_nl = &h->add("student_nl", std::make_unique<NonLocalBlock>(c, cfg.nonlocal[i], cfg.bn_eps));
    L.teacher_nl = &h->add("teacher_nl", std::make_unique<NonLocalBlock>(c, cfg.nonlocal[i], cfg.bn_eps));
    register_module("level" + std::to_string(i), std::move(h));
    levels_.push_back(L);
  }
}

KdResult FBKDLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid) {
  return run(S, T, nullptr, mid);
}

KdResult FBKDLoss::forward_weighted(const std::vector<Var>& S, const std::vector<Tensor>& T, const Tensor& w,
                                    MidSink* mid) {
  return run(S, T, &w, mid);
}

KdResult FBKDLoss::run(const std::vector<Var>& S, const std::vector<Tensor>& T, const Tensor* w, MidSink* mid) {
  check_levels("FBKDLoss", S, T, true);
  KDET_CHECK(S.size() == levels_.size(), "FBKDLoss: built for ", levels_.size(), " levels, got ", S.size());
  const int64_t N = S[0].size(0), C = channels_;
  KDET_CHECK(S[0].size(1) == C, "FBKDLoss: built for ", C, " channels, got ", S[0].data().desc());
  Var wv;
  if (w) {
    KDET_CHECK(w->ndim() == 1 && w->size(0) == N && w->dtype() == S[0].dtype(), "FBKDLoss: instance weights ",
               w->desc(), " must be [", N, "] of the features' dtype");
    wv = Var(*w);
  }
  const double r = cfg_.s_ratio;
  // The un-weighted term (a 0-d root over the batch, or [N] per-image roots) reduced to its contribution.
  auto root = [&](const Var& sq) -> Var {  // sq: squared elements [N, ...]
    if (!w) return safe_sqrt(sum(sq));
    return safe_sqrt(sum(reshape(sq, {N, -1}), {1}));
  };
  auto contribution = [&](const Var& l) { return w ? sum(l * wv) : l; };
  Var acc[4];
  for (size_t i = 0; i < S.size(); ++i) {
    const Level& L = levels_[i];
    const int64_t H = T[i].size(2), W = T[i].size(3);
    const Var& s = S[i];
    const Var t(T[i]);
    Tensor ms, mc;
    {
      NoGradGuard ng;
      const Var sd = s.detach();
      ms = ((spatial_attention(t, cfg_.temp_s) + spatial_attention(sd, cfg_.temp_s) * r) / (1.0 + r)).data();
      mc = ((channel_attention(t, cfg_.temp_c) + channel_attention(sd, cfg_.temp_c) * r) / (1.0 + r)).data();
      ms = ms.reshape({N, 1, H, W});
      mc = mc.reshape({N, C, 1, 1});
    }
    const Tensor mask = cfg_.use_channel_mask ? ops::mul(ms, mc) : ms;
    Var fa = L.adaptation->forward(s);
    Var gap = L.channel_adapt->forward(mean(s, {2, 3}));                  // [N, C]
    Var spa = L.spatial_adapt->forward(mean(s, {1}, true));               // [N, 1, H, W]
    Var nl_s = L.student_nl->forward(s);
    Var nl_sa = L.nl_adapt->forward(nl_s);
    Var nl_t = L.teacher_nl->forward(t);
    Var df = t - fa, dc = Var(ops::mean(T[i], {2, 3})) - gap, ds = Var(ops::mean(T[i], {1}, true)) - spa,
        dn = nl_sa - nl_t;
    Var l[4] = {root(df * df * Var(mask)), root(dc * dc), root(ds * ds), root(dn * dn)};
    for (int k = 0; k < 4; ++k) {
      Var c = contribution(l[k]);
      acc[k] = acc[k].defined() ? acc[k] + c : c;
    }
    if (mid) {
      put_mid(mid, level_key(i, "mask_spatial"), ms);
      put_mid(mid, level_key(i, "mask_channel"), mc);
      put_mid(mid, level_key(i, "feat_adapt"), fa.data());
      put_mid(mid, level_key(i, "gap_adapt"), gap.data());
      put_mid(mid, level_key(i, "sp_adapt"), spa.data());
      put_mid(mid, level_key(i, "nl_s"), nl_s.data());
      put_mid(mid, level_key(i, "nl_s_adapt"), nl_sa.data());
      put_mid(mid, level_key(i, "nl_t"), nl_t.data());
      put_mid(mid, level_key(i, "l_feat"), l[0].data());
      put_mid(mid, level_key(i, "l_channel"), l[1].data());
      put_mid(mid, level_key(i, "l_spatial"), l[2].data());
      put_mid(mid, level_key(i, "l_nonlocal"), l[3].data());
    }
  }
  KdResult res;
  const char* names[4] = {"kd_feat_loss", "kd_channel_loss", "kd_spatial_loss", "kd_nonlocal_loss"};
  const double wts[4] = {cfg_.w_feat, cfg_.w_channel, cfg_.w_spatial, cfg_.w_nonlocal};
  for (int k = 0; k < 4; ++k) {
    Var v = acc[k] * wts[k];
    res.terms[names[k]] = v;
    res.loss = res.loss.defined() ? res.loss + v : v;
  }
  return res;
}

}  // namespace kdet::kd
