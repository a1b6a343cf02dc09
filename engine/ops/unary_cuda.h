// engine/ops/unary_cuda.h — CUDA kernels of engine/ops/unary.cpp (plain C++; the op codes below are also
// compiled into CPU-only builds, where unary.cpp passes them along unused).
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// Pointwise functions, with the same formulas as unary.cpp's CPU lambdas. p0/p1: pow's exponent,
// clamp's lo/hi, clamp_min's lo, clamp_max's hi. The *Backward codes take (g, v) where v is the
// forward input x (abs, pow, clamp*) or its output y (sqrt, sigmoid, relu, tanh).
enum class UnaryOp {
  None,  // no CUDA kernel
  Abs, Exp, Log, Sqrt, Pow, Clamp, ClampMin, ClampMax, Sigmoid, Relu, Tanh, Sign,
  AbsBackward, SqrtBackward, PowBackward, ClampBackward, ClampMinBackward, ClampMaxBackward,
  SigmoidBackward, ReluBackward, TanhBackward,
};

// out[i] = f(x[i]); x any strides, out fresh contiguous of x's shape; f32/f64.
void unary(UnaryOp op, const Tensor& x, Tensor& out, double p0, double p1);
// out = f(a, b) with broadcasting (a = g, b = v of the *Backward codes); f32/f64.
void unary2(UnaryOp op, const Tensor& a, const Tensor& b, Tensor& out, double p0, double p1);
// out = cond ? a : b with broadcasting; cond bool, a/b any non-bool dtype (bool too).
void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out);

}  // namespace kdet::cuda
