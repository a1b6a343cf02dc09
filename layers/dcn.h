// layers/dcn.h — mmcv's deformable convolution modules (engine/ops/deform_conv.h does the math).
//
//   DeformConv2d               mmcv.ops.DeformConv2d: weight [out, in/groups, kh, kw], never a bias; forward(x,
//                              offset) with offset [N, 2·dg·kh·kw, Ho, Wo] in mmcv's (y, x)-per-tap layout.
//                              Used directly by the RepPoints head (offsets from the predicted points).
//   DeformConv2dPack           mmcv.ops.DeformConv2dPack ('DCN' in mmdet configs): DeformConv2d whose offset
//                              comes from `conv_offset` = Conv2d(in, 2·dg·kh·kw, same kernel/stride/padding/
//                              dilation, bias), zero-initialised, so a fresh module is an ordinary conv.
//                              Keys: weight, conv_offset.weight, conv_offset.bias.
//   ModulatedDeformConv2dPack  mmcv.ops.ModulatedDeformConv2dPack ('DCNv2'): conv_offset outputs 3·dg·kh·kw
//                              channels; out = conv_offset(x); o1, o2, m = chunk(out, 3, dim 1);
//                              offset = cat(o1, o2) (= channels [0, 2·dg·KK)), mask = sigmoid(m) (channels
//                              [2·dg·KK, 3·dg·KK)). Optional bias (mmdet's ResNet builds it without).
//                              Keys: weight, [bias,] conv_offset.weight, conv_offset.bias.
//
// init_weights follows mmcv: DeformConv2d weight kaiming_uniform(fan_in, relu) (mmcv >= 1.3.15); modulated
// weight uniform(±1/sqrt(in·kh·kw)) and bias 0; conv_offset weight and bias 0.
// Inputs smaller than the kernel are handled directly (see engine/ops/deform_conv.h).
#pragma once
#include "engine/ops/deform_conv.h"
#include "layers/conv.h"
#include "layers/module.h"

namespace kdet {

struct DeformConvSpec {
  int64_t in_channels = 0, out_channels = 0, kernel = 3;
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1, deform_groups = 1;
  bool bias = false;  // modulated only (mmcv's DeformConv2d rejects a bias)
  DeformConvArgs args() const { return DeformConvArgs::make(stride, padding, dilation, groups, deform_groups); }
};

class DeformConv2d : public Module {
 public:
  explicit DeformConv2d(const DeformConvSpec& s);
  DeformConv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
               int64_t dilation = 1, int64_t groups = 1, int64_t deform_groups = 1);
  const char* type_name() const override { return "DeformConv2d"; }
  Var forward(const Var& x, const Var& offset);
  Var operator()(const Var& x, const Var& offset) { return forward(x, offset); }
  void init_weights(Generator& g) override;
  Var& weight() { return *w_; }
  const DeformConvSpec& spec() const { return s_; }

 private:
  DeformConvSpec s_;
  Var* w_ = nullptr;
};

class DeformConv2dPack : public UnaryModule {
 public:
  explicit DeformConv2dPack(const DeformConvSpec& s);
  const char* type_name() const override { return "DeformConv2dPack"; }
  Var forward(const Var& x) override;
  // Also returns the predicted offset [N, 2·dg·kh·kw, Ho, Wo] in *offset.
  Var forward(const Var& x, Var* offset);
  void init_weights(Generator& g) override;
  Var& weight() { return *w_; }
  Conv2d& conv_offset() { return *conv_offset_; }
  const DeformConvSpec& spec() const { return s_; }

 private:
  DeformConvSpec s_;
  Var* w_ = nullptr;
  Conv2d* conv_offset_ = nullptr;
};

class ModulatedDeformConv2dPack : public UnaryModule {
 public:
  explicit ModulatedDeformConv2dPack(const DeformConvSpec& s);
  const char* type_name() const override { return "ModulatedDeformConv2dPack"; }
  Var forward(const Var& x) override;
  // Also returns the offset [N, 2·dg·KK, Ho, Wo] and the mask (after the sigmoid) [N, dg·KK, Ho, Wo].
  Var forward(const Var& x, Var* offset, Var* mask);
  void init_weights(Generator& g) override;
  Var& weight() { return *w_; }
  bool has_bias() const { return b_ != nullptr; }
  Conv2d& conv_offset() { return *conv_offset_; }
  const DeformConvSpec& spec() const { return s_; }

 private:
  DeformConvSpec s_;
  Var* w_ = nullptr;
  Var* b_ = nullptr;
  Conv2d* conv_offset_ = nullptr;
};

}  // namespace kdet
