// engine/ops/deform_conv.h — deformable convolution v1 (mmcv DeformConv2d) and modulated v2 (mmcv
// ModulatedDeformConv2d), equal to torchvision.ops.deform_conv2d(x, offset, w, b, stride, padding,
// dilation, mask).
//
//   x      [N, Cin, H, W]
//   offset [N, 2·DG·KH·KW, Ho, Wo]   DG = deform_groups; for group g and kernel tap k = i·KW + j (row-major)
//                                     channel g·2·KK + 2k is the row (y) offset, g·2·KK + 2k + 1 the column (x)
//                                     offset (mmcv's layout; torchvision's is the same)
//   mask   [N, DG·KH·KW, Ho, Wo]      channel g·KK + k (v2; undefined = v1, i.e. mask ≡ 1)
//   w      [Cout, Cin/groups, KH, KW], b [Cout] or undefined  ->  y [N, Cout, Ho, Wo]
//   Ho = (H + 2·pad_h − dil_h·(KH−1) − 1) / stride_h + 1   (likewise Wo)
//
// Tap (i, j) of output pixel (ho, wo) samples input channel c (deform group g = c / (Cin/DG)) at
//   h = ho·stride_h − pad_h + i·dil_h + offset_y,  w = wo·stride_w − pad_w + j·dil_w + offset_x
// bilinearly: 0 when h <= −1, h >= H, w <= −1 or w >= W; otherwise the four integer neighbours weighted
// (1−lh)(1−lw), (1−lh)lw, lh(1−lw), lh·lw with corners outside the map reading 0. The sample is multiplied
// by mask (v2); y = Σ_{c,i,j} w[co, c, i, j] · sample + b[co]. Zero offsets (and mask 1) give conv2d.
// d offset follows mmcv: 0 for a sample outside (−1, H) × (−1, W). torchvision agrees everywhere except exactly
// on h = −1 or w = −1, where it returns the one-sided derivative (checked with torchvision 0.14: measure zero).
// A NaN offset gives a NaN sample (not "outside"), so a diverging offset branch is visible.
//
// Inputs smaller than the kernel (H < KH or W < KW, allowed whenever Ho, Wo >= 1 thanks to padding) are
// computed directly. mmcv's DeformConv2d.forward instead zero-pads x and offset at the bottom/right to
// (KH, KW), runs the op and crops the output: the kept outputs and all gradients are identical, because the
// padded rows/columns are zeros and the rule above already reads zeros there.
//
// CPU: per image and chunk of output pixels, a deformable im2col (per (deform group, tap, pixel) the four
// corner indices and weights are computed once and shared by the group's channels) feeds the packed GEMM of
// engine/gemm.h, as conv2d does. Backward recomputes the columns (dW = Σₙ dy · colᵀ) and forms
// dcol = Wᵀ · dy, from which dx is scattered per input channel plane (each thread owns whole planes, taps
// and pixels added in a fixed order: no atomics) and d offset / d mask are reduced over the group's
// channels in channel order. Deterministic for a fixed thread count; y and the x / offset / mask gradients are
// even independent of it (only dW sums per-thread partials). Small problems (N·Cin·KH·KW·Ho·Wo < 65536) run on
// one thread. f32 and f64.
// CUDA (engine/ops/deform_conv_cuda.cu): the same sampling rules; im2col + cuBLAS, d offset / d mask per sample
// over the group's channels in channel order, dx by a sorted gather (no atomics): bit-identical run to run.
#pragma once
#include <array>

#include "engine/autograd.h"

namespace kdet {

struct DeformConvArgs {
  std::array<int64_t, 2> stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1, deform_groups = 1;
  static DeformConvArgs make(int64_t stride, int64_t pad, int64_t dilation = 1, int64_t groups = 1,
                             int64_t deform_groups = 1) {
    DeformConvArgs a;
    a.stride = {stride, stride};
    a.padding = {pad, pad};
    a.dilation = {dilation, dilation};
    a.groups = groups;
    a.deform_groups = deform_groups;
    return a;
  }
};

// Which gradients deform_conv2d_backward computes (the others come back undefined).
struct DeformConvNeeds {
  bool x = true, offset = true, mask = true, w = true, b = true;
};

namespace ops {
// Validates all shapes/args (throws naming the op and the shapes) and returns the output shape.
Shape deform_conv2d_output_shape(const Shape& x, const Shape& offset, const Shape* mask, const Shape& w,
                                 const DeformConvArgs& a);
// x [N,Cin,H,W], offset [N, 2*dg*kh*kw, Ho, Wo], mask [N, dg*kh*kw, Ho, Wo] or undefined (v1),
// weight [Cout, Cin/groups, kh, kw], bias [Cout] or undefined
Tensor deform_conv2d(const Tensor& x, const Tensor& offset, const Tensor& mask, const Tensor& w, const Tensor& b,
                     const DeformConvArgs& a);
// returns grads {x, offset, mask (undefined if no mask), w, b (undefined if no bias)}
std::array<Tensor, 5> deform_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& offset,
                                             const Tensor& mask, const Tensor& w, bool has_bias,
                                             const DeformConvArgs& a);
// Same, computing only the gradients selected by `need` (the others are undefined).
std::array<Tensor, 5> deform_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& offset,
                                             const Tensor& mask, const Tensor& w, bool has_bias,
                                             const DeformConvArgs& a, const DeformConvNeeds& need);
}  // namespace ops

// Differentiable; gradients flow to x, offset, mask, w and b.
Var deform_conv2d(const Var& x, const Var& offset, const Var& mask /*undefined Var = v1*/, const Var& w,
                  const Var& b /*undefined = no bias*/, const DeformConvArgs& a);

namespace cpu {  // kernels (engine/ops/deform_conv_cpu.cpp); contiguous operands, shapes already checked
template <class T>
void deform_conv2d_forward(const Tensor& x, const Tensor& offset, const Tensor& mask, const Tensor& w,
                           const Tensor& b, Tensor& y, const DeformConvArgs& a);
// gx, goffset, gmask, gw: allocated outputs or undefined Tensors (not wanted); mask may be undefined.
template <class T>
void deform_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& offset, const Tensor& mask,
                            const Tensor& w, Tensor& gx, Tensor& goffset, Tensor& gmask, Tensor& gw,
                            const DeformConvArgs& a);
// Pixels per column chunk are sized from this many bytes (default 1 MiB; 0 restores it). Tests shrink it
// to exercise chunk edges.
void set_deform_conv2d_chunk_bytes(int64_t bytes);
}  // namespace cpu

}  // namespace kdet
