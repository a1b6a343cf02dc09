// engine/ops/elementwise.h — broadcasting binary arithmetic (matches torch.add/sub/mul/div).
//
//   out = a (op) b, shapes broadcast NumPy-style; both operands must share dtype and device.
//   Backward: d/da = g (·b, /b), reduced to a's shape with sum_to; likewise for b.
//
// ops::*  — plain Tensor kernels (no graph), used inside backward closures and by non-differentiable code.
// kdet::* — differentiable Var versions.
#pragma once
#include "engine/autograd.h"

namespace kdet {

namespace ops {
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, double s);
Tensor mul_scalar(const Tensor& a, double s);
Tensor neg(const Tensor& a);
// Sums g over the broadcast dimensions so the result has `shape` (the reverse of broadcasting).
Tensor sum_to(const Tensor& g, const Shape& shape);
// In place: y += alpha * x (same shape, contiguous y). For optimizers and accumulators.
void axpy_(Tensor& y, const Tensor& x, double alpha);
}  // namespace ops

Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
Var add(const Var& a, double s);
Var mul(const Var& a, double s);
Var neg(const Var& a);

inline Var operator+(const Var& a, const Var& b) { return add(a, b); }
inline Var operator-(const Var& a, const Var& b) { return sub(a, b); }
inline Var operator*(const Var& a, const Var& b) { return mul(a, b); }
inline Var operator/(const Var& a, const Var& b) { return div(a, b); }
inline Var operator+(const Var& a, double s) { return add(a, s); }
inline Var operator+(double s, const Var& a) { return add(a, s); }
inline Var operator-(const Var& a, double s) { return add(a, -s); }
inline Var operator-(double s, const Var& a) { return add(neg(a), s); }
inline Var operator*(const Var& a, double s) { return mul(a, s); }
inline Var operator*(double s, const Var& a) { return mul(a, s); }
inline Var operator/(const Var& a, double s) { return mul(a, 1.0 / s); }
inline Var operator-(const Var& a) { return neg(a); }

}  // namespace kdet
