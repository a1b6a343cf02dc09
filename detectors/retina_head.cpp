#include "detectors/retina_head.h"

#include <cmath>

#include "engine/ops/elementwise.h"
#include "engine/ops/index_ops.h"
#include "engine/ops/losses.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "layers/init.h"

namespace kdet {

RetinaHead::RetinaHead(RetinaHeadConfig cfg) : cfg_(std::move(cfg)), anchors_(cfg_.anchors) {
  KDET_CHECK(cfg_.num_classes > 0 && cfg_.in_channels > 0 && cfg_.feat_channels > 0 && cfg_.stacked_convs >= 0,
             "RetinaHead: bad config (num_classes ", cfg_.num_classes, ", in_channels ", cfg_.in_channels,
             ", feat_channels ", cfg_.feat_channels, ", stacked_convs ", cfg_.stacked_convs, ")");
  cls_convs_ = &register_module("cls_convs", std::make_unique<ModuleList<ConvModule>>());
  reg_convs_ = &register_module("reg_convs", std::make_unique<ModuleList<ConvModule>>());
  ConvModuleCfg cc;
  cc.norm = cfg_.norm;
  cc.act = Act::ReLU;
  for (int64_t i = 0; i < cfg_.stacked_convs; ++i) {
    const int64_t cin = i == 0 ? cfg_.in_channels : cfg_.feat_channels;
    cls_convs_->emplace_back<ConvModule>(cin, cfg_.feat_channels, 3, 1, 1, cc);
    reg_convs_->emplace_back<ConvModule>(cin, cfg_.feat_channels, 3, 1, 1, cc);
  }
  const int64_t fin = cfg_.stacked_convs > 0 ? cfg_.feat_channels : cfg_.in_channels;
  const int64_t A = anchors_.num_base_anchors();
  retina_cls_ = &register_module("retina_cls", std::make_unique<Conv2d>(fin, A * cfg_.num_classes, 3, 1, 1));
  retina_reg_ = &register_module("retina_reg", std::make_unique<Conv2d>(fin, A * 4, 3, 1, 1));
}

void RetinaHead::init_weights(Generator& g) {
  // mmdet: init_cfg Normal(layer='Conv2d', std=0.01, override retina_cls bias_prob=0.01); norms weight 1.
  Module::init_weights(g);  // norm layers (GN) to weight 1 / bias 0; convs are overwritten below
  for (auto& [name, m] : named_modules()) {
    auto* c = dynamic_cast<Conv2d*>(m);
    if (!c) continue;
    normal_(c->weight().data(), g, 0.0, 0.01);
    if (c->has_bias()) constant_(c->bias().data(), 0.0);
  }
  constant_(retina_cls_->bias().data(), bias_init_with_prob(cfg_.prior_prob));
}

RetinaHeadOutputs RetinaHead::forward(const std::vector<Var>& feats) {
  KDET_CHECK(static_cast<int>(feats.size()) == anchors_.num_levels(), "RetinaHead::forward: ", feats.size(),
             " feature levels for ", anchors_.num_levels(), " anchor strides");
  RetinaHeadOutputs o;
  for (const Var& x : feats) {
    KDET_CHECK(x.ndim() == 4 && x.size(1) == cfg_.in_channels, "RetinaHead::forward: feature ",
               x.data().desc(), " expected [N, ", cfg_.in_channels, ", H, W]");
    Var c = x, r = x;
    for (size_t i = 0; i < cls_convs_->size(); ++i) c = (*cls_convs_)[i].forward(c);
    for (size_t i = 0; i < reg_convs_->size(); ++i) r = (*reg_convs_)[i].forward(r);
    o.cls_feats.push_back(c);
    o.reg_feats.push_back(r);
    o.cls_scores.push_back(retina_cls_->forward(c));
    o.bbox_preds.push_back(retina_reg_->forward(r));
  }
  return o;
}

Var RetinaHead::flatten_levels(const std::vector<Var>& maps, int64_t k) {
  KDET_CHECK(!maps.empty(), "RetinaHead::flatten_levels: no maps");
  const int64_t n = maps[0].size(0);
  std::vector<Var> rows;
  for (const Var& m : maps) {
    KDET_CHECK(m.ndim() == 4 && m.size(0) == n && m.size(1) % k == 0, "RetinaHead::flatten_levels: map ",
               m.data().desc(), " is not [", n, ", A*", k, ", H, W]");
    rows.push_back(reshape(permute(m, {0, 2, 3, 1}), {n, -1, k}));
  }
  Var all = rows.size() == 1 ? rows[0] : concat(rows, 1);
  return reshape(all, {-1, k});
}

DenseTargets RetinaHead::get_targets(const std::vector<std::pair<int64_t, int64_t>>& feat_sizes,
                                     const std::vector<GtInstances>& gts,
                                     const std::vector<ImageGeometry>& geo) const {
  KDET_CHECK(gts.size() == geo.size(), "RetinaHead::get_targets: ", gts.size(), " GT sets for ", geo.size(),
             " images");
  DenseTargets t;
  t.num_images = static_cast<int64_t>(gts.size());
  t.feat_sizes = feat_sizes;
  auto lv = anchors_.grid_priors(feat_sizes);
  t.anchors = ops::concat(lv, 0);
  const int64_t M = t.anchors.size(0), N = t.num_images, C = cfg_.num_classes;
  t.num_anchors = M;
  t.labels = Tensor::full({N * M}, static_cast<double>(C), DType::I64);
  t.label_weights = Tensor::zeros({N * M});
  int64_t* pl = t.labels.data<int64_t>();
  float* pw = t.label_weights.data<float>();
  const float* pa = t.anchors.data<float>();
  std::vector<int64_t> pos_rows;
  std::vector<float> pos_gt, pos_anc;
  for (int64_t n = 0; n < N; ++n) {
    const ImageGeometry& g = geo[n];
    // valid (pad_shape) and inside (allowed_border) flags
    std::vector<int64_t> inside;
    int64_t base = 0;
    for (int l = 0; l < anchors_.num_levels(); ++l) {
      const auto [fh, fw] = feat_sizes[l];
      const int64_t s = anchors_.stride(l);
      const int64_t ph = g.pad_h > 0 ? g.pad_h : fh * s, pw_ = g.pad_w > 0 ? g.pad_w : fw * s;
      Tensor v = anchors_.valid_flags(l, fh, fw, ph, pw_);
      const bool* pv = v.data<bool>();
      for (int64_t i = 0; i < v.numel(); ++i) {
        if (!pv[i]) continue;
        const int64_t m = base + i;
        if (cfg_.allowed_border >= 0) {
          const float b = static_cast<float>(cfg_.allowed_border);
          const float* a = pa + m * 4;
          if (!(a[0] >= -b && a[1] >= -b && a[2] < static_cast<float>(g.img_w) + b &&
                a[3] < static_cast<float>(g.img_h) + b))
            continue;
        }
        inside.push_back(m);
      }
      base += v.numel();
    }
    const GtInstances& gt = gts[n];
    Tensor gboxes = gt.boxes.defined() ? gt.boxes.to(DType::F32).contiguous() : Tensor::zeros({0, 4});
    Tensor glabels = gt.labels.defined() ? gt.labels : Tensor::zeros({0}, DType::I64);
    KDET_CHECK(gboxes.ndim() == 2 && gboxes.size(1) == 4 && glabels.numel() == gboxes.size(0),
               "RetinaHead::get_targets: image ", n, " has boxes ", gboxes.desc(), " and labels ", glabels.desc());
    const int64_t K = static_cast<int64_t>(inside.size());
    Tensor sub = ops::index_select(t.anchors, 0, Tensor::from_vector(inside, Shape{K}));
    AssignResult ar = cfg_.assigner.assign(sub, gboxes, glabels, gt.ignore);
    const int64_t* gi = ar.gt_inds.data<int64_t>();
    const int64_t* al = ar.labels.data<int64_t>();
    const float* pg = gboxes.data<float>();
    int64_t npos = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t row = n * M + inside[k];
      if (gi[k] > 0) {
        KDET_CHECK(al[k] >= 0 && al[k] < C, "RetinaHead::get_targets: GT label ", al[k], " outside [0, ", C, ")");
        pl[row] = al[k];
        pw[row] = 1.f;
        pos_rows.push_back(row);
        pos_gt.insert(pos_gt.end(), pg + (gi[k] - 1) * 4, pg + gi[k] * 4);
        pos_anc.insert(pos_anc.end(), pa + inside[k] * 4, pa + inside[k] * 4 + 4);
        ++npos;
      } else if (gi[k] == 0) {
        pw[row] = 1.f;
        ++t.num_neg;
      }
    }
    t.num_pos += npos;
    t.num_pos_per_image.push_back(npos);
    t.avg_factor += static_cast<double>(std::max<int64_t>(npos, 1));
  }
  const int64_t P = static_cast<int64_t>(pos_rows.size());
  t.pos_inds = Tensor::from_vector(pos_rows, Shape{P});
  t.pos_gt_boxes = Tensor::from_vector(pos_gt, Shape{P, 4});
  t.pos_anchors = Tensor::from_vector(pos_anc, Shape{P, 4});
  t.pos_bbox_targets = P > 0 ? cfg_.coder.encode(t.pos_anchors, t.pos_gt_boxes) : Tensor::zeros({0, 4});
  return t;
}

LossList RetinaHead::loss(const RetinaHeadOutputs& out, const std::vector<GtInstances>& gts,
                          const std::vector<ImageGeometry>& geo) const {
  KDET_CHECK(!out.cls_scores.empty(), "RetinaHead::loss: no head outputs");
  std::vector<std::pair<int64_t, int64_t>> sizes;
  for (const Var& c : out.cls_scores) sizes.emplace_back(c.size(2), c.size(3));
  KDET_CHECK(out.cls_scores[0].size(0) == static_cast<int64_t>(gts.size()), "RetinaHead::loss: batch of ",
             out.cls_scores[0].size(0), " images, ", gts.size(), " GT sets");
  return loss(out, get_targets(sizes, gts, geo));
}

Tensor onehot_targets(const std::vector<int64_t>& rows, const int64_t* labels, int64_t C, DType dt, Device dev) {
  const int64_t R = static_cast<int64_t>(rows.size());
  std::vector<int64_t> hot;  // flat positions r·C + label of the rows with a foreground label
  for (int64_t r = 0; r < R; ++r)
    if (labels[rows[r]] >= 0 && labels[rows[r]] < C) hot.push_back(r * C + labels[rows[r]]);
  Tensor t = Tensor::zeros({R * C}, dt, dev);
  const int64_t H = static_cast<int64_t>(hot.size());
  if (H == 0) return t.reshape({R, C});
  if (dev.is_cpu()) {  // in place (index_copy would copy the R·C zeros once more)
    dispatch_float(dt, "onehot_targets", [&](auto tag) {
      using T = decltype(tag);
      T* p = t.data<T>();
      for (const int64_t h : hot) p[h] = T(1);
    });
  } else {
    t = ops::index_copy(t, 0, Tensor::from_vector(hot, Shape{H}), Tensor::ones({H}, dt, dev));
  }
  return t.reshape({R, C});
}

LossList RetinaHead::loss(const RetinaHeadOutputs& out, const DenseTargets& t) const {
  const int64_t C = cfg_.num_classes;
  Var logits = flatten_levels(out.cls_scores, C);  // [N*M, C]
  KDET_CHECK(logits.size(0) == t.num_images * t.num_anchors, "RetinaHead::loss: ", logits.size(0),
             " prediction rows for ", t.num_images, " images x ", t.num_anchors, " anchors");
  const DType dt = logits.dtype();
  const Device dev = logits.device();  // targets are built on the host; moved to the predictions' device
  const double denom = t.avg_factor + cfg_.avg_factor_eps;
  // Per-group normalisation (images_per_group): a weight per image = 1 / (G * (avg_factor_g + eps)).
  const int64_t k = cfg_.images_per_group, N = t.num_images, M = t.num_anchors;
  const bool grouped = k > 0 && N > k;
  std::vector<double> img_w(N, 1.0 / denom);
  if (grouped) {
    KDET_CHECK(static_cast<int64_t>(t.num_pos_per_image.size()) == N, "RetinaHead::loss: targets lack per-image counts");
    const int64_t G = (N + k - 1) / k;
    for (int64_t g = 0; g < G; ++g) {
      double af = 0;
      for (int64_t n = g * k; n < std::min(N, (g + 1) * k); ++n) af += std::max<int64_t>(t.num_pos_per_image[n], 1);
      for (int64_t n = g * k; n < std::min(N, (g + 1) * k); ++n) img_w[n] = 1.0 / (G * (af + cfg_.avg_factor_eps));
    }
  }
  auto row_weights = [&](const std::vector<int64_t>& rows_, double scale) {
    Tensor w = Tensor::empty({static_cast<int64_t>(rows_.size()), 1}, DType::F64);
    double* p = w.data<double>();
    for (size_t i = 0; i < rows_.size(); ++i) p[i] = img_w[rows_[i] / M] * scale;
    return Var(w.to(dt).to(dev));
  };
  // classification: focal over anchors with label_weight 1 (0/1 weights: select those rows)
  std::vector<int64_t> rows;
  const float* pw = t.label_weights.data<float>();
  const int64_t* pl = t.labels.data<int64_t>();
  for (int64_t i = 0; i < t.label_weights.numel(); ++i)
    if (pw[i] > 0) rows.push_back(i);
  const int64_t R = static_cast<int64_t>(rows.size());
  Var loss_cls;
  if (R > 0) {
    Var sel = R == logits.size(0) ? logits : index_select(logits, 0, Tensor::from_vector(rows, Shape{R}));
    Var focal = sigmoid_focal_loss(sel, onehot_targets(rows, pl, C, dt, dev), cfg_.focal_gamma, cfg_.focal_alpha);
    loss_cls = grouped ? sum(focal * row_weights(rows, cfg_.loss_cls_weight))
                       : sum(focal) * (cfg_.loss_cls_weight / denom);
  } else {
    loss_cls = sum(logits) * 0.0;
  }
  // regression on positives
  Var reg = flatten_levels(out.bbox_preds, 4);
  Var loss_bbox;
  const int64_t P = t.pos_inds.numel();
  if (P == 0) {
    loss_bbox = sum(reg) * 0.0;
  } else {
    Var pos = index_select(reg, 0, t.pos_inds);
    Var per;  // [P, 4] (L1) or [P] (GIoU)
    if (cfg_.reg_loss == RetinaHeadConfig::RegLoss::L1) {
      per = l1_loss(pos, t.pos_bbox_targets.to(dt).to(dev));
    } else {
      Var boxes = cfg_.coder.decode_var(t.pos_anchors.to(dev), pos);
      per = reshape(giou_loss(boxes, t.pos_gt_boxes.to(dt).to(dev), cfg_.giou_eps), {P, 1});
    }
    if (grouped) {
      loss_bbox = sum(per * row_weights(t.pos_inds.to_vector<int64_t>(), cfg_.loss_bbox_weight));
    } else {
      loss_bbox = sum(per) * (cfg_.loss_bbox_weight / denom);
    }
  }
  return {{"loss_cls", loss_cls}, {"loss_bbox", loss_bbox}};
}

std::vector<Detections> RetinaHead::predict(const RetinaHeadOutputs& out, const std::vector<ImageGeometry>& geo,
                                            const DenseTestConfig* test) const {
  KDET_CHECK(!out.cls_scores.empty() && out.cls_scores.size() == out.bbox_preds.size(),
             "RetinaHead::predict: bad head outputs");
  const int64_t N = out.cls_scores[0].size(0);
  KDET_CHECK(static_cast<int64_t>(geo.size()) == N, "RetinaHead::predict: ", N, " images, ", geo.size(),
             " geometries");
  std::vector<std::pair<int64_t, int64_t>> sizes;
  for (const Var& c : out.cls_scores) sizes.emplace_back(c.size(2), c.size(3));
  auto priors = anchors_.grid_priors(sizes);
  std::vector<Detections> res;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<Tensor> cls, reg;
    for (size_t l = 0; l < out.cls_scores.size(); ++l) {
      cls.push_back(out.cls_scores[l].data().select(0, n));  // dense_to_rows brings them to the host
      reg.push_back(out.bbox_preds[l].data().select(0, n));
    }
    res.push_back(dense_postprocess(cls, reg, priors, cfg_.num_classes, cfg_.coder, geo[n],
                                    test ? *test : cfg_.test));
  }
  return res;
}

}  // namespace kdet
