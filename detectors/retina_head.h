// detectors/retina_head.h — mmdet RetinaHead (specs/detectors.md 6): towers, targets, loss, inference.
//
// Module names (relative to the head; the detector registers it as "bbox_head"):
//   cls_convs.{0..S-1}.conv.{weight,bias}, reg_convs.{0..S-1}.conv.{weight,bias},
//   retina_cls.{weight,bias} (A*C outputs), retina_reg.{weight,bias} (A*4 outputs).
// Dense maps are NCHW with channel a*K + k; targets / decoding use the (image, level, y, x, a) order.
//
// Loss (mmdet semantics): anchors valid for the image's pad_shape and (allowed_border >= 0) inside
// img_shape are assigned with MaxIoUAssigner(0.5, 0.4, 0, low-quality); PseudoSampler.
//   avg_factor = Σ_images max(#pos, 1)
//   loss_cls  = Σ focal(logit, onehot) over anchors with label_weight 1 (pos + neg) / (avg_factor + eps)
//   loss_bbox = Σ |pred - encode(anchor, gt)| over positives / (avg_factor + eps)        (L1)
//            or Σ (1 - GIoU(decode(anchor, pred), gt)) over positives / (avg_factor + eps) (GIoU)
// eps = FLT_EPSILON (mmdet >= 2.24 / 3.x); set avg_factor_eps = 0 for mmdet 2.11-2.23 (FGD/MGD).
// images_per_group k > 0 emulates mmdet's per-GPU normalisation on one device (specs/detectors.md 5):
// images are split into groups of k, each group's loss uses its own avg_factor, and the result is the
// mean over groups (what DDP's gradient averaging over GPUs gives: 8 GPUs x 2 images -> k = 2).
#pragma once
#include <cfloat>
#include <utility>
#include <vector>

#include "detectors/anchors.h"
#include "detectors/assigner.h"
#include "detectors/box_coder.h"
#include "detectors/detector.h"
#include "detectors/postprocess.h"
#include "detectors/types.h"
#include "layers/conv.h"

namespace kdet {

struct RetinaHeadConfig {
  int64_t num_classes = 80;
  int64_t in_channels = 256;
  int64_t feat_channels = 256;
  int64_t stacked_convs = 4;
  NormCfg norm = NormCfg::none();  // GN for RetinaNet-v2-style heads
  AnchorGeneratorConfig anchors = AnchorGeneratorConfig::retinanet();
  DeltaXYWHBBoxCoder coder;
  MaxIoUAssigner assigner = MaxIoUAssigner::retinanet();
  int64_t allowed_border = -1;
  double focal_gamma = 2.0, focal_alpha = 0.25;
  double loss_cls_weight = 1.0, loss_bbox_weight = 1.0;
  enum class RegLoss { L1, GIoU } reg_loss = RegLoss::L1;  // GIoU = reg_decoded_bbox=True + GIoULoss
  double giou_eps = 1e-6;
  double avg_factor_eps = FLT_EPSILON;
  int64_t images_per_group = 0;  // 0: the whole batch is one group
  double prior_prob = 0.01;
  DenseTestConfig test;
};

// Everything the head produced for a batch, per FPN level (the distillation taps).
using RetinaHeadOutputs = DenseHeadOutputs;

// Training targets of a batch, flattened in (image, level, y, x, a) order: row = n*M + m.
struct DenseTargets {
  int64_t num_images = 0, num_anchors = 0;  // M anchors per image
  std::vector<std::pair<int64_t, int64_t>> feat_sizes;
  Tensor anchors;        // f32 [M, 4] (shared by the images of the batch)
  Tensor labels;         // i64 [N*M]: class, or num_classes for background / unused
  Tensor label_weights;  // f32 [N*M]: 1 for positives and negatives, 0 for ignored / invalid
  Tensor pos_inds;       // i64 [P] rows of positives (ascending)
  Tensor pos_bbox_targets;  // f32 [P, 4] encoded deltas (coder means/stds)
  Tensor pos_gt_boxes;      // f32 [P, 4] assigned GT boxes
  Tensor pos_anchors;       // f32 [P, 4]
  int64_t num_pos = 0, num_neg = 0;
  double avg_factor = 0;  // Σ_images max(#pos, 1)
  std::vector<int64_t> num_pos_per_image;
};

class RetinaHead : public Module {
 public:
  explicit RetinaHead(RetinaHeadConfig cfg = {});
  const char* type_name() const override { return "RetinaHead"; }
  const RetinaHeadConfig& config() const { return cfg_; }
  const AnchorGenerator& anchor_generator() const { return anchors_; }
  int64_t num_anchors() const { return anchors_.num_base_anchors(); }

  RetinaHeadOutputs forward(const std::vector<Var>& feats);
  // mmdet RetinaHead.init_weights: every conv Normal(0, 0.01), bias 0; retina_cls bias -log((1-p)/p).
  void init_weights(Generator& g) override;

  DenseTargets get_targets(const std::vector<std::pair<int64_t, int64_t>>& feat_sizes,
                           const std::vector<GtInstances>& gts, const std::vector<ImageGeometry>& geo) const;
  // {"loss_cls", "loss_bbox"}.
  LossList loss(const RetinaHeadOutputs& out, const std::vector<GtInstances>& gts,
                const std::vector<ImageGeometry>& geo) const;
  LossList loss(const RetinaHeadOutputs& out, const DenseTargets& t) const;
  // Test-time post-processing per image (cfg.test, or *test when given; boxes divided by scale_factor
  // when rescale).
  std::vector<Detections> predict(const RetinaHeadOutputs& out, const std::vector<ImageGeometry>& geo,
                                  const DenseTestConfig* test = nullptr) const;

  // [N, A*K, H, W] maps of all levels -> [N*M, K] rows in target order (differentiable).
  static Var flatten_levels(const std::vector<Var>& maps, int64_t k);

 private:
  RetinaHeadConfig cfg_;
  AnchorGenerator anchors_;
  ModuleList<ConvModule>* cls_convs_ = nullptr;
  ModuleList<ConvModule>* reg_convs_ = nullptr;
  Conv2d* retina_cls_ = nullptr;
  Conv2d* retina_reg_ = nullptr;
};

// Focal-loss targets [R, C] of dtype dt on `dev`: row r is one-hot at labels[rows[r]] (all zeros for a
// background label outside [0, C)). Built where the logits are from the short list of foreground positions,
// so a GPU run uploads only those, not the R·C matrix.
Tensor onehot_targets(const std::vector<int64_t>& rows, const int64_t* labels, int64_t C, DType dt, Device dev);

}  // namespace kdet
