// engine/ops/shape_ops.h — differentiable shape ops.
//
// reshape/view/permute/transpose/slice/unsqueeze/squeeze/expand return views that share storage with
// the input where the layout allows (reshape copies a non-contiguous input), like torch. concat and stack
// copy. Backward gradients are always materialised contiguous (gradients are values).
#pragma once
#include "engine/autograd.h"

namespace kdet {

namespace ops {
Tensor concat(const std::vector<Tensor>& xs, int axis);
Tensor stack(const std::vector<Tensor>& xs, int axis);
Tensor flatten(const Tensor& x, int start_dim, int end_dim = -1);
// Gradient helper: zeros of `shape` with g copied into x.slice(dim, begin, end, step).
Tensor slice_backward(const Tensor& g, const Shape& shape, int dim, int64_t begin, int64_t end, int64_t step);
}  // namespace ops

Var reshape(const Var& x, const Shape& s);  // one extent may be -1
Var view(const Var& x, const Shape& s);     // = reshape
Var permute(const Var& x, const std::vector<int>& order);
Var transpose(const Var& x, int a, int b);
Var flatten(const Var& x, int start_dim, int end_dim = -1);
Var concat(const std::vector<Var>& xs, int axis);
Var stack(const std::vector<Var>& xs, int axis);
Var slice(const Var& x, int dim, int64_t begin, int64_t end, int64_t step = 1);  // python-style clamping
Var select(const Var& x, int dim, int64_t index);  // drops dim
Var unsqueeze(const Var& x, int dim);
Var squeeze(const Var& x, int dim);
Var expand(const Var& x, const Shape& s);  // broadcast view; backward sums over the expanded dims
Var contiguous(const Var& x);

}  // namespace kdet
