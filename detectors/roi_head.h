// detectors/roi_head.h — mmdet StandardRoIHead (Faster R-CNN, specs/detectors.md 7.4-7.6) and
// CascadeRoIHead (Cascade R-CNN, specs 8) in one class: a shared SingleRoIExtractor and one
// Shared2FCBBoxHead per stage.
//
// Module names (the detector registers it as "roi_head"): standard: bbox_head.{shared_fcs.*, fc_cls.*,
// fc_reg.*}; cascade: bbox_head.{0,1,2}.* (one ModuleList entry per stage).
//
// Training, per stage i (standard: one stage, loss names "loss_cls", "loss_bbox"; cascade: names
// "s{i}.loss_cls", "s{i}.loss_bbox", each multiplied by the stage weight 1 / 0.5 / 0.25):
//   1. per image: MaxIoUAssigner(stage IoU) on the proposals (first 4 columns) -> RandomSampler
//      (512 @ 0.25, GT prepended)                                          -> sample()   (random)
//   2. rois = bbox2roi(sampled boxes); features -> head; targets; loss     -> stage_loss() (deterministic)
//   3. cascade, i < last, no grad: labels of the sampled RoIs (negatives: argmax of the C foreground
//      logits); regress_by_class (clipped); drop the added GT rows -> next stage's proposals.
// Inference: rois = bbox2roi(proposals); per stage the head's logits and deltas; cascade: between
// stages the RoIs are regressed with the argmax foreground class; scores = softmax of the MEAN of the
// stages' logits; boxes = the last stage's deltas decoded against its input RoIs; per image
// get_bboxes (clip, rescale, multiclass NMS 0.05 / 0.5 / 100).
#pragma once
#include <memory>
#include <vector>

#include "detectors/assigner.h"
#include "detectors/bbox_head.h"
#include "detectors/roi_extractor.h"
#include "detectors/sampler.h"

namespace kdet {

struct RoIStageConfig {
  BBoxHeadConfig head;
  MaxIoUAssigner assigner;  // R-CNN: pos = neg = min_pos = IoU, no low-quality matching
  RandomSampler sampler = RandomSampler::rcnn();
  double loss_weight = 1.0;
};

struct RoIHeadConfig {
  bool cascade = false;
  RoIExtractorConfig extractor;
  std::vector<RoIStageConfig> stages;
  RCNNTestConfig test;

  // mmdet's R-CNN assigner at IoU t: MaxIoUAssigner(t, t, t, match_low_quality False, ignore -1).
  static MaxIoUAssigner rcnn_assigner(double iou);
  // faster_rcnn_r50_fpn: 1 stage, IoU 0.5, class-specific L1 head.
  static RoIHeadConfig faster(int64_t num_classes = 80);
  // cascade_rcnn_r50_fpn: 3 stages, IoU 0.5 / 0.6 / 0.7, weights 1 / 0.5 / 0.25, agnostic SmoothL1 heads.
  static RoIHeadConfig cascade_rcnn(int64_t num_classes = 80);
  // Sets in_channels / fc_out_channels / roi_feat_size of every stage's head (and the extractor's
  // output size) for narrow variants.
  void set_widths(int64_t in_channels, int64_t fc_out_channels);
  int64_t num_classes() const { return stages.empty() ? 0 : stages[0].head.num_classes; }
};

// What one stage did in a training step (for taps and tests).
struct RoIStageResult {
  std::vector<RandomSamplingResult> samples;
  Tensor rois;  // f32 [R, 5] sampled RoIs (batch index, box)
  BBoxHeadOutputs out;
  BBoxTargets targets;
  LossList losses;  // this stage's {"loss_cls", "loss_bbox"}, NOT multiplied by the stage weight
};

// What the test-time RoI path computed (taps).
struct RoIPredictResult {
  Tensor rois;      // f32 [K, 5] the last stage's input RoIs
  Var cls_score;    // [K, C+1] logits (cascade: mean over the stages)
  Var bbox_pred;    // [K, 4C | 4] the last stage's deltas
  std::vector<int64_t> counts;         // RoIs per image
  std::vector<Detections> detections;  // predict() only
};

// i64 [K]: argmax over the C foreground columns of [K, C+1] logits (first maximum wins).
Tensor argmax_foreground(const Tensor& cls_score, int64_t num_classes);

class RoIHead : public Module {
 public:
  explicit RoIHead(RoIHeadConfig cfg);
  const char* type_name() const override { return cfg_.cascade ? "CascadeRoIHead" : "StandardRoIHead"; }
  const RoIHeadConfig& config() const { return cfg_; }
  int num_stages() const { return static_cast<int>(heads_.size()); }
  Shared2FCBBoxHead& bbox_head(int stage) { return *heads_.at(stage); }
  const Shared2FCBBoxHead& bbox_head(int stage) const { return *heads_.at(stage); }
  const SingleRoIExtractor& roi_extractor() const { return extractor_; }

  void init_weights(Generator& g) override;

  // Step 1 of a stage (random): per image, assign the proposals ([n_i, 4+], f32) to the GT and sample.
  std::vector<RandomSamplingResult> sample(int stage, const std::vector<Tensor>& proposals,
                                           const std::vector<GtInstances>& gts, Generator& g) const;
  // A stage's head on given RoIs [K, 5]: RoI features of feats (>= 4 levels, P2..) -> logits, deltas.
  BBoxHeadOutputs forward_stage(int stage, const std::vector<Var>& feats, const Tensor& rois);
  // Step 2 (deterministic): forward + targets + unweighted loss on given sampling results.
  RoIStageResult stage_loss(int stage, const std::vector<Var>& feats, std::vector<RandomSamplingResult> samples);
  // Step 3 (cascade, no grad): the next stage's proposals from a stage's result.
  std::vector<Tensor> refine(int stage, const RoIStageResult& r, const std::vector<ImageGeometry>& geo) const;

  // The whole training pass; `stages` (optional) receives each stage's result.
  LossList loss(const std::vector<Var>& feats, const std::vector<Tensor>& proposals,
                const std::vector<GtInstances>& gts, const std::vector<ImageGeometry>& geo, Generator& g,
                std::vector<RoIStageResult>* stages = nullptr);
  // The test-time path on given RoIs [K, 5] (rows grouped by ascending image): each stage's head, the
  // cascade regression between stages, the stage-mean logits; no post-processing. Differentiable w.r.t.
  // feats (e.g. a teacher's RoI logits on a student's RoIs for logit KD).
  RoIPredictResult forward_rois(const std::vector<Var>& feats, const Tensor& rois,
                                const std::vector<ImageGeometry>& geo);
  // Inference on per-image proposals ([n_i, 4+]): forward_rois + get_bboxes per image (test = cfg.test
  // when null).
  RoIPredictResult predict(const std::vector<Var>& feats, const std::vector<Tensor>& proposals,
                           const std::vector<ImageGeometry>& geo, const RCNNTestConfig* test = nullptr);

 private:
  RoIHeadConfig cfg_;
  SingleRoIExtractor extractor_;
  std::vector<Shared2FCBBoxHead*> heads_;
};

}  // namespace kdet
