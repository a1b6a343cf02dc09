#include "layers/dcn.h"

#include <cmath>

#include "engine/ops/shape_ops.h"
#include "engine/ops/unary.h"
#include "layers/init.h"

namespace kdet {

namespace {

void check_spec(const DeformConvSpec& s, const char* who) {
  KDET_CHECK(s.in_channels > 0 && s.out_channels > 0 && s.kernel > 0 && s.stride > 0 && s.padding >= 0 &&
                 s.dilation > 0 && s.groups > 0 && s.deform_groups > 0,
             who, ": bad spec in ", s.in_channels, " out ", s.out_channels, " kernel ", s.kernel, " stride ",
             s.stride, " pad ", s.padding, " dilation ", s.dilation, " groups ", s.groups, " deform_groups ",
             s.deform_groups);
  KDET_CHECK(s.in_channels % s.groups == 0 && s.out_channels % s.groups == 0, who, ": channels ", s.in_channels,
             " -> ", s.out_channels, " not divisible by groups ", s.groups);
  KDET_CHECK(s.in_channels % s.deform_groups == 0, who, ": in_channels ", s.in_channels,
             " not divisible by deform_groups ", s.deform_groups);
}

Tensor weight_init(const DeformConvSpec& s) {
  return Tensor::zeros({s.out_channels, s.in_channels / s.groups, s.kernel, s.kernel});
}

// conv_offset: plain conv with the deformable conv's geometry, `per_tap` outputs per deform group and tap.
std::unique_ptr<Conv2d> offset_conv(const DeformConvSpec& s, int64_t per_tap) {
  return std::make_unique<Conv2d>(s.in_channels, per_tap * s.deform_groups * s.kernel * s.kernel, s.kernel,
                                  s.stride, s.padding, s.dilation, 1, true);
}

void zero_(Conv2d& c) {
  c.weight().data().fill_(0.0);
  c.bias().data().fill_(0.0);
}

}  // namespace

// --- DeformConv2d --------------------------------------------------------------------------------

DeformConv2d::DeformConv2d(const DeformConvSpec& s) : s_(s) {
  check_spec(s, "DeformConv2d");
  KDET_CHECK(!s.bias, "DeformConv2d: mmcv's DeformConv2d has no bias");
  w_ = &register_parameter("weight", weight_init(s));
}

DeformConv2d::DeformConv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride,
                           int64_t padding, int64_t dilation, int64_t groups, int64_t deform_groups)
    : DeformConv2d(DeformConvSpec{in_channels, out_channels, kernel, stride, padding, dilation, groups,
                                  deform_groups, false}) {}

Var DeformConv2d::forward(const Var& x, const Var& offset) {
  return deform_conv2d(x, offset, Var(), *w_, Var(), s_.args());
}

void DeformConv2d::init_weights(Generator& g) {
  kaiming_uniform_(w_->data(), g, 0.0, FanMode::FanIn, Nonlinearity::ReLU);
}

// --- DeformConv2dPack ----------------------------------------------------------------------------

DeformConv2dPack::DeformConv2dPack(const DeformConvSpec& s) : s_(s) {
  check_spec(s, "DeformConv2dPack");
  KDET_CHECK(!s.bias, "DeformConv2dPack: mmcv's DeformConv2d has no bias");
  w_ = &register_parameter("weight", weight_init(s));
  conv_offset_ = &register_module("conv_offset", offset_conv(s, 2));
}

Var DeformConv2dPack::forward(const Var& x) { return forward(x, nullptr); }

Var DeformConv2dPack::forward(const Var& x, Var* offset) {
  Var off = conv_offset_->forward(x);
  if (offset) *offset = off;
  return deform_conv2d(x, off, Var(), *w_, Var(), s_.args());
}

void DeformConv2dPack::init_weights(Generator& g) {
  kaiming_uniform_(w_->data(), g, 0.0, FanMode::FanIn, Nonlinearity::ReLU);
  zero_(*conv_offset_);
}

// --- ModulatedDeformConv2dPack -------------------------------------------------------------------

ModulatedDeformConv2dPack::ModulatedDeformConv2dPack(const DeformConvSpec& s) : s_(s) {
  check_spec(s, "ModulatedDeformConv2dPack");
  w_ = &register_parameter("weight", weight_init(s));
  if (s.bias) b_ = &register_parameter("bias", Tensor::zeros({s.out_channels}));
  conv_offset_ = &register_module("conv_offset", offset_conv(s, 3));
}

Var ModulatedDeformConv2dPack::forward(const Var& x) { return forward(x, nullptr, nullptr); }

Var ModulatedDeformConv2dPack::forward(const Var& x, Var* offset, Var* mask) {
  const int64_t n = s_.deform_groups * s_.kernel * s_.kernel;
  Var out = conv_offset_->forward(x);
  Var off = slice(out, 1, 0, 2 * n);  // cat(o1, o2) of torch.chunk(out, 3, dim=1)
  Var m = sigmoid(slice(out, 1, 2 * n, 3 * n));
  if (offset) *offset = off;
  if (mask) *mask = m;
  return deform_conv2d(x, off, m, *w_, b_ ? *b_ : Var(), s_.args());
}

void ModulatedDeformConv2dPack::init_weights(Generator& g) {
  const double stdv = 1.0 / std::sqrt(static_cast<double>(s_.in_channels * s_.kernel * s_.kernel));
  uniform_(w_->data(), g, -stdv, stdv);
  if (b_) b_->data().fill_(0.0);
  zero_(*conv_offset_);
}

}  // namespace kdet
