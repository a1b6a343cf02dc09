#include "layers/resnet.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>

#include "engine/ops/elementwise.h"
#include "engine/ops/pool2d.h"
#include "engine/ops/unary.h"
#include "layers/dcn.h"
#include "layers/init.h"

namespace kdet {

namespace {
std::string norm_name(const NormCfg& n, int postfix) { return std::string(n.abbr()) + std::to_string(postfix); }

std::unique_ptr<Sequential> make_downsample(int64_t inplanes, int64_t outplanes, int64_t stride, const ResNetCfg& cfg) {
  auto ds = std::make_unique<Sequential>();
  ds->emplace_back<Conv2d>(inplanes, outplanes, 1, stride, 0, 1, 1, false);
  ds->push_back(make_norm(cfg.norm, outplanes));
  return ds;
}

struct Arch {
  bool bottleneck;
  std::vector<int> blocks;
};
Arch arch_of(int depth) {
  switch (depth) {
    case 18: return {false, {2, 2, 2, 2}};
    case 34: return {false, {3, 4, 6, 3}};
    case 50: return {true, {3, 4, 6, 3}};
    case 101: return {true, {3, 4, 23, 3}};
    case 152: return {true, {3, 8, 36, 3}};
  }
  KDET_FAIL("ResNet: invalid depth ", depth, " (expected 18, 34, 50, 101 or 152)");
}
}  // namespace

ResNetCfg::Dcn parse_dcn(const std::string& s) {
  std::string l;
  for (char c : s) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == "none" || l.empty()) return ResNetCfg::Dcn::None;
  if (l == "dcn") return ResNetCfg::Dcn::DCN;
  if (l == "dcnv2") return ResNetCfg::Dcn::DCNv2;
  KDET_FAIL("ResNet: unknown dcn type '", s, "' (expected none, dcn or dcnv2)");
}

const char* dcn_name(ResNetCfg::Dcn d) {
  switch (d) {
    case ResNetCfg::Dcn::None: return "none";
    case ResNetCfg::Dcn::DCN: return "dcn";
    case ResNetCfg::Dcn::DCNv2: return "dcnv2";
  }
  return "?";
}

void resnet_dcn_from_config(const Config& c, const std::string& sec, ResNetCfg& cfg) {
  auto k = [&](const char* name) { return sec + "." + name; };
  cfg.dcn = parse_dcn(c.get_string(k("dcn"), "none"));
  const std::vector<int64_t> st = c.get_ints(k("stage_with_dcn"), {0, 1, 1, 1});
  cfg.stage_with_dcn.clear();
  for (int64_t v : st) {
    KDET_CHECK(v == 0 || v == 1, "ResNet: ", k("stage_with_dcn"), " takes 0/1 flags, got ", v);
    cfg.stage_with_dcn.push_back(v == 1);
  }
  cfg.dcn_deform_groups = c.get_int(k("dcn_deform_groups"), 1);
  cfg.dcn_fallback_on_stride = c.get_bool(k("dcn_fallback_on_stride"), false);
}

ResNetCfg resnet_cfg(int depth, int frozen_stages, bool norm_eval) {
  ResNetCfg c;
  c.depth = depth;
  c.frozen_stages = frozen_stages;
  c.norm_eval = norm_eval;
  return c;
}

ResNetCfg resnext_cfg(int depth, int64_t groups, int64_t base_width, int frozen_stages, bool norm_eval) {
  ResNetCfg c = resnet_cfg(depth, frozen_stages, norm_eval);
  c.groups = groups;
  c.base_width = base_width;
  return c;
}

// --- BasicBlock ----------------------------------------------------------------------------------

BasicBlock::BasicBlock(int64_t inplanes, int64_t planes, int64_t stride, int64_t dilation, bool downsample,
                       const ResNetCfg& cfg) {
  KDET_CHECK(cfg.groups == 1, "BasicBlock: groups (ResNeXt) need a Bottleneck depth (50/101/152), got depth ",
             cfg.depth);
  conv1_ = &register_module("conv1",
                            std::make_unique<Conv2d>(inplanes, planes, 3, stride, dilation, dilation, 1, false));
  norm1_ = &register_module(norm_name(cfg.norm, 1), make_norm(cfg.norm, planes));
  conv2_ = &register_module("conv2", std::make_unique<Conv2d>(planes, planes, 3, 1, 1, 1, 1, false));
  norm2_ = &register_module(norm_name(cfg.norm, 2), make_norm(cfg.norm, planes));
  if (downsample) downsample_ = &register_module("downsample", make_downsample(inplanes, planes, stride, cfg));
}

Var BasicBlock::forward(const Var& x) {
  Var out = relu(norm1_->forward(conv1_->forward(x)));
  out = norm2_->forward(conv2_->forward(out));
  Var identity = downsample_ ? downsample_->forward(x) : x;
  return relu(out + identity);
}

// --- Bottleneck ----------------------------------------------------------------------------------

Bottleneck::Bottleneck(int64_t inplanes, int64_t planes, int64_t stride, int64_t dilation, bool downsample,
                       const ResNetCfg& cfg, bool with_dcn) {
  width_ = cfg.groups == 1 ? planes
                           : static_cast<int64_t>(std::floor(static_cast<double>(planes) *
                                                             (static_cast<double>(cfg.base_width) /
                                                              static_cast<double>(cfg.base_channels)))) *
                                 cfg.groups;
  KDET_CHECK(width_ > 0, "Bottleneck: width ", width_, " for planes ", planes, ", groups ", cfg.groups,
             ", base_width ", cfg.base_width);
  const bool pytorch = cfg.style == ResNetCfg::Style::Pytorch;
  const int64_t s1 = pytorch ? 1 : stride, s2 = pytorch ? stride : 1;
  conv1_ = &register_module("conv1", std::make_unique<Conv2d>(inplanes, width_, 1, s1, 0, 1, 1, false));
  norm1_ = &register_module(norm_name(cfg.norm, 1), make_norm(cfg.norm, width_));
  with_dcn_ = with_dcn && cfg.dcn != ResNetCfg::Dcn::None && !(cfg.dcn_fallback_on_stride && s2 > 1);
  if (with_dcn_) {
    const DeformConvSpec ds{width_, width_, 3, s2, dilation, dilation, cfg.groups, cfg.dcn_deform_groups, false};
    if (cfg.dcn == ResNetCfg::Dcn::DCN)
      conv2_ = &register_module("conv2", std::make_unique<DeformConv2dPack>(ds));
    else
      conv2_ = &register_module("conv2", std::make_unique<ModulatedDeformConv2dPack>(ds));
  } else {
    conv2_ = &register_module(
        "conv2", std::make_unique<Conv2d>(width_, width_, 3, s2, dilation, dilation, cfg.groups, false));
  }
  norm2_ = &register_module(norm_name(cfg.norm, 2), make_norm(cfg.norm, width_));
  conv3_ = &register_module("conv3",
                            std::make_unique<Conv2d>(width_, planes * kExpansion, 1, 1, 0, 1, 1, false));
  norm3_ = &register_module(norm_name(cfg.norm, 3), make_norm(cfg.norm, planes * kExpansion));
  if (downsample)
    downsample_ = &register_module("downsample", make_downsample(inplanes, planes * kExpansion, stride, cfg));
}

Var Bottleneck::forward(const Var& x) {
  Var out = relu(norm1_->forward(conv1_->forward(x)));
  out = relu(norm2_->forward(conv2_->forward(out)));
  out = norm3_->forward(conv3_->forward(out));
  Var identity = downsample_ ? downsample_->forward(x) : x;
  return relu(out + identity);
}

// --- ResNet --------------------------------------------------------------------------------------

ResNet::ResNet(const ResNetCfg& cfg) : cfg_(cfg) {
  Arch arch = arch_of(cfg.depth);
  bottleneck_ = arch.bottleneck;
  KDET_CHECK(cfg.num_stages >= 1 && cfg.num_stages <= 4, "ResNet: num_stages ", cfg.num_stages, " not in 1..4");
  KDET_CHECK(static_cast<int>(cfg.strides.size()) >= cfg.num_stages &&
                 static_cast<int>(cfg.dilations.size()) >= cfg.num_stages,
             "ResNet: need ", cfg.num_stages, " strides and dilations");
  KDET_CHECK(!cfg.out_indices.empty(), "ResNet: out_indices is empty");
  for (int i : cfg.out_indices)
    KDET_CHECK(i >= 0 && i < cfg.num_stages, "ResNet: out index ", i, " outside 0..", cfg.num_stages - 1);
  KDET_CHECK(cfg.frozen_stages >= -1 && cfg.frozen_stages <= cfg.num_stages, "ResNet: frozen_stages ",
             cfg.frozen_stages, " not in -1..", cfg.num_stages);
  KDET_CHECK(cfg.norm.type != NormCfg::None, "ResNet: a norm layer is required");
  KDET_CHECK(cfg.groups == 1 || bottleneck_, "ResNeXt (groups ", cfg.groups, ") needs depth 50/101/152, got ",
             cfg.depth);
  KDET_CHECK(cfg.base_channels > 0, "ResNet: base_channels must be positive");
  if (cfg.dcn != ResNetCfg::Dcn::None) {
    KDET_CHECK(static_cast<int>(cfg.stage_with_dcn.size()) == cfg.num_stages, "ResNet: stage_with_dcn has ",
               cfg.stage_with_dcn.size(), " entries, expected num_stages = ", cfg.num_stages);
    KDET_CHECK(bottleneck_ || std::find(cfg.stage_with_dcn.begin(), cfg.stage_with_dcn.end(), true) ==
                                  cfg.stage_with_dcn.end(),
               "ResNet: DCN needs Bottleneck blocks (depth 50/101/152), got depth ", cfg.depth,
               " (mmdet's BasicBlock has no DCN)");
    KDET_CHECK(cfg.dcn_deform_groups >= 1, "ResNet: dcn deform_groups must be >= 1, got ", cfg.dcn_deform_groups);
  }
  const int64_t stem = cfg.stem_channels > 0 ? cfg.stem_channels : cfg.base_channels;
  cfg_.stem_channels = stem;

  conv1_ = &register_module("conv1", std::make_unique<Conv2d>(cfg.in_channels, stem, 7, 2, 3, 1, 1, false));
  norm1_ = &register_module(norm_name(cfg.norm, 1), make_norm(cfg.norm, stem));

  const int64_t expansion = bottleneck_ ? Bottleneck::kExpansion : BasicBlock::kExpansion;
  int64_t inplanes = stem;
  for (int i = 0; i < cfg.num_stages; ++i) {
    const int64_t planes = cfg.base_channels << i;
    const int64_t stride = cfg.strides[i], dilation = cfg.dilations[i];
    auto layer = std::make_unique<Sequential>();
    for (int b = 0; b < arch.blocks[i]; ++b) {
      const bool first = b == 0;
      const int64_t s = first ? stride : 1;
      const bool ds = first && (stride != 1 || inplanes != planes * expansion);
      if (bottleneck_)
        layer->emplace_back<Bottleneck>(inplanes, planes, s, dilation, ds, cfg_,
                                        cfg.dcn != ResNetCfg::Dcn::None && cfg.stage_with_dcn[i]);
      else
        layer->emplace_back<BasicBlock>(inplanes, planes, s, dilation, ds, cfg_);
      inplanes = planes * expansion;
    }
    layers_.push_back(&register_module("layer" + std::to_string(i + 1), std::move(layer)));
    stage_channels_.push_back(inplanes);
  }
  freeze_stages();
}

void ResNet::freeze_stages() {
  if (cfg_.frozen_stages >= 0) {
    norm1_->eval();
    conv1_->set_requires_grad(false);
    norm1_->set_requires_grad(false);
  }
  for (int i = 1; i <= cfg_.frozen_stages; ++i) {
    layers_[i - 1]->eval();
    layers_[i - 1]->set_requires_grad(false);
  }
}

void ResNet::train(bool on) {
  Module::train(on);
  freeze_stages();
  if (on && cfg_.norm_eval)
    for (auto* bn : modules_of_type<BatchNorm2d>()) bn->eval();
}

std::vector<Var> ResNet::forward(const Var& x) {
  KDET_CHECK(x.ndim() == 4 && x.size(1) == cfg_.in_channels, "ResNet: expected input [N, ", cfg_.in_channels,
             ", H, W], got ", x.data().desc());
  Var y = relu(norm1_->forward(conv1_->forward(x)));
  y = max_pool2d(y, 3, 2, 1);
  std::vector<Var> outs;
  for (int i = 0; i < cfg_.num_stages; ++i) {
    y = layers_[i]->forward(y);
    if (std::find(cfg_.out_indices.begin(), cfg_.out_indices.end(), i) != cfg_.out_indices.end()) outs.push_back(y);
  }
  return outs;
}

void ResNet::init_weights(Generator& g) {
  for_each_module([&](const std::string&, Module& m) {
    if (auto* c = dynamic_cast<Conv2d*>(&m)) {
      kaiming_normal_(c->weight().data(), g, 0.0, FanMode::FanOut, Nonlinearity::ReLU);
      if (c->has_bias()) c->bias().data().fill_(0.0);
    } else if (dynamic_cast<BatchNorm2d*>(&m) || dynamic_cast<GroupNorm*>(&m)) {
      m.init_weights(g);  // weight 1, bias 0
    }
  });
  // mmcv's own init for the deformable convs (mmdet's Kaiming pass matches nn.Conv2d only); conv_offset zero.
  for (auto* d : modules_of_type<DeformConv2dPack>()) d->init_weights(g);
  for (auto* d : modules_of_type<ModulatedDeformConv2dPack>()) d->init_weights(g);
  if (cfg_.zero_init_residual) {
    auto zero = [](UnaryModule& n) {
      for (auto* v : n.parameters()) v->data().fill_(0.0);
    };
    for (auto* b : modules_of_type<Bottleneck>()) zero(b->last_norm());
    for (auto* b : modules_of_type<BasicBlock>()) zero(b->last_norm());
  }
}

std::vector<int64_t> ResNet::out_channels() const {
  std::vector<int64_t> r;
  for (int i : cfg_.out_indices) r.push_back(stage_channels_[i]);
  return r;
}

std::vector<int64_t> ResNet::out_strides() const {
  std::vector<int64_t> r;
  for (int i : cfg_.out_indices) {
    int64_t s = 4;
    for (int k = 0; k <= i; ++k) s *= cfg_.strides[k];
    r.push_back(s);
  }
  return r;
}

}  // namespace kdet
