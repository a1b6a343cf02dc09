#include "distill/loss_mgd.h"

#include "engine/ops/compare.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/ops/unary.h"

namespace kdet::kd {

MGDLoss::MGDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const MGDConfig& cfg) : cfg_(cfg) {
  KDET_CHECK(!channels.empty(), "MGDLoss: no levels");
  for (size_t i = 0; i < channels.size(); ++i) {
    Level L;
    auto h = std::make_unique<LevelModule>();
    if (channels[i].first != channels[i].second)
      L.align = &h->add("align", make_align(channels[i].first, channels[i].second));
    L.gen = &h->add("generation", std::make_unique<GeneratorBlock>(channels[i].second));
    register_module("level" + std::to_string(i), std::move(h));
    levels_.push_back(L);
  }
}

std::vector<Tensor> MGDLoss::draw_rand(const std::vector<Tensor>& T, Generator& g) {
  std::vector<Tensor> r;
  // Drawn on the host (the same masks whatever the device), then moved to the features' device.
  for (const Tensor& t : T)
    r.push_back(rand_uniform({t.size(0), 1, t.size(2), t.size(3)}, g, 0.0, 1.0, t.dtype()).to(t.device()));
  return r;
}

KdResult MGDLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, const std::vector<Tensor>& rand,
                          MidSink* mid) {
  check_levels("MGDLoss", S, T, false);
  KDET_CHECK(S.size() == levels_.size() && rand.size() == S.size(), "MGDLoss: built for ", levels_.size(),
             " levels, got ", S.size(), " feature levels and ", rand.size(), " random masks");
  const double invN = 1.0 / static_cast<double>(S[0].size(0));
  KdResult r;
  for (size_t i = 0; i < S.size(); ++i) {
    const Level& L = levels_[i];
    const Shape want{T[i].size(0), 1, T[i].size(2), T[i].size(3)};
    KDET_CHECK(rand[i].shape() == want && rand[i].dtype() == T[i].dtype(), "MGDLoss: level ", i, " rand ",
               rand[i].desc(), " must be ", want, " of the features' dtype");
    Var s = L.align ? L.align->forward(S[i]) : S[i];
    KDET_CHECK(s.size(1) == T[i].size(1), "MGDLoss: level ", i, " aligned student ", s.data().desc(), " vs teacher ",
               T[i].desc());
    const Tensor keep = ops::where(ops::gt_scalar(rand[i], 1.0 - cfg_.lambda_mgd),
                                   Tensor::zeros(want, T[i].dtype(), T[i].device()), 1.0);
    Var g = L.gen->forward_masked(s, keep);
    Var dis = sq_dist_sum(g, Var(T[i])) * invN;
    Var li = dis * cfg_.alpha_mgd;
    r.terms[level_key(i, "dis_loss")] = dis;
    r.accumulate("dis_loss", dis);
    r.terms[level_key(i, "loss")] = li;
    r.loss = r.loss.defined() ? r.loss + li : li;
    put_mid(mid, level_key(i, "s_aligned"), s.data());
    put_mid(mid, level_key(i, "keep"), keep);
    put_mid(mid, level_key(i, "gen_out"), g.data());
  }
  return r;
}

}  // namespace kdet::kd
