// engine/ops/conv2d_cuda.h — CUDA kernels of engine/ops/conv2d.cpp (plain C++ declarations): cuDNN.
// Operands contiguous (NCHW / OIHW), shapes already checked by conv2d.cpp; outputs preallocated.
#pragma once
#include "engine/ops/conv2d.h"

namespace kdet::cuda {

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b /*may be undefined*/, Tensor& y,
                    const Conv2dArgs& a);
void conv2d_backward_input(const Tensor& gy, const Tensor& w, Tensor& gx, const Conv2dArgs& a);
void conv2d_backward_weight(const Tensor& gy, const Tensor& x, Tensor& gw, const Conv2dArgs& a);

}  // namespace kdet::cuda
