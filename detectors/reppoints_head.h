// detectors/reppoints_head.h — mmdet RepPointsHead (specs/detectors.md 9): GN towers, point init and
// refine branches, the deformable convs driven by the predicted points, points2bbox (moment with the
// learnable moment_transfer / minmax / partial_minmax), point generator + PointAssigner for the init
// stage, MaxIoUAssigner on the init pseudo boxes for the refine stage, focal + smooth-L1 losses with
// mmdet's normalisers, and inference.
//
// Module names (relative to the head; the detector registers it as "bbox_head"), mmdet's:
//   moment_transfer [2] (transform moment only), cls_convs.{i}.conv.weight + .gn.{weight,bias} (GN; without a
//   norm .conv.bias), reg_convs.{i}..., reppoints_cls_conv.weight (DCN 3x3, no bias), reppoints_cls_out.*,
//   reppoints_pts_init_conv.*, reppoints_pts_init_out.*, reppoints_pts_refine_conv.weight (DCN),
//   reppoints_pts_refine_out.*.
//
// Forward per level x (training and test alike; test-time boxes come from predict):
//   cls_feat = cls_convs(x); pts_feat = reg_convs(x)
//   pts_init = pts_init_out(relu(pts_init_conv(pts_feat)))                   [N, 2P, H, W], (y, x) per point,
//                                                                            stride units, relative to the cell
//   dcn_offset = ((1-g)·stop_grad(pts_init) + g·pts_init) - base              g = gradient_mul (0.1),
//                base (y, x) of tap k = 3i + j: (i-1, j-1)
//   cls_out = cls_out(relu(DCN_cls(cls_feat, dcn_offset)))                   [N, C, H, W]
//   pts_refine = pts_refine_out(relu(DCN_refine(pts_feat, dcn_offset))) + stop_grad(pts_init)
//
// Loss (per image: valid points of pad_shape; levels summed with one global normaliser each):
//   init:   PointAssigner(point_base_scale, pos_num) on the points (x, y, s, s); positives get their GT box
//   refine: MaxIoUAssigner(0.5, 0.4, 0, low-quality) on the pseudo boxes (x, y, x, y) +
//           points2bbox(stop_grad(pts_init)) * s (current moment_transfer); labels (C = background) and
//           label weights (1 positive / negative, 0 ignored / invalid), PseudoSampler.
//   avg_init = Σ_images max(#init pos, 1), avg_refine = Σ_images max(#refine pos, 1)
//   loss_cls        = Σ focal(logits, onehot) · label_weight / (avg_refine + eps) · loss_cls_weight
//   loss_pts_init   = Σ_pos smoothL1_β(points2bbox(pts_abs_init)/(4s), gt/(4s)) / (avg_init + eps) · 0.5
//   loss_pts_refine = Σ_pos smoothL1_β(points2bbox(pts_abs_refine)/(4s), gt/(4s)) / (avg_refine + eps) · 1.0
//   pts_abs = offset · s + (x, y) of the point; normaliser 4s = point_base_scale · stride; β = 0.11.
// eps = FLT_EPSILON (mmdet >= 2.24) or 0 (avg_factor_eps = 0: mmdet 2.11-2.23, FGD / MGD);
// images_per_group as RetinaHead (per-group normalisers, mean over groups).
#pragma once
#include <cfloat>
#include <utility>
#include <vector>

#include "detectors/assigner.h"
#include "detectors/point_assigner.h"
#include "detectors/point_generator.h"
#include "detectors/postprocess.h"
#include "detectors/types.h"
#include "layers/conv.h"
#include "layers/dcn.h"

namespace kdet {

enum class PointsTransform { Moment, MinMax, PartialMinMax };
PointsTransform points_transform(const std::string& s);  // "moment" | "minmax" | "partial_minmax"

// points2bbox: pts [R, 2P] as (y, x) pairs (y_first) or (x, y) pairs -> [R, 4] (x1, y1, x2, y2).
//   minmax: extremes over all points; partial_minmax: over the first 4; moment: mean ± unbiased std ·
//   exp(transfer), transfer = moment_transfer·moment_mul + stop_grad(moment_transfer)·(1 - moment_mul)
//   (value moment_transfer, gradient scaled by moment_mul). moment_transfer [2] = (width, height) is only
//   read by moment. Gradients of min/max go to the first extreme point (torch min/max(dim)).
Var points2bbox(const Var& pts, bool y_first, PointsTransform t, const Var& moment_transfer = Var(),
                double moment_mul = 0.01);

struct RepPointsHeadConfig {
  int64_t num_classes = 80;
  int64_t in_channels = 256;
  int64_t feat_channels = 256;
  int64_t point_feat_channels = 256;
  int64_t stacked_convs = 3;
  int64_t num_points = 9;  // a square number: DCN kernel sqrt(P)
  double gradient_mul = 0.1;
  std::vector<int64_t> point_strides{8, 16, 32, 64, 128};
  double point_base_scale = 4;
  NormCfg norm = NormCfg::gn(32);  // "gn-neck+head"; NormCfg::none() for reppoints_moment_r50_fpn_1x
  PointsTransform transform = PointsTransform::Moment;
  double moment_mul = 0.01;
  PointAssigner init_assigner;                                   // scale 4, pos_num 1
  MaxIoUAssigner refine_assigner = MaxIoUAssigner::retinanet();  // 0.5 / 0.4 / 0, low-quality
  double focal_gamma = 2.0, focal_alpha = 0.25;
  double loss_cls_weight = 1.0, loss_init_weight = 0.5, loss_refine_weight = 1.0;
  double smooth_l1_beta = 0.11;
  double avg_factor_eps = FLT_EPSILON;
  int64_t images_per_group = 0;  // 0: the whole batch is one group
  double prior_prob = 0.01;
  // DCN weight init: Normal(0, 0.01) like every conv (mmdet <= 2.11, the 2020 zoo, FGD), or mmcv's own
  // (mmdet >= 2.12; layers/dcn.h: kaiming-uniform with ReLU gain, mmcv >= 1.3.15).
  bool dcn_normal_init = true;
  DenseTestConfig test;
};

// Everything the head produced for a batch, per FPN level (the distillation taps).
struct RepPointsHeadOutputs {
  std::vector<Var> cls_scores;  // [N, C, H_l, W_l] logits
  std::vector<Var> pts_init;    // [N, 2P, H_l, W_l] (y, x) offsets in stride units
  std::vector<Var> pts_refine;  // [N, 2P, H_l, W_l]
  std::vector<Var> cls_feats;   // [N, F, H_l, W_l] output of the cls tower
  std::vector<Var> reg_feats;   // [N, F, H_l, W_l] output of the pts tower
  size_t num_levels() const { return cls_scores.size(); }
};

// Training targets of a batch, rows in (image, level, y, x) order: row = n*M + m.
struct RepPointsTargets {
  int64_t num_images = 0, num_points = 0;  // M points per image
  std::vector<std::pair<int64_t, int64_t>> feat_sizes;
  Tensor points;  // f32 [M, 4] (x, y, stride, stride)
  // init stage (PointAssigner on the points)
  Tensor init_pos_inds;  // i64 [Pi] rows (ascending)
  Tensor init_pos_gt;    // f32 [Pi, 4]
  std::vector<int64_t> init_num_pos_per_image;
  double init_avg_factor = 0;  // Σ_images max(#pos, 1)
  // refine stage (MaxIoUAssigner on the pseudo boxes of the detached init points)
  Tensor init_boxes;     // f32 [N*M, 4] the pseudo boxes that were assigned
  Tensor labels;         // i64 [N*M]: class, or num_classes for background / unused
  Tensor label_weights;  // f32 [N*M]
  Tensor refine_pos_inds;  // i64 [Pr]
  Tensor refine_pos_gt;    // f32 [Pr, 4]
  std::vector<int64_t> refine_num_pos_per_image;
  int64_t refine_num_neg = 0;
  double refine_avg_factor = 0;
};

class RepPointsHead : public Module {
 public:
  explicit RepPointsHead(RepPointsHeadConfig cfg = {});
  const char* type_name() const override { return "RepPointsHead"; }
  const RepPointsHeadConfig& config() const { return cfg_; }
  const MlvlPointGenerator& point_generator() const { return points_; }
  int num_levels() const { return points_.num_levels(); }

  RepPointsHeadOutputs forward(const std::vector<Var>& feats);
  // mmdet RepPointsHead init: every Conv2d Normal(0, 0.01) bias 0, reppoints_cls_out bias -log((1-p)/p),
  // GN weight 1 bias 0, moment_transfer 0; the two DCN weights per dcn_normal_init.
  void init_weights(Generator& g) override;

  // Targets for the given head outputs (the refine stage reads the detached init points).
  RepPointsTargets get_targets(const RepPointsHeadOutputs& out, const std::vector<GtInstances>& gts,
                               const std::vector<ImageGeometry>& geo) const;
  // {"loss_cls", "loss_pts_init", "loss_pts_refine"}.
  LossList loss(const RepPointsHeadOutputs& out, const std::vector<GtInstances>& gts,
                const std::vector<ImageGeometry>& geo) const;
  LossList loss(const RepPointsHeadOutputs& out, const RepPointsTargets& t) const;
  // Test-time post-processing per image (cfg.test, or *test when given).
  std::vector<Detections> predict(const RepPointsHeadOutputs& out, const std::vector<ImageGeometry>& geo,
                                  const DenseTestConfig* test = nullptr) const;
  // [N, 2P, H, W] maps of every level -> f32 boxes [H*W, 4] per level of image n in image pixels:
  // points2bbox(pts) * stride + (x, y, x, y) of the point (no clipping).
  std::vector<Tensor> decode_boxes(const std::vector<Var>& pts, int64_t n) const;

  // points2bbox with this head's transform and moment_transfer.
  Var points2bbox(const Var& pts, bool y_first) const;
  // The learnable moment_transfer (undefined unless the transform is moment).
  const Var& moment_transfer() const { return mt_ ? *mt_ : undefined_; }

 private:
  RepPointsHeadConfig cfg_;
  MlvlPointGenerator points_;
  int64_t kernel_ = 3;
  Tensor dcn_base_;  // f32 [1, 2P, 1, 1]
  Var* mt_ = nullptr;
  Var undefined_;
  ModuleList<ConvModule>* cls_convs_ = nullptr;
  ModuleList<ConvModule>* reg_convs_ = nullptr;
  DeformConv2d* cls_dcn_ = nullptr;
  Conv2d* cls_out_ = nullptr;
  Conv2d* init_conv_ = nullptr;
  Conv2d* init_out_ = nullptr;
  DeformConv2d* refine_dcn_ = nullptr;
  Conv2d* refine_out_ = nullptr;
};

}  // namespace kdet
