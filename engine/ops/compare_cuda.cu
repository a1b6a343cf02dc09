// engine/ops/compare_cuda.cu — comparisons, logical ops, count_nonzero and argmax/argmin on the GPU
// (CPU: compare.cpp).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/compare_cuda.h"

namespace kdet::cuda {

namespace {

template <int C>
struct Cmp {
  template <class T>
  __device__ bool operator()(T a, T b) const {
    if constexpr (C == 0)
      return a > b;
    else if constexpr (C == 1)
      return a >= b;
    else if constexpr (C == 2)
      return a < b;
    else if constexpr (C == 3)
      return a <= b;
    else if constexpr (C == 4)
      return a == b;
    else
      return a != b;
  }
};

struct CmpScalar {
  int c;
  double v;
  template <class T>
  __device__ bool operator()(T x) const {
    const double a = static_cast<double>(x);
    switch (c) {
      case 0: return a > v;
      case 1: return a >= v;
      case 2: return a < v;
      case 3: return a <= v;
      case 4: return a == v;
      default: return a != v;
    }
  }
};

struct And {
  __device__ bool operator()(bool a, bool b) const { return a && b; }
};
struct Or {
  __device__ bool operator()(bool a, bool b) const { return a || b; }
};
struct Not {
  __device__ bool operator()(bool a) const { return !a; }
};

template <class T>
__global__ void count_kernel(int64_t n, OffsetCalc<1> calc, const T* x, unsigned long long* count) {
  unsigned long long c = 0;
  KDET_GRID_STRIDE(i, n) {
    int64_t off[1];
    calc.get(i, off);
    c += x[off[0]] != T(0) ? 1 : 0;
  }
  if (c) atomicAdd(count, c);  // integer sum: exact, so the result does not depend on the order
}

// NaN-aware "a is greater than b" (NaN is the largest value), as compare.cpp's greater().
template <class T>
__device__ inline bool greater(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (a != a) return b == b;
    if (b != b) return false;
  }
  return a > b;
}

template <class T>
__global__ void arg_extreme_kernel(int64_t O, int64_t R, int64_t I, const T* x, int64_t* out, bool want_max) {
  KDET_GRID_STRIDE(t, O * I) {
    const int64_t o = t / I, i = t % I;
    const T* q = x + o * R * I + i;
    int64_t best = 0;
    T bv = q[0];
    for (int64_t r = 1; r < R; ++r) {
      const T v = q[r * I];
      if (want_max ? greater(v, bv) : greater(bv, v)) {
        bv = v;
        best = r;
      }
    }
    out[t] = best;
  }
}

}  // namespace

void compare(int cmp, const Tensor& a, const Tensor& b, Tensor& out) {
  const char* op = "compare";
  Context& ctx = activate(out, op);
  dispatch_all(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    switch (cmp) {
      case 0: launch_binary<T, bool>(ctx, "gt", a, b, out, Cmp<0>{}); break;
      case 1: launch_binary<T, bool>(ctx, "ge", a, b, out, Cmp<1>{}); break;
      case 2: launch_binary<T, bool>(ctx, "lt", a, b, out, Cmp<2>{}); break;
      case 3: launch_binary<T, bool>(ctx, "le", a, b, out, Cmp<3>{}); break;
      case 4: launch_binary<T, bool>(ctx, "eq", a, b, out, Cmp<4>{}); break;
      case 5: launch_binary<T, bool>(ctx, "ne", a, b, out, Cmp<5>{}); break;
      default: KDET_FAIL("compare (cuda): bad comparison code ", cmp);
    }
  });
}

void compare_scalar(int cmp, const Tensor& a, double v, Tensor& out) {
  const char* op = "compare_scalar";
  KDET_CHECK(cmp >= 0 && cmp <= 5, op, " (cuda): bad comparison code ", cmp);
  Context& ctx = activate(a, op);
  dispatch_all(a.dtype(), op,
               [&](auto tag) { launch_unary<decltype(tag), bool>(ctx, op, a, out, CmpScalar{cmp, v}); });
}

void logical(bool is_and, const Tensor& a, const Tensor& b, Tensor& out) {
  const char* op = is_and ? "logical_and" : "logical_or";
  Context& ctx = activate(out, op);
  if (is_and)
    launch_binary<bool, bool>(ctx, op, a, b, out, And{});
  else
    launch_binary<bool, bool>(ctx, op, a, b, out, Or{});
}

void logical_not(const Tensor& a, Tensor& out) {
  Context& ctx = activate(a, "logical_not");
  launch_unary<bool, bool>(ctx, "logical_not", a, out, Not{});
}

int64_t count_nonzero(const Tensor& a) {
  const char* op = "count_nonzero";
  Context& ctx = activate(a, op);
  const int64_t n = a.numel();
  if (n == 0) return 0;
  Tensor counter = Tensor::zeros({1}, DType::I64, a.device());
  const OffsetCalc<1> calc = make_offset_calc<1>(a.shape(), {&a.strides()}, op);
  dispatch_all(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    count_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(
        n, calc, a.data<T>(), reinterpret_cast<unsigned long long*>(counter.data<int64_t>()));
  });
  check_launch(ctx, op);
  return static_cast<int64_t>(counter.item());
}

void arg_extreme(const Tensor& x, int64_t O, int64_t R, int64_t I, bool want_max, Tensor& out) {
  const char* op = want_max ? "argmax" : "argmin";
  KDET_CHECK(x.is_contiguous() && out.is_contiguous() && R > 0, op, " (cuda): bad layout for ", x.desc());
  Context& ctx = activate(x, op);
  const int64_t n = O * I;
  if (n == 0) return;
  dispatch_all(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      KDET_FAIL(op, ": not defined for bool tensors");
    } else {
      arg_extreme_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(O, R, I, x.data<T>(), out.data<int64_t>(),
                                                                         want_max);
    }
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
