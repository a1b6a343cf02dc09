// engine/ops/conv2d.cpp — conv2d: shape checks, device dispatch, and the differentiable Var op.
// Kernels: engine/ops/conv2d_cpu.cpp.
#include "engine/ops/conv2d.h"

#include "engine/backend.h"
#include "engine/ops/reduce.h"

#if KDET_CUDA
#include "engine/ops/conv2d_cuda.h"
#endif

namespace kdet {

namespace {

void check_args(const Conv2dArgs& a, const char* op) {
  KDET_CHECK(a.stride_h >= 1 && a.stride_w >= 1, op, ": stride must be >= 1, got ", a.stride_h, "x", a.stride_w);
  KDET_CHECK(a.pad_h >= 0 && a.pad_w >= 0, op, ": padding must be >= 0, got ", a.pad_h, "x", a.pad_w);
  KDET_CHECK(a.dilation_h >= 1 && a.dilation_w >= 1, op, ": dilation must be >= 1, got ", a.dilation_h, "x",
             a.dilation_w);
  KDET_CHECK(a.groups >= 1, op, ": groups must be >= 1, got ", a.groups);
}

}  // namespace

namespace ops {

Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dArgs& a) {
  check_args(a, "conv2d");
  KDET_CHECK(x.ndim() == 4, "conv2d: input must be 4-D [N, C, H, W], got ", x);
  KDET_CHECK(w.ndim() == 4, "conv2d: weight must be 4-D [O, C/groups, KH, KW], got ", w);
  KDET_CHECK(w[0] % a.groups == 0, "conv2d: weight ", w, " has ", w[0], " output channels, not divisible by groups=",
             a.groups);
  KDET_CHECK(x[1] == w[1] * a.groups, "conv2d: weight ", w, " with groups=", a.groups, " expects ",
             w[1] * a.groups, " input channels, input is ", x);
  const int64_t eh = a.dilation_h * (w[2] - 1) + 1, ew = a.dilation_w * (w[3] - 1) + 1;
  const int64_t ho = (x[2] + 2 * a.pad_h - eh) / a.stride_h + 1;
  const int64_t wo = (x[3] + 2 * a.pad_w - ew) / a.stride_w + 1;
  KDET_CHECK(x[2] + 2 * a.pad_h >= eh && x[3] + 2 * a.pad_w >= ew && ho > 0 && wo > 0, "conv2d: input ", x,
             " (padded by ", a.pad_h, "x", a.pad_w, ") is smaller than the dilated kernel ", eh, "x", ew,
             " of weight ", w);
  return Shape{x[0], w[0], ho, wo};
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dArgs& a) {
  KDET_CHECK(x.defined() && w.defined(), "conv2d: undefined input or weight");
  KDET_CHECK(x.dtype() == w.dtype(), "conv2d: dtype mismatch: input ", x.desc(), ", weight ", w.desc());
  KDET_CHECK(x.device() == w.device(), "conv2d: device mismatch: input ", x.desc(), ", weight ", w.desc());
  Shape ys = conv2d_output_shape(x.shape(), w.shape(), a);
  if (b.defined()) {
    KDET_CHECK(b.ndim() == 1 && b.size(0) == w.size(0), "conv2d: bias ", b.desc(), " does not match weight ",
               w.desc(), " (expected [", w.size(0), "])");
    KDET_CHECK(b.dtype() == x.dtype() && b.device() == x.device(), "conv2d: bias ", b.desc(), " vs input ",
               x.desc());
  }
  Tensor y = Tensor::empty(ys, x.dtype(), x.device());
  if (x.device().is_cpu()) {
    const Tensor xc = x.contiguous(), wc = w.contiguous(), bc = b.defined() ? b.contiguous() : Tensor();
    dispatch_float(x.dtype(), "conv2d", [&](auto tag) { cpu::conv2d_forward<decltype(tag)>(xc, wc, bc, y, a); });
    return y;
  }
#if KDET_CUDA
  if (x.device().is_cuda()) {
    cuda::conv2d_forward(x.contiguous(), w.contiguous(), b.defined() ? b.contiguous() : Tensor(), y, a);
    return y;
  }
#endif
  no_kernel("conv2d", x.device());
}

Tensor conv2d_backward_input(const Tensor& gy, const Tensor& w, const Shape& x_shape, const Conv2dArgs& a) {
  KDET_CHECK(gy.dtype() == w.dtype() && gy.device() == w.device(), "conv2d_backward_input: grad ", gy.desc(),
             " vs weight ", w.desc());
  Shape ys = conv2d_output_shape(x_shape, w.shape(), a);
  KDET_CHECK(gy.shape() == ys, "conv2d_backward_input: grad ", gy.desc(), " does not match output shape ", ys,
             " of input ", x_shape, " and weight ", w.desc());
  Tensor gx = Tensor::empty(x_shape, gy.dtype(), gy.device());
  if (gy.device().is_cpu()) {
    const Tensor gc = gy.contiguous(), wc = w.contiguous();
    dispatch_float(gy.dtype(), "conv2d_backward_input",
                   [&](auto tag) { cpu::conv2d_backward_input<decltype(tag)>(gc, wc, gx, a); });
    return gx;
  }
#if KDET_CUDA
  if (gy.device().is_cuda()) {
    cuda::conv2d_backward_input(gy.contiguous(), w.contiguous(), gx, a);
    return gx;
  }
#endif
  no_kernel("conv2d_backward_input", gy.device());
}

Tensor conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Shape& w_shape, const Conv2dArgs& a) {
  KDET_CHECK(gy.dtype() == x.dtype() && gy.device() == x.device(), "conv2d_backward_weight: grad ", gy.desc(),
             " vs input ", x.desc());
  Shape ys = conv2d_output_shape(x.shape(), w_shape, a);
  KDET_CHECK(gy.shape() == ys, "conv2d_backward_weight: grad ", gy.desc(), " does not match output shape ", ys,
             " of input ", x.desc(), " and weight ", w_shape);
  Tensor gw = Tensor::empty(w_shape, gy.dtype(), gy.device());
  if (gy.device().is_cpu()) {
    const Tensor gc = gy.contiguous(), xc = x.contiguous();
    dispatch_float(gy.dtype(), "conv2d_backward_weight",
                   [&](auto tag) { cpu::conv2d_backward_weight<decltype(tag)>(gc, xc, gw, a); });
    return gw;
  }
#if KDET_CUDA
  if (gy.device().is_cuda()) {
    cuda::conv2d_backward_weight(gy.contiguous(), x.contiguous(), gw, a);
    return gw;
  }
#endif
  no_kernel("conv2d_backward_weight", gy.device());
}

Tensor conv2d_backward_bias(const Tensor& gy) {
  KDET_CHECK(gy.ndim() == 4, "conv2d_backward_bias: grad must be 4-D, got ", gy.desc());
  Tensor gb = Tensor::empty({gy.size(1)}, gy.dtype(), gy.device());
  if (gy.device().is_cpu()) {
    const Tensor gc = gy.contiguous();
    dispatch_float(gy.dtype(), "conv2d_backward_bias",
                   [&](auto tag) { cpu::conv2d_backward_bias<decltype(tag)>(gc, gb); });
    return gb;
  }
  if (gy.device().is_cuda() && cuda_built()) return ops::sum(gy, {0, 2, 3});  // deterministic device reduction
  no_kernel("conv2d_backward_bias", gy.device());
}

}  // namespace ops

Var conv2d(const Var& x, const Var& w, const Var& b, const Conv2dArgs& a) {
  Tensor y = ops::conv2d(x.data(), w.data(), b.defined() ? b.data() : Tensor(), a);
  const bool need_x = w.requires_grad(), need_w = x.requires_grad();
  return record("conv2d", y, {&x, &w, b.defined() ? &b : nullptr},
                [xd = need_x ? x.data() : Tensor(), wd = need_w ? w.data() : Tensor(), xs = x.shape(),
                 ws = w.shape(), a](const Tensor& g, Grads& gr) {
                  if (gr.wants(0)) gr.accumulate(0, ops::conv2d_backward_input(g, wd, xs, a));
                  if (gr.wants(1)) gr.accumulate(1, ops::conv2d_backward_weight(g, xd, ws, a));
                  if (gr.wants(2)) gr.accumulate(2, ops::conv2d_backward_bias(g));
                });
}

}  // namespace kdet
