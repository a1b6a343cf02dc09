#include "layers/fpn.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/interpolate.h"
#include "engine/ops/pool2d.h"
#include "engine/ops/unary.h"
#include "layers/init.h"

namespace kdet {

FPNCfg retinanet_fpn_cfg(const std::vector<int64_t>& in_channels, int64_t out_channels) {
  FPNCfg c;
  c.in_channels = in_channels;
  c.out_channels = out_channels;
  c.num_outs = 5;
  c.start_level = 1;
  c.add_extra_convs = FPNCfg::Extra::OnInput;
  return c;
}

FPN::FPN(const FPNCfg& cfg) : cfg_(cfg) {
  const int num_ins = static_cast<int>(cfg.in_channels.size());
  KDET_CHECK(num_ins >= 1 && cfg.out_channels > 0, "FPN: need in_channels and a positive out_channels");
  KDET_CHECK(cfg.start_level >= 0 && cfg.start_level < num_ins, "FPN: start_level ", cfg.start_level,
             " outside 0..", num_ins - 1);
  if (cfg.end_level == -1 || cfg.end_level == num_ins - 1) {
    backbone_end_level_ = num_ins;
    KDET_CHECK(cfg.num_outs >= num_ins - cfg.start_level, "FPN: num_outs ", cfg.num_outs, " < ",
               num_ins - cfg.start_level, " used backbone levels");
  } else {
    // Not the last level: no extra levels allowed (mmdet).
    KDET_CHECK(cfg.end_level >= cfg.start_level && cfg.end_level < num_ins, "FPN: end_level ", cfg.end_level,
               " outside ", cfg.start_level, "..", num_ins - 1);
    backbone_end_level_ = cfg.end_level + 1;
    KDET_CHECK(cfg.num_outs == cfg.end_level - cfg.start_level + 1, "FPN: num_outs ", cfg.num_outs,
               " must equal end_level - start_level + 1 when end_level is not the last level");
  }
  lateral_ = &register_module("lateral_convs", std::make_unique<ModuleList<ConvModule>>());
  fpn_ = &register_module("fpn_convs", std::make_unique<ModuleList<ConvModule>>());
  ConvModuleCfg lat_cfg, out_cfg;
  lat_cfg.act = out_cfg.act = Act::None;
  out_cfg.norm = cfg.norm;
  lat_cfg.norm = cfg.no_norm_on_lateral ? NormCfg::none() : cfg.norm;
  for (int i = cfg.start_level; i < backbone_end_level_; ++i) {
    lateral_->emplace_back<ConvModule>(cfg.in_channels[i], cfg.out_channels, 1, 1, 0, lat_cfg);
    fpn_->emplace_back<ConvModule>(cfg.out_channels, cfg.out_channels, 3, 1, 1, out_cfg);
  }
  const int extra_levels = cfg.num_outs - backbone_end_level_ + cfg.start_level;
  if (cfg.add_extra_convs != FPNCfg::Extra::None) {
    for (int i = 0; i < extra_levels; ++i) {
      int64_t in = (i == 0 && cfg.add_extra_convs == FPNCfg::Extra::OnInput) ? cfg.in_channels[backbone_end_level_ - 1]
                                                                             : cfg.out_channels;
      fpn_->emplace_back<ConvModule>(in, cfg.out_channels, 3, 2, 1, out_cfg);
    }
  }
}

std::vector<Var> FPN::forward(const std::vector<Var>& inputs, std::vector<Var>* conv_taps) {
  KDET_CHECK(inputs.size() == cfg_.in_channels.size(), "FPN: got ", inputs.size(), " inputs, expected ",
             cfg_.in_channels.size());
  for (size_t i = 0; i < inputs.size(); ++i)
    KDET_CHECK(inputs[i].ndim() == 4 && inputs[i].size(1) == cfg_.in_channels[i], "FPN: input ", i, " is ",
               inputs[i].data().desc(), ", expected ", cfg_.in_channels[i], " channels");
  const size_t used = lateral_->size();
  std::vector<Var> lat;
  for (size_t i = 0; i < used; ++i) lat.push_back((*lateral_)[i].forward(inputs[i + cfg_.start_level]));
  for (size_t i = used - 1; i > 0; --i) {
    const Var& prev = lat[i - 1];
    lat[i - 1] = prev + interpolate_nearest(lat[i], prev.size(2), prev.size(3));
  }
  std::vector<Var> outs, taps;
  auto out_conv = [&](size_t i, const Var& in) {
    Var tap;
    outs.push_back((*fpn_)[i].forward(in, &tap));
    taps.push_back(tap);
  };
  for (size_t i = 0; i < used; ++i) out_conv(i, lat[i]);
  const size_t num_outs = static_cast<size_t>(cfg_.num_outs);
  if (num_outs > outs.size()) {
    if (cfg_.add_extra_convs == FPNCfg::Extra::None) {
      while (outs.size() < num_outs) {
        outs.push_back(max_pool2d(outs.back(), 1, 2, 0));
        taps.push_back(outs.back());
      }
    } else {
      Var src;
      switch (cfg_.add_extra_convs) {
        case FPNCfg::Extra::OnInput: src = inputs[backbone_end_level_ - 1]; break;
        case FPNCfg::Extra::OnLateral: src = lat.back(); break;
        default: src = outs.back(); break;
      }
      out_conv(used, src);
      for (size_t i = used + 1; i < num_outs; ++i)
        out_conv(i, cfg_.relu_before_extra_convs ? relu(outs.back()) : outs.back());
    }
  }
  if (conv_taps) *conv_taps = std::move(taps);
  return outs;
}

void FPN::init_weights(Generator& g) {
  for (auto* list : {lateral_, fpn_})
    for (auto* cm : *list) {
      xavier_uniform_(cm->conv().weight().data(), g, 1.0);
      if (cm->conv().has_bias()) cm->conv().bias().data().fill_(0.0);
      if (cm->has_norm()) cm->norm().init_weights(g);
    }
}

}  // namespace kdet
