// engine/ops/deform_conv_cuda.h — CUDA kernels of engine/ops/deform_conv.cpp (plain C++ declarations).
// Operands contiguous, on one CUDA device, shapes and arguments already checked by deform_conv.cpp;
// outputs preallocated. Same semantics as the CPU kernels (engine/ops/deform_conv_cpu.cpp): the bilinear
// sampling rule, the out-of-map / NaN rules and the mask handling are the CPU's, expression for expression.
//
//   forward   per chunk of images: deformable im2col (one thread per column element) and, per image,
//             y[n] = W · col[n] as a cuBLAS GEMM batched over the groups; bias added by a kernel
//   backward  dW = Σₙ dy[n] · col[n]ᵀ (one GEMM batched over images × groups per chunk, then summed over the
//             images in order), dcol[n] = Wᵀ · dy[n] (cuBLAS), d offset / d mask one thread per
//             (image, deform group, tap, pixel) summing the group's channels in channel order, and dx by a
//             deterministic col2im: the (tap, pixel, corner) contributions of each deform group are
//             stably radix-sorted by their target input pixel (cub), and one thread per input element adds its
//             contributions in (tap, pixel, corner) order — no floating-point atomics, so every gradient is
//             bit-identical run to run (cuBLAS is deterministic for a fixed GPU and library version).
// TF32 for f32 only when allowed on the device (cuda::set_allow_tf32), like matmul / conv2d.
#pragma once
#include "engine/ops/deform_conv.h"

namespace kdet::cuda {

void deform_conv2d_forward(const Tensor& x, const Tensor& offset, const Tensor& mask /*may be undefined*/,
                           const Tensor& w, const Tensor& b /*may be undefined*/, Tensor& y, const DeformConvArgs& a);
// gx, goffset, gmask, gw: allocated outputs or undefined (not wanted); mask may be undefined (v1).
void deform_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& offset, const Tensor& mask,
                            const Tensor& w, Tensor& gx, Tensor& goffset, Tensor& gmask, Tensor& gw,
                            const DeformConvArgs& a);
// Device working memory per chunk of images (columns, column gradients, sort buffers) is sized from this many
// bytes (default 256 MiB; 0 restores it); a chunk holds at least one image. Tests shrink it to run several
// chunks.
void set_deform_conv2d_chunk_bytes(int64_t bytes);

}  // namespace kdet::cuda
