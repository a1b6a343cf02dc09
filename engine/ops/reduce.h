// engine/ops/reduce.h — sum/mean/max/min/amax/amin over axes.
//
// Axes may be negative; an empty axis list means "all axes". keepdim keeps reduced dims as size 1.
// Deterministic: every output element is accumulated in a fixed order that does not depend on the
// thread count (long rows are split into fixed 8192-element chunks whose partial sums are combined
// serially). f32 sums accumulate in double, so sums over millions of elements stay accurate.
// max/min(x, axis) return values and send the gradient to the first extreme index (torch semantics);
// amax/amin split the gradient evenly between tied extremes (torch semantics). NaN propagates.
#pragma once
#include <utility>

#include "engine/autograd.h"

namespace kdet {

namespace ops {
Tensor sum(const Tensor& x);  // all -> shape {}
Tensor sum(const Tensor& x, const std::vector<int>& axes, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int>& axes, bool keepdim = false);
Tensor amax(const Tensor& x, const std::vector<int>& axes, bool keepdim = false);
Tensor amin(const Tensor& x, const std::vector<int>& axes, bool keepdim = false);
// {values, i64 indices of the first extreme} along one axis.
std::pair<Tensor, Tensor> max(const Tensor& x, int axis, bool keepdim = false);
std::pair<Tensor, Tensor> min(const Tensor& x, int axis, bool keepdim = false);
// Sum of all elements as a double (any float dtype), e.g. for logging and normalisers.
double sum_all(const Tensor& x);
// The values of one-element tensors (any float dtype, any devices) with one device->host copy per device,
// not one per tensor (each copy from a GPU waits for its queue: per-parameter checks stay one sync).
std::vector<double> scalar_values(const std::vector<Tensor>& xs);
}  // namespace ops

Var sum(const Var& x);
Var sum(const Var& x, const std::vector<int>& axes, bool keepdim = false);
Var mean(const Var& x);
Var mean(const Var& x, const std::vector<int>& axes, bool keepdim = false);
Var max(const Var& x, int axis, bool keepdim = false);  // values; gradient to the first argmax
Var min(const Var& x, int axis, bool keepdim = false);  // values; gradient to the first argmin
Var amax(const Var& x, const std::vector<int>& axes, bool keepdim = false);
Var amin(const Var& x, const std::vector<int>& axes, bool keepdim = false);

}  // namespace kdet
