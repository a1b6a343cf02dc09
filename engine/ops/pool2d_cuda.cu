// engine/ops/pool2d_cuda.cu — max / average pooling on the GPU (CPU: pool2d.cpp, same window rules).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/pool2d_cuda.h"

namespace kdet::cuda {

namespace {

template <class T>
__global__ void max_pool_fwd(int64_t n, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t k, int64_t s, int64_t p,
                             const T* x, T* y, int64_t* idx) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t ow = i % Wo, oh = (i / Wo) % Ho, pl = i / (Wo * Ho);
    const T* xp = x + pl * H * W;
    const int64_t h0 = oh * s - p, h1 = dm::min(h0 + k, H);
    const int64_t w0 = ow * s - p, w1 = dm::min(w0 + k, W);
    const int64_t hs = dm::max<int64_t>(h0, 0), ws = dm::max<int64_t>(w0, 0);
    T best = -dm::inf<T>();
    int64_t bi = hs * W + ws;
    bool done = false;
    for (int64_t h = hs; h < h1 && !done; ++h)
      for (int64_t w = ws; w < w1; ++w) {
        const T v = xp[h * W + w];
        if (v > best || v != v) {
          best = v;
          bi = h * W + w;
          if (v != v) {
            done = true;
            break;
          }
        }
      }
    y[i] = best;
    idx[i] = bi;
  }
}


// Window of output (oh, ow) as in pool2d.cpp's avg_windows: clipped bounds and the divisor.
struct AvgWin {
  int64_t h0, h1, w0, w1, div;
};
__device__ inline AvgWin avg_window(int64_t oh, int64_t ow, int64_t H, int64_t W, int64_t k, int64_t s, int64_t p,
                                    bool cip) {
  AvgWin r;
  int64_t h0 = oh * s - p, h1 = dm::min(h0 + k, H + p);
  const int64_t ph = h1 - h0;
  h0 = dm::max<int64_t>(h0, 0);
  h1 = dm::min(h1, H);
  int64_t w0 = ow * s - p, w1 = dm::min(w0 + k, W + p);
  const int64_t pw = w1 - w0;
  w0 = dm::max<int64_t>(w0, 0);
  w1 = dm::min(w1, W);
  r.h0 = h0, r.h1 = h1, r.w0 = w0, r.w1 = w1;
  r.div = cip ? ph * pw : (h1 - h0) * (w1 - w0);
  return r;
}

template <class T>
__global__ void avg_pool_fwd(int64_t n, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t k, int64_t s, int64_t p,
                             bool cip, const T* x, T* y) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t ow = i % Wo, oh = (i / Wo) % Ho, pl = i / (Wo * Ho);
    const T* xp = x + pl * H * W;
    const AvgWin a = avg_window(oh, ow, H, W, k, s, p, cip);
    T acc = 0;
    for (int64_t h = a.h0; h < a.h1; ++h)
      for (int64_t w = a.w0; w < a.w1; ++w) acc += xp[h * W + w];
    y[i] = a.div > 0 ? acc / T(a.div) : T(0);
  }
}

// Outputs o along one axis whose window [o*s - p, o*s - p + k) contains input position h: [lo, hi].
__device__ inline void covering(int64_t h, int64_t k, int64_t s, int64_t p, int64_t O, int64_t& lo, int64_t& hi) {
  const int64_t a = h + p - k + 1;  // o*s >= a
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  hi = dm::min((h + p) / s, O - 1);  // o*s <= h + p
}

// One thread per input element: the sum of g over the output windows that cover it and picked it, in output
// order (row-major), which is the order of the CPU's per-plane scatter, so the sums are the same bit for bit.
template <class T>
__global__ void max_pool_bwd(int64_t n, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t k, int64_t s, int64_t p,
                             const T* g, const int64_t* idx, T* gx) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t w = i % W, h = (i / W) % H, pl = i / (W * H);
    const T* gp = g + pl * Ho * Wo;
    const int64_t* ip = idx + pl * Ho * Wo;
    const int64_t j = h * W + w;
    int64_t ohl, ohh, owl, owh;
    covering(h, k, s, p, Ho, ohl, ohh);
    covering(w, k, s, p, Wo, owl, owh);
    T acc = 0;
    for (int64_t oh = ohl; oh <= ohh; ++oh)
      for (int64_t ow = owl; ow <= owh; ++ow)
        if (ip[oh * Wo + ow] == j) acc += gp[oh * Wo + ow];
    gx[i] = acc;
  }
}

template <class T>
__global__ void avg_pool_bwd(int64_t n, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t k, int64_t s, int64_t p,
                             bool cip, const T* g, T* gx) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t w = i % W, h = (i / W) % H, pl = i / (W * H);
    const T* gp = g + pl * Ho * Wo;
    int64_t ohl, ohh, owl, owh;
    covering(h, k, s, p, Ho, ohl, ohh);
    covering(w, k, s, p, Wo, owl, owh);
    T acc = 0;
    for (int64_t oh = ohl; oh <= ohh; ++oh)
      for (int64_t ow = owl; ow <= owh; ++ow) {
        const AvgWin a = avg_window(oh, ow, H, W, k, s, p, cip);
        if (a.div <= 0 || h < a.h0 || h >= a.h1 || w < a.w0 || w >= a.w1) continue;
        acc += gp[oh * Wo + ow] / T(a.div);
      }
    gx[i] = acc;
  }
}

void check_nchw(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    KDET_CHECK(t->ndim() == 4 && t->is_contiguous(), op, " (cuda): expected a contiguous NCHW tensor, got ", t->desc());
}

}  // namespace

void max_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y, Tensor& idx) {
  const char* op = "max_pool2d";
  check_nchw(op, {&x, &y, &idx});
  Context& ctx = activate(x, op);
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    max_pool_fwd<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, x.size(2), x.size(3), y.size(2), y.size(3), k, s, p,
                                                                x.data<T>(), y.data<T>(), idx.data<int64_t>());
  });
  check_launch(ctx, op);
}

void max_pool2d_backward(const Tensor& gy, const Tensor& idx, int64_t k, int64_t s, int64_t p, Tensor& gx) {
  const char* op = "max_pool2d_backward";
  check_nchw(op, {&gy, &idx, &gx});
  Context& ctx = activate(gy, op);
  const int64_t n = gx.numel();
  if (n == 0) return;
  dispatch_float(gy.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    max_pool_bwd<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, gx.size(2), gx.size(3), gy.size(2), gy.size(3), k, s,
                                                                p, gy.data<T>(), idx.data<int64_t>(), gx.data<T>());
  });
  check_launch(ctx, op);
}

void avg_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, bool cip, Tensor& y) {
  const char* op = "avg_pool2d";
  check_nchw(op, {&x, &y});
  Context& ctx = activate(x, op);
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    avg_pool_fwd<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, x.size(2), x.size(3), y.size(2), y.size(3), k, s, p,
                                                                cip, x.data<T>(), y.data<T>());
  });
  check_launch(ctx, op);
}

void avg_pool2d_backward(const Tensor& gy, int64_t k, int64_t s, int64_t p, bool cip, Tensor& gx) {
  const char* op = "avg_pool2d_backward";
  check_nchw(op, {&gy, &gx});
  Context& ctx = activate(gy, op);
  const int64_t n = gx.numel();
  if (n == 0) return;
  dispatch_float(gy.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    avg_pool_bwd<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, gx.size(2), gx.size(3), gy.size(2), gy.size(3), k,
                                                                s, p, cip, gy.data<T>(), gx.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
