#include "distill/loss_dmkd.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/softmax.h"

namespace kdet::kd {

DMKDLoss::DMKDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const DMKDConfig& cfg) : cfg_(cfg) {
  KDET_CHECK(!channels.empty(), "DMKDLoss: no levels");
  for (size_t i = 0; i < channels.size(); ++i) {
    Level L;
    auto h = std::make_unique<LevelModule>();
    const int64_t c = channels[i].second;
    if (channels[i].first != c) L.align = &h->add("align", make_align(channels[i].first, c));
    L.gen_s = &h->add("gen_s", std::make_unique<GeneratorBlock>(c));
    L.gen_c = &h->add("gen_c", std::make_unique<GeneratorBlock>(c));
    L.fuse = &h->add_parameter("fuse_logits", Tensor::zeros({2}));
    register_module("level" + std::to_string(i), std::move(h));
    levels_.push_back(L);
  }
}

void DMKDLoss::init_weights(Generator& g) {
  Module::init_weights(g);
  for (auto& L : levels_) L.fuse->data().fill_(0.0);
}

KdResult DMKDLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid) {
  check_levels("DMKDLoss", S, T, false);
  KDET_CHECK(S.size() == levels_.size(), "DMKDLoss: built for ", levels_.size(), " levels, got ", S.size());
  const int64_t N = S[0].size(0);
  const double invN = 1.0 / static_cast<double>(N);
  KdResult r;
  for (size_t i = 0; i < S.size(); ++i) {
    const Level& L = levels_[i];
    const int64_t C = T[i].size(1), H = T[i].size(2), W = T[i].size(3);
    const auto [as, ac] = attention_maps(T[i], cfg_.temp, cfg_.temp);
    const Tensor keep_s =
        topk_keep_mask(as.reshape({N, H * W}), topk_count(cfg_.spatial_ratio, H * W)).reshape({N, 1, H, W});
    const Tensor keep_c = topk_keep_mask(ac, topk_count(cfg_.channel_ratio, C)).reshape({N, C, 1, 1});
    Var s = L.align ? L.align->forward(S[i]) : S[i];
    KDET_CHECK(s.size(1) == C, "DMKDLoss: level ", i, " aligned student ", s.data().desc(), " vs teacher ",
               T[i].desc());
    Var rs = L.gen_s->forward_masked(s, keep_s);
    Var rc = L.gen_c->forward_masked(s, keep_c);
    Var w = softmax(*L.fuse, 0);
    Var f = rs * select(w, 0, 0) + rc * select(w, 0, 1);
    Var dis = sq_dist_sum(f, Var(T[i])) * invN;
    Var li = dis * cfg_.alpha;
    r.terms[level_key(i, "dis_loss")] = dis;
    r.accumulate("dis_loss", dis);
    r.terms[level_key(i, "loss")] = li;
    r.loss = r.loss.defined() ? r.loss + li : li;
    if (mid) {
      put_mid(mid, level_key(i, "s_aligned"), s.data());
      put_mid(mid, level_key(i, "att_spatial_t"), as);
      put_mid(mid, level_key(i, "att_channel_t"), ac);
      put_mid(mid, level_key(i, "keep_spatial"), keep_s);
      put_mid(mid, level_key(i, "keep_channel"), keep_c);
      put_mid(mid, level_key(i, "rec_spatial"), rs.data());
      put_mid(mid, level_key(i, "rec_channel"), rc.data());
      put_mid(mid, level_key(i, "fuse_weights"), w.data());
      put_mid(mid, level_key(i, "fused"), f.data());
    }
  }
  return r;
}

}  // namespace kdet::kd
