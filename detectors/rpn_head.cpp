#include "detectors/rpn_head.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "detectors/loss_norm.h"
#include "detectors/nms.h"
#include "detectors/postprocess.h"
#include "engine/ops/index_ops.h"
#include "engine/ops/losses.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/unary.h"
#include "layers/init.h"

namespace kdet {

RPNHead::RPNHead(RPNHeadConfig cfg) : cfg_(std::move(cfg)), anchors_(cfg_.anchors) {
  KDET_CHECK(cfg_.in_channels > 0 && cfg_.feat_channels > 0, "RPNHead: bad config (in_channels ", cfg_.in_channels,
             ", feat_channels ", cfg_.feat_channels, ")");
  KDET_CHECK(!cfg_.sampler.add_gt_as_proposals, "RPNHead: the RPN sampler must not add gt boxes as proposals");
  const int64_t A = anchors_.num_base_anchors();
  rpn_conv_ = &register_module("rpn_conv", std::make_unique<Conv2d>(cfg_.in_channels, cfg_.feat_channels, 3, 1, 1));
  rpn_cls_ = &register_module("rpn_cls", std::make_unique<Conv2d>(cfg_.feat_channels, A, 1));
  rpn_reg_ = &register_module("rpn_reg", std::make_unique<Conv2d>(cfg_.feat_channels, A * 4, 1));
}

void RPNHead::init_weights(Generator& g) {
  for (Conv2d* c : {rpn_conv_, rpn_cls_, rpn_reg_}) {
    normal_(c->weight().data(), g, 0.0, 0.01);
    constant_(c->bias().data(), 0.0);
  }
}

DenseHeadOutputs RPNHead::forward(const std::vector<Var>& feats) {
  KDET_CHECK(static_cast<int>(feats.size()) == anchors_.num_levels(), "RPNHead::forward: ", feats.size(),
             " feature levels for ", anchors_.num_levels(), " anchor strides");
  DenseHeadOutputs o;
  for (const Var& x : feats) {
    KDET_CHECK(x.ndim() == 4 && x.size(1) == cfg_.in_channels, "RPNHead::forward: feature ", x.data().desc(),
               " expected [N, ", cfg_.in_channels, ", H, W]");
    Var f = relu(rpn_conv_->forward(x));
    o.cls_feats.push_back(f);
    o.reg_feats.push_back(f);
    o.cls_scores.push_back(rpn_cls_->forward(f));
    o.bbox_preds.push_back(rpn_reg_->forward(f));
  }
  return o;
}

DenseTargets RPNHead::get_targets(const std::vector<std::pair<int64_t, int64_t>>& feat_sizes,
                                  const std::vector<GtInstances>& gts, const std::vector<ImageGeometry>& geo,
                                  Generator& gen) const {
  KDET_CHECK(gts.size() == geo.size(), "RPNHead::get_targets: ", gts.size(), " GT sets for ", geo.size(), " images");
  KDET_CHECK(static_cast<int>(feat_sizes.size()) == anchors_.num_levels(), "RPNHead::get_targets: ",
             feat_sizes.size(), " feature sizes for ", anchors_.num_levels(), " levels");
  DenseTargets t;
  t.num_images = static_cast<int64_t>(gts.size());
  t.feat_sizes = feat_sizes;
  t.anchors = ops::concat(anchors_.grid_priors(feat_sizes), 0);
  const int64_t M = t.anchors.size(0), N = t.num_images;
  t.num_anchors = M;
  t.labels = Tensor::full({N * M}, 1.0, DType::I64);  // 1 = background (num_classes of a 1-class head)
  t.label_weights = Tensor::zeros({N * M});
  int64_t* pl = t.labels.data<int64_t>();
  float* pw = t.label_weights.data<float>();
  const float* pa = t.anchors.data<float>();
  std::vector<int64_t> pos_rows;
  std::vector<float> pos_gt, pos_anc;
  double sum_neg = 0;
  for (int64_t n = 0; n < N; ++n) {
    const ImageGeometry& gm = geo[n];
    const std::vector<int64_t> inside =
        anchors_.usable_indices(feat_sizes, t.anchors, gm.img_h, gm.img_w, gm.pad_h, gm.pad_w, cfg_.allowed_border);
    const GtInstances& gt = gts[n];
    Tensor gboxes = gt.boxes.defined() ? gt.boxes.to(DType::F32).contiguous() : Tensor::zeros({0, 4});
    KDET_CHECK(gboxes.ndim() == 2 && gboxes.size(1) == 4, "RPNHead::get_targets: image ", n, " has boxes ",
               gboxes.desc());
    const int64_t K = static_cast<int64_t>(inside.size());
    Tensor sub = ops::index_select(t.anchors, 0, Tensor::from_vector(inside, Shape{K}));
    AssignResult ar = cfg_.assigner.assign(sub, gboxes, Tensor(), gt.ignore);  // gt labels unused (RPN)
    GtInstances boxes_only{gboxes, Tensor(), Tensor()};
    RandomSamplingResult sr = cfg_.sampler.sample(ar, sub, boxes_only, gen);
    const int64_t* ps = sr.pos_inds.data<int64_t>();
    const int64_t* pg = sr.pos_assigned_gt_inds.data<int64_t>();
    const float* pgb = gboxes.data<float>();
    for (int64_t i = 0; i < sr.num_pos(); ++i) {
      const int64_t m = inside[ps[i]], row = n * M + m;
      pl[row] = 0;
      pw[row] = 1.f;
      pos_rows.push_back(row);
      pos_gt.insert(pos_gt.end(), pgb + pg[i] * 4, pgb + pg[i] * 4 + 4);
      pos_anc.insert(pos_anc.end(), pa + m * 4, pa + m * 4 + 4);
    }
    const int64_t* pn = sr.neg_inds.data<int64_t>();
    for (int64_t i = 0; i < sr.num_neg(); ++i) pw[n * M + inside[pn[i]]] = 1.f;
    t.num_pos += sr.num_pos();
    t.num_neg += sr.num_neg();
    t.num_pos_per_image.push_back(sr.num_pos());
    t.avg_factor += static_cast<double>(std::max<int64_t>(sr.num_pos(), 1));
    sum_neg += static_cast<double>(std::max<int64_t>(sr.num_neg(), 1));
  }
  t.avg_factor += sum_neg;  // sampling: num_total_pos + num_total_neg
  // rows are ascending: images in order, sampled indices sorted, `inside` increasing
  const int64_t P = static_cast<int64_t>(pos_rows.size());
  t.pos_inds = Tensor::from_vector(pos_rows, Shape{P});
  t.pos_gt_boxes = Tensor::from_vector(pos_gt, Shape{P, 4});
  t.pos_anchors = Tensor::from_vector(pos_anc, Shape{P, 4});
  t.pos_bbox_targets = P > 0 ? cfg_.coder.encode(t.pos_anchors, t.pos_gt_boxes) : Tensor::zeros({0, 4});
  return t;
}

LossList RPNHead::loss(const DenseHeadOutputs& out, const std::vector<GtInstances>& gts,
                       const std::vector<ImageGeometry>& geo, Generator& g) const {
  KDET_CHECK(!out.cls_scores.empty(), "RPNHead::loss: no head outputs");
  KDET_CHECK(out.cls_scores[0].size(0) == static_cast<int64_t>(gts.size()), "RPNHead::loss: batch of ",
             out.cls_scores[0].size(0), " images, ", gts.size(), " GT sets");
  std::vector<std::pair<int64_t, int64_t>> sizes;
  for (const Var& c : out.cls_scores) sizes.emplace_back(c.size(2), c.size(3));
  return loss(out, get_targets(sizes, gts, geo, g));
}

LossList RPNHead::loss(const DenseHeadOutputs& out, const DenseTargets& t) const {
  Var logits = RetinaHead::flatten_levels(out.cls_scores, 1);  // [N*M, 1]
  KDET_CHECK(logits.size(0) == t.num_images * t.num_anchors, "RPNHead::loss: ", logits.size(0),
             " prediction rows for ", t.num_images, " images x ", t.num_anchors, " anchors");
  const DType dt = logits.dtype();
  const Device dev = logits.device();  // targets are built on the host; moved to the predictions' device
  const int64_t N = t.num_images, M = t.num_anchors;
  // rows with label_weight > 0 (the sampled anchors), and each image's avg_factor share
  // max(#pos, 1) + max(#neg, 1)
  std::vector<int64_t> rows;
  std::vector<int64_t> npos(N, 0), nsampled(N, 0);
  const float* pw = t.label_weights.data<float>();
  const int64_t* pl = t.labels.data<int64_t>();
  for (int64_t i = 0; i < t.label_weights.numel(); ++i)
    if (pw[i] > 0) {
      rows.push_back(i);
      ++nsampled[i / M];
      npos[i / M] += pl[i] == 0;
    }
  std::vector<double> af(N);
  for (int64_t n = 0; n < N; ++n)
    af[n] = static_cast<double>(std::max<int64_t>(npos[n], 1) + std::max<int64_t>(nsampled[n] - npos[n], 1));
  const std::vector<double> norms = group_norms(af, cfg_.images_per_group, cfg_.avg_factor_eps);
  // classification: BCE over the sampled rows (label 0 -> target 1, background -> 0)
  const int64_t R = static_cast<int64_t>(rows.size());
  Var loss_cls;
  if (R > 0) {
    Tensor target = Tensor::empty({R, 1}, DType::F32);
    for (int64_t r = 0; r < R; ++r) target.data<float>()[r] = pl[rows[r]] == 0 ? 1.f : 0.f;
    Var sel = index_select(logits, 0, Tensor::from_vector(rows, Shape{R}));
    loss_cls = normalised_sum(binary_cross_entropy_with_logits(sel, target.to(dt).to(dev)), rows, M, norms,
                              cfg_.loss_cls_weight);
  } else {
    loss_cls = sum(logits) * 0.0;
  }
  Var reg = RetinaHead::flatten_levels(out.bbox_preds, 4);
  Var loss_bbox;
  const int64_t P = t.pos_inds.numel();
  if (P == 0) {
    loss_bbox = sum(reg) * 0.0;
  } else {
    Var pos = index_select(reg, 0, t.pos_inds);
    Tensor tgt = t.pos_bbox_targets.to(dt).to(dev);
    Var per = cfg_.smooth_l1_beta > 0 ? smooth_l1_loss(pos, tgt, cfg_.smooth_l1_beta) : l1_loss(pos, tgt);
    loss_bbox = normalised_sum(per, t.pos_inds.to_vector<int64_t>(), M, norms, cfg_.loss_bbox_weight);
  }
  return {{"loss_rpn_cls", loss_cls}, {"loss_rpn_bbox", loss_bbox}};
}

Tensor rpn_proposals_single(const std::vector<Tensor>& cls_logits, const std::vector<Tensor>& bbox_preds,
                            const std::vector<Tensor>& priors, const DeltaXYWHBBoxCoder& coder,
                            const ImageGeometry& geo, const ProposalConfig& cfg) {
  KDET_CHECK(cls_logits.size() == bbox_preds.size() && cls_logits.size() == priors.size(),
             "rpn_proposals_single: ", cls_logits.size(), " score maps, ", bbox_preds.size(), " box maps, ",
             priors.size(), " prior sets");
  std::vector<float> scores;
  std::vector<int64_t> level_ids;
  std::vector<Tensor> kept_priors, kept_deltas;
  for (size_t l = 0; l < cls_logits.size(); ++l) {
    Tensor logit = dense_to_rows(cls_logits[l], 1);  // [H*W*A, 1]
    Tensor delta = dense_to_rows(bbox_preds[l], 4);  // [H*W*A, 4]
    Tensor pri = priors[l].to(DType::F32).contiguous();
    const int64_t n = logit.size(0);
    KDET_CHECK(delta.size(0) == n && pri.size(0) == n, "rpn_proposals_single: level ", l, " has ", n,
               " score rows, ", delta.size(0), " box rows and ", pri.size(0), " priors");
    const float* pl = logit.data<float>();
    std::vector<float> s(n);
    for (int64_t i = 0; i < n; ++i) s[i] = 1.0f / (1.0f + std::exp(-pl[i]));
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    const int64_t k = (cfg.nms_pre > 0 && n > cfg.nms_pre) ? cfg.nms_pre : n;
    if (k < n) {  // the nms_pre best under (score desc, index asc); order of the kept ones as mmdet's sort
      auto better = [&](int64_t a, int64_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };
      std::nth_element(order.begin(), order.begin() + k, order.end(), better);
      std::sort(order.begin(), order.begin() + k, better);
      order.resize(k);
    }
    Tensor idx = Tensor::from_vector(order, Shape{k});
    kept_priors.push_back(ops::index_select(pri, 0, idx));
    kept_deltas.push_back(ops::index_select(delta, 0, idx));
    for (int64_t i : order) scores.push_back(s[i]);
    level_ids.insert(level_ids.end(), k, static_cast<int64_t>(l));
  }
  const int64_t m = static_cast<int64_t>(scores.size());
  if (m == 0) return Tensor::zeros({0, 5});
  Tensor boxes = coder.decode(ops::concat(kept_priors, 0), ops::concat(kept_deltas, 0),
                              std::make_pair(geo.img_h, geo.img_w));
  // drop small boxes
  std::vector<int64_t> keep;
  const float* pb = boxes.data<float>();
  for (int64_t i = 0; i < m; ++i) {
    const float w = pb[i * 4 + 2] - pb[i * 4], h = pb[i * 4 + 3] - pb[i * 4 + 1];
    if (cfg.min_bbox_size < 0 || (w > cfg.min_bbox_size && h > cfg.min_bbox_size)) keep.push_back(i);
  }
  Tensor sc = Tensor::from_vector(scores, Shape{m}), ids = Tensor::from_vector(level_ids, Shape{m});
  if (static_cast<int64_t>(keep.size()) < m) {
    Tensor ki = Tensor::from_vector(keep, Shape{static_cast<int64_t>(keep.size())});
    boxes = ops::index_select(boxes, 0, ki);
    sc = ops::index_select(sc, 0, ki);
    ids = ops::index_select(ids, 0, ki);
  }
  if (boxes.size(0) == 0) return Tensor::zeros({0, 5});
  BatchedNmsResult r = batched_nms(boxes, sc, ids, cfg.nms_iou);
  int64_t k = r.keep.numel();
  if (cfg.max_per_img > 0) k = std::min(k, cfg.max_per_img);
  return ops::concat({r.boxes.slice(0, 0, k), r.scores.slice(0, 0, k).reshape({k, 1})}, 1);
}

std::vector<Tensor> RPNHead::get_proposals(const DenseHeadOutputs& out, const std::vector<ImageGeometry>& geo,
                                           bool training) const {
  KDET_CHECK(!out.cls_scores.empty() && out.cls_scores.size() == out.bbox_preds.size(),
             "RPNHead::get_proposals: bad head outputs");
  const int64_t N = out.cls_scores[0].size(0);
  KDET_CHECK(static_cast<int64_t>(geo.size()) == N, "RPNHead::get_proposals: ", N, " images, ", geo.size(),
             " geometries");
  std::vector<std::pair<int64_t, int64_t>> sizes;
  for (const Var& c : out.cls_scores) sizes.emplace_back(c.size(2), c.size(3));
  const auto priors = anchors_.grid_priors(sizes);
  std::vector<Tensor> res;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<Tensor> cls, reg;
    for (size_t l = 0; l < out.cls_scores.size(); ++l) {
      cls.push_back(out.cls_scores[l].data().select(0, n));  // dense_to_rows brings them to the host
      reg.push_back(out.bbox_preds[l].data().select(0, n));
    }
    res.push_back(rpn_proposals_single(cls, reg, priors, cfg_.coder, geo[n], training ? cfg_.train : cfg_.test));
  }
  return res;
}

}  // namespace kdet
