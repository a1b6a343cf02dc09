// engine/ops/pool2d.h — 2-D max and average pooling (torch.nn.functional.max_pool2d / avg_pool2d).
//
//   x [N, C, H, W] -> [N, C, Ho, Wo], square kernel/stride/padding.
//   Ho = floor((H + 2·pad − kernel) / stride) + 1, or ceil(...) with ceil_mode, where a last window that
//   would start inside the right padding is dropped (torch's rule). pad <= kernel / 2.
//   max: padding never wins (it is −inf); ties pick the first maximum in row-major window order; NaN
//   propagates. Backward routes the gradient to the argmax.
//   avg: count_include_pad divides by the window clipped to the padded input (torch), otherwise by the
//   number of real input elements in the window.
#pragma once
#include "engine/autograd.h"

namespace kdet {

namespace ops {
// y and the flat argmax index into each H×W plane (i64, same shape as y).
std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad,
                                                  bool ceil_mode = false);
// The forward's window (kernel, stride, pad) lets the GPU gather each input's gradient from the windows
// covering it (one thread per input element, outputs in order: the CPU's sums, bit for bit).
Tensor max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Shape& x_shape, int64_t kernel,
                           int64_t stride, int64_t pad);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad, bool count_include_pad = true,
                  bool ceil_mode = false);
Tensor avg_pool2d_backward(const Tensor& gy, const Shape& x_shape, int64_t kernel, int64_t stride, int64_t pad,
                           bool count_include_pad = true, bool ceil_mode = false);
}  // namespace ops

Var max_pool2d(const Var& x, int64_t kernel, int64_t stride, int64_t pad, bool ceil_mode = false);
Var avg_pool2d(const Var& x, int64_t kernel, int64_t stride, int64_t pad, bool count_include_pad = true,
               bool ceil_mode = false);

}  // namespace kdet
