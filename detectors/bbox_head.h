// detectors/bbox_head.h — mmdet Shared2FCBBoxHead (specs/detectors.md 7.1, 7.5, 7.6, 8): the R-CNN box
// head of Faster R-CNN and of each Cascade R-CNN stage.
//
// Module names (relative to the head; the RoI head registers it as "bbox_head" or "bbox_head.{i}"):
//   shared_fcs.{0..F-1}.{weight,bias}  Linear(C*7*7 -> fc, fc -> fc), ReLU after each
//   fc_cls.{weight,bias}               Linear(fc -> C+1), index C = background (LAST)
//   fc_reg.{weight,bias}               Linear(fc -> 4*C) class-major (columns 4k..4k+3 = class k), or
//                                      Linear(fc -> 4) when reg_class_agnostic (Cascade)
// Input RoI features [R, C, 7, 7] are flattened channel-major (c*49 + y*7 + x).
// init_weights: shared fcs Xavier-uniform, fc_cls Normal(0, 0.01), fc_reg Normal(0, 0.001), biases 0.
//
// Targets (BBoxHead.get_targets, concat over images; each image's sampled RoIs = positives then
// negatives): label = gt label (pos) / C (neg); label_weight 1 (pos_weight when > 0) / 1; bbox target
// = coder.encode(pos RoI, assigned gt) for positives (weight 1 on the 4 coordinates), 0 otherwise.
// Loss (BBoxHead.loss), eps = avg_factor_eps (FLT_EPSILON: mmdet >= 2.24; 0 for 2.11-2.23):
//   loss_cls  = loss_cls_weight * Σ_r w_r CE(cls_score_r, label_r) / (max(#{w_r > 0}, 1) + eps)
//   loss_bbox = loss_bbox_weight * Σ_pos Σ_4 bw * L(pred, target) / (R + eps)
//     pred = the 4 columns of the GT class (class-specific) or the 4 columns (agnostic);
//     L = L1 or SmoothL1(beta); R = number of sampled RoIs of all images (NOT the positives).
//   With no positive, loss_bbox = 0 * Σ bbox_pred (keeps the graph, as mmdet's bbox_pred[pos].sum()).
// Post-processing (get_bboxes): softmax over the C+1 logits; decode the deltas against the RoI
// (clipped to img_shape); divide by scale_factor when rescale; multiclass_nms(score_thr, nms_iou,
// max_per_img) on the C foreground columns.
#pragma once
#include <cfloat>
#include <vector>

#include "detectors/box_coder.h"
#include "detectors/sampler.h"
#include "detectors/types.h"
#include "layers/linear.h"

namespace kdet {

struct RCNNTestConfig {
  double score_thr = 0.05;
  double nms_iou = 0.5;
  int64_t max_per_img = 100;
  bool rescale = true;
};

struct BBoxHeadConfig {
  int64_t num_classes = 80;
  int64_t in_channels = 256;
  int64_t roi_feat_size = 7;
  int64_t num_shared_fcs = 2;
  int64_t fc_out_channels = 1024;
  bool reg_class_agnostic = false;
  DeltaXYWHBBoxCoder coder{{0, 0, 0, 0}, {0.1, 0.1, 0.2, 0.2}};
  enum class RegLoss { L1, SmoothL1 } reg_loss = RegLoss::L1;
  double smooth_l1_beta = 1.0;
  double loss_cls_weight = 1.0, loss_bbox_weight = 1.0;
  double avg_factor_eps = FLT_EPSILON;
  double pos_weight = -1.0;  // <= 0: 1

  // Faster R-CNN's head: class-specific, L1, stds (0.1, 0.1, 0.2, 0.2).
  static BBoxHeadConfig faster(int64_t num_classes = 80);
  // Cascade R-CNN stage i (0..2): class-agnostic, SmoothL1(1.0), per-stage stds (specs 4.2).
  static BBoxHeadConfig cascade_stage(int stage, int64_t num_classes = 80);
};

struct BBoxHeadOutputs {
  Var cls_score;  // [R, C+1] logits (background last)
  Var bbox_pred;  // [R, 4*C] or [R, 4] deltas
};

// Targets of the sampled RoIs of a batch (rows = images' sampled RoIs concatenated, pos then neg).
struct BBoxTargets {
  Tensor labels;         // i64 [R]: class or C (background)
  Tensor label_weights;  // f32 [R]
  Tensor bbox_targets;   // f32 [R, 4] encoded deltas (0 for negatives)
  Tensor bbox_weights;   // f32 [R, 4]
  int64_t size() const { return labels.defined() ? labels.numel() : 0; }
};

// [K, 5] rois (batch index, box) of per-image box lists [n_i, >=4] (mmdet bbox2roi).
Tensor bbox2roi(const std::vector<Tensor>& boxes);

class Shared2FCBBoxHead : public Module {
 public:
  explicit Shared2FCBBoxHead(BBoxHeadConfig cfg = {});
  const char* type_name() const override { return "Shared2FCBBoxHead"; }
  const BBoxHeadConfig& config() const { return cfg_; }
  int64_t num_classes() const { return cfg_.num_classes; }

  void init_weights(Generator& g) override;
  // roi_feats [R, C, S, S] -> logits and deltas.
  BBoxHeadOutputs forward(const Var& roi_feats);

  // Targets of per-image sampling results (positives first, then negatives, images concatenated).
  BBoxTargets get_targets(const std::vector<RandomSamplingResult>& samples) const;
  // {"loss_cls", "loss_bbox"} on given outputs and targets (no randomness).
  LossList loss(const BBoxHeadOutputs& out, const BBoxTargets& t) const;

  // Decodes each RoI with the deltas of its label (class-specific) or the shared deltas (agnostic),
  // clipped to img_shape. rois [K, 4] or [K, 5] (batch index kept); labels i64 [K] (0..C-1).
  Tensor regress_by_class(const Tensor& rois, const Tensor& labels, const Tensor& bbox_pred,
                          const ImageGeometry& geo) const;
  // Cascade training: per image, the regressed sampled RoIs ([R, 5] rois of the batch) with the added GT
  // rows (pos_is_gt) dropped -> the next stage's proposals, f32 [n_i, 4].
  std::vector<Tensor> refine_bboxes(const Tensor& rois, const Tensor& labels, const Tensor& bbox_pred,
                                    const std::vector<Tensor>& pos_is_gts,
                                    const std::vector<ImageGeometry>& geo) const;
  // One image: rois [K, 5] (or [K, 4]), cls_score [K, C+1] logits, bbox_pred [K, 4C | 4] -> detections.
  Detections get_bboxes(const Tensor& rois, const Tensor& cls_score, const Tensor& bbox_pred,
                        const ImageGeometry& geo, const RCNNTestConfig& test) const;

 private:
  BBoxHeadConfig cfg_;
  ModuleList<Linear>* shared_fcs_ = nullptr;
  Linear* fc_cls_ = nullptr;
  Linear* fc_reg_ = nullptr;
};

}  // namespace kdet
