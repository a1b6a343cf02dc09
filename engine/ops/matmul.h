// engine/ops/matmul.h — matrix products on the shared GEMM (engine/gemm.h).
//
//   matmul(a, b): [M,K]×[K,N] -> [M,N], or batched [B,M,K]×[B,K,N] -> [B,M,N] (torch.matmul for these ranks).
//   linear(x, w, b): x [..., in], w [out, in] (torch layout), b [out] or undefined -> [..., out] = x·wᵀ + b.
//   Backward: dA = g·Bᵀ, dB = Aᵀ·g; for linear dx = g·w, dw = gᵀ·x (rows summed inside the GEMM's K loop
//   in a fixed order), db = Σ_rows g.
#pragma once
#include "engine/autograd.h"

namespace kdet {

namespace ops {
Tensor matmul(const Tensor& a, const Tensor& b);
// op(a)·op(b) for 2-D or batched 3-D operands (transposes are free: the GEMM packs them).
Tensor matmul_t(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b);
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b /*may be undefined*/);
}  // namespace ops

Var matmul(const Var& a, const Var& b);
Var linear(const Var& x, const Var& w, const Var& b /*may be undefined*/);

}  // namespace kdet
