// engine/cuda/pointwise.cuh — elementwise kernels with NumPy broadcasting, and device math overloads.
//
//   launch_unary<T, R>(ctx, op, x, out, f)      out[i] = f(x[i])           (x any strides, out fresh)
//   launch_binary<T, R>(ctx, op, a, b, out, f)  out[i] = f(a[i], b[i])     (a, b broadcast to out's shape)
// f is a functor with a __device__ operator(). One thread per output element (grid-stride), so results
// do not depend on the launch configuration.
#pragma once
#include "engine/cuda/launch.cuh"

namespace kdet::cuda {

// Device math with explicit float/double overloads (no accidental promotion to double).
namespace dm {
__device__ inline float exp(float x) { return ::expf(x); }
__device__ inline double exp(double x) { return ::exp(x); }
__device__ inline float log(float x) { return ::logf(x); }
__device__ inline double log(double x) { return ::log(x); }
__device__ inline float log1p(float x) { return ::log1pf(x); }
__device__ inline double log1p(double x) { return ::log1p(x); }
__device__ inline float sqrt(float x) { return ::sqrtf(x); }
__device__ inline double sqrt(double x) { return ::sqrt(x); }
__device__ inline float tanh(float x) { return ::tanhf(x); }
__device__ inline double tanh(double x) { return ::tanh(x); }
__device__ inline float pow(float x, float p) { return ::powf(x, p); }
__device__ inline double pow(double x, double p) { return ::pow(x, p); }
__device__ inline float fabs(float x) { return ::fabsf(x); }
__device__ inline double fabs(double x) { return ::fabs(x); }
__device__ inline bool isnan(float x) { return x != x; }
__device__ inline bool isnan(double x) { return x != x; }
template <class T>
__device__ inline T inf();
template <>
__device__ inline float inf<float>() { return __int_as_float(0x7f800000); }
template <>
__device__ inline double inf<double>() { return __longlong_as_double(0x7ff0000000000000LL); }
template <class T>
__device__ inline T quiet_nan();
template <>
__device__ inline float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <>
__device__ inline double quiet_nan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }
template <class T>
__device__ inline bool isinf(T x) { return x == inf<T>() || x == -inf<T>(); }
// std::max / std::min semantics (the first argument wins ties; a NaN first argument is returned).
template <class T>
__host__ __device__ inline T max(T a, T b) { return (a < b) ? b : a; }
template <class T>
__host__ __device__ inline T min(T a, T b) { return (b < a) ? b : a; }
}  // namespace dm

template <class T, class R, class F>
__global__ void unary_kernel(int64_t n, OffsetCalc<2> calc, R* out, const T* x, F f) {
  KDET_GRID_STRIDE(i, n) {
    int64_t off[2];
    calc.get(i, off);
    out[off[0]] = f(x[off[1]]);
  }
}

template <class T, class R, class F>
__global__ void binary_kernel(int64_t n, OffsetCalc<3> calc, R* out, const T* a, const T* b, F f) {
  KDET_GRID_STRIDE(i, n) {
    int64_t off[3];
    calc.get(i, off);
    out[off[0]] = f(a[off[1]], b[off[2]]);
  }
}

template <class T, class R, class F>
void launch_unary(Context& ctx, const char* op, const Tensor& x, Tensor& out, F f) {
  KDET_CHECK(x.shape() == out.shape(), op, " (cuda): ", x.desc(), " -> ", out.desc());
  const int64_t n = out.numel();
  if (n == 0) return;
  const OffsetCalc<2> calc = make_offset_calc<2>(out.shape(), {&out.strides(), &x.strides()}, op);
  unary_kernel<T, R, F><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, calc, out.data<R>(), x.data<T>(), f);
  check_launch(ctx, op);
}

template <class T, class R, class F>
void launch_binary(Context& ctx, const char* op, const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const Shape sa = broadcast_strides_to(a, out.shape()), sb = broadcast_strides_to(b, out.shape());
  const OffsetCalc<3> calc = make_offset_calc<3>(out.shape(), {&out.strides(), &sa, &sb}, op);
  binary_kernel<T, R, F><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, calc, out.data<R>(), a.data<T>(),
                                                                      b.data<T>(), f);
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
