// layers/fpn.h — mmdet's FPN neck (specs/detectors.md §3).
//
//   lateral_convs.{i}: ConvModule 1x1 (in_channels[start_level + i] -> out), fpn_convs.{i}: ConvModule
//   3x3 pad 1 (out -> out), for the backbone levels start_level..end; no activation anywhere; conv bias
//   unless a norm is used (GN necks: "...conv.weight" + "...gn.{weight,bias}", lateral without norm
//   when no_norm_on_lateral).
//   Forward: laterals; top-down L[i-1] += nearest_upsample(L[i], size = L[i-1]'s H, W); P_i = fpn_conv(L_i).
//   Extra levels (num_outs beyond the used backbone levels):
//     Extra::None      max_pool2d(P_last, kernel 1, stride 2)
//     OnInput          fpn_convs.{n}: 3x3 s2 p1 on the last used backbone input (C5)
//     OnLateral        ... on the last lateral; OnOutput: ... on the last output P5
//     further extras   3x3 s2 p1 on the previous output, ReLU on its input iff relu_before_extra_convs.
//   init_weights: Xavier-uniform (gain 1) for every conv, bias 0; norms weight 1, bias 0.
#pragma once
#include <vector>

#include "layers/conv.h"
#include "layers/module.h"

namespace kdet {

struct FPNCfg {
  std::vector<int64_t> in_channels;  // backbone channels, e.g. {256, 512, 1024, 2048}
  int64_t out_channels = 256;
  int num_outs = 5;
  int start_level = 0;
  int end_level = -1;  // inclusive backbone index; -1 = last (then extra levels are allowed)
  enum class Extra { None, OnInput, OnLateral, OnOutput } add_extra_convs = Extra::None;
  bool relu_before_extra_convs = false;
  bool no_norm_on_lateral = false;
  NormCfg norm = NormCfg::none();
};

// mmdet's RetinaNet neck: start_level 1, on_input, 5 outputs (P3..P7).
FPNCfg retinanet_fpn_cfg(const std::vector<int64_t>& in_channels, int64_t out_channels = 256);

class FPN : public Module {
 public:
  explicit FPN(const FPNCfg& cfg);
  const char* type_name() const override { return "FPN"; }
  // inputs: one feature map per entry of in_channels; returns num_outs maps. With `conv_taps`, also
  // the raw outputs of neck.fpn_convs.{i}.conv (the FGD/MGD hook points; equal to the outputs unless
  // the neck has a norm; extra levels made by max-pooling have no conv and get the pooled output).
  std::vector<Var> forward(const std::vector<Var>& inputs, std::vector<Var>* conv_taps = nullptr);
  std::vector<Var> operator()(const std::vector<Var>& inputs) { return forward(inputs, nullptr); }
  void init_weights(Generator& g) override;
  const FPNCfg& cfg() const { return cfg_; }
  ModuleList<ConvModule>& lateral_convs() { return *lateral_; }
  ModuleList<ConvModule>& fpn_convs() { return *fpn_; }

 private:
  FPNCfg cfg_;
  int backbone_end_level_;
  ModuleList<ConvModule>* lateral_;
  ModuleList<ConvModule>* fpn_;
};

}  // namespace kdet
