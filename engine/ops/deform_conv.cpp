// engine/ops/deform_conv.cpp — deform_conv2d: shape checks, device dispatch, and the differentiable Var op.
// Kernels: engine/ops/deform_conv_cpu.cpp (CPU) and engine/ops/deform_conv_cuda.cu (CUDA).
#include "engine/ops/deform_conv.h"

#include "engine/backend.h"
#include "engine/ops/conv2d.h"
#if KDET_CUDA
#include "engine/ops/deform_conv_cuda.h"
#endif

namespace kdet {

namespace {

void check_same(const Tensor& t, const Tensor& x, const char* what) {
  KDET_CHECK(t.dtype() == x.dtype() && t.device() == x.device(), "deform_conv2d: ", what, " ", t.desc(),
             " must have the dtype and device of the input ", x.desc());
}

}  // namespace

namespace ops {

Shape deform_conv2d_output_shape(const Shape& x, const Shape& off, const Shape* mask, const Shape& w,
                                 const DeformConvArgs& a) {
  KDET_CHECK(a.stride[0] >= 1 && a.stride[1] >= 1, "deform_conv2d: stride must be >= 1, got ", a.stride[0], "x",
             a.stride[1]);
  KDET_CHECK(a.padding[0] >= 0 && a.padding[1] >= 0, "deform_conv2d: padding must be >= 0, got ", a.padding[0],
             "x", a.padding[1]);
  KDET_CHECK(a.dilation[0] >= 1 && a.dilation[1] >= 1, "deform_conv2d: dilation must be >= 1, got ",
             a.dilation[0], "x", a.dilation[1]);
  KDET_CHECK(a.groups >= 1 && a.deform_groups >= 1, "deform_conv2d: groups (", a.groups, ") and deform_groups (",
             a.deform_groups, ") must be >= 1");
  KDET_CHECK(x.ndim() == 4, "deform_conv2d: input must be 4-D [N, C, H, W], got ", x);
  KDET_CHECK(w.ndim() == 4, "deform_conv2d: weight must be 4-D [O, C/groups, KH, KW], got ", w);
  KDET_CHECK(w[0] % a.groups == 0, "deform_conv2d: weight ", w, " has ", w[0],
             " output channels, not divisible by groups=", a.groups);
  KDET_CHECK(x[1] == w[1] * a.groups, "deform_conv2d: weight ", w, " with groups=", a.groups, " expects ",
             w[1] * a.groups, " input channels, input is ", x);
  KDET_CHECK(x[1] % a.deform_groups == 0, "deform_conv2d: input ", x, " has ", x[1],
             " channels, not divisible by deform_groups=", a.deform_groups);
  const int64_t eh = a.dilation[0] * (w[2] - 1) + 1, ew = a.dilation[1] * (w[3] - 1) + 1;
  KDET_CHECK(x[2] + 2 * a.padding[0] >= eh && x[3] + 2 * a.padding[1] >= ew, "deform_conv2d: input ", x,
             " (padded by ", a.padding[0], "x", a.padding[1], ") is smaller than the dilated kernel ", eh, "x", ew,
             " of weight ", w);
  const int64_t ho = (x[2] + 2 * a.padding[0] - eh) / a.stride[0] + 1;
  const int64_t wo = (x[3] + 2 * a.padding[1] - ew) / a.stride[1] + 1;
  const int64_t kk = w[2] * w[3];
  const Shape want_off{x[0], 2 * a.deform_groups * kk, ho, wo};
  KDET_CHECK(off == want_off, "deform_conv2d: offset ", off, " must be ", want_off, " for input ", x,
             ", weight ", w, " and deform_groups=", a.deform_groups);
  if (mask) {
    const Shape want_mask{x[0], a.deform_groups * kk, ho, wo};
    KDET_CHECK(*mask == want_mask, "deform_conv2d: mask ", *mask, " must be ", want_mask, " for input ", x,
               ", weight ", w, " and deform_groups=", a.deform_groups);
  }
  return Shape{x[0], w[0], ho, wo};
}

Tensor deform_conv2d(const Tensor& x, const Tensor& offset, const Tensor& mask, const Tensor& w, const Tensor& b,
                     const DeformConvArgs& a) {
  KDET_CHECK(x.defined() && offset.defined() && w.defined(), "deform_conv2d: undefined input, offset or weight");
  check_same(offset, x, "offset");
  check_same(w, x, "weight");
  if (mask.defined()) check_same(mask, x, "mask");
  const Shape ms = mask.defined() ? mask.shape() : Shape{};
  Shape ys = deform_conv2d_output_shape(x.shape(), offset.shape(), mask.defined() ? &ms : nullptr, w.shape(), a);
  if (b.defined()) {
    KDET_CHECK(b.ndim() == 1 && b.size(0) == w.size(0), "deform_conv2d: bias ", b.desc(),
               " does not match weight ", w.desc(), " (expected [", w.size(0), "])");
    check_same(b, x, "bias");
  }
  Tensor y = Tensor::empty(ys, x.dtype(), x.device());
  if (x.device().is_cpu()) {
    const Tensor xc = x.contiguous(), oc = offset.contiguous(), wc = w.contiguous();
    const Tensor mc = mask.defined() ? mask.contiguous() : Tensor(), bc = b.defined() ? b.contiguous() : Tensor();
    dispatch_float(x.dtype(), "deform_conv2d",
                   [&](auto tag) { cpu::deform_conv2d_forward<decltype(tag)>(xc, oc, mc, wc, bc, y, a); });
    return y;
  }
#if KDET_CUDA
  if (x.device().is_cuda()) {
    cuda::deform_conv2d_forward(x.contiguous(), offset.contiguous(), mask.defined() ? mask.contiguous() : Tensor(),
                                w.contiguous(), b.defined() ? b.contiguous() : Tensor(), y, a);
    return y;
  }
#endif
  no_kernel("deform_conv2d", x.device());
}

std::array<Tensor, 5> deform_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& offset,
                                             const Tensor& mask, const Tensor& w, bool has_bias,
                                             const DeformConvArgs& a, const DeformConvNeeds& need) {
  KDET_CHECK(gy.defined() && x.defined() && offset.defined() && w.defined(),
             "deform_conv2d_backward: undefined grad, input, offset or weight");
  check_same(gy, x, "grad");
  check_same(offset, x, "offset");
  check_same(w, x, "weight");
  if (mask.defined()) check_same(mask, x, "mask");
  const Shape ms = mask.defined() ? mask.shape() : Shape{};
  Shape ys = deform_conv2d_output_shape(x.shape(), offset.shape(), mask.defined() ? &ms : nullptr, w.shape(), a);
  KDET_CHECK(gy.shape() == ys, "deform_conv2d_backward: grad ", gy.desc(), " does not match the output shape ",
             ys, " of input ", x.desc(), " and weight ", w.desc());
  std::array<Tensor, 5> g;
  const Device dev = x.device();
  if (need.x) g[0] = Tensor::empty(x.shape(), x.dtype(), dev);
  if (need.offset) g[1] = Tensor::empty(offset.shape(), x.dtype(), dev);
  if (need.mask && mask.defined()) g[2] = Tensor::empty(mask.shape(), x.dtype(), dev);
  if (need.w) g[3] = Tensor::empty(w.shape(), x.dtype(), dev);
  if (dev.is_cpu()) {
    const Tensor gc = gy.contiguous(), xc = x.contiguous(), oc = offset.contiguous(), wc = w.contiguous();
    const Tensor mc = mask.defined() ? mask.contiguous() : Tensor();
    if (g[0].defined() || g[1].defined() || g[2].defined() || g[3].defined())
      dispatch_float(x.dtype(), "deform_conv2d_backward", [&](auto tag) {
        cpu::deform_conv2d_backward<decltype(tag)>(gc, xc, oc, mc, wc, g[0], g[1], g[2], g[3], a);
      });
    if (has_bias && need.b) g[4] = conv2d_backward_bias(gc);
    return g;
  }
#if KDET_CUDA
  if (dev.is_cuda()) {
    const Tensor gc = gy.contiguous();
    if (g[0].defined() || g[1].defined() || g[2].defined() || g[3].defined())
      cuda::deform_conv2d_backward(gc, x.contiguous(), offset.contiguous(),
                                   mask.defined() ? mask.contiguous() : Tensor(), w.contiguous(), g[0], g[1], g[2],
                                   g[3], a);
    if (has_bias && need.b) g[4] = conv2d_backward_bias(gc);  // a deterministic device reduction
    return g;
  }
#endif
  no_kernel("deform_conv2d_backward", dev);
}

std::array<Tensor, 5> deform_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& offset,
                                             const Tensor& mask, const Tensor& w, bool has_bias,
                                             const DeformConvArgs& a) {
  return deform_conv2d_backward(gy, x, offset, mask, w, has_bias, a, DeformConvNeeds{});
}

}  // namespace ops

Var deform_conv2d(const Var& x, const Var& offset, const Var& mask, const Var& w, const Var& b,
                  const DeformConvArgs& a) {
  Tensor y = ops::deform_conv2d(x.data(), offset.data(), mask.defined() ? mask.data() : Tensor(), w.data(),
                                b.defined() ? b.data() : Tensor(), a);
  const bool has_mask = mask.defined(), has_bias = b.defined();
  return record("deform_conv2d", y,
                {&x, &offset, has_mask ? &mask : nullptr, &w, has_bias ? &b : nullptr},
                [xd = x.data(), od = offset.data(), md = has_mask ? mask.data() : Tensor(), wd = w.data(), has_bias,
                 a](const Tensor& g, Grads& gr) {
                  DeformConvNeeds need;
                  need.x = gr.wants(0), need.offset = gr.wants(1), need.mask = gr.wants(2);
                  need.w = gr.wants(3), need.b = gr.wants(4);
                  auto d = ops::deform_conv2d_backward(g, xd, od, md, wd, has_bias, a, need);
                  for (size_t i = 0; i < 5; ++i)
                    if (gr.wants(i) && d[i].defined()) gr.accumulate(i, d[i]);
                });
}

}  // namespace kdet
