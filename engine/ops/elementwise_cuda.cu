// engine/ops/elementwise_cuda.cu — broadcasting add/sub/mul/div and axpy on the GPU (CPU: elementwise.cpp).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/elementwise_cuda.h"

namespace kdet::cuda {

namespace {

template <int Op>
struct Arith {
  template <class T>
  __device__ T operator()(T x, T y) const {
    if constexpr (Op == 0)
      return static_cast<T>(x + y);
    else if constexpr (Op == 1)
      return static_cast<T>(x - y);
    else if constexpr (Op == 2)
      return static_cast<T>(x * y);
    else
      return static_cast<T>(x / y);
  }
};

template <class T>
__global__ void axpy_kernel(int64_t n, T* y, const T* x, T a) {
  KDET_GRID_STRIDE(i, n) { y[i] += a * x[i]; }
}

const char* binop_name(int op) {
  switch (op) {
    case 0: return "add";
    case 1: return "sub";
    case 2: return "mul";
    case 3: return "div";
  }
  return "binary";
}

}  // namespace

void binary(int op, const Tensor& a, const Tensor& b, Tensor& out) {
  const char* name = binop_name(op);
  KDET_CHECK(op >= 0 && op <= 3, "binary (cuda): bad op code ", op);
  Context& ctx = activate(out, name);
  dispatch_all(out.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      KDET_FAIL(name, ": not defined for bool tensors");
    } else {
      switch (op) {
        case 0: launch_binary<T, T>(ctx, name, a, b, out, Arith<0>{}); break;
        case 1: launch_binary<T, T>(ctx, name, a, b, out, Arith<1>{}); break;
        case 2: launch_binary<T, T>(ctx, name, a, b, out, Arith<2>{}); break;
        default: launch_binary<T, T>(ctx, name, a, b, out, Arith<3>{}); break;
      }
    }
  });
}

void axpy(Tensor& y, const Tensor& x, double alpha) {
  const char* op = "axpy_";
  KDET_CHECK(y.device() == x.device(), op, ": ", y.desc(), " vs ", x.desc());
  Context& ctx = activate(y, op);
  const Tensor xc = x.contiguous();
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_float(y.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    axpy_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, y.data<T>(), xc.data<T>(), static_cast<T>(alpha));
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
