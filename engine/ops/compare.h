// engine/ops/compare.h — non-differentiable comparisons, logical ops and index-producing ops.
//
// Comparisons broadcast NumPy-style and return bool tensors; operands share dtype (any non-bool dtype;
// eq/ne also accept bool). The *_scalar forms compare every element (converted to double) with v.
// Index results are i64. Sorting is stable: ties keep ascending index order, so results are
// deterministic (topk_indices = the first k of argsort(descending)).
#pragma once
#include "engine/tensor.h"

namespace kdet::ops {

Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);

Tensor gt_scalar(const Tensor& a, double v);
Tensor ge_scalar(const Tensor& a, double v);
Tensor lt_scalar(const Tensor& a, double v);
Tensor le_scalar(const Tensor& a, double v);
Tensor eq_scalar(const Tensor& a, double v);
Tensor ne_scalar(const Tensor& a, double v);

// bool inputs, broadcasting.
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& a);
// Number of true (non-zero) elements; any dtype.
int64_t count_nonzero(const Tensor& a);
bool any(const Tensor& a);
bool all(const Tensor& a);

// Indices (i64 [K], ascending) of the non-zero elements of a 1-D tensor (bool or any dtype).
Tensor nonzero(const Tensor& mask1d);
// Index of the first maximum along `axis` (axis removed from the shape); f32/f64/i64.
Tensor argmax(const Tensor& x, int axis, bool keepdim = false);
Tensor argmin(const Tensor& x, int axis, bool keepdim = false);
// Indices of the k largest values of a 1-D tensor, in descending value order (ties: lower index first).
Tensor topk_indices(const Tensor& x1d, int64_t k);
// Stable argsort of a 1-D tensor (ties keep ascending index order in both directions).
Tensor argsort(const Tensor& x1d, bool descending = false);

}  // namespace kdet::ops
