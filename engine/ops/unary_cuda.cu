// engine/ops/unary_cuda.cu — pointwise math and where on the GPU (CPU: unary.cpp; same formulas).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/unary_cuda.h"

namespace kdet::cuda {

namespace {

// One functor for every code: a switch on a kernel argument (uniform across the grid, so no divergence).
struct UnaryF {
  UnaryOp op;
  double p0, p1;
  template <class T>
  __device__ T operator()(T v) const {
    const T lo = static_cast<T>(p0), hi = static_cast<T>(p1);
    switch (op) {
      case UnaryOp::Abs: return dm::fabs(v);
      case UnaryOp::Exp: return dm::exp(v);
      case UnaryOp::Log: return dm::log(v);
      case UnaryOp::Sqrt: return dm::sqrt(v);
      case UnaryOp::Pow:
        if (p0 == 2.0) return v * v;
        if (p0 == 1.0) return v;
        if (p0 == 0.5) return dm::sqrt(v);
        return dm::pow(v, static_cast<T>(p0));
      case UnaryOp::Clamp: return dm::min(dm::max(v, lo), hi);
      case UnaryOp::ClampMin: return dm::max(v, lo);
      case UnaryOp::ClampMax: return dm::min(v, static_cast<T>(p0));
      case UnaryOp::Sigmoid: {  // overflow-free: e = exp(-|x|)
        const T e = dm::exp(-dm::fabs(v));
        const T s = T(1) / (T(1) + e);
        return v >= T(0) ? s : e * s;
      }
      case UnaryOp::Relu: return v > T(0) ? v : T(0);
      case UnaryOp::Tanh: return dm::tanh(v);
      case UnaryOp::Sign: return v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0));
      default: return v;  // unreachable: unary() rejects other codes on the host
    }
  }
};

struct Unary2F {
  UnaryOp op;
  double p0, p1;
  template <class T>
  __device__ T operator()(T g, T v) const {
    switch (op) {
      case UnaryOp::AbsBackward: return v > T(0) ? g : (v < T(0) ? -g : T(0));
      case UnaryOp::SqrtBackward: return g / (v + v);
      case UnaryOp::PowBackward:
        if (p0 == 1.0) return g;
        if (p0 == 2.0) return g * T(2) * v;
        return static_cast<T>(g * static_cast<T>(p0) * dm::pow(v, static_cast<T>(p0 - 1.0)));
      case UnaryOp::ClampBackward: return (v >= static_cast<T>(p0) && v <= static_cast<T>(p1)) ? g : T(0);
      case UnaryOp::ClampMinBackward: return v >= static_cast<T>(p0) ? g : T(0);
      case UnaryOp::ClampMaxBackward: return v <= static_cast<T>(p0) ? g : T(0);
      case UnaryOp::SigmoidBackward: return g * v * (T(1) - v);
      case UnaryOp::ReluBackward: return v > T(0) ? g : T(0);
      case UnaryOp::TanhBackward: return g * (T(1) - v * v);
      default: return g;  // unreachable: unary2() rejects other codes on the host
    }
  }
};

bool is_forward(UnaryOp op) { return op >= UnaryOp::Abs && op <= UnaryOp::Sign; }
bool is_backward(UnaryOp op) { return op >= UnaryOp::AbsBackward && op <= UnaryOp::TanhBackward; }

template <class T>
__global__ void where_kernel(int64_t n, OffsetCalc<4> calc, T* out, const bool* c, const T* a, const T* b) {
  KDET_GRID_STRIDE(i, n) {
    int64_t off[4];
    calc.get(i, off);
    out[off[0]] = c[off[1]] ? a[off[2]] : b[off[3]];
  }
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, Tensor& out, double p0, double p1) {
  const char* name = "unary";
  KDET_CHECK(is_forward(op), name, " (cuda): op code ", static_cast<int>(op), " has no CUDA kernel");
  Context& ctx = activate(x, name);
  dispatch_float(x.dtype(), name,
                 [&](auto tag) { launch_unary<decltype(tag), decltype(tag)>(ctx, name, x, out, UnaryF{op, p0, p1}); });
}

void unary2(UnaryOp op, const Tensor& a, const Tensor& b, Tensor& out, double p0, double p1) {
  const char* name = "unary_backward";
  KDET_CHECK(is_backward(op), name, " (cuda): op code ", static_cast<int>(op), " has no CUDA kernel");
  Context& ctx = activate(a, name);
  dispatch_float(a.dtype(), name, [&](auto tag) {
    launch_binary<decltype(tag), decltype(tag)>(ctx, name, a, b, out, Unary2F{op, p0, p1});
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  const char* op = "where";
  Context& ctx = activate(out, op);
  const int64_t n = out.numel();
  if (n == 0) return;
  const Shape sc = broadcast_strides_to(cond, out.shape()), sa = broadcast_strides_to(a, out.shape()),
              sb = broadcast_strides_to(b, out.shape());
  const OffsetCalc<4> calc = make_offset_calc<4>(out.shape(), {&out.strides(), &sc, &sa, &sb}, op);
  dispatch_all(out.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    where_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, calc, out.data<T>(), cond.data<bool>(),
                                                                a.data<T>(), b.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
