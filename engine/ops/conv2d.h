// engine/ops/conv2d.h — 2-D convolution, exactly torch.nn.functional.conv2d.
//
//   x [N, C, H, W] (NCHW), w [O, C/groups, KH, KW] (OIHW), b [O] or undefined  ->  y [N, O, Ho, Wo]
//   Ho = (H + 2·pad_h − dilation_h·(KH−1) − 1) / stride_h + 1   (likewise Wo)
//
// CPU: per image and group, y = W · im2col(x) through the shared packed SGEMM (engine/gemm.h); a 1×1,
// stride-1, unpadded conv uses x directly (no im2col). Backward: dx = col2im(Wᵀ · dy), dW = Σₙ dy · colᵀ
// (accumulated over the batch in a fixed order), db = Σ dy over N, H, W. Deterministic for a fixed thread
// count. f32 and f64.
#pragma once
#include "engine/autograd.h"

namespace kdet {

struct Conv2dArgs {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1, groups = 1;
  static Conv2dArgs make(int64_t stride, int64_t pad, int64_t dilation = 1, int64_t groups = 1) {
    Conv2dArgs a;
    a.stride_h = a.stride_w = stride;
    a.pad_h = a.pad_w = pad;
    a.dilation_h = a.dilation_w = dilation;
    a.groups = groups;
    return a;
  }
};

namespace ops {
// Output shape of conv2d (validates shapes/args; throws naming the op and the shapes).
Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dArgs& a);
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b /*may be undefined*/, const Conv2dArgs& a);
Tensor conv2d_backward_input(const Tensor& gy, const Tensor& w, const Shape& x_shape, const Conv2dArgs& a);
Tensor conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Shape& w_shape, const Conv2dArgs& a);
// Σ gy over N, H, W -> [O].
Tensor conv2d_backward_bias(const Tensor& gy);
}  // namespace ops

Var conv2d(const Var& x, const Var& w, const Var& b /*undefined Var = no bias*/, const Conv2dArgs& a);

namespace cpu {  // kernels (engine/ops/conv2d_cpu.cpp); contiguous operands, shapes already checked
template <class T>
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const Conv2dArgs& a);
template <class T>
void conv2d_backward_input(const Tensor& gy, const Tensor& w, Tensor& gx, const Conv2dArgs& a);
template <class T>
void conv2d_backward_weight(const Tensor& gy, const Tensor& x, Tensor& gw, const Conv2dArgs& a);
template <class T>
void conv2d_backward_bias(const Tensor& gy, Tensor& gb);
// Size of the im2col chunk (default 2 MiB; 0 restores it). Tests shrink it to exercise chunk edges.
void set_conv2d_chunk_bytes(int64_t bytes);
}  // namespace cpu

}  // namespace kdet
