// layers/resnet.h — mmdet's ResNet (v1b) and ResNeXt backbones (specs/detectors.md §2).
//
//   Stem: conv1 7x7 s2 p3 (no bias) - bn1 - ReLU - max-pool 3x3 s2 p1. Stages layer1..layer4 of
//   BasicBlock (18/34) or Bottleneck (50/101/152) blocks; planes = base_channels * 2^i; stage strides
//   (1, 2, 2, 2); the first block of a stage gets the stride and, when the shape changes, a
//   `downsample` = Sequential(conv1x1(stride, no bias), BN) (keys downsample.0 / downsample.1).
//   Style pytorch puts the stride on the 3x3 conv (conv2), caffe on conv1.
//   ResNeXt (groups > 1): Bottleneck width = floor(planes * base_width / base_channels) * groups,
//   groups on conv2 (mmdet's ResNeXt: 32x4d -> width 128 in layer1).
//   Key names = torchvision's = mmdet's minus "backbone.": conv1.weight, bn1.*, layer1.0.conv1.weight,
//   layer1.0.bn1.{weight,bias,running_mean,running_var,num_batches_tracked}, layer2.0.downsample.0.weight...
//
//   frozen_stages k >= 0: stem (conv1, bn1) and layer1..layerk get requires_grad=false and are kept in
//   eval mode; norm_eval: every BatchNorm2d stays in eval mode in train() (affine still trained unless
//   norm.requires_grad=false). Both are re-applied by train(), exactly like mmdet's ResNet.train().
//   init_weights: Kaiming normal (fan_out, relu) for every conv, BN/GN weight 1 bias 0, then with
//   zero_init_residual the last norm of each block (bn3 / bn2) set to 0 (mmdet's default True).
//   base_channels / stem_channels smaller than 64 give narrow CPU demo variants.
//
//   DCN (mmdet `dcn=dict(type='DCN' | 'DCNv2', deform_groups=1, fallback_on_stride=False)`,
//   `stage_with_dcn=(False, True, True, True)` = the "dconv_c3-c5" configs): conv2 of every Bottleneck in a
//   stage with DCN is a DeformConv2dPack (DCN) or ModulatedDeformConv2dPack (DCNv2, no bias) with the same
//   geometry (layers/dcn.h); keys layerX.Y.conv2.weight + layerX.Y.conv2.conv_offset.{weight,bias}. With
//   fallback_on_stride a strided conv2 stays a plain conv. BasicBlock has no DCN (mmdet: not implemented).
//   init_weights: the DCN modules get mmcv's init (conv_offset zero) after the Kaiming pass.
#pragma once
#include <string>
#include <vector>

#include "engine/config.h"
#include "layers/conv.h"
#include "layers/module.h"

namespace kdet {

struct ResNetCfg {
  int depth = 50;  // 18, 34, 50, 101, 152
  int64_t in_channels = 3;
  int64_t base_channels = 64;
  int64_t stem_channels = -1;  // -1: = base_channels
  int num_stages = 4;
  std::vector<int64_t> strides = {1, 2, 2, 2};
  std::vector<int64_t> dilations = {1, 1, 1, 1};
  std::vector<int> out_indices = {0, 1, 2, 3};
  enum class Style { Pytorch, Caffe } style = Style::Pytorch;
  int frozen_stages = -1;  // -1..num_stages; 0 = stem only
  NormCfg norm = NormCfg::bn(true);
  bool norm_eval = true;
  bool zero_init_residual = true;
  int64_t groups = 1;      // ResNeXt cardinality
  int64_t base_width = 4;  // ResNeXt bottleneck width per group
  enum class Dcn { None, DCN, DCNv2 } dcn = Dcn::None;
  int64_t dcn_deform_groups = 1;
  bool dcn_fallback_on_stride = false;
  std::vector<bool> stage_with_dcn = {false, false, false, false};  // used when dcn != None
};

// "none" | "dcn" | "dcnv2" (case-insensitive; also mmdet's "DCN" / "DCNv2") -> ResNetCfg::Dcn; throws otherwise.
ResNetCfg::Dcn parse_dcn(const std::string& s);
const char* dcn_name(ResNetCfg::Dcn d);

// Config keys of the DCN backbone, read into cfg (for the detector configs' from_config):
//   <sec>.dcn = none | dcn | dcnv2 (default none), <sec>.stage_with_dcn = 0,1,1,1 (one flag per stage; default
//   0,1,1,1 = mmdet's dconv_c3-c5), <sec>.dcn_deform_groups = 1, <sec>.dcn_fallback_on_stride = false.
void resnet_dcn_from_config(const Config& c, const std::string& sec, ResNetCfg& cfg);

// mmdet config shortcuts.
ResNetCfg resnet_cfg(int depth, int frozen_stages = 1, bool norm_eval = true);
ResNetCfg resnext_cfg(int depth, int64_t groups, int64_t base_width, int frozen_stages = 1, bool norm_eval = true);

class BasicBlock : public UnaryModule {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlock(int64_t inplanes, int64_t planes, int64_t stride, int64_t dilation, bool downsample, const ResNetCfg& cfg);
  const char* type_name() const override { return "BasicBlock"; }
  Var forward(const Var& x) override;
  UnaryModule& last_norm() { return *norm2_; }

 private:
  Conv2d *conv1_, *conv2_;
  UnaryModule *norm1_, *norm2_;
  Sequential* downsample_ = nullptr;
};

class Bottleneck : public UnaryModule {
 public:
  static constexpr int64_t kExpansion = 4;
  // with_dcn: conv2 is cfg.dcn's deformable conv (unless fallback_on_stride and stride > 1).
  Bottleneck(int64_t inplanes, int64_t planes, int64_t stride, int64_t dilation, bool downsample, const ResNetCfg& cfg,
             bool with_dcn = false);
  const char* type_name() const override { return "Bottleneck"; }
  Var forward(const Var& x) override;
  UnaryModule& last_norm() { return *norm3_; }
  int64_t width() const { return width_; }
  bool with_dcn() const { return with_dcn_; }
  UnaryModule& conv2() { return *conv2_; }  // Conv2d, DeformConv2dPack or ModulatedDeformConv2dPack

 private:
  int64_t width_;
  bool with_dcn_ = false;
  Conv2d *conv1_, *conv3_;
  UnaryModule* conv2_;
  UnaryModule *norm1_, *norm2_, *norm3_;
  Sequential* downsample_ = nullptr;
};

class ResNet : public Module {
 public:
  explicit ResNet(const ResNetCfg& cfg);
  const char* type_name() const override { return "ResNet"; }
  // Feature maps of the stages in out_indices (C2..C5 for (0,1,2,3)).
  std::vector<Var> forward(const Var& x);
  std::vector<Var> operator()(const Var& x) { return forward(x); }
  // Re-applies frozen_stages and norm_eval after the recursive mode change (mmdet ResNet.train).
  void train(bool on = true) override;
  void init_weights(Generator& g) override;
  const ResNetCfg& cfg() const { return cfg_; }
  // Channels and strides of the returned feature maps.
  std::vector<int64_t> out_channels() const;
  std::vector<int64_t> out_strides() const;
  Sequential& layer(int i) { return *layers_.at(i); }  // 0-based stage index (layer{i+1})

 private:
  void freeze_stages();
  ResNetCfg cfg_;
  bool bottleneck_;
  Conv2d* conv1_;
  UnaryModule* norm1_;
  std::vector<Sequential*> layers_;
  std::vector<int64_t> stage_channels_;
};

}  // namespace kdet
