// engine/ops/interpolate_cuda.cu — nearest / bilinear resize on the GPU (CPU: interpolate.cpp).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/interpolate_cuda.h"

namespace kdet::cuda {

namespace {

template <class T>
struct AxisPtr {
  const int64_t *i0, *i1, *lo, *hi;
  const T *l0, *l1;
};

template <class T>
AxisPtr<T> ptrs(const ResizeAxis& a, bool bilinear) {
  AxisPtr<T> p;
  p.i0 = a.i0.data<int64_t>();
  p.lo = a.lo.data<int64_t>();
  p.hi = a.hi.data<int64_t>();
  p.i1 = bilinear ? a.i1.data<int64_t>() : nullptr;
  p.l0 = bilinear ? a.l0.data<T>() : nullptr;
  p.l1 = bilinear ? a.l1.data<T>() : nullptr;
  return p;
}

template <class T>
__global__ void nearest_fwd(int64_t n, int64_t H, int64_t W, int64_t OH, int64_t OW, AxisPtr<T> ah, AxisPtr<T> aw,
                            const T* x, T* out) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t xo = i % OW, y = (i / OW) % OH, p = i / (OW * OH);
    out[i] = x[(p * H + ah.i0[y]) * W + aw.i0[xo]];
  }
}

template <class T>
__global__ void bilinear_fwd(int64_t n, int64_t H, int64_t W, int64_t OH, int64_t OW, AxisPtr<T> ah, AxisPtr<T> aw,
                             const T* x, T* out) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t xo = i % OW, y = (i / OW) % OH, p = i / (OW * OH);
    const T* r0 = x + (p * H + ah.i0[y]) * W;
    const T* r1 = x + (p * H + ah.i1[y]) * W;
    const int64_t a = aw.i0[xo], b = aw.i1[xo];
    const T h0 = ah.l0[y], h1 = ah.l1[y], w0 = aw.l0[xo], w1 = aw.l1[xo];
    out[i] = h0 * (w0 * r0[a] + w1 * r0[b]) + h1 * (w0 * r1[a] + w1 * r1[b]);
  }
}

// Weight with which output d of an axis reads input h (bilinear: both taps may hit h at the border).
template <class T>
__device__ inline T tap(const AxisPtr<T>& a, int64_t d, int64_t h) {
  T w = T(0);
  if (a.i0[d] == h) w += a.l0[d];
  if (a.i1[d] == h) w += a.l1[d];
  return w;
}

template <class T>
__global__ void resize_bwd(bool bilinear, int64_t n, int64_t H, int64_t W, int64_t OH, int64_t OW, AxisPtr<T> ah,
                           AxisPtr<T> aw, const T* g, T* gx) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t w = i % W, h = (i / W) % H, p = i / (W * H);
    const T* gp = g + p * OH * OW;
    T acc = 0;
    for (int64_t y = ah.lo[h]; y < ah.hi[h]; ++y) {
      const T wy = bilinear ? tap(ah, y, h) : T(1);
      for (int64_t xo = aw.lo[w]; xo < aw.hi[w]; ++xo) {
        const T wx = bilinear ? tap(aw, xo, w) : T(1);
        acc += bilinear ? wy * wx * gp[y * OW + xo] : gp[y * OW + xo];
      }
    }
    gx[i] = acc;
  }
}

}  // namespace

void resize_forward(bool bilinear, const Tensor& x, const ResizeAxis& ah, const ResizeAxis& aw, Tensor& out) {
  const char* op = bilinear ? "interpolate_bilinear" : "interpolate_nearest";
  KDET_CHECK(x.is_contiguous() && out.is_contiguous() && x.ndim() == 4 && out.ndim() == 4, op, " (cuda): bad layout");
  Context& ctx = activate(x, op);
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const AxisPtr<T> ph = ptrs<T>(ah, bilinear), pw = ptrs<T>(aw, bilinear);
    if (bilinear)
      bilinear_fwd<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, x.size(2), x.size(3), out.size(2), out.size(3), ph,
                                                                  pw, x.data<T>(), out.data<T>());
    else
      nearest_fwd<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, x.size(2), x.size(3), out.size(2), out.size(3), ph,
                                                                 pw, x.data<T>(), out.data<T>());
  });
  check_launch(ctx, op);
}

void resize_backward(bool bilinear, const Tensor& g, const ResizeAxis& ah, const ResizeAxis& aw, Tensor& gx) {
  const char* op = bilinear ? "interpolate_bilinear_backward" : "interpolate_nearest_backward";
  KDET_CHECK(g.is_contiguous() && gx.is_contiguous() && g.ndim() == 4 && gx.ndim() == 4, op, " (cuda): bad layout");
  Context& ctx = activate(g, op);
  const int64_t n = gx.numel();
  if (n == 0) return;
  dispatch_float(g.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    resize_bwd<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(bilinear, n, gx.size(2), gx.size(3), g.size(2),
                                                              g.size(3), ptrs<T>(ah, bilinear), ptrs<T>(aw, bilinear),
                                                              g.data<T>(), gx.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
