// engine/ops/conv2d_winograd.h — Winograd F(2×2, 3×3) f32 kernels for 3×3, stride 1, pad 1, dilation 1,
// groups 1 convolutions with ≥ 64 channels (engine/ops/conv2d_winograd.cpp; called by conv2d_cpu.cpp).
//
// Per 2×2 output tile t and input channel c: V = Bᵀ d B (d the 4×4 input tile, zero outside the image);
// per weight U = G g Gᵀ; for each of the 16 positions ξ, M_ξ (O × tiles) = U_ξ (O × C) · V_ξ (C × tiles)
// through the packed SGEMM; y = Aᵀ M A. Backward input is the same convolution with w'[c,o] = w[o,c]
// rotated 180°; backward weight: dU_ξ = Σ_t (A dY Aᵀ)_ξ · V_ξᵀ, dW = Gᵀ dU G. 2.25× fewer multiplies than
// im2col; the transforms use only ±1 and ±½, so f32 error stays at the level of the direct sum.
// Deterministic: fixed tile chunks, threads own disjoint outputs (forward, backward input) or disjoint
// ξ (backward weight), no reductions across threads.
#pragma once
#include "engine/ops/conv2d.h"

namespace kdet::cpu {

// True when the Winograd path handles this shape (f32 callers only); weight_grad: for the weight gradient.
bool winograd_applies(const Shape& x, const Shape& w, const Conv2dArgs& a, bool weight_grad = false);
// The kernels; shapes as in conv2d.h, operands contiguous f32.
void winograd_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y);
void winograd_backward_input(const Tensor& gy, const Tensor& w, Tensor& gx);
void winograd_backward_weight(const Tensor& gy, const Tensor& x, Tensor& gw);
// Test hook: 0 = automatic (default), 1 = always when the shape allows (any channel count), -1 = never.
void set_conv2d_winograd(int mode);

}  // namespace kdet::cpu
