// engine/ops/masked_conv2d.cpp — conv2d(x ⊙ m) on the kept part of x only (see the header for the math).
#include "engine/ops/masked_conv2d.h"

#include <algorithm>
#include <vector>

#include <omp.h>

#include "engine/backend.h"
#include "engine/gemm.h"
#include "engine/ops/cpu_map.h"
#include "engine/ops/elementwise.h"

namespace kdet {

namespace {

enum class MaskKind { Spatial, Channel, Dense };

// Validates the operands (conv2d's own checks plus the mask) and picks the kernel.
MaskKind check(const Tensor& x, const Tensor& m, const Tensor& w, const Tensor& b, const Conv2dArgs& a) {
  KDET_CHECK(x.defined() && m.defined() && w.defined(), "masked_conv2d: undefined input, mask or weight");
  ops::conv2d_output_shape(x.shape(), w.shape(), a);
  KDET_CHECK(x.dtype() == w.dtype() && m.dtype() == x.dtype() && (!b.defined() || b.dtype() == x.dtype()),
             "masked_conv2d: dtype mismatch: input ", x.desc(), ", mask ", m.desc(), ", weight ", w.desc());
  KDET_CHECK(x.device() == w.device() && m.device() == x.device(), "masked_conv2d: device mismatch: input ",
             x.desc(), ", mask ", m.desc(), ", weight ", w.desc());
  if (b.defined())
    KDET_CHECK(b.ndim() == 1 && b.size(0) == w.size(0), "masked_conv2d: bias ", b.desc(), " does not match weight ",
               w.desc());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool spatial = m.shape() == Shape{N, 1, H, W}, channel = m.shape() == Shape{N, C, 1, 1};
  KDET_CHECK(spatial || channel, "masked_conv2d: mask ", m.desc(), " must be [", N, ", 1, ", H, ", ", W, "] or [", N,
             ", ", C, ", 1, 1] for input ", x.desc());
  if (!x.device().is_cpu()) {  // CUDA: the dense conv2d of x ⊙ m (the definition; only the CPU skips zeros)
    if (!(KDET_CUDA && x.device().is_cuda())) no_kernel("masked_conv2d", x.device());
    return MaskKind::Dense;
  }
  if (a.groups != 1) return MaskKind::Dense;
  if (spatial)
    return a.stride_h == 1 && a.stride_w == 1 && a.dilation_h == 1 && a.dilation_w == 1 ? MaskKind::Spatial
                                                                                          : MaskKind::Dense;
  return MaskKind::Channel;
}

// Row r of the contiguous [R, L] mask -> indices of its nonzero entries.
template <class T>
std::vector<std::vector<int64_t>> kept(const Tensor& m, int64_t R, int64_t L) {
  const T* p = m.data<T>();
  std::vector<std::vector<int64_t>> idx(R);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = 0; i < L; ++i)
      if (p[r * L + i] != T(0)) idx[r].push_back(i);
  return idx;
}

// Scratch of n elements from the caching allocator (a std::vector of this size would be page-faulted
// afresh on every call).
template <class T>
T* scratch(Tensor& keep, int64_t n) {
  keep = Tensor::empty({std::max<int64_t>(n, 1)}, dtype_of<T>());
  return keep.data<T>();
}

// ---- spatial mask ------------------------------------------------------------------------------

constexpr int64_t kChunk = 256;  // kept pixels per GEMM (Z = KK·O × kChunk stays near the cache)

struct SpGeom {
  int64_t N, C, H, W, O, KH, KW, KK, Ho, Wo, P, HW, ph, pw;
};

SpGeom sp_geom(const Tensor& x, const Shape& ws, const Conv2dArgs& a) {
  const Shape ys = ops::conv2d_output_shape(x.shape(), ws, a);
  SpGeom g;
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
  g.O = ws[0], g.KH = ws[2], g.KW = ws[3], g.KK = g.KH * g.KW;
  g.Ho = ys[2], g.Wo = ys[3], g.P = g.Ho * g.Wo, g.HW = g.H * g.W;
  g.ph = a.pad_h, g.pw = a.pad_w;
  return g;
}

// For the chunk idx[u0, u0+jn): out[k·jn + j] = output pixel fed by tap k of input pixel idx[u0+j], or -1.
void tap_targets(const SpGeom& g, const int64_t* idx, int64_t jn, std::vector<int64_t>& out) {
  out.resize(g.KK * jn);
  for (int64_t j = 0; j < jn; ++j) {
    const int64_t ih = idx[j] / g.W, iw = idx[j] % g.W;
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t oh = ih + g.ph - kh, ow = iw + g.pw - kw;
        out[(kh * g.KW + kw) * jn + j] = oh >= 0 && oh < g.Ho && ow >= 0 && ow < g.Wo ? oh * g.Wo + ow : -1;
      }
  }
}

// XU [C, jn] = (x ⊙ m)[n][:, idx[0..jn)].
template <class T>
void gather_cols(const T* xn, const T* mn, const int64_t* idx, int64_t jn, const SpGeom& g, T* XU) {
#pragma omp parallel for schedule(static) if (g.C * jn > cpu::kParallelGrain)
  for (int64_t c = 0; c < g.C; ++c) {
    const T* xc = xn + c * g.HW;
    T* d = XU + c * jn;
    for (int64_t j = 0; j < jn; ++j) d[j] = xc[idx[j]] * mn[idx[j]];
  }
}

// Wt [KK·O, C] from w [O, C, KK] (and back for the gradient).
template <class T>
void taps_first(const T* w, T* wt, const SpGeom& g) {
  for (int64_t o = 0; o < g.O; ++o)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t k = 0; k < g.KK; ++k) wt[(k * g.O + o) * g.C + c] = w[(o * g.C + c) * g.KK + k];
}
template <class T>
void taps_last(const T* wt, T* w, const SpGeom& g) {
  for (int64_t o = 0; o < g.O; ++o)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t k = 0; k < g.KK; ++k) w[(o * g.C + c) * g.KK + k] = wt[(k * g.O + o) * g.C + c];
}

// Images run in parallel (one thread each, single-threaded GEMMs and loops: one fork/join per call, which
// matters on a loaded machine) when there are at least two and more than one thread; otherwise one after
// the other with threads inside the GEMMs and loops. Per-image results (and per-image weight-gradient
// partials, added in image order) are the same either way, so the output does not depend on the thread
// count.
bool images_in_parallel(int64_t N) { return N > 1 && !omp_in_parallel() && omp_get_max_threads() > 1; }

template <class T>
void spatial_forward(const Tensor& x, const Tensor& m, const Tensor& w, const Tensor& b, Tensor& y,
                     const Conv2dArgs& a) {
  const SpGeom g = sp_geom(x, w.shape(), a);
  const auto idx = kept<T>(m, g.N, g.HW);
  const bool par = images_in_parallel(g.N);
  const int nbuf = par ? omp_get_max_threads() : 1;
  Tensor bufs[3];
  T* wt = scratch<T>(bufs[0], g.KK * g.O * g.C);
  taps_first(w.data<T>(), wt, g);
  const int64_t xu_sz = g.C * kChunk, z_sz = g.KK * g.O * kChunk;
  T* XUall = scratch<T>(bufs[1], nbuf * xu_sz);
  T* Zall = scratch<T>(bufs[2], nbuf * z_sz);
  const T* px = x.data<T>();
  const T* pm = m.data<T>();
  const T* pb = b.defined() ? b.data<T>() : nullptr;
  T* py = y.data<T>();
  auto image = [&](int64_t n, T* XU, T* Z) {
    std::vector<int64_t> tgt;
    T* yn = py + n * g.O * g.P;
#pragma omp parallel for schedule(static) if (g.O * g.P > cpu::kParallelGrain)
    for (int64_t o = 0; o < g.O; ++o) std::fill(yn + o * g.P, yn + (o + 1) * g.P, pb ? pb[o] : T(0));
    const int64_t nU = static_cast<int64_t>(idx[n].size());
    for (int64_t u0 = 0; u0 < nU; u0 += kChunk) {
      const int64_t jn = std::min(kChunk, nU - u0);
      const int64_t* id = idx[n].data() + u0;
      gather_cols(px + n * g.C * g.HW, pm + n * g.HW, id, jn, g, XU);
      gemm(false, false, g.KK * g.O, jn, g.C, T(1), wt, g.C, XU, jn, T(0), Z, jn);
      tap_targets(g, id, jn, tgt);
      const T* pz = Z;
      const int64_t* pt = tgt.data();
#pragma omp parallel for schedule(static) if (g.O * g.KK * jn > cpu::kParallelGrain)
      for (int64_t o = 0; o < g.O; ++o) {
        T* yo = yn + o * g.P;
        for (int64_t k = 0; k < g.KK; ++k) {
          const T* z = pz + (k * g.O + o) * jn;
          const int64_t* t = pt + k * jn;
          for (int64_t j = 0; j < jn; ++j)
            if (t[j] >= 0) yo[t[j]] += z[j];
        }
      }
    }
  };
  if (par) {
#pragma omp parallel for schedule(static) num_threads(nbuf)
    for (int64_t n = 0; n < g.N; ++n) {
      const int t = omp_get_thread_num();
      image(n, XUall + t * xu_sz, Zall + t * z_sz);
    }
  } else {
    for (int64_t n = 0; n < g.N; ++n) image(n, XUall, Zall);
  }
}

// gx (if defined) = m ⊙ (conv2d_backward_input) at the kept pixels, 0 elsewhere; gw (if defined) = weight grad.
template <class T>
void spatial_backward(const Tensor& gy, const Tensor& x, const Tensor& m, const Tensor& w, Tensor* gx, Tensor* gw,
                      const Conv2dArgs& a) {
  const SpGeom g = sp_geom(x, w.shape(), a);
  const auto idx = kept<T>(m, g.N, g.HW);
  const bool par = images_in_parallel(g.N);
  const int nbuf = par ? omp_get_max_threads() : 1;
  const int64_t wsz = g.KK * g.O * g.C, xu_sz = g.C * kChunk, g_sz = g.KK * g.O * kChunk;
  Tensor bufs[5];
  T* wt = gx ? scratch<T>(bufs[0], wsz) : nullptr;
  T* dwt = gw ? scratch<T>(bufs[1], g.N * wsz) : nullptr;  // per-image partials, added in image order
  if (gx) {
    taps_first(w.data<T>(), wt, g);
    gx->fill_(0.0);
  }
  const T* pgy = gy.data<T>();
  const T* px = x.data<T>();
  const T* pm = m.data<T>();
  T* XUall = gw ? scratch<T>(bufs[2], nbuf * xu_sz) : nullptr;
  T* Gall = scratch<T>(bufs[3], nbuf * g_sz);
  T* dXUall = gx ? scratch<T>(bufs[4], nbuf * xu_sz) : nullptr;
  auto image = [&](int64_t n, int t) {
    T* XU = XUall ? XUall + t * xu_sz : nullptr;
    T* G = Gall + t * g_sz;
    T* dXU = dXUall ? dXUall + t * xu_sz : nullptr;
    T* dw = dwt ? dwt + n * wsz : nullptr;
    if (dw) std::fill(dw, dw + wsz, T(0));
    std::vector<int64_t> tgt;
    const T* gyn = pgy + n * g.O * g.P;
    const int64_t nU = static_cast<int64_t>(idx[n].size());
    for (int64_t u0 = 0; u0 < nU; u0 += kChunk) {
      const int64_t jn = std::min(kChunk, nU - u0);
      const int64_t* id = idx[n].data() + u0;
      tap_targets(g, id, jn, tgt);
      const int64_t* pt = tgt.data();
#pragma omp parallel for schedule(static) if (g.O * g.KK * jn > cpu::kParallelGrain)
      for (int64_t o = 0; o < g.O; ++o) {
        const T* go = gyn + o * g.P;
        for (int64_t k = 0; k < g.KK; ++k) {
          T* d = G + (k * g.O + o) * jn;
          const int64_t* tt = pt + k * jn;
          for (int64_t j = 0; j < jn; ++j) d[j] = tt[j] >= 0 ? go[tt[j]] : T(0);
        }
      }
      if (gx) {
        gemm(true, false, g.C, jn, g.KK * g.O, T(1), wt, g.C, G, jn, T(0), dXU, jn);
        T* gxn = gx->data<T>() + n * g.C * g.HW;
        const T* mn = pm + n * g.HW;
#pragma omp parallel for schedule(static) if (g.C * jn > cpu::kParallelGrain)
        for (int64_t c = 0; c < g.C; ++c)
          for (int64_t j = 0; j < jn; ++j) gxn[c * g.HW + id[j]] = dXU[c * jn + j] * mn[id[j]];
      }
      if (gw) {
        gather_cols(px + n * g.C * g.HW, pm + n * g.HW, id, jn, g, XU);
        gemm(false, true, g.KK * g.O, g.C, jn, T(1), G, jn, XU, jn, T(1), dw, g.C);
      }
    }
  };
  if (par) {
#pragma omp parallel for schedule(static) num_threads(nbuf)
    for (int64_t n = 0; n < g.N; ++n) image(n, omp_get_thread_num());
  } else {
    for (int64_t n = 0; n < g.N; ++n) image(n, 0);
  }
  if (gw) {
    for (int64_t n = 1; n < g.N; ++n) {
      const T* src = dwt + n * wsz;
#pragma omp simd
      for (int64_t i = 0; i < wsz; ++i) dwt[i] += src[i];
    }
    taps_last(dwt, gw->data<T>(), g);
  }
}

// ---- channel mask -------------------------------------------------------------------------------

// (x[n, K] ⊙ m[n, K]) as [1, |K|, H, W] and w[:, K] as [O, |K|, KH, KW].
template <class T>
void gather_channels(const Tensor& x, const Tensor& m, const Tensor& w, int64_t n, const std::vector<int64_t>& K,
                     Tensor* xs, Tensor* ws) {
  const int64_t C = x.size(1), HW = x.size(2) * x.size(3), O = w.size(0), KK = w.size(2) * w.size(3),
                nk = static_cast<int64_t>(K.size());
  if (xs) {
    *xs = Tensor::empty({1, nk, x.size(2), x.size(3)}, x.dtype());
    const T* px = x.data<T>() + n * C * HW;
    const T* pm = m.data<T>() + n * C;
    T* d = xs->data<T>();
#pragma omp parallel for schedule(static) if (nk * HW > cpu::kParallelGrain)
    for (int64_t i = 0; i < nk; ++i)
      for (int64_t p = 0; p < HW; ++p) d[i * HW + p] = px[K[i] * HW + p] * pm[K[i]];
  }
  if (ws) {
    *ws = Tensor::empty({O, nk, w.size(2), w.size(3)}, w.dtype());
    const T* pw = w.data<T>();
    T* d = ws->data<T>();
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < nk; ++i) std::copy_n(pw + (o * C + K[i]) * KK, KK, d + (o * nk + i) * KK);
  }
}

template <class T>
void channel_forward(const Tensor& x, const Tensor& m, const Tensor& w, const Tensor& b, Tensor& y,
                     const Conv2dArgs& a) {
  const int64_t N = x.size(0), C = x.size(1), O = w.size(0), P = y.size(2) * y.size(3);
  const auto K = kept<T>(m, N, C);
  T* py = y.data<T>();
  for (int64_t n = 0; n < N; ++n) {
    T* yn = py + n * O * P;
    if (K[n].empty()) {
      const T* pb = b.defined() ? b.data<T>() : nullptr;
      for (int64_t o = 0; o < O; ++o) std::fill(yn + o * P, yn + (o + 1) * P, pb ? pb[o] : T(0));
      continue;
    }
    Tensor xs, ws;
    gather_channels<T>(x, m, w, n, K[n], &xs, &ws);
    const Tensor yn_t = ops::conv2d(xs, ws, b, a);
    std::copy_n(yn_t.data<T>(), O * P, yn);
  }
}

template <class T>
void channel_backward(const Tensor& gy, const Tensor& x, const Tensor& m, const Tensor& w, Tensor* gx, Tensor* gw,
                      const Conv2dArgs& a) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), O = w.size(0),
                KK = w.size(2) * w.size(3);
  const auto K = kept<T>(m, N, C);
  if (gx) gx->fill_(0.0);
  if (gw) gw->fill_(0.0);
  for (int64_t n = 0; n < N; ++n) {
    if (K[n].empty()) continue;
    const int64_t nk = static_cast<int64_t>(K[n].size());
    Tensor xs, ws;
    gather_channels<T>(x, m, w, n, K[n], gw ? &xs : nullptr, gx ? &ws : nullptr);
    const Tensor gyn = gy.select(0, n).reshape({1, O, gy.size(2), gy.size(3)});
    if (gx) {
      const Tensor d = ops::conv2d_backward_input(gyn, ws, Shape{1, nk, x.size(2), x.size(3)}, a);
      const T* s = d.data<T>();
      const T* pm = m.data<T>() + n * C;
      T* dst = gx->data<T>() + n * C * HW;
      for (int64_t i = 0; i < nk; ++i)
        for (int64_t p = 0; p < HW; ++p) dst[K[n][i] * HW + p] = s[i * HW + p] * pm[K[n][i]];
    }
    if (gw) {
      const Tensor d = ops::conv2d_backward_weight(gyn, xs, Shape{O, nk, w.size(2), w.size(3)}, a);
      const T* s = d.data<T>();
      T* dst = gw->data<T>();
      for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < nk; ++i) {
          T* q = dst + (o * C + K[n][i]) * KK;
          const T* r = s + (o * nk + i) * KK;
          for (int64_t k = 0; k < KK; ++k) q[k] += r[k];
        }
    }
  }
}

}  // namespace

namespace ops {

Tensor masked_conv2d(const Tensor& x, const Tensor& m, const Tensor& w, const Tensor& b, const Conv2dArgs& a) {
  const MaskKind kind = check(x, m, w, b, a);
  if (kind == MaskKind::Dense) return conv2d(mul(x, m), w, b, a);
  const Tensor xc = x.contiguous(), mc = m.contiguous(), wc = w.contiguous(), bc = b.defined() ? b.contiguous() : b;
  Tensor y = Tensor::empty(conv2d_output_shape(x.shape(), w.shape(), a), x.dtype());
  dispatch_float(x.dtype(), "masked_conv2d", [&](auto tag) {
    using T = decltype(tag);
    if (kind == MaskKind::Spatial)
      spatial_forward<T>(xc, mc, wc, bc, y, a);
    else
      channel_forward<T>(xc, mc, wc, bc, y, a);
  });
  return y;
}

}  // namespace ops

Var masked_conv2d(const Var& x, const Tensor& m, const Var& w, const Var& b, const Conv2dArgs& a) {
  const MaskKind kind = check(x.data(), m, w.data(), b.defined() ? b.data() : Tensor(), a);
  if (kind == MaskKind::Dense) return conv2d(x * Var(m), w, b, a);
  Tensor y = ops::masked_conv2d(x.data(), m, w.data(), b.defined() ? b.data() : Tensor(), a);
  const Tensor mc = m.contiguous();
  return record("masked_conv2d", y, {&x, &w, b.defined() ? &b : nullptr},
                [xd = x.data().contiguous(), wd = w.data().contiguous(), mc, kind, a](const Tensor& g, Grads& gr) {
                  const bool want_x = gr.wants(0), want_w = gr.wants(1);
                  const Tensor gc = g.contiguous();
                  if (want_x || want_w) {
                    Tensor gx = want_x ? Tensor::empty(xd.shape(), g.dtype()) : Tensor();
                    Tensor gw = want_w ? Tensor::empty(wd.shape(), g.dtype()) : Tensor();
                    dispatch_float(g.dtype(), "masked_conv2d backward", [&](auto tag) {
                      using T = decltype(tag);
                      if (kind == MaskKind::Spatial)
                        spatial_backward<T>(gc, xd, mc, wd, want_x ? &gx : nullptr, want_w ? &gw : nullptr, a);
                      else
                        channel_backward<T>(gc, xd, mc, wd, want_x ? &gx : nullptr, want_w ? &gw : nullptr, a);
                    });
                    if (want_x) gr.accumulate(0, gx);
                    if (want_w) gr.accumulate(1, gw);
                  }
                  if (gr.wants(2)) gr.accumulate(2, ops::conv2d_backward_bias(gc));
                });
}

}  // namespace kdet
