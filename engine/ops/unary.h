// engine/ops/unary.h — pointwise math (abs/exp/log/sqrt/pow/clamp/sigmoid/relu/tanh) and where.
//
//   ops::*  plain Tensor kernels (no graph; f32/f64; any strides in, contiguous out).
//   kdet::* differentiable Var versions; backward is written next to forward in unary.cpp.
// Semantics follow torch: clamp passes the gradient where lo <= x <= hi (inclusive), 0 outside;
// relu passes it where x > 0; abs uses sign(x) (0 at 0). sigmoid is evaluated in the overflow-free
// form (no NaN/Inf for |x| large); pow(x, p) for non-integer p needs x >= 0 (NaN otherwise, as torch).
#pragma once
#include "engine/autograd.h"

namespace kdet {

namespace ops {
Tensor abs(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor pow(const Tensor& x, double p);
Tensor clamp(const Tensor& x, double lo, double hi);
Tensor clamp_min(const Tensor& x, double lo);
Tensor clamp_max(const Tensor& x, double hi);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sign(const Tensor& x);  // -1, 0, +1
// cond: bool tensor; cond, a and b broadcast together; a and b share dtype (any non-bool dtype).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// where(cond, a, scalar) — e.g. masked fill with a constant.
Tensor where(const Tensor& cond, const Tensor& a, double b);
}  // namespace ops

Var abs(const Var& x);
Var exp(const Var& x);
Var log(const Var& x);
Var sqrt(const Var& x);
Var pow(const Var& x, double p);
Var clamp(const Var& x, double lo, double hi);
Var clamp_min(const Var& x, double lo);
Var clamp_max(const Var& x, double hi);
Var sigmoid(const Var& x);
Var relu(const Var& x);
Var tanh(const Var& x);
Var where(const Tensor& cond, const Var& a, const Var& b);
Var where(const Tensor& cond, const Var& a, double b);

}  // namespace kdet
