// engine/ops/norm_cuda.h — the CUDA path of engine/ops/norm.cpp: batch_norm and the grouped norms
// (group_norm, layer_norm), forward and backward, with the CPU's math and reduction structure
// (per-plane / per-row partial sums in double, combined in a fixed order). norm.cpp checks the
// arguments and calls these for CUDA inputs; x, w, b are the contiguous data of xv, weight, bias.
#pragma once
#include "engine/autograd.h"

namespace kdet::cuda {

Var batch_norm(const Var& xv, const Var& weight, const Var& bias, const Tensor& x, const Tensor& w, const Tensor& b,
               Tensor& running_mean, Tensor& running_var, bool training, bool track, double momentum, double eps,
               int64_t N, int64_t C, int64_t S, const Shape& param_shape);

// x viewed as [R = N*G rows, M = Cg*S]; channel of element j of row r: (r % G) * Cg + j / S.
Var grouped_norm(const char* op, const Var& xv, const Var& weight, const Var& bias, const Tensor& x, const Tensor& w,
                 const Tensor& b, int64_t R, int64_t G, int64_t Cg, int64_t S, double eps, const Shape& param_shape);

}  // namespace kdet::cuda
