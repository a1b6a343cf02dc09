// engine/ops/softmax_cuda.cu — softmax / log_softmax / logsumexp and their gradients on the GPU
// (CPU: softmax.cpp, same formulas: max-shifted, NaN propagates, an all -inf column gives torch's NaN).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/softmax_cuda.h"

namespace kdet::cuda {

namespace {

template <class T>
__global__ void softmax_fwd_kernel(int mode, int64_t O, int64_t R, int64_t I, const T* x, T* y) {
  KDET_GRID_STRIDE(t, O * I) {
    const int64_t o = t / I, i = t % I;
    const T* q = x + o * R * I + i;
    T m = -dm::inf<T>();
    bool nan = false;
    for (int64_t r = 0; r < R; ++r) {
      const T v = q[r * I];
      if (v != v) nan = true;
      m = v > m ? v : m;
    }
    if (nan) m = dm::quiet_nan<T>();
    if (dm::isinf(m)) m = T(0);  // all -inf (or +inf present): let the arithmetic give torch's NaN / 0
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += static_cast<double>(dm::exp(q[r * I] - m));
    if (mode == 2) {
      y[t] = static_cast<T>(static_cast<double>(m) + ::log(s));
      continue;
    }
    T* out = y + o * R * I + i;
    if (mode == 0) {
      const T inv = static_cast<T>(1.0 / s);
      for (int64_t r = 0; r < R; ++r) out[r * I] = dm::exp(q[r * I] - m) * inv;
    } else {
      const T ls = static_cast<T>(::log(s));
      for (int64_t r = 0; r < R; ++r) out[r * I] = (q[r * I] - m) - ls;
    }
  }
}

template <class T>
__global__ void softmax_bwd_kernel(int mode, int64_t O, int64_t R, int64_t I, const T* g, const T* y, T* dx) {
  KDET_GRID_STRIDE(t, O * I) {
    const int64_t o = t / I, i = t % I;
    const int64_t base = o * R * I + i;
    double acc = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t k = base + r * I;
      acc += mode == 0 ? static_cast<double>(g[k]) * static_cast<double>(y[k]) : static_cast<double>(g[k]);
    }
    const T a = static_cast<T>(acc);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t k = base + r * I;
      dx[k] = mode == 0 ? y[k] * (g[k] - a) : g[k] - dm::exp(y[k]) * a;
    }
  }
}

}  // namespace

void softmax_forward(int mode, const Tensor& x, int64_t O, int64_t R, int64_t I, Tensor& out) {
  const char* op = mode == 0 ? "softmax" : mode == 1 ? "log_softmax" : "logsumexp";
  KDET_CHECK(mode >= 0 && mode <= 2 && x.is_contiguous() && out.is_contiguous(), op, " (cuda): bad call");
  Context& ctx = activate(x, op);
  if (O * I == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    softmax_fwd_kernel<T><<<grid_for(O * I), kThreads, 0, ctx.stream()>>>(mode, O, R, I, x.data<T>(), out.data<T>());
  });
  check_launch(ctx, op);
}

void softmax_backward(int mode, const Tensor& g, const Tensor& y, int64_t O, int64_t R, int64_t I, Tensor& dx) {
  const char* op = mode == 0 ? "softmax_backward" : "log_softmax_backward";
  KDET_CHECK((mode == 0 || mode == 1) && g.is_contiguous() && y.is_contiguous() && dx.is_contiguous(), op,
             " (cuda): bad call");
  Context& ctx = activate(y, op);
  if (O * I == 0) return;
  dispatch_float(y.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    softmax_bwd_kernel<T><<<grid_for(O * I), kThreads, 0, ctx.stream()>>>(mode, O, R, I, g.data<T>(), y.data<T>(),
                                                                          dx.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
