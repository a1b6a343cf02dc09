// detectors/rpn_head.h — mmdet RPNHead (specs/detectors.md 7.1-7.3): forward, targets, loss, proposals.
//
// Module names (relative to the head; the detector registers it as "rpn_head"):
//   rpn_conv.{weight,bias} (3x3, in -> feat, ReLU), rpn_cls.{weight,bias} (1x1, feat -> A, one sigmoid
//   logit per anchor), rpn_reg.{weight,bias} (1x1, feat -> 4A). Shared over levels.
// forward: DenseHeadOutputs with cls_scores [N, A, H, W], bbox_preds [N, 4A, H, W] and
//   cls_feats = reg_feats = relu(rpn_conv(x)) (the one shared tower; both lists hold the same Vars).
//
// Training (mmdet AnchorHead with sampling): per image, anchors valid for pad_shape (and, when
// allowed_border >= 0, inside img_shape) are assigned with MaxIoUAssigner(0.7, 0.3, 0.3, low-quality),
// gt labels unused; RandomSampler(256, 0.5, no gt) picks positives / negatives. Targets (DenseTargets,
// rows in (image, level, y, x, a) order): label 0 for sampled positives, 1 (background) otherwise;
// label_weight 1 for sampled pos / neg; deltas (stds 1) for sampled positives.
//   avg_factor = Σ_images max(#pos, 1) + Σ_images max(#neg, 1)
//   loss_rpn_cls  = Σ BCE-with-logits(logit, label == 0) over weighted rows / (avg_factor + eps)
//   loss_rpn_bbox = Σ L1(pred, target) (or SmoothL1(beta), Cascade 1/9) over positives / (avg_factor + eps)
// eps = FLT_EPSILON (mmdet >= 2.24); avg_factor_eps = 0 for older mmdet. images_per_group k > 0: each
// group of k images is normalised by its own avg_factor and the groups are averaged (detectors/loss_norm.h).
// The random part is separable: get_targets(..., g) samples; loss(out, targets) is deterministic.
//
// Proposals (mmdet 2.x RPNHead._get_bboxes_single + _bbox_post_process), per image, per level:
// scores = sigmoid(logit) in (y, x, a) order; if more than nms_pre, keep the nms_pre best (stable
// descending sort); decode the kept deltas against their anchors, clipped to img_shape; concatenate
// levels; drop boxes with w <= min_bbox_size or h <= min_bbox_size (min_bbox_size < 0: keep all);
// batched_nms with the LEVEL as class id (IoU nms_iou); keep the first max_per_img. Result f32 [K, 5]
// (x1, y1, x2, y2, score), score-descending, no gradient, in network-input (not rescaled) coordinates.
#pragma once
#include <cfloat>
#include <utility>
#include <vector>

#include "detectors/anchors.h"
#include "detectors/assigner.h"
#include "detectors/box_coder.h"
#include "detectors/detector.h"
#include "detectors/retina_head.h"
#include "detectors/sampler.h"
#include "detectors/types.h"
#include "layers/conv.h"

namespace kdet {

struct ProposalConfig {
  int64_t nms_pre = 1000;
  int64_t max_per_img = 1000;
  double nms_iou = 0.7;
  double min_bbox_size = 0.0;  // drop w <= min or h <= min; < 0: no filtering (mmdet 2.11 behaviour)
};

struct RPNHeadConfig {
  int64_t in_channels = 256, feat_channels = 256;
  AnchorGeneratorConfig anchors = AnchorGeneratorConfig::rpn();  // scales {8}, ratios {0.5,1,2}, strides 4..64
  DeltaXYWHBBoxCoder coder;                                      // means 0, stds 1
  MaxIoUAssigner assigner = MaxIoUAssigner::rpn();               // 0.7 / 0.3 / 0.3, low-quality
  RandomSampler sampler = RandomSampler::rpn();                  // 256 @ 0.5, no gt
  int64_t allowed_border = -1;                                   // Cascade: 0
  double loss_cls_weight = 1.0, loss_bbox_weight = 1.0;
  double smooth_l1_beta = 0.0;                                   // 0: L1 (Faster); Cascade: 1/9
  double avg_factor_eps = FLT_EPSILON;
  int64_t images_per_group = 0;  // > 0: per-GPU normalisation of mmdet (detectors/loss_norm.h); 0: one group
  ProposalConfig train{2000, 1000, 0.7, 0.0};
  ProposalConfig test{1000, 1000, 0.7, 0.0};

  static RPNHeadConfig mmdet() { return {}; }  // Faster R-CNN
  static RPNHeadConfig cascade() {             // Cascade R-CNN: allowed_border 0, SmoothL1 1/9, 2000 train
    RPNHeadConfig c;
    c.allowed_border = 0;
    c.smooth_l1_beta = 1.0 / 9.0;
    c.train.max_per_img = 2000;
    return c;
  }
};

class RPNHead : public Module {
 public:
  explicit RPNHead(RPNHeadConfig cfg = {});
  const char* type_name() const override { return "RPNHead"; }
  const RPNHeadConfig& config() const { return cfg_; }
  const AnchorGenerator& anchor_generator() const { return anchors_; }
  int64_t num_anchors() const { return anchors_.num_base_anchors(); }

  DenseHeadOutputs forward(const std::vector<Var>& feats);
  // mmdet RPNHead: every conv Normal(0, 0.01), bias 0.
  void init_weights(Generator& g) override;

  // Assignment + random sampling (the only random part). Rows in (image, level, y, x, a) order;
  // labels 0 (positive) / 1 (background); label_weights 1 on the sampled rows.
  DenseTargets get_targets(const std::vector<std::pair<int64_t, int64_t>>& feat_sizes,
                           const std::vector<GtInstances>& gts, const std::vector<ImageGeometry>& geo,
                           Generator& g) const;
  // {"loss_rpn_cls", "loss_rpn_bbox"}.
  LossList loss(const DenseHeadOutputs& out, const std::vector<GtInstances>& gts,
                const std::vector<ImageGeometry>& geo, Generator& g) const;
  LossList loss(const DenseHeadOutputs& out, const DenseTargets& t) const;

  // Proposals per image: f32 [K, 5] (x1, y1, x2, y2, score); cfg.train when training, else cfg.test.
  std::vector<Tensor> get_proposals(const DenseHeadOutputs& out, const std::vector<ImageGeometry>& geo,
                                    bool training) const;

 private:
  RPNHeadConfig cfg_;
  AnchorGenerator anchors_;
  Conv2d* rpn_conv_ = nullptr;
  Conv2d* rpn_cls_ = nullptr;
  Conv2d* rpn_reg_ = nullptr;
};

// One image: cls_logits[l] [A, H, W], bbox_preds[l] [4A, H, W], priors[l] [H*W*A, 4] -> f32 [K, 5].
Tensor rpn_proposals_single(const std::vector<Tensor>& cls_logits, const std::vector<Tensor>& bbox_preds,
                            const std::vector<Tensor>& priors, const DeltaXYWHBBoxCoder& coder,
                            const ImageGeometry& geo, const ProposalConfig& cfg);

}  // namespace kdet
