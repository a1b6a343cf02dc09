// detectors/reppoints.h — RepPoints (RepPointsDetector, single stage; specs/detectors.md 9) = ResNet/ResNeXt
// backbone -> FPN (start_level 1, on_input, P3..P7, optional GN on every conv) -> RepPointsHead, with
// MMDetection state-dict names ("backbone.*", "neck.*", "bbox_head.*") and semantics.
//
//   RepPointsDetector m(RepPointsConfig::mmdet(50));   // reppoints_moment_r50_fpn_gn-neck+head_1x_coco
//   auto m = build_detector(cfg);                      // [model] type = reppoints
//   LossList l = m.loss(batch);   // loss_cls, loss_pts_init, loss_pts_refine
//   std::vector<Detections> d = m.predict(batch);      // original-image boxes (rescale)
//
// Taps (DetectorTaps): backbone C2..C5, neck P3..P7 (neck_conv = the raw neck.fpn_convs.{i}.conv outputs,
// before GN when the neck has one), head.cls_scores = reppoints_cls_out maps [N, C, H, W],
// head.bbox_preds = the refined points [N, 2P, H, W] ((y, x) offsets in stride units), cls_feats /
// reg_feats = the two towers' outputs; named bbox_head.reppoints_cls_out.{l} /
// bbox_head.pts_refine.{l}. KD on RepPoints uses P3..P7 with the one-stage defaults (specs/kd_losses.md).
#pragma once
#include <string>
#include <vector>

#include "detectors/detector.h"
#include "detectors/reppoints_head.h"
#include "engine/config.h"
#include "layers/fpn.h"
#include "layers/resnet.h"

namespace kdet {

struct RepPointsConfig {
  ResNetCfg backbone;
  FPNCfg neck;
  RepPointsHeadConfig head;

  // mmdet reppoints_moment_r{depth}_fpn[_gn-neck+head]_{1x,2x}_coco (depth 18..101): frozen_stages 1,
  // norm_eval, FPN 256 on_input, head 256 x 3 convs, GN(32) on neck and head when gn, 80 classes.
  static RepPointsConfig mmdet(int depth, bool gn = true, int64_t num_classes = 80);
  // From a flat config section (engine/config.h); every key optional, defaults = mmdet
  // reppoints_moment_r50_fpn_gn-neck+head_1x:
  //   depth 50 | groups 1 | base_width 4 | base_channels 64 | frozen_stages 1 | norm_eval true |
  //   dcn none|dcn|dcnv2 | stage_with_dcn 0,1,1,1 | dcn_deform_groups 1 | dcn_fallback_on_stride false
  //   (layers/resnet.h resnet_dcn_from_config) |
  //   neck_channels 256 | neck_norm gn|none | head_norm gn|none | gn_groups 32 | feat_channels (= neck) |
  //   point_feat_channels (= feat_channels) | stacked_convs 3 | num_classes 80 | num_points 9 |
  //   transform moment|minmax|partial_minmax | gradient_mul 0.1 | moment_mul 0.01 | point_base_scale 4 |
  //   dcn_init normal|mmcv | avg_factor_eps (FLT_EPSILON; 0 = mmdet <= 2.23) | images_per_group 0 |
  //   test_nms_pre 1000 | test_score_thr 0.05 | test_nms_iou 0.5 | test_max_per_img 100 |
  //   test_legacy false (mmdet <= 2.17 inference)
  static RepPointsConfig from_config(const Config& c, const std::string& section = "model");
  // Re-derives neck.in_channels from the backbone and head.in_channels from the neck.
  void sync_channels();
};

class RepPointsDetector : public Detector {
 public:
  explicit RepPointsDetector(RepPointsConfig cfg);
  const char* type_name() const override { return "RepPointsDetector"; }
  const RepPointsConfig& config() const { return cfg_; }
  ResNet& backbone() { return *backbone_; }
  FPN& neck() { return *neck_; }
  RepPointsHead& bbox_head() { return *head_; }

  std::string arch() const override { return "reppoints"; }
  int64_t num_classes() const override { return cfg_.head.num_classes; }
  Module& backbone_module() override { return *backbone_; }

  // backbone Kaiming (mmdet ResNet init), FPN Xavier, head per RepPointsHead::init_weights.
  void init_weights(Generator& g) override;

  DetectorTaps forward(const Var& images) override;
  // The same plus the head's own outputs (the init points, which DetectorTaps has no slot for).
  DetectorTaps forward(const Var& images, RepPointsHeadOutputs* head_out);
  LossList loss(const data::Batch& batch, DetectorTaps* taps = nullptr) override;
  std::vector<Detections> predict(const data::Batch& batch, bool rescale = true, DetectorTaps* taps = nullptr) override;

  int64_t tap_levels(TapKind k) const override;
  int64_t tap_channels(TapKind k, int64_t level) const override;

 private:
  RepPointsConfig cfg_;
  ResNet* backbone_;
  FPN* neck_;
  RepPointsHead* head_;
};

}  // namespace kdet
