// engine/ops/softmax.h — numerically stable softmax / log_softmax along one axis (negative axes ok).
//   softmax:     y = exp(x - max) / Σ exp(x - max)         backward: dx = y ⊙ (g - Σ g⊙y)
//   log_softmax: y = x - max - log Σ exp(x - max)          backward: dx = g - exp(y) ⊙ Σ g
// Sums accumulate in double; rows are independent and parallel over outer rows (deterministic).
#pragma once
#include "engine/autograd.h"

namespace kdet {

namespace ops {
Tensor softmax(const Tensor& x, int axis);
Tensor log_softmax(const Tensor& x, int axis);
Tensor logsumexp(const Tensor& x, int axis, bool keepdim = false);
Tensor softmax_backward(const Tensor& g, const Tensor& y, int axis);
Tensor log_softmax_backward(const Tensor& g, const Tensor& y, int axis);
}  // namespace ops

Var softmax(const Var& x, int axis);
Var log_softmax(const Var& x, int axis);
Var logsumexp(const Var& x, int axis, bool keepdim = false);

}  // namespace kdet
