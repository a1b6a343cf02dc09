#include "distill/loss_amd.h"

#include <algorithm>

#include "engine/ops/compare.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/unary.h"

namespace kdet::kd {

SEGate::SEGate(int64_t c, int64_t reduction) {
  KDET_CHECK(reduction >= 1, "SEGate: reduction must be >= 1, got ", reduction);
  const int64_t h = std::max<int64_t>(c / reduction, 1);
  fc1_ = &register_module("fc1", std::make_unique<Linear>(c, h));
  fc2_ = &register_module("fc2", std::make_unique<Linear>(h, c));
}

Var SEGate::forward(const Var& z) { return sigmoid(fc2_->forward(relu(fc1_->forward(z)))); }

AMDLoss::AMDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const AMDConfig& cfg) : cfg_(cfg) {
  KDET_CHECK(!channels.empty(), "AMDLoss: no levels");
  for (size_t i = 0; i < channels.size(); ++i) {
    Level L;
    auto h = std::make_unique<LevelModule>();
    const int64_t c = channels[i].second;
    if (channels[i].first != c) L.align = &h->add("align", make_align(channels[i].first, c));
    L.se = &h->add("se", std::make_unique<SEGate>(c, cfg.se_reduction));
    L.gen = &h->add("generation", std::make_unique<GeneratorBlock>(c));
    register_module("level" + std::to_string(i), std::move(h));
    levels_.push_back(L);
  }
}

KdResult AMDLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid) {
  check_levels("AMDLoss", S, T, false);
  KDET_CHECK(S.size() == levels_.size(), "AMDLoss: built for ", levels_.size(), " levels, got ", S.size());
  const int64_t N = S[0].size(0);
  const double invN = 1.0 / static_cast<double>(N);
  KdResult r;
  for (size_t i = 0; i < S.size(); ++i) {
    const Level& L = levels_[i];
    const int64_t C = T[i].size(1), H = T[i].size(2), W = T[i].size(3);
    Tensor A;
    {
      NoGradGuard ng;
      A = spatial_attention(Var(T[i]), cfg_.temp).data();  // [N, H, W]
    }
    Tensor keep;
    if (cfg_.mask_mode == AMDMaskMode::TopK)
      keep = topk_keep_mask(A.reshape({N, H * W}), topk_count(cfg_.mask_ratio, H * W)).reshape({N, 1, H, W});
    else
      keep = ops::where(ops::gt_scalar(A, 1.0), Tensor::zeros({N, H, W}, A.dtype(), A.device()), 1.0)
                 .reshape({N, 1, H, W});
    Var s = L.align ? L.align->forward(S[i]) : S[i];
    KDET_CHECK(s.size(1) == C, "AMDLoss: level ", i, " aligned student ", s.data().desc(), " vs teacher ", T[i].desc());
    Var x = s * Var(keep);
    Var gate = L.se->forward(mean(x, {2, 3}));  // [N, C]
    // x ⊙ gate = (s ⊙ gate) ⊙ keep bit for bit (keep is 0/1), so the generator's first conv can skip the
    // masked positions.
    Var g = L.gen->forward_masked(s * reshape(gate, {N, C, 1, 1}), keep);
    Var dis = sq_dist_sum(g, Var(T[i])) * invN;
    Var li = dis * cfg_.alpha;
    r.terms[level_key(i, "dis_loss")] = dis;
    r.accumulate("dis_loss", dis);
    r.terms[level_key(i, "loss")] = li;
    r.loss = r.loss.defined() ? r.loss + li : li;
    if (mid) {
      put_mid(mid, level_key(i, "s_aligned"), s.data());
      put_mid(mid, level_key(i, "att_spatial_t"), A);
      put_mid(mid, level_key(i, "keep"), keep);
      put_mid(mid, level_key(i, "se_gate"), gate.data());
      put_mid(mid, level_key(i, "gen_out"), g.data());
    }
  }
  return r;
}

}  // namespace kdet::kd
