// layers/conv.h — Conv2d and mmcv's ConvModule.
//
//   Conv2d: weight [out, in/groups, kh, kw] (OIHW), optional bias [out]. Keys "weight", "bias".
//   ConvModule (mmcv.cnn.ConvModule, order conv -> norm -> act):
//     children "conv" (Conv2d) and, with a norm, "bn" or "gn" (mmcv's abbreviations); the activation
//     has no parameters. bias = Auto means "bias iff there is no norm" (mmcv bias='auto').
//     Default act is ReLU, as in mmcv (act_cfg=dict(type='ReLU')); FPN passes Act::None.
//     init_weights: mmcv ConvModule.init_weights = kaiming_init(conv, mode fan_out, relu, normal),
//     bias 0; norm weight 1, bias 0.
#pragma once
#include "layers/module.h"
#include "layers/norm.h"

namespace kdet {

struct ConvSpec {
  int64_t in_channels = 0, out_channels = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1;
  bool bias = true;
};

class Conv2d : public UnaryModule {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         int64_t dilation = 1, int64_t groups = 1, bool bias = true);
  explicit Conv2d(const ConvSpec& s);
  const char* type_name() const override { return "Conv2d"; }
  Var forward(const Var& x) override;
  // PyTorch's nn.Conv2d.reset_parameters (kaiming_uniform a=sqrt 5; bias U(+-1/sqrt(fan_in))).
  void init_weights(Generator& g) override;
  Var& weight() { return *w_; }
  bool has_bias() const { return b_ != nullptr; }
  Var& bias();  // throws when there is no bias
  const ConvSpec& spec() const { return s_; }

 private:
  ConvSpec s_;
  Var* w_ = nullptr;
  Var* b_ = nullptr;
};

enum class Act { None, ReLU };

struct ConvModuleCfg {
  enum class Bias { Auto, On, Off } bias = Bias::Auto;
  NormCfg norm = NormCfg::none();
  Act act = Act::ReLU;
};

class ConvModule : public UnaryModule {
 public:
  ConvModule(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
             const ConvModuleCfg& cfg = {}, int64_t dilation = 1, int64_t groups = 1);
  const char* type_name() const override { return "ConvModule"; }
  Var forward(const Var& x) override;
  // Same, also returning the raw convolution output (before norm / activation) in *conv_out: the
  // `<name>.conv` hook point of mmdet-based distillers.
  Var forward(const Var& x, Var* conv_out);
  void init_weights(Generator& g) override;
  Conv2d& conv() { return *conv_; }
  bool has_norm() const { return norm_ != nullptr; }
  UnaryModule& norm();  // throws when there is none
  Act act() const { return act_; }

 private:
  Conv2d* conv_ = nullptr;
  UnaryModule* norm_ = nullptr;
  Act act_;
};

}  // namespace kdet
