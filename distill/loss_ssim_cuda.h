// distill/loss_ssim_cuda.h — CUDA kernels of the fused SSIM-KD ops of distill/loss_ssim.cpp (plain C++
// declarations; distill/loss_ssim_cuda.cu, compiled only with the CUDA backend). The Gaussian filtering itself
// runs as ops::sep_filter2d (a depthwise cuDNN conv on CUDA); these kernels do the per-element SSIM algebra and
// the per-plane reductions with the CPU's expressions. Sums in double, fixed block-tree orders: bit-identical
// run to run. Operands contiguous, on one CUDA device; outputs preallocated.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace kdet::cuda {

// f5 [N, 5·C, H, W]: the filtered x, y, x², y², xy (channel block k at k·C). Writes the coefficient maps
// abc [N·C, 3, H, W], the SSIM map [N, C, H, W] when defined, and plane_loss f64 [N·C] = Σ_plane (1 − SSIM).
void kd_ssim_coeffs(const Tensor& f5, int64_t C, double C1, double C2, Tensor& abc, Tensor& map, Tensor& plane_loss);
// dx [P, H, W] = v or gs·v (scale), v = f3[:, 0] + y ⊙ f3[:, 1] + x ⊙ f3[:, 2]; f3 [P, 3, H, W] the filtered
// (G ⊙) coefficient maps, x and y [P, H, W].
void kd_ssim_combine(const Tensor& x, const Tensor& y, const Tensor& f3, bool scale, double gs, Tensor& dx);
// Per plane of x [P, HW]: mn, mx [P] (x's dtype) and out = (x − mn)/(mx − mn + eps).
void kd_minmax_forward(const Tensor& x, double eps, Tensor& out, Tensor& mn, Tensor& mx);
// dx of kd_minmax_normalize (distill/loss_ssim.h) from the upstream g and the forward's out, mn, mx.
void kd_minmax_backward(const Tensor& g, const Tensor& x, const Tensor& out, const Tensor& mn, const Tensor& mx,
                        double eps, Tensor& dx);

}  // namespace kdet::cuda
