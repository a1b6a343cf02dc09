#include "distill/loss_fitnet.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"

namespace kdet::kd {

FitNetLoss::FitNetLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const FitNetConfig& cfg) : cfg_(cfg) {
  KDET_CHECK(!channels.empty(), "FitNetLoss: no levels");
  for (size_t i = 0; i < channels.size(); ++i)
    adapters_.push_back(&register_module("level" + std::to_string(i), make_align(channels[i].first, channels[i].second)));
}

KdResult FitNetLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid) {
  check_levels("FitNetLoss", S, T, false);
  KDET_CHECK(S.size() == adapters_.size(), "FitNetLoss: built for ", adapters_.size(), " levels, got ", S.size());
  KdResult r;
  for (size_t i = 0; i < S.size(); ++i) {
    Var a = adapters_[i]->forward(S[i]);
    Var d = a - Var(T[i]);
    Var sq = sum(d * d);
    const double n = static_cast<double>(S[i].size(0));
    Var red = cfg_.reduction == FitNetReduction::SumOverBatch ? sq / n
              : cfg_.reduction == FitNetReduction::Mean       ? sq / static_cast<double>(d.numel())
                                                              : sq;
    Var li = red * cfg_.loss_weight;
    r.terms[level_key(i, "loss")] = li;
    r.loss = r.loss.defined() ? r.loss + li : li;
    put_mid(mid, level_key(i, "s_aligned"), a.data());
  }
  return r;
}

}  // namespace kdet::kd
