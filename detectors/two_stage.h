// detectors/two_stage.h — Faster R-CNN and Cascade R-CNN (specs/detectors.md 7, 8) with MMDetection
// state-dict names and semantics: ResNet/ResNeXt backbone -> FPN (P2..P6, start_level 0, P6 = max-pool
// of P5) -> RPNHead (rpn_head.*) -> RoI head (roi_head.bbox_head.* or roi_head.bbox_head.{0,1,2}.*).
//
//   auto m = build_detector(cfg);                    // [model] type = faster_rcnn | cascade_rcnn
//   FasterRCNN m(TwoStageConfig::faster_rcnn(50));   // faster_rcnn_r50_fpn_1x_coco
//   LossList l = m.loss(batch);   // loss_rpn_cls, loss_rpn_bbox, loss_cls, loss_bbox
//                                 // (Cascade: loss_rpn_*, s0.loss_cls, s0.loss_bbox, s1.*, s2.*)
//   std::vector<Detections> d = m.predict(batch);
//
// Training pass (mmdet TwoStageDetector.forward_train): RPN loss with its random anchor sampler; RPN
// proposals with the train proposal config (nms_pre 2000 per level, max 1000 / Cascade 2000, NMS 0.7),
// detached; RoI head loss on them (roi_head.h). Inference: RPN test proposals (1000 / 1000) -> RoI head
// -> detections (boxes divided by scale_factor when rescale, un-flipped for flipped inputs).
//
// Randomness: the RPN and R-CNN samplers draw from Generator(sampler_seed).fork(h), h a hash of the
// batch's image ids, flips and shapes; so a given batch always samples the same way (a run resumed
// from a checkpoint is identical to an uninterrupted one) while different batches get independent
// streams. loss(batch, taps, g) takes an explicit generator instead.
//
// Taps (DetectorTaps): backbone C2..C5, neck P2..P6 (neck_conv: neck.fpn_convs.{0..3}.conv and the
// pooled P6), head = the RPN's maps (cls_scores [N, A, H, W], bbox_preds [N, 4A, H, W], cls_feats =
// reg_feats = relu(rpn_conv)), named rpn_head.rpn_cls.{l} / rpn_head.rpn_reg.{l}. After loss(): rois /
// roi_cls_score / roi_bbox_pred of the first stage's sampled RoIs; after predict(): the last stage's
// input RoIs, the scores' logits (Cascade: the stage mean) and the last stage's deltas.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "detectors/detector.h"
#include "detectors/roi_head.h"
#include "detectors/rpn_head.h"
#include "engine/config.h"
#include "layers/fpn.h"
#include "layers/resnet.h"

namespace kdet {

struct TwoStageConfig {
  bool cascade = false;
  ResNetCfg backbone;
  FPNCfg neck;
  RPNHeadConfig rpn;
  RoIHeadConfig roi;
  uint64_t sampler_seed = 0;

  // mmdet faster_rcnn_r{depth}_fpn_1x_coco / cascade_rcnn_r{depth}_fpn_1x_coco (depth 18..101).
  static TwoStageConfig faster_rcnn(int depth, int64_t num_classes = 80);
  static TwoStageConfig cascade_rcnn(int depth, int64_t num_classes = 80);
  // From a flat config section; type = faster_rcnn | cascade_rcnn, every other key optional
  // (defaults = the mmdet R-50 config of that type):
  //   depth 50 | groups 1 | base_width 4 | base_channels 64 | frozen_stages 1 | norm_eval true |
  //   num_classes 80 | neck_channels 256 | rpn_feat_channels (= neck_channels) | fc_out_channels 1024 |
  //   rpn_anchor_scales 8 | rpn_allowed_border (-1 Faster, 0 Cascade) | rpn_reg_loss l1|smooth_l1 (l1 Faster, smooth_l1 Cascade) |
  //   rpn_train_nms_pre 2000 | rpn_train_max_per_img (1000 Faster, 2000 Cascade) | rpn_test_nms_pre 1000 |
  //   rpn_test_max_per_img 1000 | rpn_nms_iou 0.7 | rpn_sampler_num 256 | rcnn_sampler_num 512 |
  //   rcnn_pos_fraction 0.25 | avg_factor_eps (FLT_EPSILON; 0 = mmdet <= 2.23) | test_score_thr 0.05 |
  //   test_nms_iou 0.5 | test_max_per_img 100 | sampler_seed 0
  static TwoStageConfig from_config(const Config& c, const std::string& section = "model");
  // Re-derives neck.in_channels from the backbone and the heads' input widths from the neck.
  void sync_channels();
};

// mmdet's two-stage FPN: start_level 0, no extra convs, num_outs 5 (P6 = max-pool of P5).
FPNCfg two_stage_fpn_cfg(const std::vector<int64_t>& in_channels, int64_t out_channels = 256);

class TwoStageDetector : public Detector {
 public:
  explicit TwoStageDetector(TwoStageConfig cfg);
  const TwoStageConfig& config() const { return cfg_; }
  ResNet& backbone() { return *backbone_; }
  FPN& neck() { return *neck_; }
  RPNHead& rpn_head() { return *rpn_; }
  RoIHead& roi_head() { return *roi_; }

  std::string arch() const override { return cfg_.cascade ? "cascade_rcnn" : "faster_rcnn"; }
  int64_t num_classes() const override { return cfg_.roi.num_classes(); }
  bool two_stage() const override { return true; }
  Module& backbone_module() override { return *backbone_; }
  int64_t dense_cls_channels() const override { return 1; }
  std::vector<std::string> inherit_prefixes() const override { return {"neck.", "rpn_head.", "roi_head."}; }

  void init_weights(Generator& g) override;  // backbone Kaiming, FPN Xavier, RPN Normal(0.01), R-CNN heads

  DetectorTaps forward(const Var& images) override;
  LossList loss(const data::Batch& batch, DetectorTaps* taps = nullptr) override;
  // The same with an explicit generator for the RPN and R-CNN samplers.
  LossList loss(const data::Batch& batch, DetectorTaps* taps, Generator& g);
  std::vector<Detections> predict(const data::Batch& batch, bool rescale = true,
                                  DetectorTaps* taps = nullptr) override;

  int64_t tap_levels(TapKind k) const override;
  int64_t tap_channels(TapKind k, int64_t level) const override;

  // The generator loss(batch) uses for this batch (see the header comment).
  Generator sampling_generator(const data::Batch& batch) const;

 private:
  TwoStageConfig cfg_;
  ResNet* backbone_;
  FPN* neck_;
  RPNHead* rpn_;
  RoIHead* roi_;
};

class FasterRCNN final : public TwoStageDetector {
 public:
  explicit FasterRCNN(TwoStageConfig cfg);
  const char* type_name() const override { return "FasterRCNN"; }
};

class CascadeRCNN final : public TwoStageDetector {
 public:
  explicit CascadeRCNN(TwoStageConfig cfg);
  const char* type_name() const override { return "CascadeRCNN"; }
};

}  // namespace kdet
