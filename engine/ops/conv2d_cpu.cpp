// engine/ops/conv2d_cpu.cpp — CPU conv2d kernels: im2col / col2im + the packed GEMM (engine/gemm.h).
//
// Per image n and group g (Og = O/groups output channels, Cg = C/groups input channels, KK = KH·KW,
// P = Ho·Wo output pixels):
//   forward         y[n,g]  (Og × P)    = W[g] (Og × Cg·KK) · col[g] (Cg·KK × P)
//   backward input  dcol[g] (Cg·KK × P) = W[g]ᵀ · dy[n,g]  ; dx[n] = col2im(dcol)
//   backward weight dW[g]  (Og × Cg·KK) += dy[n,g] · col[g]ᵀ  (n in order: deterministic)
// A 1×1 stride-1 unpadded conv is a plain GEMM on x (col == x[n]). Scratch comes from Tensor::empty
// (the caching allocator), so repeated calls do not page-fault fresh buffers.
#include <algorithm>
#include <cstring>

#include "engine/gemm.h"
#include "engine/ops/conv2d.h"

namespace kdet::cpu {

namespace {

struct Geom {
  int64_t N, C, H, W, O, KH, KW, Ho, Wo, G, Cg, Og, KK, P, HW;
  bool direct;  // 1×1, stride 1, no padding: col == x
};

Geom geom(const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dArgs& a) {
  Geom g;
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  g.O = ws[0], g.KH = ws[2], g.KW = ws[3];
  g.Ho = ys[2], g.Wo = ys[3];
  g.G = a.groups, g.Cg = g.C / g.G, g.Og = g.O / g.G;
  g.KK = g.KH * g.KW, g.P = g.Ho * g.Wo, g.HW = g.H * g.W;
  g.direct = g.KH == 1 && g.KW == 1 && a.stride_h == 1 && a.stride_w == 1 && a.pad_h == 0 && a.pad_w == 0;
  return g;
}

// [lo, hi) of output positions o with 0 <= o*s - p + k*d < L.
inline void valid_range(int64_t L, int64_t O, int64_t s, int64_t p, int64_t kd, int64_t& lo, int64_t& hi) {
  // o*s >= p - kd  and  o*s <= L - 1 + p - kd
  const int64_t a = p - kd, b = L - 1 + p - kd;
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  hi = b < 0 ? 0 : b / s + 1;
  lo = std::min(lo, O);
  hi = std::max(lo, std::min(hi, O));
}

// col [C·KK, P] from one image x [C, H, W].
template <class T>
void im2col(const T* x, T* col, const Geom& g, const Conv2dArgs& a) {
  const int64_t rows = g.C * g.KK;
#pragma omp parallel for schedule(static) if (rows * g.P > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / g.KK, kh = (r / g.KW) % g.KH, kw = r % g.KW;
    const T* xc = x + c * g.HW;
    T* dst = col + r * g.P;
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    valid_range(g.H, g.Ho, a.stride_h, a.pad_h, kh * a.dilation_h, oh_lo, oh_hi);
    valid_range(g.W, g.Wo, a.stride_w, a.pad_w, kw * a.dilation_w, ow_lo, ow_hi);
    std::fill(dst, dst + oh_lo * g.Wo, T(0));
    for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
      T* d = dst + oh * g.Wo;
      const T* src = xc + (oh * a.stride_h - a.pad_h + kh * a.dilation_h) * g.W - a.pad_w + kw * a.dilation_w;
      for (int64_t ow = 0; ow < ow_lo; ++ow) d[ow] = T(0);
      if (a.stride_w == 1) {
        std::memcpy(d + ow_lo, src + ow_lo, (ow_hi - ow_lo) * sizeof(T));
      } else {
        const int64_t s = a.stride_w;
        for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = src[ow * s];
      }
      for (int64_t ow = ow_hi; ow < g.Wo; ++ow) d[ow] = T(0);
    }
    std::fill(dst + oh_hi * g.Wo, dst + g.P, T(0));
  }
}

// dx [C, H, W] = col2im(col [C·KK, P]); threads own channels, taps summed in a fixed order.
template <class T>
void col2im(const T* col, T* dx, const Geom& g, const Conv2dArgs& a) {
#pragma omp parallel for schedule(static) if (g.C * g.KK * g.P > (1 << 16))
  for (int64_t c = 0; c < g.C; ++c) {
    T* xc = dx + c * g.HW;
    std::fill(xc, xc + g.HW, T(0));
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const T* src = col + ((c * g.KH + kh) * g.KW + kw) * g.P;
        int64_t oh_lo, oh_hi, ow_lo, ow_hi;
        valid_range(g.H, g.Ho, a.stride_h, a.pad_h, kh * a.dilation_h, oh_lo, oh_hi);
        valid_range(g.W, g.Wo, a.stride_w, a.pad_w, kw * a.dilation_w, ow_lo, ow_hi);
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          const T* s = src + oh * g.Wo;
          T* d = xc + (oh * a.stride_h - a.pad_h + kh * a.dilation_h) * g.W - a.pad_w + kw * a.dilation_w;
          if (a.stride_w == 1) {
#pragma omp simd
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] += s[ow];
          } else {
            const int64_t st = a.stride_w;
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow * st] += s[ow];
          }
        }
      }
  }
}

}  // namespace

template <class T>
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const Conv2dArgs& a) {
  const Geom g = geom(x.shape(), w.shape(), y.shape(), a);
  const T* px = x.data<T>();
  const T* pw = w.data<T>();
  T* py = y.data<T>();
  const int64_t K = g.Cg * g.KK;
  Tensor col;
  if (!g.direct) col = Tensor::empty({g.C * g.KK, g.P}, x.dtype());
  const bool has_bias = b.defined();
  const T* pb = has_bias ? b.data<T>() : nullptr;
  for (int64_t n = 0; n < g.N; ++n) {
    const T* xn = px + n * g.C * g.HW;
    T* yn = py + n * g.O * g.P;
    const T* src = xn;
    if (!g.direct) {
      im2col<T>(xn, col.data<T>(), g, a);
      src = col.data<T>();
    }
    if (has_bias) {
#pragma omp parallel for schedule(static) if (g.O * g.P > (1 << 16))
      for (int64_t o = 0; o < g.O; ++o) std::fill(yn + o * g.P, yn + (o + 1) * g.P, pb[o]);
    }
    for (int64_t gi = 0; gi < g.G; ++gi)
      gemm(false, false, g.Og, g.P, K, T(1), pw + gi * g.Og * K, K, src + gi * K * g.P, g.P, has_bias ? T(1) : T(0),
           yn + gi * g.Og * g.P, g.P);
  }
}

template <class T>
void conv2d_backward_input(const Tensor& gy, const Tensor& w, Tensor& gx, const Conv2dArgs& a) {
  const Geom g = geom(gx.shape(), w.shape(), gy.shape(), a);
  const T* pgy = gy.data<T>();
  const T* pw = w.data<T>();
  T* pgx = gx.data<T>();
  const int64_t K = g.Cg * g.KK;
  Tensor col;
  if (!g.direct) col = Tensor::empty({g.C * g.KK, g.P}, gy.dtype());
  for (int64_t n = 0; n < g.N; ++n) {
    const T* gyn = pgy + n * g.O * g.P;
    T* gxn = pgx + n * g.C * g.HW;
    T* dst = g.direct ? gxn : col.data<T>();
    for (int64_t gi = 0; gi < g.G; ++gi)
      gemm(true, false, K, g.P, g.Og, T(1), pw + gi * g.Og * K, K, gyn + gi * g.Og * g.P, g.P, T(0),
           dst + gi * K * g.P, g.P);
    if (!g.direct) col2im<T>(col.data<T>(), gxn, g, a);
  }
}

template <class T>
void conv2d_backward_weight(const Tensor& gy, const Tensor& x, Tensor& gw, const Conv2dArgs& a) {
  const Geom g = geom(x.shape(), gw.shape(), gy.shape(), a);
  const T* pgy = gy.data<T>();
  const T* px = x.data<T>();
  T* pgw = gw.data<T>();
  const int64_t K = g.Cg * g.KK;
  Tensor col;
  if (!g.direct) col = Tensor::empty({g.C * g.KK, g.P}, x.dtype());
  if (g.N == 0) std::fill(pgw, pgw + gw.numel(), T(0));
  for (int64_t n = 0; n < g.N; ++n) {
    const T* xn = px + n * g.C * g.HW;
    const T* gyn = pgy + n * g.O * g.P;
    const T* src = xn;
    if (!g.direct) {
      im2col<T>(xn, col.data<T>(), g, a);
      src = col.data<T>();
    }
    for (int64_t gi = 0; gi < g.G; ++gi)
      gemm(false, true, g.Og, K, g.P, T(1), gyn + gi * g.Og * g.P, g.P, src + gi * K * g.P, g.P, n == 0 ? T(0) : T(1),
           pgw + gi * g.Og * K, K);
  }
}

template <class T>
void conv2d_backward_bias(const Tensor& gy, Tensor& gb) {
  const int64_t N = gy.size(0), O = gy.size(1), P = gy.numel() / std::max<int64_t>(1, N * O);
  const T* p = gy.data<T>();
  T* out = gb.data<T>();
#pragma omp parallel for schedule(static) if (gy.numel() > (1 << 16))
  for (int64_t o = 0; o < O; ++o) {
    T acc = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* s = p + (n * O + o) * P;
      T part = 0;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < P; ++i) part += s[i];
      acc += part;
    }
    out[o] = acc;
  }
}

#define KDET_CONV_INST(T)                                                                                 \
  template void conv2d_forward<T>(const Tensor&, const Tensor&, const Tensor&, Tensor&, const Conv2dArgs&); \
  template void conv2d_backward_input<T>(const Tensor&, const Tensor&, Tensor&, const Conv2dArgs&);         \
  template void conv2d_backward_weight<T>(const Tensor&, const Tensor&, Tensor&, const Conv2dArgs&);        \
  template void conv2d_backward_bias<T>(const Tensor&, Tensor&);
KDET_CONV_INST(float)
KDET_CONV_INST(double)
#undef KDET_CONV_INST

}  // namespace kdet::cpu
