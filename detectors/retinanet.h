// detectors/retinanet.h — RetinaNet = ResNet/ResNeXt backbone -> FPN (P3..P7) -> RetinaHead, with
// MMDetection state-dict names ("backbone.*", "neck.*", "bbox_head.*") and semantics.
//
//   RetinaNet model(RetinaNetConfig::mmdet(50));     // retinanet_r50_fpn_1x_coco
//   model.init_weights(gen);  or  model.load("retinanet_r50.safetensors");
//   LossList l = model.loss(batch);  total_loss(l).backward();
//   std::vector<Detections> d = model.predict(batch);  // original-image boxes (rescale)
//
// Distillation taps: forward(images) returns every intermediate the KD losses use: the backbone
// stages (C2..C5), the FPN levels (P3..P7 = neck.fpn_convs.{i}.conv outputs) and the head's
// per-level tower features and cls / reg maps. loss(batch, &taps) / predict(batch, &taps) fill them.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "data/types.h"
#include "engine/config.h"
#include "detectors/detector.h"
#include "detectors/retina_head.h"
#include "layers/fpn.h"
#include "layers/resnet.h"

namespace kdet {

struct RetinaNetConfig {
  ResNetCfg backbone;
  FPNCfg neck;
  RetinaHeadConfig head;

  // mmdet retinanet_r{depth}_fpn_1x_coco (depth 18, 34, 50, 101): frozen_stages 1, norm_eval,
  // FPN 256 on_input, head 256 x 4 convs, 80 classes.
  static RetinaNetConfig mmdet(int depth, int64_t num_classes = 80);
  // mmdet retinanet_x101_{groups}x{width}d_fpn_1x_coco.
  static RetinaNetConfig mmdet_resnext(int depth, int64_t groups, int64_t base_width, int64_t num_classes = 80);
  // A narrow variant for CPU experiments: ResNet-`depth` with base_channels `base`, FPN / head width
  // `width`, `stacked` head convs.
  static RetinaNetConfig small(int depth, int64_t base, int64_t width, int64_t stacked, int64_t num_classes);
  // From a flat config section (engine/config.h); every key optional, defaults = mmdet R50 1x:
  //   depth 50 | groups 1 | base_width 4 | base_channels 64 | frozen_stages 1 | norm_eval true |
  //   neck_channels 256 | feat_channels (= neck_channels) | stacked_convs 4 | num_classes 80 |
  //   head_norm none|gn | reg_loss l1|giou | avg_factor_eps (FLT_EPSILON; 0 = mmdet <= 2.23) |
  //   images_per_group 0 | allowed_border -1 | test_nms_pre 1000 | test_score_thr 0.05 | test_nms_iou 0.5 |
  //   test_max_per_img 100 | test_legacy false (mmdet <= 2.17 inference)
  //   anchor_octave_base_scale 4 | anchor_scales_per_octave 3 (anchor sizes; 4 = 32 px on P3)
  static RetinaNetConfig from_config(const Config& c, const std::string& section = "model");
  // Re-derives neck.in_channels from the backbone (call after editing backbone fields).
  void sync_channels();
};

// forward() fills backbone (C2..C5), neck (P3..P7), neck_conv and head (retina_cls / retina_reg maps
// and the cls / reg tower outputs); named() spells them bbox_head.retina_cls.{l}, bbox_head.cls_feat.{l} ...
using RetinaNetTaps = DetectorTaps;

class RetinaNet : public Detector {
 public:
  explicit RetinaNet(RetinaNetConfig cfg);
  const char* type_name() const override { return "RetinaNet"; }
  const RetinaNetConfig& config() const { return cfg_; }
  ResNet& backbone() { return *backbone_; }
  FPN& neck() { return *neck_; }
  RetinaHead& bbox_head() { return *head_; }
  int64_t num_classes() const override { return cfg_.head.num_classes; }
  std::string arch() const override { return "retinanet"; }
  Module& backbone_module() override { return *backbone_; }

  void init_weights(Generator& g) override;  // backbone Kaiming, FPN Xavier, head Normal(0.01)/prior bias

  // images [N, 3, H, W] -> every intermediate (taps).
  RetinaNetTaps forward(const Var& images) override;
  std::vector<Var> extract_feat(const Var& images);  // FPN outputs

  LossList loss(const data::Batch& batch, RetinaNetTaps* taps = nullptr) override;
  std::vector<Detections> predict(const data::Batch& batch, bool rescale = true, RetinaNetTaps* taps = nullptr) override;

  int64_t tap_levels(TapKind k) const override;
  int64_t tap_channels(TapKind k, int64_t level) const override;
  // The head's loss on each image's slice of the given head outputs (no second forward pass).
  Tensor per_image_loss(const data::Batch& batch, const DetectorTaps& taps) override;

 private:
  RetinaNetConfig cfg_;
  ResNet* backbone_;
  FPN* neck_;
  RetinaHead* head_;
};

}  // namespace kdet
