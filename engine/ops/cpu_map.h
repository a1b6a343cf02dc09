// engine/ops/cpu_map.h — CPU helpers for elementwise kernels (used by every pointwise op).
//   cpu_unary<T>(x, out, f)       out[i] = f(x[i])
//   cpu_binary<T>(a, b, out, f)   out[i] = f(a[i], b[i]) with NumPy broadcasting (out has the result shape)
// Contiguous same-shape operands take a flat OpenMP loop the compiler vectorises; anything else goes
// through the strided iterator. Static scheduling keeps results identical for a fixed thread count.
#pragma once
#include "engine/tensor.h"

namespace kdet::cpu {

constexpr int64_t kParallelGrain = 1 << 15;  // elements below which a loop stays on one thread

template <class T, class F>
void cpu_unary(const Tensor& x, Tensor& out, F f) {
  const Tensor xc = x.contiguous();
  const T* px = xc.data<T>();
  T* po = out.data<T>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) po[i] = f(px[i]);
}

// Strides of `t` broadcast to `shape` (0 on broadcast dims, leading dims added).
inline Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape st(shape.size(), 0);
  int lead = shape.ndim() - t.ndim();
  for (int i = 0; i < t.ndim(); ++i)
    st[lead + i] = (t.shape()[i] == 1 && shape[lead + i] != 1) ? 0 : t.strides()[i];
  return st;
}

template <class T, class R = T, class F>
void cpu_binary(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  R* po = out.data<R>();
  const int64_t n = out.numel();
  if (a.shape() == out.shape() && b.shape() == out.shape() && a.is_contiguous() && b.is_contiguous()) {
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
    return;
  }
  if (b.numel() == 1 && a.shape() == out.shape() && a.is_contiguous()) {  // tensor (op) scalar
    const T s = *pb;
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], s);
    return;
  }
  Shape sa = broadcast_strides(a, out.shape()), sb = broadcast_strides(b, out.shape());
  std::array<const Shape*, 3> st{&out.strides(), &sa, &sb};
  for_each_strided_parallel<3>(out.shape(), st, [&](const int64_t* off, int64_t len, const int64_t* in) {
    R* o = po + off[0];
    const T* x = pa + off[1];
    const T* y = pb + off[2];
    if (in[0] == 1 && in[1] == 1 && in[2] == 1) {
      for (int64_t i = 0; i < len; ++i) o[i] = f(x[i], y[i]);
    } else if (in[0] == 1 && in[1] == 1 && in[2] == 0) {
      const T yv = *y;
      for (int64_t i = 0; i < len; ++i) o[i] = f(x[i], yv);
    } else if (in[0] == 1 && in[1] == 0 && in[2] == 1) {
      const T xv = *x;
      for (int64_t i = 0; i < len; ++i) o[i] = f(xv, y[i]);
    } else {
      for (int64_t i = 0; i < len; ++i) o[i * in[0]] = f(x[i * in[1]], y[i * in[2]]);
    }
  });
}

}  // namespace kdet::cpu
