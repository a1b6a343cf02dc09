#include "distill/loss_ssim.h"

#include <cmath>

#include "engine/ops/conv2d.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"

namespace kdet::kd {

Tensor gaussian_window(int64_t w, double sigma) {
  KDET_CHECK(w >= 1 && w % 2 == 1 && sigma > 0, "gaussian_window: window size ", w, " must be odd and sigma ", sigma,
             " positive");
  std::vector<double> g(w);
  const int64_t c = w / 2;
  double s = 0;
  for (int64_t j = 0; j < w; ++j) {
    g[j] = std::exp(-static_cast<double>((j - c) * (j - c)) / (2.0 * sigma * sigma));
    s += g[j];
  }
  for (auto& v : g) v /= s;
  std::vector<double> win(w * w);
  for (int64_t a = 0; a < w; ++a)
    for (int64_t b = 0; b < w; ++b) win[a * w + b] = g[a] * g[b];
  return Tensor::from_vector(win, Shape{w, w});
}

Var minmax_normalize(const Var& x, double eps) {
  Var mn = amin(x, {2, 3}, true);
  Var mx = amax(x, {2, 3}, true);
  return (x - mn) / (mx - mn + eps);
}

Var ssim_map(const Var& x, const Var& y, const Tensor& window, double C1, double C2) {
  const int64_t C = x.size(1), w = window.size(0);
  const Tensor k = window.reshape({1, 1, w, w}).expand({C, 1, w, w}).contiguous();
  const Var kv(k);
  const Conv2dArgs args = Conv2dArgs::make(1, w / 2, 1, C);
  auto filt = [&](const Var& z) { return conv2d(z, kv, Var(), args); };
  Var mx = filt(x), my = filt(y);
  Var mx2 = mx * mx, my2 = my * my, mxy = mx * my;
  Var sxx = filt(x * x) - mx2;
  Var syy = filt(y * y) - my2;
  Var sxy = filt(x * y) - mxy;
  Var num = (mxy * 2.0 + C1) * (sxy * 2.0 + C2);
  Var den = (mx2 + my2 + C1) * (sxx + syy + C2);
  return num / den;
}

SSIMKDLoss::SSIMKDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const SSIMConfig& cfg) : cfg_(cfg) {
  KDET_CHECK(!channels.empty(), "SSIMKDLoss: no levels");
  gaussian_window(cfg.window_size, cfg.sigma);  // validates
  for (size_t i = 0; i < channels.size(); ++i)
    adapters_.push_back(&register_module("level" + std::to_string(i), make_align(channels[i].first, channels[i].second)));
}

KdResult SSIMKDLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid) {
  check_levels("SSIMKDLoss", S, T, false);
  KDET_CHECK(S.size() == adapters_.size(), "SSIMKDLoss: built for ", adapters_.size(), " levels, got ", S.size());
  const Tensor win = gaussian_window(cfg_.window_size, cfg_.sigma).to(S[0].dtype());
  const double C1 = (cfg_.K1 * cfg_.L) * (cfg_.K1 * cfg_.L), C2 = (cfg_.K2 * cfg_.L) * (cfg_.K2 * cfg_.L);
  put_mid(mid, "window", win);
  KdResult r;
  Var total;
  for (size_t i = 0; i < S.size(); ++i) {
    Var s = adapters_[i]->forward(S[i]);
    Var x = minmax_normalize(s, cfg_.minmax_eps);
    Tensor y;
    {
      NoGradGuard ng;
      y = minmax_normalize(Var(T[i]), cfg_.minmax_eps).data();
    }
    Var m = ssim_map(x, Var(y), win, C1, C2);
    Var li = mean(1.0 - m);
    r.terms[level_key(i, "ssim_loss")] = li;
    r.accumulate("ssim_loss", li);
    total = total.defined() ? total + li : li;
    if (mid) {
      put_mid(mid, level_key(i, "s_aligned"), s.data());
      put_mid(mid, level_key(i, "s_norm"), x.data());
      put_mid(mid, level_key(i, "t_norm"), y);
      put_mid(mid, level_key(i, "ssim_map"), m.data());
    }
  }
  r.loss = total * cfg_.loss_weight;
  return r;
}

}  // namespace kdet::kd
