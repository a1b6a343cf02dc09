// engine/ops/elementwise_cuda.h — CUDA kernels of engine/ops/elementwise.cpp (plain C++ declarations).
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// out = a (op) b with NumPy broadcasting; op is elementwise.cpp's BinOp as int: 0 add, 1 sub, 2 mul, 3 div.
// f32, f64, i64, u8 (as the CPU kernel). out: fresh contiguous tensor of the broadcast shape.
void binary(int op, const Tensor& a, const Tensor& b, Tensor& out);
// y += alpha * x (same shape; y contiguous), f32/f64.
void axpy(Tensor& y, const Tensor& x, double alpha);

}  // namespace kdet::cuda
