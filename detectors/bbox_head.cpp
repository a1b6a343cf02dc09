#include "detectors/bbox_head.h"

#include <algorithm>
#include <cmath>

#include "detectors/nms.h"
#include "engine/ops/index_ops.h"
#include "engine/ops/losses.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/softmax.h"
#include "engine/ops/unary.h"
#include "layers/init.h"

namespace kdet {

BBoxHeadConfig BBoxHeadConfig::faster(int64_t num_classes) {
  BBoxHeadConfig c;
  c.num_classes = num_classes;
  return c;
}

BBoxHeadConfig BBoxHeadConfig::cascade_stage(int stage, int64_t num_classes) {
  KDET_CHECK(stage >= 0 && stage < 3, "BBoxHeadConfig::cascade_stage: stage ", stage, " outside 0..2");
  static const std::array<std::array<double, 4>, 3> stds = {
      std::array<double, 4>{0.1, 0.1, 0.2, 0.2}, {0.05, 0.05, 0.1, 0.1}, {0.033, 0.033, 0.067, 0.067}};
  BBoxHeadConfig c;
  c.num_classes = num_classes;
  c.reg_class_agnostic = true;
  c.coder.stds = stds[stage];
  c.reg_loss = RegLoss::SmoothL1;
  c.smooth_l1_beta = 1.0;
  return c;
}

Tensor bbox2roi(const std::vector<Tensor>& boxes) {
  int64_t total = 0;
  for (size_t i = 0; i < boxes.size(); ++i) {
    KDET_CHECK(boxes[i].ndim() == 2 && boxes[i].size(1) >= 4, "bbox2roi: image ", i, " boxes ", boxes[i].desc(),
               " are not [n, 4+]");
    total += boxes[i].size(0);
  }
  Tensor out = Tensor::empty({total, 5});
  float* o = out.data<float>();
  for (size_t i = 0; i < boxes.size(); ++i) {
    Tensor b = boxes[i].to(DType::F32).contiguous();
    const int64_t n = b.size(0), s = b.size(1);
    const float* p = b.data<float>();
    for (int64_t r = 0; r < n; ++r, o += 5) {
      o[0] = static_cast<float>(i);
      std::copy(p + r * s, p + r * s + 4, o + 1);
    }
  }
  return out;
}

Shared2FCBBoxHead::Shared2FCBBoxHead(BBoxHeadConfig cfg) : cfg_(std::move(cfg)) {
  KDET_CHECK(cfg_.num_classes > 0 && cfg_.in_channels > 0 && cfg_.roi_feat_size > 0 && cfg_.num_shared_fcs > 0 &&
                 cfg_.fc_out_channels > 0,
             "Shared2FCBBoxHead: bad config (num_classes ", cfg_.num_classes, ", in_channels ", cfg_.in_channels,
             ", roi_feat_size ", cfg_.roi_feat_size, ", num_shared_fcs ", cfg_.num_shared_fcs, ", fc_out_channels ",
             cfg_.fc_out_channels, ")");
  shared_fcs_ = &register_module("shared_fcs", std::make_unique<ModuleList<Linear>>());
  const int64_t flat = cfg_.in_channels * cfg_.roi_feat_size * cfg_.roi_feat_size;
  for (int64_t i = 0; i < cfg_.num_shared_fcs; ++i)
    shared_fcs_->emplace_back<Linear>(i == 0 ? flat : cfg_.fc_out_channels, cfg_.fc_out_channels);
  fc_cls_ = &register_module("fc_cls", std::make_unique<Linear>(cfg_.fc_out_channels, cfg_.num_classes + 1));
  const int64_t nreg = cfg_.reg_class_agnostic ? 4 : 4 * cfg_.num_classes;
  fc_reg_ = &register_module("fc_reg", std::make_unique<Linear>(cfg_.fc_out_channels, nreg));
}

void Shared2FCBBoxHead::init_weights(Generator& g) {
  for (size_t i = 0; i < shared_fcs_->size(); ++i) {
    xavier_uniform_((*shared_fcs_)[i].weight().data(), g);
    constant_((*shared_fcs_)[i].bias().data(), 0.0);
  }
  normal_(fc_cls_->weight().data(), g, 0.0, 0.01);
  constant_(fc_cls_->bias().data(), 0.0);
  normal_(fc_reg_->weight().data(), g, 0.0, 0.001);
  constant_(fc_reg_->bias().data(), 0.0);
}

BBoxHeadOutputs Shared2FCBBoxHead::forward(const Var& roi_feats) {
  const int64_t S = cfg_.roi_feat_size;
  KDET_CHECK(roi_feats.ndim() == 4 && roi_feats.size(1) == cfg_.in_channels && roi_feats.size(2) == S &&
                 roi_feats.size(3) == S,
             "Shared2FCBBoxHead::forward: RoI features ", roi_feats.data().desc(), " expected [R, ",
             cfg_.in_channels, ", ", S, ", ", S, "]");
  Var x = reshape(roi_feats, {roi_feats.size(0), -1});
  for (size_t i = 0; i < shared_fcs_->size(); ++i) x = relu((*shared_fcs_)[i].forward(x));
  return {fc_cls_->forward(x), fc_reg_->forward(x)};
}

BBoxTargets Shared2FCBBoxHead::get_targets(const std::vector<RandomSamplingResult>& samples) const {
  int64_t R = 0;
  for (const auto& s : samples) R += s.num_pos() + s.num_neg();
  const int64_t C = cfg_.num_classes;
  BBoxTargets t;
  t.labels = Tensor::full({R}, static_cast<double>(C), DType::I64);
  t.label_weights = Tensor::zeros({R});
  t.bbox_targets = Tensor::zeros({R, 4});
  t.bbox_weights = Tensor::zeros({R, 4});
  int64_t* pl = t.labels.data<int64_t>();
  float* pw = t.label_weights.data<float>();
  float* pt = t.bbox_targets.data<float>();
  float* pb = t.bbox_weights.data<float>();
  const float pos_w = cfg_.pos_weight <= 0 ? 1.f : static_cast<float>(cfg_.pos_weight);
  int64_t row = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto& s = samples[i];
    const int64_t P = s.num_pos(), Ng = s.num_neg();
    if (P > 0) {
      Tensor lab = s.pos_gt_labels.to(DType::I64).contiguous();
      KDET_CHECK(lab.numel() == P && s.pos_gt_bboxes.defined() && s.pos_gt_bboxes.size(0) == P,
                 "Shared2FCBBoxHead::get_targets: image ", i, " has ", P, " positives, ", lab.desc(), " labels and ",
                 s.pos_gt_bboxes.desc(), " gt boxes");
      Tensor enc = cfg_.coder.encode(s.pos_bboxes(), s.pos_gt_bboxes);
      const int64_t* l = lab.data<int64_t>();
      const float* e = enc.data<float>();
      for (int64_t k = 0; k < P; ++k, ++row) {
        KDET_CHECK(l[k] >= 0 && l[k] < C, "Shared2FCBBoxHead::get_targets: positive label ", l[k], " outside [0, ",
                   C, ")");
        pl[row] = l[k];
        pw[row] = pos_w;
        for (int c = 0; c < 4; ++c) pt[row * 4 + c] = e[k * 4 + c], pb[row * 4 + c] = 1.f;
      }
    }
    for (int64_t k = 0; k < Ng; ++k, ++row) pw[row] = 1.f;
  }
  return t;
}

LossList Shared2FCBBoxHead::loss(const BBoxHeadOutputs& out, const BBoxTargets& t) const {
  const int64_t R = t.size(), C = cfg_.num_classes;
  KDET_CHECK(out.cls_score.defined() && out.cls_score.ndim() == 2 && out.cls_score.size(0) == R &&
                 out.cls_score.size(1) == C + 1,
             "Shared2FCBBoxHead::loss: cls_score ", out.cls_score.data().desc(), " for ", R, " RoIs and ", C,
             " classes");
  const int64_t nreg = cfg_.reg_class_agnostic ? 4 : 4 * C;
  KDET_CHECK(out.bbox_pred.defined() && out.bbox_pred.ndim() == 2 && out.bbox_pred.size(0) == R &&
                 out.bbox_pred.size(1) == nreg,
             "Shared2FCBBoxHead::loss: bbox_pred ", out.bbox_pred.data().desc(), " expected [", R, ", ", nreg, "]");
  const DType dt = out.cls_score.dtype();
  const Device dev = out.cls_score.device();  // targets are built on the host; moved to the predictions' device
  // classification: Σ w CE / (max(#w>0, 1) + eps)
  const float* pw = t.label_weights.data<float>();
  int64_t nw = 0;
  for (int64_t r = 0; r < R; ++r) nw += pw[r] > 0;
  const double af_cls = static_cast<double>(std::max<int64_t>(nw, 1)) + cfg_.avg_factor_eps;
  Var loss_cls = R > 0 ? sum(cross_entropy(out.cls_score, t.labels) * Var(t.label_weights.to(dt).to(dev))) *
                             (cfg_.loss_cls_weight / af_cls)
                       : sum(out.cls_score) * 0.0;
  // regression on positives (labels in [0, C))
  const int64_t* pl = t.labels.data<int64_t>();
  std::vector<int64_t> pos, sel;
  for (int64_t r = 0; r < R; ++r)
    if (pl[r] >= 0 && pl[r] < C) {
      pos.push_back(r);
      sel.push_back(cfg_.reg_class_agnostic ? r : r * C + pl[r]);
    }
  const int64_t P = static_cast<int64_t>(pos.size());
  Var loss_bbox;
  if (P == 0) {
    loss_bbox = sum(out.bbox_pred) * 0.0;
  } else {
    Var rows = cfg_.reg_class_agnostic ? out.bbox_pred : reshape(out.bbox_pred, {R * C, 4});
    Var pred = index_select(rows, 0, Tensor::from_vector(sel, Shape{P}));
    Tensor pi = Tensor::from_vector(pos, Shape{P});
    Tensor tgt = ops::index_select(t.bbox_targets, 0, pi).to(dt).to(dev);
    Tensor bw = ops::index_select(t.bbox_weights, 0, pi).to(dt).to(dev);
    Var per = cfg_.reg_loss == BBoxHeadConfig::RegLoss::L1 ? l1_loss(pred, tgt)
                                                           : smooth_l1_loss(pred, tgt, cfg_.smooth_l1_beta);
    loss_bbox = sum(per * Var(bw)) * (cfg_.loss_bbox_weight / (static_cast<double>(R) + cfg_.avg_factor_eps));
  }
  return {{"loss_cls", loss_cls}, {"loss_bbox", loss_bbox}};
}

Tensor Shared2FCBBoxHead::regress_by_class(const Tensor& rois_in, const Tensor& labels, const Tensor& bbox_pred_in,
                                           const ImageGeometry& geo) const {
  KDET_CHECK(rois_in.ndim() == 2 && (rois_in.size(1) == 4 || rois_in.size(1) == 5),
             "Shared2FCBBoxHead::regress_by_class: rois must be [K, 4] or [K, 5], got ", rois_in.desc());
  const int64_t K = rois_in.size(0), C = cfg_.num_classes;
  Tensor pred = bbox_pred_in.to(Device::cpu()).to(DType::F32).contiguous();  // boxes are decoded on the host
  KDET_CHECK(pred.ndim() == 2 && pred.size(0) == K && pred.size(1) == (cfg_.reg_class_agnostic ? 4 : 4 * C),
             "Shared2FCBBoxHead::regress_by_class: bbox_pred ", pred.desc(), " for ", K, " RoIs");
  if (!cfg_.reg_class_agnostic) {
    KDET_CHECK(labels.numel() == K, "Shared2FCBBoxHead::regress_by_class: ", labels.desc(), " labels for ", K,
               " RoIs");
    auto lab = labels.to(DType::I64).to_vector<int64_t>();
    Tensor g = Tensor::empty({K, 4});
    const float* p = pred.data<float>();
    float* o = g.data<float>();
    for (int64_t k = 0; k < K; ++k) {
      KDET_CHECK(lab[k] >= 0 && lab[k] < C, "Shared2FCBBoxHead::regress_by_class: label ", lab[k], " outside [0, ",
                 C, ")");
      std::copy(p + k * 4 * C + lab[k] * 4, p + k * 4 * C + lab[k] * 4 + 4, o + k * 4);
    }
    pred = g;
  }
  Tensor rois = rois_in.to(Device::cpu()).to(DType::F32).contiguous();
  const bool with_idx = rois.size(1) == 5;
  Tensor boxes = cfg_.coder.decode(with_idx ? rois.slice(1, 1, 5) : rois, pred,
                                   std::make_pair(geo.img_h, geo.img_w));
  return with_idx ? ops::concat({rois.slice(1, 0, 1), boxes}, 1) : boxes;
}

std::vector<Tensor> Shared2FCBBoxHead::refine_bboxes(const Tensor& rois_in, const Tensor& labels,
                                                     const Tensor& bbox_pred, const std::vector<Tensor>& pos_is_gts,
                                                     const std::vector<ImageGeometry>& geo) const {
  KDET_CHECK(rois_in.ndim() == 2 && rois_in.size(1) == 5 && labels.numel() == rois_in.size(0) &&
                 bbox_pred.ndim() == 2 && bbox_pred.size(0) == rois_in.size(0) && pos_is_gts.size() == geo.size(),
             "Shared2FCBBoxHead::refine_bboxes: rois ", rois_in.desc(), ", labels ", labels.desc(), ", bbox_pred ",
             bbox_pred.desc(), ", ", pos_is_gts.size(), " pos_is_gt lists, ", geo.size(), " images");
  Tensor rois = rois_in.to(Device::cpu()).to(DType::F32).contiguous();  // refined on the host
  const Tensor lab = labels.to(Device::cpu()).to(DType::I64), pred = bbox_pred.to(Device::cpu());
  const float* pr = rois.data<float>();
  const int64_t R = rois.size(0);
  std::vector<Tensor> out;
  for (size_t i = 0; i < geo.size(); ++i) {
    std::vector<int64_t> inds;
    for (int64_t r = 0; r < R; ++r)
      if (static_cast<int64_t>(pr[r * 5]) == static_cast<int64_t>(i)) inds.push_back(r);
    const int64_t n = static_cast<int64_t>(inds.size());
    Tensor ti = Tensor::from_vector(inds, Shape{n});
    Tensor boxes = n == 0 ? Tensor::zeros({0, 4})
                          : regress_by_class(ops::index_select(rois, 0, ti).slice(1, 1, 5),
                                             ops::index_select(lab, 0, ti), ops::index_select(pred, 0, ti), geo[i]);
    // drop the added GT rows: the first len(pos_is_gt) rows are the positives
    std::vector<int64_t> keep;
    auto isgt = pos_is_gts[i].defined() ? pos_is_gts[i].to_vector<uint8_t>() : std::vector<uint8_t>{};
    KDET_CHECK(static_cast<int64_t>(isgt.size()) <= n, "Shared2FCBBoxHead::refine_bboxes: image ", i, " has ",
               isgt.size(), " positives but ", n, " RoIs");
    for (int64_t k = 0; k < n; ++k)
      if (k >= static_cast<int64_t>(isgt.size()) || !isgt[k]) keep.push_back(k);
    out.push_back(static_cast<int64_t>(keep.size()) == n
                      ? boxes
                      : ops::index_select(boxes, 0, Tensor::from_vector(keep, Shape{static_cast<int64_t>(keep.size())})));
  }
  return out;
}

Detections Shared2FCBBoxHead::get_bboxes(const Tensor& rois_in, const Tensor& cls_score, const Tensor& bbox_pred,
                                         const ImageGeometry& geo, const RCNNTestConfig& test) const {
  const int64_t C = cfg_.num_classes;
  KDET_CHECK(rois_in.ndim() == 2 && (rois_in.size(1) == 4 || rois_in.size(1) == 5) && cls_score.ndim() == 2 &&
                 cls_score.size(0) == rois_in.size(0) && cls_score.size(1) == C + 1 && bbox_pred.ndim() == 2 &&
                 bbox_pred.size(0) == rois_in.size(0),
             "Shared2FCBBoxHead::get_bboxes: rois ", rois_in.desc(), ", cls_score ", cls_score.desc(), ", bbox_pred ",
             bbox_pred.desc(), " (", C, " classes)");
  const int64_t K = rois_in.size(0);
  if (K == 0) return Detections::empty();
  // post-processing runs on the host
  Tensor scores = ops::softmax(cls_score.to(Device::cpu()).to(DType::F32).contiguous(), 1);
  Tensor rois = rois_in.to(Device::cpu()).to(DType::F32).contiguous();
  Tensor boxes = cfg_.coder.decode(rois.size(1) == 5 ? rois.slice(1, 1, 5) : rois,
                                   bbox_pred.to(Device::cpu()).to(DType::F32),
                                   std::make_pair(geo.img_h, geo.img_w));
  if (test.rescale) {
    float* b = boxes.data<float>();
    const int64_t n4 = boxes.numel();
    for (int64_t i = 0; i < n4; ++i) b[i] /= static_cast<float>(geo.scale_factor[i % 4]);
  }
  return multiclass_nms(boxes, scores, test.score_thr, test.nms_iou, test.max_per_img);
}

}  // namespace kdet
