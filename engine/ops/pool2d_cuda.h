// engine/ops/pool2d_cuda.h — CUDA kernels of engine/ops/pool2d.cpp (plain C++ declarations).
// x / gy contiguous NCHW; outputs preallocated by pool2d.cpp (which checks the shapes).
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// y, idx [N, C, Ho, Wo]: one thread per output, the CPU's window walk (first maximum, NaN wins).
void max_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y, Tensor& idx);
// gx (zero-filled [N, C, H, W]) += gy at idx: one thread per (n, c) plane adding its outputs in order
// (overlapping windows may share an input, so this keeps the CPU's summation order without atomics).
void max_pool2d_backward(const Tensor& gy, const Tensor& idx, int64_t k, int64_t s, int64_t p, Tensor& gx);
void avg_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, bool count_include_pad, Tensor& y);
// One thread per input element gathering the outputs whose window covers it (row-major order).
void avg_pool2d_backward(const Tensor& gy, int64_t k, int64_t s, int64_t p, bool count_include_pad, Tensor& gx);

}  // namespace kdet::cuda
