// engine/ops/softmax_cuda.h — CUDA kernels of engine/ops/softmax.cpp (plain C++ declarations).
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// x contiguous [O, R, I], the axis is R. mode (softmax.cpp's Mode as int): 0 softmax, 1 log_softmax
// (out like x), 2 logsumexp (out [O, I]). One thread per (o, i) column; sums in double, fixed order.
void softmax_forward(int mode, const Tensor& x, int64_t O, int64_t R, int64_t I, Tensor& out);
// mode 0: dx = y (g - Σ g y); mode 1: dx = g - exp(y) Σ g. g, y contiguous [O, R, I].
void softmax_backward(int mode, const Tensor& g, const Tensor& y, int64_t O, int64_t R, int64_t I, Tensor& dx);

}  // namespace kdet::cuda
