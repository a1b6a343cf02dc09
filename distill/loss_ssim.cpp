#include "distill/loss_ssim.h"

#include <cmath>

#include <algorithm>

#include "distill/loss_ssim_cuda.h"
#include "distill/ssim_math.h"
#include "engine/backend.h"
#include "engine/ops/cpu_map.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/sep_filter2d.h"
#include "engine/ops/shape_ops.h"

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

constexpr int kSsimMaps = 3;  // coefficient maps a, b, c saved for the backward

// Forward of one plane: x, y [H·W]. Writes the coefficient maps (kd_losses.md §5c) to abc[k·HW + i] and,
// when map != null, SSIM; returns Σ_i (1 − SSIM_i). scratch: 6·HW + sep_filter_scratch.
template <class T>
double ssim_plane_forward(const T* x, const T* y, int64_t H, int64_t W, const T* g, int64_t w, T C1, T C2, T* abc,
                          T* map, T* scratch) {
  const int64_t HW = H * W;
  T* prod = scratch;
  T* f = scratch + HW;  // 5 filtered maps: μx, μy, g∗x², g∗y², g∗xy
  T* fs = scratch + 6 * HW;
  cpu::sep_filter_plane<T>(x, f, H, W, g, w, fs);
  cpu::sep_filter_plane<T>(y, f + HW, H, W, g, w, fs);
  for (int k = 0; k < 3; ++k) {
    const T* u = k == 1 ? y : x;
    const T* v = k == 0 ? x : y;
#pragma omp simd
    for (int64_t i = 0; i < HW; ++i) prod[i] = u[i] * v[i];
    cpu::sep_filter_plane<T>(prod, f + (2 + k) * HW, H, W, g, w, fs);
  }
  double loss = 0;
  for (int64_t i = 0; i < HW; ++i) {
    const T S = ssim_pixel(f[i], f[HW + i], f[2 * HW + i], f[3 * HW + i], f[4 * HW + i], C1, C2, abc[i],
                           abc[HW + i], abc[2 * HW + i]);
    loss += static_cast<double>(T(1) - S);
    if (map) map[i] = S;
  }
  return loss;
}

// dx [H·W] = g∗(G·a) + y⊙g∗(G·b) + x⊙g∗(G·c), G the upstream map gradient (or the constant gs when
// G == null). scratch: 4·HW + sep_filter_scratch.
template <class T>
void ssim_plane_backward(const T* x, const T* y, const T* abc, const T* G, T gs, int64_t H, int64_t W, const T* g,
                         int64_t w, T* dx, T* scratch) {
  const int64_t HW = H * W;
  T* in = scratch;
  T* f = scratch + HW;  // 3 filtered maps
  T* fs = scratch + 4 * HW;
  for (int k = 0; k < kSsimMaps; ++k) {
    const T* src = abc + k * HW;
    if (G) {
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) in[i] = G[i] * src[i];
      src = in;
    }
    cpu::sep_filter_plane<T>(src, f + k * HW, H, W, g, w, fs);
  }
#pragma omp simd
  for (int64_t i = 0; i < HW; ++i) {
    const T v = f[i] + y[i] * f[HW + i] + x[i] * f[2 * HW + i];
    dx[i] = G ? v : gs * v;
  }
}

struct SsimFwd {
  Tensor abc;     // [P, 3, H, W] coefficient maps
  Tensor map;     // SSIM map (when asked for)
  double loss_sum = 0;  // Σ (1 − SSIM) over every element
};

// x, y contiguous [N, C, H, W] of one dtype.
SsimFwd ssim_forward(const Tensor& x, const Tensor& y, const std::vector<double>& g, double C1, double C2,
                     bool want_map) {
  KDET_CHECK(x.ndim() == 4 && x.shape() == y.shape() && x.dtype() == y.dtype(), "kd_ssim: x ", x.desc(), " and y ",
             y.desc(), " must be [N, C, H, W] of one shape and dtype");
  KDET_CHECK(x.device() == y.device(), "kd_ssim: x ", x.desc(), " and y ", y.desc(), " on different devices");
  const int64_t P = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), HW = H * W, w = static_cast<int64_t>(g.size());
  SsimFwd r;
  if (!x.device().is_cpu()) {
    if (!(KDET_CUDA && x.device().is_cuda())) no_kernel("kd_ssim", x.device());
    // CUDA: the five filtered maps in one depthwise filtering of [x, y, x², y², xy], then one kernel per plane.
    const Tensor f5 = ops::sep_filter2d(ops::concat({x, y, ops::mul(x, x), ops::mul(y, y), ops::mul(x, y)}, 1), g);
    r.abc = Tensor::empty({P, kSsimMaps, H, W}, x.dtype(), x.device());
    if (want_map) r.map = Tensor::empty(x.shape(), x.dtype(), x.device());
    Tensor part = Tensor::empty({P}, DType::F64, x.device());
#if KDET_CUDA
    cuda::kd_ssim_coeffs(f5, x.size(1), C1, C2, r.abc, r.map, part);
#endif
    for (double v : part.to_vector<double>()) r.loss_sum += v;  // planes in order, as below
    return r;
  }
  r.abc = Tensor::empty({P, kSsimMaps, H, W}, x.dtype());
  if (want_map) r.map = Tensor::empty(x.shape(), x.dtype());
  std::vector<double> part(P);
  dispatch_float(x.dtype(), "kd_ssim", [&](auto tag) {
    using T = decltype(tag);
    const std::vector<T> gt(g.begin(), g.end());
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    T* pa = r.abc.data<T>();
    T* pm = want_map ? r.map.data<T>() : nullptr;
#pragma omp parallel if (P * HW * w > cpu::kParallelGrain)
    {
      std::vector<T> scratch(6 * HW + cpu::sep_filter_scratch(H, W, w));
#pragma omp for schedule(static)
      for (int64_t p = 0; p < P; ++p)
        part[p] = ssim_plane_forward<T>(px + p * HW, py + p * HW, H, W, gt.data(), w, T(C1), T(C2),
                                        pa + p * kSsimMaps * HW, pm ? pm + p * HW : nullptr, scratch.data());
    }
  });
  for (double v : part) r.loss_sum += v;  // planes in order: deterministic
  return r;
}

// dx for the upstream map gradient G (defined) or the constant gs.
Tensor ssim_backward(const Tensor& x, const Tensor& y, const Tensor& abc, const Tensor& G, double gs,
                     const std::vector<double>& g) {
  const int64_t P = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), HW = H * W, w = static_cast<int64_t>(g.size());
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  const Tensor Gc = G.defined() ? G.contiguous() : G;
  if (!x.device().is_cpu()) {  // CUDA: filter the (G ⊙) coefficient maps as [P, 3, H, W], combine per element
    const Tensor src = Gc.defined() ? ops::mul(abc, Gc.view({P, 1, H, W})) : abc;
    const Tensor f3 = ops::sep_filter2d(src, g);
#if KDET_CUDA
    cuda::kd_ssim_combine(x, y, f3, !Gc.defined(), gs, dx);
#endif
    return dx;
  }
  dispatch_float(x.dtype(), "kd_ssim backward", [&](auto tag) {
    using T = decltype(tag);
    const std::vector<T> gt(g.begin(), g.end());
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    const T* pa = abc.data<T>();
    const T* pg = Gc.defined() ? Gc.data<T>() : nullptr;
    T* pd = dx.data<T>();
#pragma omp parallel if (P * HW * w > cpu::kParallelGrain)
    {
      std::vector<T> scratch(4 * HW + cpu::sep_filter_scratch(H, W, w));
#pragma omp for schedule(static)
      for (int64_t p = 0; p < P; ++p)
        ssim_plane_backward<T>(px + p * HW, py + p * HW, pa + p * kSsimMaps * HW, pg ? pg + p * HW : nullptr, T(gs), H,
                               W, gt.data(), w, pd + p * HW, scratch.data());
    }
  });
  return dx;
}

// Per-plane min-max rescaling: forward values and what the backward needs.
struct MinMax {
  Tensor out;                    // x̂
  std::vector<double> mn, mx;    // per plane (CPU)
  Tensor mn_t, mx_t;             // per plane, x's dtype (CUDA: kept on the device)
};

MinMax minmax_forward(const Tensor& x, double eps) {
  KDET_CHECK(x.ndim() == 4 && x.size(2) * x.size(3) > 0, "kd_minmax_normalize: expects non-empty [N, C, H, W], got ",
             x.desc());
  const Tensor xc = x.contiguous();
  const int64_t P = x.size(0) * x.size(1), HW = x.size(2) * x.size(3);
  MinMax r;
  if (!x.device().is_cpu()) {
    if (!(KDET_CUDA && x.device().is_cuda())) no_kernel("kd_minmax_normalize", x.device());
    r.out = Tensor::empty(x.shape(), x.dtype(), x.device());
    r.mn_t = Tensor::empty({P}, x.dtype(), x.device());
    r.mx_t = Tensor::empty({P}, x.dtype(), x.device());
#if KDET_CUDA
    cuda::kd_minmax_forward(xc, eps, r.out, r.mn_t, r.mx_t);
#endif
    return r;
  }
  r.out = Tensor::empty(x.shape(), x.dtype());
  r.mn.resize(P);
  r.mx.resize(P);
  dispatch_float(x.dtype(), "kd_minmax_normalize", [&](auto tag) {
    using T = decltype(tag);
    const T* px = xc.data<T>();
    T* po = r.out.data<T>();
#pragma omp parallel for schedule(static) if (P * HW > cpu::kParallelGrain)
    for (int64_t p = 0; p < P; ++p) {
      const T* a = px + p * HW;
      T lo = a[0], hi = a[0];
      for (int64_t i = 1; i < HW; ++i) {
        lo = std::min(lo, a[i]);
        hi = std::max(hi, a[i]);
      }
      const T den = hi - lo + T(eps);
      T* o = po + p * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) o[i] = (a[i] - lo) / den;
      r.mn[p] = lo;
      r.mx[p] = hi;
    }
  });
  return r;
}

Tensor minmax_backward(const Tensor& gy, const Tensor& x, const MinMax& f, double eps) {
  const Tensor gc = gy.contiguous();
  const Tensor& out = f.out;
  const std::vector<double>&mn = f.mn, &mx = f.mx;
  const int64_t P = x.size(0) * x.size(1), HW = x.size(2) * x.size(3);
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (!x.device().is_cpu()) {
#if KDET_CUDA
    cuda::kd_minmax_backward(gc, x, out, f.mn_t, f.mx_t, eps, dx);
#endif
    return dx;
  }
  dispatch_float(x.dtype(), "kd_minmax_normalize backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gc.data<T>();
    const T* px = x.data<T>();
    const T* po = out.data<T>();
    T* pd = dx.data<T>();
#pragma omp parallel for schedule(static) if (P * HW > cpu::kParallelGrain)
    for (int64_t p = 0; p < P; ++p) {
      const T lo = static_cast<T>(mn[p]), hi = static_cast<T>(mx[p]), R = hi - lo + T(eps);
      const T* g = pg + p * HW;
      const T* a = px + p * HW;
      const T* o = po + p * HW;
      double s1 = 0, s2 = 0;
      int64_t nlo = 0, nhi = 0;
      for (int64_t i = 0; i < HW; ++i) {
        s1 += static_cast<double>(g[i]);
        s2 += static_cast<double>(g[i]) * static_cast<double>(o[i]);
        nlo += a[i] == lo;
        nhi += a[i] == hi;
      }
      const T gmin = static_cast<T>((s2 - s1) / static_cast<double>(R) / static_cast<double>(nlo));
      const T gmax = static_cast<T>(-s2 / static_cast<double>(R) / static_cast<double>(nhi));
      T* d = pd + p * HW;
      for (int64_t i = 0; i < HW; ++i) {
        T v = g[i] / R;
        if (a[i] == lo) v += gmin;
        if (a[i] == hi) v += gmax;
        d[i] = v;
      }
    }
  });
  return dx;
}

}  // namespace

Var gaussian_filter(const Var& x, const std::vector<double>& g) { return sep_filter2d(x, g); }

Var minmax_normalize(const Var& x, double eps) {
  MinMax f = minmax_forward(x.data(), eps);
  const Tensor out = f.out;
  return record("kd_minmax_normalize", out, {&x},
                [xd = x.data().contiguous(), f = std::move(f), eps](const Tensor& g, Grads& gr) {
                  gr.accumulate(0, minmax_backward(g, xd, f, eps));
                });
}

Var ssim_map(const Var& x, const Var& y, const std::vector<double>& g, double C1, double C2) {
  KDET_CHECK(!y.requires_grad(), "ssim_map: y is a constant here (its gradient is not computed)");
  const Tensor xc = x.data().contiguous(), yc = y.data().contiguous();
  SsimFwd f = ssim_forward(xc, yc, g, C1, C2, true);
  return record("kd_ssim_map", f.map, {&x}, [xc, yc, abc = f.abc, g](const Tensor& G, Grads& gr) {
    gr.accumulate(0, ssim_backward(xc, yc, abc, G, 1.0, g));
  });
}

Var ssim_loss(const Var& x, const Tensor& y, const std::vector<double>& g, double C1, double C2, Tensor* map) {
  const Tensor xc = x.data().contiguous(), yc = y.contiguous();
  SsimFwd f = ssim_forward(xc, yc, g, C1, C2, map != nullptr);
  if (map) *map = f.map;
  const double n = static_cast<double>(x.numel());
  const Tensor out = Tensor::scalar(f.loss_sum / n, x.dtype()).to(x.device());
  return record("kd_ssim_loss", out, {&x}, [xc, yc, abc = f.abc, g, n](const Tensor& G, Grads& gr) {
    gr.accumulate(0, ssim_backward(xc, yc, abc, Tensor(), -G.item() / n, g));
  });
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
    Tensor m;
    Var li = ssim_loss(x, y, g, C1, C2, mid ? &m : nullptr);
    r.terms[level_key(i, "ssim_loss")] = li;
    r.accumulate("ssim_loss", li);
    total = total.defined() ? total + li : li;
    if (mid) {
      put_mid(mid, level_key(i, "s_aligned"), s.data());
      put_mid(mid, level_key(i, "s_norm"), x.data());
      put_mid(mid, level_key(i, "t_norm"), y);
      put_mid(mid, level_key(i, "ssim_map"), m);
    }
  }
  r.loss = total * cfg_.loss_weight;
  return r;
}

}  // namespace kdet::kd
