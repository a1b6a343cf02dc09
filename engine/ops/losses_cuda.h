// engine/ops/losses_cuda.h — the CUDA path of engine/ops/losses.cpp: each differentiable loss with its
// forward and fused backward kernels (same formulas as the CPU; the box losses share
// engine/ops/box_loss_math.h). losses.cpp checks the operands and calls these for CUDA inputs.
#pragma once
#include "engine/autograd.h"

namespace kdet::cuda {

Var sigmoid_focal_loss(const Var& logits, const Tensor& target, double gamma, double alpha);
// kind: 0 smooth_l1 (param = beta > 0), 1 l1, 2 binary_cross_entropy_with_logits, 3 binary_cross_entropy.
Var pointwise_loss(int kind, const char* op, const Var& pred, const Tensor& target, double param);
// kind: 0 GIoU loss, 1/2/3 IoU loss linear / square / log.
Var box_loss(const char* op, const Var& pred, const Tensor& target, int kind, double eps);
Var cross_entropy(const Var& logits, const Tensor& labels, int64_t ignore_index);
// True when every element of p lies in [0, 1] (binary_cross_entropy's input check; NaN fails).
bool all_in_unit_interval(const Tensor& p);

}  // namespace kdet::cuda
