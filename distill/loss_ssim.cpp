#include "distill/loss_ssim.h"

#include <cmath>

#include <algorithm>

#include "engine/ops/conv2d.h"
#include "engine/ops/cpu_map.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"

namespace kdet::kd {

std::vector<double> gaussian_kernel_1d(int64_t w, double sigma) {
  KDET_CHECK(w >= 1 && w % 2 == 1 && sigma > 0, "gaussian_kernel_1d: window size ", w, " must be odd and sigma ", sigma,
             " positive");
  std::vector<double> g(w);
  const int64_t c = w / 2;
  double s = 0;
  for (int64_t j = 0; j < w; ++j) {
    g[j] = std::exp(-static_cast<double>((j - c) * (j - c)) / (2.0 * sigma * sigma));
    s += g[j];
  }
  for (auto& v : g) v /= s;
  return g;
}

Tensor gaussian_window(int64_t w, double sigma) {
  const std::vector<double> g = gaussian_kernel_1d(w, sigma);
  std::vector<double> win(w * w);
  for (int64_t a = 0; a < w; ++a)
    for (int64_t b = 0; b < w; ++b) win[a * w + b] = g[a] * g[b];
  return Tensor::from_vector(win, Shape{w, w});
}

namespace {

// y = separable zero-padded filter of x, both contiguous [P, H, W].
template <class T>
void sep_filter_cpu(const T* x, T* y, int64_t P, int64_t H, int64_t W, const std::vector<double>& gd) {
  const int64_t w = static_cast<int64_t>(gd.size()), r = w / 2;
  std::vector<T> g(gd.begin(), gd.end());
#pragma omp parallel if (P * H * W * w > cpu::kParallelGrain)
  {
    std::vector<T> tmp(H * W);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      const T* xp = x + p * H * W;
      T* yp = y + p * H * W;
      for (int64_t h = 0; h < H; ++h) {  // rows
        const T* xr = xp + h * W;
        T* tr = tmp.data() + h * W;
        for (int64_t c = 0; c < W; ++c) {
          const int64_t j0 = std::max<int64_t>(0, r - c), j1 = std::min<int64_t>(w, W + r - c);
          T acc = 0;
          for (int64_t j = j0; j < j1; ++j) acc += g[j] * xr[c + j - r];
          tr[c] = acc;
        }
      }
      for (int64_t h = 0; h < H; ++h) {  // columns
        const int64_t i0 = std::max<int64_t>(0, r - h), i1 = std::min<int64_t>(w, H + r - h);
        T* yr = yp + h * W;
        for (int64_t c = 0; c < W; ++c) yr[c] = 0;
        for (int64_t i = i0; i < i1; ++i) {
          const T gi = g[i];
          const T* tr = tmp.data() + (h + i - r) * W;
          for (int64_t c = 0; c < W; ++c) yr[c] += gi * tr[c];
        }
      }
    }
  }
}

Tensor sep_filter(const Tensor& x, const std::vector<double>& g) {
  KDET_CHECK(x.ndim() == 4, "kd_gaussian_filter: expects [N, C, H, W], got ", x.desc());
  KDET_CHECK(x.device().is_cpu(), "kd_gaussian_filter: CPU only (got ", x.desc(), ")");
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  const int64_t P = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  dispatch_float(x.dtype(), "kd_gaussian_filter", [&](auto tag) {
    using T = decltype(tag);
    sep_filter_cpu<T>(xc.data<T>(), y.data<T>(), P, H, W, g);
  });
  return y;
}

}  // namespace

Var gaussian_filter(const Var& x, const std::vector<double>& g) {
  KDET_CHECK(!g.empty() && g.size() % 2 == 1, "kd_gaussian_filter: kernel length ", g.size(), " must be odd");
  for (size_t j = 0; j < g.size() / 2; ++j)
    KDET_CHECK(g[j] == g[g.size() - 1 - j], "kd_gaussian_filter: kernel must be symmetric");
  return record("kd_gaussian_filter", sep_filter(x.data(), g), {&x},
                [g](const Tensor& gy, Grads& gr) { gr.accumulate(0, sep_filter(gy, g)); });
}

Var minmax_normalize(const Var& x, double eps) {
  Var mn = amin(x, {2, 3}, true);
  Var mx = amax(x, {2, 3}, true);
  return (x - mn) / (mx - mn + eps);
}

Var ssim_map(const Var& x, const Var& y, const std::vector<double>& g, double C1, double C2) {
  auto filt = [&](const Var& z) { return gaussian_filter(z, g); };
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
  gaussian_kernel_1d(cfg.window_size, cfg.sigma);  // validates
  for (size_t i = 0; i < channels.size(); ++i)
    adapters_.push_back(&register_module("level" + std::to_string(i), make_align(channels[i].first, channels[i].second)));
}

KdResult SSIMKDLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid) {
  check_levels("SSIMKDLoss", S, T, false);
  KDET_CHECK(S.size() == adapters_.size(), "SSIMKDLoss: built for ", adapters_.size(), " levels, got ", S.size());
  const std::vector<double> g = gaussian_kernel_1d(cfg_.window_size, cfg_.sigma);
  const double C1 = (cfg_.K1 * cfg_.L) * (cfg_.K1 * cfg_.L), C2 = (cfg_.K2 * cfg_.L) * (cfg_.K2 * cfg_.L);
  if (mid) put_mid(mid, "window", gaussian_window(cfg_.window_size, cfg_.sigma).to(S[0].dtype()));
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
    Var m = ssim_map(x, Var(y), g, C1, C2);
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
