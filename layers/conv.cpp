#include "layers/conv.h"

#include "engine/ops/conv2d.h"
#include "engine/ops/unary.h"
#include "layers/init.h"

namespace kdet {

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, int64_t padding,
               int64_t dilation, int64_t groups, bool bias)
    : Conv2d(ConvSpec{in_channels, out_channels, kernel, kernel, stride, padding, dilation, groups, bias}) {}

Conv2d::Conv2d(const ConvSpec& s) : s_(s) {
  KDET_CHECK(s.in_channels > 0 && s.out_channels > 0 && s.kernel_h > 0 && s.kernel_w > 0 && s.stride > 0 &&
                 s.padding >= 0 && s.dilation > 0 && s.groups > 0,
             "Conv2d: bad spec in ", s.in_channels, " out ", s.out_channels, " kernel ", s.kernel_h, "x", s.kernel_w,
             " stride ", s.stride, " pad ", s.padding, " dilation ", s.dilation, " groups ", s.groups);
  KDET_CHECK(s.in_channels % s.groups == 0 && s.out_channels % s.groups == 0, "Conv2d: channels ", s.in_channels,
             " -> ", s.out_channels, " not divisible by groups ", s.groups);
  w_ = &register_parameter("weight", Tensor::zeros({s.out_channels, s.in_channels / s.groups, s.kernel_h, s.kernel_w}));
  if (s.bias) b_ = &register_parameter("bias", Tensor::zeros({s.out_channels}));
}

Var& Conv2d::bias() {
  KDET_CHECK(b_, "Conv2d: this convolution has no bias");
  return *b_;
}

Var Conv2d::forward(const Var& x) {
  return conv2d(x, *w_, b_ ? *b_ : Var(), Conv2dArgs::make(s_.stride, s_.padding, s_.dilation, s_.groups));
}

void Conv2d::init_weights(Generator& g) { torch_default_init_(w_->data(), b_ ? &b_->data() : nullptr, g); }

ConvModule::ConvModule(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, int64_t padding,
                       const ConvModuleCfg& cfg, int64_t dilation, int64_t groups)
    : act_(cfg.act) {
  const bool with_norm = cfg.norm.type != NormCfg::None;
  const bool bias = cfg.bias == ConvModuleCfg::Bias::Auto ? !with_norm : cfg.bias == ConvModuleCfg::Bias::On;
  conv_ = &register_module(
      "conv", std::make_unique<Conv2d>(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias));
  if (with_norm) norm_ = &register_module(cfg.norm.abbr(), make_norm(cfg.norm, out_channels));
}

UnaryModule& ConvModule::norm() {
  KDET_CHECK(norm_, "ConvModule: no norm layer");
  return *norm_;
}

Var ConvModule::forward(const Var& x) { return forward(x, nullptr); }

Var ConvModule::forward(const Var& x, Var* conv_out) {
  Var y = conv_->forward(x);
  if (conv_out) *conv_out = y;
  if (norm_) y = norm_->forward(y);
  if (act_ == Act::ReLU) y = relu(y);
  return y;
}

void ConvModule::init_weights(Generator& g) {
  kaiming_normal_(conv_->weight().data(), g, 0.0, FanMode::FanOut, Nonlinearity::ReLU);
  if (conv_->has_bias()) conv_->bias().data().fill_(0.0);
  if (norm_) norm_->init_weights(g);
}

}  // namespace kdet
