// engine/ops/reduce_cuda.h — CUDA kernels of engine/ops/reduce.cpp (plain C++ declarations).
// Inputs are contiguous [O, R] blocks (reduce.cpp moves the reduced dims last first).
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// out[o] = scale * Σ_r x[o, r], accumulated in double in a fixed order: R is cut into fixed 8192-element
// chunks, each summed by one block with a fixed tree, and the chunk sums of a row are added by a second
// pass with the same tree. The result depends only on the data, not on the GPU or the launch size.
void sum_rows(const Tensor& x, int64_t O, int64_t R, double scale, Tensor& out);
// out[o] = max (min) of x[o, :] (R > 0); idx (i64 [O], may be null) = first index of it; NaN wins and
// propagates. Same two-pass structure; the result is unique, hence deterministic.
void extreme_rows(const Tensor& x, int64_t O, int64_t R, bool is_max, Tensor& out, Tensor* idx);
// Gradient of max/min along one axis: gx [O, R, I] (zero-filled, contiguous) gets g[o, i] at r = idx[o, i].
void scatter_to_index(const Tensor& g, const Tensor& idx, int64_t O, int64_t R, int64_t I, Tensor& gx);

}  // namespace kdet::cuda
