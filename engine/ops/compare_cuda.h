// engine/ops/compare_cuda.h — CUDA kernels of engine/ops/compare.cpp (plain C++ declarations).
// nonzero / argsort / topk_indices have no kernel: compare.cpp runs them on a host copy (small index
// lists whose stable tie order matters), which keeps them bit-identical to the CPU.
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// cmp is compare.cpp's Cmp as int: 0 gt, 1 ge, 2 lt, 3 le, 4 eq, 5 ne. out: fresh bool tensor of the
// broadcast shape. Any dtype (bool: eq/ne only, checked by the caller).
void compare(int cmp, const Tensor& a, const Tensor& b, Tensor& out);
// out[i] = cmp(double(a[i]), v); a any dtype and strides, out bool of a's shape.
void compare_scalar(int cmp, const Tensor& a, double v, Tensor& out);
// bool inputs, broadcasting: is_and ? a && b : a || b.
void logical(bool is_and, const Tensor& a, const Tensor& b, Tensor& out);
void logical_not(const Tensor& a, Tensor& out);
int64_t count_nonzero(const Tensor& a);
// x contiguous viewed as [O, R, I]; out i64 [O * I] (contiguous): index of the first max (min) along R,
// NaN counting as the largest value (as the CPU kernel).
void arg_extreme(const Tensor& x, int64_t O, int64_t R, int64_t I, bool want_max, Tensor& out);

}  // namespace kdet::cuda
