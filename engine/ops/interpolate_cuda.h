// engine/ops/interpolate_cuda.h — CUDA kernels of engine/ops/interpolate.cpp (plain C++ declarations).
// The sampling tables are computed on the host by interpolate.cpp's own index functions (so both
// backends sample identically) and passed as device tensors.
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// One axis: output position d reads inputs i0[d] (weight l0[d]) and i1[d] (weight l1[d]); nearest uses
// i0 only (l0, l1, i1 undefined). Input position h is read by the outputs [lo[h], hi[h]) (the tables are
// monotone). i0, i1, lo, hi: i64; l0, l1: the data's dtype.
struct ResizeAxis {
  Tensor i0, i1, l0, l1, lo, hi;
};

// x, out contiguous NCHW.
void resize_forward(bool bilinear, const Tensor& x, const ResizeAxis& ah, const ResizeAxis& aw, Tensor& out);
// gx[n, c, h, w] = Σ over the outputs that read (h, w) of g · weight: one thread per input element,
// fixed order, no atomics.
void resize_backward(bool bilinear, const Tensor& g, const ResizeAxis& ah, const ResizeAxis& aw, Tensor& gx);

}  // namespace kdet::cuda
