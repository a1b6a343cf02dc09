// detectors/detector.h — the interface every detector implements (RetinaNet, Faster R-CNN, Cascade
// R-CNN, RepPoints), so that trainers, evaluators and the Distiller work on all of them unchanged.
//
//   std::unique_ptr<Detector> m = build_detector(cfg);     // detectors/build.h
//   m->init_weights(gen);
//   LossList l = m->loss(batch);  total_loss(l).backward(); // training
//   std::vector<Detections> d = m->predict(batch);          // inference, original-image boxes
//   DetectorTaps t = m->forward(images);                    // every intermediate KD may read
//
// Taps. `forward` runs backbone -> neck -> dense head (RetinaNet's head, RepPoints' head, a two-stage
// detector's RPN head) and returns:
//   backbone   C2..C5 (the backbone's out_indices outputs)
//   neck       the FPN outputs the heads consume (P3..P7 one-stage, P2..P6 two-stage)
//   neck_conv  outputs of neck.fpn_convs.{i}.conv (= neck unless the FPN has a norm / extra convs)
//   head       dense-head maps per level: cls_scores / bbox_preds (logits / box outputs) and the
//              tower features cls_feats / reg_feats (empty where a head has no towers)
// Two-stage detectors add, when loss()/predict() ran with taps: the RoI head's outputs on the RoIs it
// used (roi_cls_score [R, C+1], roi_bbox_pred, rois [R, 5] = (batch index, x1, y1, x2, y2)).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/types.h"
#include "detectors/types.h"
#include "engine/random.h"
#include "layers/module.h"

namespace kdet {

// Dense-head outputs per pyramid level.
struct DenseHeadOutputs {
  std::vector<Var> cls_scores;  // [N, A*C, H_l, W_l] logits
  std::vector<Var> bbox_preds;  // [N, A*4, H_l, W_l] deltas (RepPoints: refined points [N, 2P, H, W])
  std::vector<Var> cls_feats;   // [N, F, H_l, W_l] output of the cls tower
  std::vector<Var> reg_feats;   // [N, F, H_l, W_l] output of the reg tower
  size_t num_levels() const { return cls_scores.size(); }
};

// What the distillation losses may tap, by kind and level ("neck.3", "cls_score.0", ...). NeckConv
// ("neck_conv.i") is the output of neck.fpn_convs.{i}.conv, the tap point of the mmdet-based KD code
// (specs/kd_losses.md §0); it equals Neck unless the FPN has a norm (RepPoints' GN neck). Levels and
// channels of NeckConv are those of Neck.
enum class TapKind { Backbone, Neck, ClsScore, BboxPred, ClsFeat, RegFeat, NeckConv };

struct DetectorTaps {
  std::vector<Var> backbone;
  std::vector<Var> neck;
  std::vector<Var> neck_conv;
  DenseHeadOutputs head;
  // Two-stage only (undefined otherwise): RoI head outputs of the last loss()/predict() call.
  Var roi_cls_score, roi_bbox_pred;
  Tensor rois;
  // How named() spells the dense head's maps: <head_name>.<cls_name>.<level>, <head_name>.cls_feat.<l>.
  std::string head_name = "bbox_head", cls_name = "retina_cls", reg_name = "retina_reg";

  // Every tap under a stable name, for configs and pictures: backbone.layer{1..4}, neck.out.{i},
  // neck.fpn_convs.{i}.conv, <head_name>.{<cls_name>,<reg_name>,cls_feat,reg_feat}.{l}, and for
  // two-stage detectors roi_head.cls_score / roi_head.bbox_pred.
  std::map<std::string, Var> named() const;
  // The per-level list of a tap kind (empty when the detector has none).
  const std::vector<Var>& of(TapKind k) const;
};

class Detector : public Module {
 public:
  // "retinanet", "faster_rcnn", "cascade_rcnn", "reppoints".
  virtual std::string arch() const = 0;
  virtual int64_t num_classes() const = 0;
  // Is it a two-stage detector (RPN + RoI head)? KD defaults differ (specs/kd_losses.md).
  virtual bool two_stage() const { return false; }
  // The backbone (registered as "backbone"): for loading ImageNet-pretrained weights.
  virtual Module& backbone_module() = 0;
  // Classes per anchor in the dense head's cls_scores maps ([N, A*K, H, W]): K. RetinaNet and
  // RepPoints: num_classes(); a two-stage detector's RPN: 1.
  virtual int64_t dense_cls_channels() const { return num_classes(); }

  // images [N, 3, H, W] -> taps (backbone, neck, dense head).
  virtual DetectorTaps forward(const Var& images) = 0;
  // Training losses in mmdet's names and order; `taps` (optional) receives every intermediate.
  virtual LossList loss(const data::Batch& batch, DetectorTaps* taps = nullptr) = 0;
  // Detections per image (boxes in the original image when rescale).
  virtual std::vector<Detections> predict(const data::Batch& batch, bool rescale = true,
                                          DetectorTaps* taps = nullptr) = 0;

  // Levels / channels of a tap kind, known from the config without running a forward pass
  // (0 levels: the detector has no such tap). Level out of range throws.
  virtual int64_t tap_levels(TapKind k) const = 0;
  virtual int64_t tap_channels(TapKind k, int64_t level) const = 0;

  // The detector's own detection loss on each image of the batch alone (no grad), [N] f32: AID's
  // teacher loss L_T. `taps` are this detector's taps of the same batch (may be reused). The default
  // runs loss() on every single-image sub-batch under a NoGradGuard.
  virtual Tensor per_image_loss(const data::Batch& batch, const DetectorTaps& taps);

  // State-dict prefixes copied by the distillers' "inheriting strategy" (FGD/MGD): the neck and the
  // heads. RetinaNet: {"neck.", "bbox_head."}; two-stage: {"neck.", "rpn_head.", "roi_head."}.
  virtual std::vector<std::string> inherit_prefixes() const { return {"neck.", "bbox_head."}; }

  // Batch -> what the heads consume (ignore-flagged boxes become ignore regions), and per-image
  // geometry (img_shape, pad_shape, scale_factor).
  static std::vector<GtInstances> gt_instances(const data::Batch& batch);
  static std::vector<ImageGeometry> geometry(const data::Batch& batch);
};

// Detections of horizontally flipped inputs (train-time metas with flip) mapped back to the unflipped
// frame: x' = W - x with W = img_w (/ scale_w when rescaled). Every detector's predict() ends with it.
void unflip_detections(std::vector<Detections>& d, const data::Batch& batch, bool rescale);

// Sub-batch of images [i0, i1) of a batch (images, annotations, metadata).
data::Batch slice_batch(const data::Batch& b, int64_t i0, int64_t i1);

}  // namespace kdet
