#include "detectors/reppoints_head.h"

#include <algorithm>
#include <cmath>

#include "detectors/retina_head.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/index_ops.h"
#include "engine/ops/losses.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/unary.h"
#include "layers/init.h"

namespace kdet {

PointsTransform points_transform(const std::string& s) {
  if (s == "moment") return PointsTransform::Moment;
  if (s == "minmax") return PointsTransform::MinMax;
  if (s == "partial_minmax") return PointsTransform::PartialMinMax;
  KDET_FAIL("points_transform: '", s, "' is not moment, minmax or partial_minmax");
}

Var points2bbox(const Var& pts, bool y_first, PointsTransform t, const Var& moment_transfer, double moment_mul) {
  KDET_CHECK(pts.ndim() == 2 && pts.size(1) % 2 == 0 && pts.size(1) >= 4, "points2bbox: points ",
             pts.data().desc(), " must be [R, 2P] with P >= 2");
  const int64_t R = pts.size(0), P = pts.size(1) / 2;
  Var p3 = reshape(pts, {R, P, 2});
  Var py = select(p3, 2, y_first ? 0 : 1), px = select(p3, 2, y_first ? 1 : 0);  // [R, P]
  if (t == PointsTransform::PartialMinMax) {
    KDET_CHECK(P >= 4, "points2bbox: partial_minmax needs >= 4 points, got ", P);
    py = slice(py, 1, 0, 4), px = slice(px, 1, 0, 4);
  }
  if (t != PointsTransform::Moment)
    return concat({min(px, 1, true), min(py, 1, true), max(px, 1, true), max(py, 1, true)}, 1);
  KDET_CHECK(moment_transfer.defined() && moment_transfer.numel() == 2, "points2bbox: moment needs a [2] moment_transfer");
  // mmdet: mean over points; std = torch.std(pts - mean) (unbiased), computed here as torch does:
  // sqrt(Σ (d - mean(d))² / (P - 1)) with d = pts - mean.
  auto mean_std = [&](const Var& v, Var& m, Var& sd) {
    m = mean(v, {1}, true);
    Var d = v - m;
    Var dc = d - mean(d, {1}, true);
    sd = sqrt(sum(dc * dc, {1}, true) * (1.0 / static_cast<double>(P - 1)));
  };
  Var mx, my, sx, sy;
  mean_std(py, my, sy);
  mean_std(px, mx, sx);
  Var mt = moment_transfer * moment_mul + moment_transfer.detach() * (1.0 - moment_mul);
  Var hw = sx * exp(slice(mt, 0, 0, 1)), hh = sy * exp(slice(mt, 0, 1, 2));  // [R, 1]
  return concat({mx - hw, my - hh, mx + hw, my + hh}, 1);
}

RepPointsHead::RepPointsHead(RepPointsHeadConfig cfg) : cfg_(std::move(cfg)), points_(cfg_.point_strides, 0.0) {
  KDET_CHECK(cfg_.num_classes > 0 && cfg_.in_channels > 0 && cfg_.feat_channels > 0 && cfg_.point_feat_channels > 0 &&
                 cfg_.stacked_convs >= 0,
             "RepPointsHead: bad config (num_classes ", cfg_.num_classes, ", in_channels ", cfg_.in_channels,
             ", feat_channels ", cfg_.feat_channels, ", point_feat_channels ", cfg_.point_feat_channels,
             ", stacked_convs ", cfg_.stacked_convs, ")");
  kernel_ = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(cfg_.num_points))));
  KDET_CHECK(kernel_ * kernel_ == cfg_.num_points && kernel_ % 2 == 1, "RepPointsHead: num_points ", cfg_.num_points,
             " must be the square of an odd kernel size");
  KDET_CHECK(cfg_.gradient_mul >= 0 && cfg_.gradient_mul <= 1, "RepPointsHead: gradient_mul ", cfg_.gradient_mul,
             " outside [0, 1]");
  // DCN base grid (y, x) per kernel tap k = i*K + j: (i - pad, j - pad)
  const int64_t pad = (kernel_ - 1) / 2, P = cfg_.num_points;
  dcn_base_ = Tensor::empty({1, 2 * P, 1, 1});
  float* pb = dcn_base_.data<float>();
  for (int64_t i = 0; i < kernel_; ++i)
    for (int64_t j = 0; j < kernel_; ++j) {
      pb[2 * (i * kernel_ + j)] = static_cast<float>(i - pad);
      pb[2 * (i * kernel_ + j) + 1] = static_cast<float>(j - pad);
    }
  if (cfg_.transform == PointsTransform::Moment) mt_ = &register_parameter("moment_transfer", Tensor::zeros({2}));
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
  const int64_t F = cfg_.stacked_convs > 0 ? cfg_.feat_channels : cfg_.in_channels, PF = cfg_.point_feat_channels;
  cls_dcn_ = &register_module("reppoints_cls_conv", std::make_unique<DeformConv2d>(F, PF, kernel_, 1, pad));
  cls_out_ = &register_module("reppoints_cls_out", std::make_unique<Conv2d>(PF, cfg_.num_classes, 1));
  init_conv_ = &register_module("reppoints_pts_init_conv", std::make_unique<Conv2d>(F, PF, 3, 1, 1));
  init_out_ = &register_module("reppoints_pts_init_out", std::make_unique<Conv2d>(PF, 2 * P, 1));
  refine_dcn_ = &register_module("reppoints_pts_refine_conv", std::make_unique<DeformConv2d>(F, PF, kernel_, 1, pad));
  refine_out_ = &register_module("reppoints_pts_refine_out", std::make_unique<Conv2d>(PF, 2 * P, 1));
}

void RepPointsHead::init_weights(Generator& g) {
  Module::init_weights(g);  // norms to weight 1 / bias 0; convs are overwritten below
  for (auto& [name, m] : named_modules()) {
    auto* c = dynamic_cast<Conv2d*>(m);
    if (!c) continue;
    normal_(c->weight().data(), g, 0.0, 0.01);
    if (c->has_bias()) constant_(c->bias().data(), 0.0);
  }
  // the DCNs keep mmcv's own init (Module::init_weights above) unless dcn_normal_init
  if (cfg_.dcn_normal_init)
    for (DeformConv2d* d : {cls_dcn_, refine_dcn_}) normal_(d->weight().data(), g, 0.0, 0.01);
  constant_(cls_out_->bias().data(), bias_init_with_prob(cfg_.prior_prob));
  if (mt_) constant_(mt_->data(), 0.0);
}

Var RepPointsHead::points2bbox(const Var& pts, bool y_first) const {
  return kdet::points2bbox(pts, y_first, cfg_.transform, moment_transfer(), cfg_.moment_mul);
}

RepPointsHeadOutputs RepPointsHead::forward(const std::vector<Var>& feats) {
  KDET_CHECK(static_cast<int>(feats.size()) == points_.num_levels(), "RepPointsHead::forward: ", feats.size(),
             " feature levels for ", points_.num_levels(), " point strides");
  RepPointsHeadOutputs o;
  const double gm = cfg_.gradient_mul;
  for (const Var& x : feats) {
    KDET_CHECK(x.ndim() == 4 && x.size(1) == cfg_.in_channels, "RepPointsHead::forward: feature ", x.data().desc(),
               " expected [N, ", cfg_.in_channels, ", H, W]");
    Var c = x, r = x;
    for (size_t i = 0; i < cls_convs_->size(); ++i) c = (*cls_convs_)[i].forward(c);
    for (size_t i = 0; i < reg_convs_->size(); ++i) r = (*reg_convs_)[i].forward(r);
    Var init = init_out_->forward(relu(init_conv_->forward(r)));
    Var init_d = init.detach();
    Var grad_mul = gm == 1.0 ? init : init_d * (1.0 - gm) + init * gm;
    Var offset = grad_mul - Var(dcn_base_.to(x.dtype()).to(x.device()));
    Var cls = cls_out_->forward(relu(cls_dcn_->forward(c, offset)));
    Var refine = refine_out_->forward(relu(refine_dcn_->forward(r, offset))) + init_d;
    o.cls_feats.push_back(c);
    o.reg_feats.push_back(r);
    o.cls_scores.push_back(cls);
    o.pts_init.push_back(init);
    o.pts_refine.push_back(refine);
  }
  return o;
}

namespace {

// Per-image normalisers: 1 / (Σ_images max(#pos, 1) + eps) for all images, or with images_per_group k:
// 1 / (G · (Σ_{images of the group} max(#pos, 1) + eps)) (G groups; the loss is the mean over groups).
std::vector<double> image_norms(const std::vector<int64_t>& npos, int64_t k, double eps) {
  const int64_t N = static_cast<int64_t>(npos.size());
  std::vector<double> w(N);
  const int64_t per = k > 0 && N > k ? k : N;
  const int64_t G = (N + per - 1) / per;
  for (int64_t g = 0; g < G; ++g) {
    double af = 0;
    for (int64_t n = g * per; n < std::min(N, (g + 1) * per); ++n) af += static_cast<double>(std::max<int64_t>(npos[n], 1));
    for (int64_t n = g * per; n < std::min(N, (g + 1) * per); ++n) w[n] = 1.0 / (static_cast<double>(G) * (af + eps));
  }
  return w;
}

// Σ per-row losses (rows r of image rows[r] / M) weighted by the image normaliser times `scale`; with a
// single group this is sum(per) · scale / (avg + eps), exactly mmdet's reduction.
Var normalised_sum(const Var& per, const std::vector<int64_t>& rows, int64_t M, const std::vector<double>& norms,
                   bool grouped, double scale, double denom) {
  if (!grouped) return sum(per) * (scale / denom);
  Tensor w = Tensor::empty({static_cast<int64_t>(rows.size()), 1}, DType::F64);
  double* p = w.data<double>();
  for (size_t i = 0; i < rows.size(); ++i) p[i] = norms[rows[i] / M] * scale;
  return sum(per * Var(w.to(per.dtype()).to(per.device())));
}

}  // namespace

std::vector<Tensor> RepPointsHead::decode_boxes(const std::vector<Var>& pts, int64_t n) const {
  KDET_CHECK(static_cast<int>(pts.size()) == points_.num_levels(), "RepPointsHead::decode_boxes: ", pts.size(),
             " levels for ", points_.num_levels(), " strides");
  NoGradGuard ng;
  std::vector<Tensor> out;
  for (int l = 0; l < points_.num_levels(); ++l) {
    const Var& m = pts[l];
    KDET_CHECK(m.ndim() == 4 && m.size(1) == 2 * cfg_.num_points && n < m.size(0), "RepPointsHead::decode_boxes: map ",
               m.data().desc(), " image ", n);
    const int64_t H = m.size(2), W = m.size(3);
    Tensor rows = dense_to_rows(m.data().select(0, n), 2 * cfg_.num_points);  // f32 [H*W, 2P], host
    if (mt_) rows = rows.to(mt_->dtype());                                     // f64 models
    // points2bbox where the model is (its moment_transfer parameter), the box arithmetic below on the host
    Tensor box = points2bbox(Var(rows.to(m.device())), true).data().to(Device::cpu()).to(DType::F32).contiguous();
    Tensor pri = points_.grid_points(l, H, W, true);
    const float* pp = pri.data<float>();
    float* pbx = box.data<float>();
    for (int64_t i = 0; i < H * W; ++i)
      for (int k = 0; k < 4; ++k) pbx[i * 4 + k] = pbx[i * 4 + k] * pp[i * 4 + 2] + pp[i * 4 + (k % 2)];
    out.push_back(box);
  }
  return out;
}

RepPointsTargets RepPointsHead::get_targets(const RepPointsHeadOutputs& out, const std::vector<GtInstances>& gts,
                                            const std::vector<ImageGeometry>& geo) const {
  KDET_CHECK(gts.size() == geo.size(), "RepPointsHead::get_targets: ", gts.size(), " GT sets for ", geo.size(),
             " images");
  KDET_CHECK(static_cast<int>(out.num_levels()) == points_.num_levels() && out.pts_init.size() == out.num_levels(),
             "RepPointsHead::get_targets: head outputs have ", out.num_levels(), " cls / ", out.pts_init.size(),
             " init levels for ", points_.num_levels(), " strides");
  RepPointsTargets t;
  t.num_images = static_cast<int64_t>(gts.size());
  for (const Var& c : out.cls_scores) t.feat_sizes.emplace_back(c.size(2), c.size(3));
  t.points = ops::concat(points_.grid_priors(t.feat_sizes, true), 0);
  const int64_t M = t.points.size(0), N = t.num_images, C = cfg_.num_classes, P2 = 2 * cfg_.num_points;
  t.num_points = M;
  KDET_CHECK(out.cls_scores[0].size(0) == N, "RepPointsHead::get_targets: batch of ", out.cls_scores[0].size(0),
             " images, ", N, " GT sets");
  const float* pp = t.points.data<float>();
  // refine candidates: (x, y, x, y) + points2bbox(stop_grad(pts_init)) * stride, all images
  {
    NoGradGuard ng;
    std::vector<Var> det;
    for (const Var& v : out.pts_init) det.push_back(v.detach());
    Tensor rows = RetinaHead::flatten_levels(det, P2).data();  // [N*M, 2P]
    t.init_boxes = points2bbox(Var(rows), true).data().to(Device::cpu()).to(DType::F32).contiguous();  // host
    float* pb = t.init_boxes.data<float>();
    for (int64_t r = 0; r < N * M; ++r) {
      const float* q = pp + (r % M) * 4;
      for (int k = 0; k < 4; ++k) pb[r * 4 + k] = q[k % 2] + pb[r * 4 + k] * q[2];
    }
  }
  t.labels = Tensor::full({N * M}, static_cast<double>(C), DType::I64);
  t.label_weights = Tensor::zeros({N * M});
  int64_t* pl = t.labels.data<int64_t>();
  float* pw = t.label_weights.data<float>();
  std::vector<int64_t> ipos, rpos;
  std::vector<float> igt, rgt;
  for (int64_t n = 0; n < N; ++n) {
    const ImageGeometry& g = geo[n];
    std::vector<int64_t> valid;
    int64_t base = 0;
    for (int l = 0; l < points_.num_levels(); ++l) {
      const auto [fh, fw] = t.feat_sizes[l];
      const int64_t s = points_.stride(l);
      const int64_t ph = g.pad_h > 0 ? g.pad_h : fh * s, pw_ = g.pad_w > 0 ? g.pad_w : fw * s;
      Tensor v = points_.valid_flags(l, fh, fw, ph, pw_);
      const bool* pv = v.data<bool>();
      for (int64_t i = 0; i < v.numel(); ++i)
        if (pv[i]) valid.push_back(base + i);
      base += v.numel();
    }
    const GtInstances& gt = gts[n];
    Tensor gboxes = gt.boxes.defined() ? gt.boxes.to(DType::F32).contiguous() : Tensor::zeros({0, 4});
    Tensor glabels = gt.labels.defined() ? gt.labels : Tensor::zeros({0}, DType::I64);
    KDET_CHECK(gboxes.ndim() == 2 && gboxes.size(1) == 4 && glabels.numel() == gboxes.size(0),
               "RepPointsHead::get_targets: image ", n, " has boxes ", gboxes.desc(), " and labels ", glabels.desc());
    const float* pg = gboxes.data<float>();
    const int64_t K = static_cast<int64_t>(valid.size());
    const Tensor vidx = Tensor::from_vector(valid, Shape{K});
    // init stage
    AssignResult ai = cfg_.init_assigner.assign(ops::index_select(t.points, 0, vidx), gboxes, glabels);
    const int64_t* gi = ai.gt_inds.data<int64_t>();
    int64_t np_init = 0;
    for (int64_t k = 0; k < K; ++k)
      if (gi[k] > 0) {
        ipos.push_back(n * M + valid[k]);
        igt.insert(igt.end(), pg + (gi[k] - 1) * 4, pg + gi[k] * 4);
        ++np_init;
      }
    t.init_num_pos_per_image.push_back(np_init);
    t.init_avg_factor += static_cast<double>(std::max<int64_t>(np_init, 1));
    // refine stage
    Tensor cand = ops::index_select(t.init_boxes.slice(0, n * M, (n + 1) * M), 0, vidx);
    AssignResult ar = cfg_.refine_assigner.assign(cand, gboxes, glabels, gt.ignore);
    const int64_t* gr = ar.gt_inds.data<int64_t>();
    const int64_t* al = ar.labels.data<int64_t>();
    int64_t np_ref = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t row = n * M + valid[k];
      if (gr[k] > 0) {
        KDET_CHECK(al[k] >= 0 && al[k] < C, "RepPointsHead::get_targets: GT label ", al[k], " outside [0, ", C, ")");
        pl[row] = al[k];
        pw[row] = 1.f;
        rpos.push_back(row);
        rgt.insert(rgt.end(), pg + (gr[k] - 1) * 4, pg + gr[k] * 4);
        ++np_ref;
      } else if (gr[k] == 0) {
        pw[row] = 1.f;
        ++t.refine_num_neg;
      }
    }
    t.refine_num_pos_per_image.push_back(np_ref);
    t.refine_avg_factor += static_cast<double>(std::max<int64_t>(np_ref, 1));
  }
  const int64_t Pi = static_cast<int64_t>(ipos.size()), Pr = static_cast<int64_t>(rpos.size());
  t.init_pos_inds = Tensor::from_vector(ipos, Shape{Pi});
  t.init_pos_gt = Tensor::from_vector(igt, Shape{Pi, 4});
  t.refine_pos_inds = Tensor::from_vector(rpos, Shape{Pr});
  t.refine_pos_gt = Tensor::from_vector(rgt, Shape{Pr, 4});
  return t;
}

LossList RepPointsHead::loss(const RepPointsHeadOutputs& out, const std::vector<GtInstances>& gts,
                             const std::vector<ImageGeometry>& geo) const {
  KDET_CHECK(!out.cls_scores.empty(), "RepPointsHead::loss: no head outputs");
  return loss(out, get_targets(out, gts, geo));
}

LossList RepPointsHead::loss(const RepPointsHeadOutputs& out, const RepPointsTargets& t) const {
  const int64_t C = cfg_.num_classes, P2 = 2 * cfg_.num_points, N = t.num_images, M = t.num_points;
  Var logits = RetinaHead::flatten_levels(out.cls_scores, C);  // [N*M, C]
  KDET_CHECK(logits.size(0) == N * M, "RepPointsHead::loss: ", logits.size(0), " prediction rows for ", N,
             " images x ", M, " points");
  const DType dt = logits.dtype();
  const Device dev = logits.device();  // targets are built on the host; moved to the predictions' device
  const int64_t k = cfg_.images_per_group;
  const bool grouped = k > 0 && N > k;
  const double eps = cfg_.avg_factor_eps;
  KDET_CHECK(static_cast<int64_t>(t.init_num_pos_per_image.size()) == N &&
                 static_cast<int64_t>(t.refine_num_pos_per_image.size()) == N,
             "RepPointsHead::loss: targets lack per-image counts");
  const auto init_norm = image_norms(t.init_num_pos_per_image, k, eps);
  const auto ref_norm = image_norms(t.refine_num_pos_per_image, k, eps);
  const double init_denom = t.init_avg_factor + eps, ref_denom = t.refine_avg_factor + eps;
  // classification: focal over points with label_weight 1 (0/1 weights: select those rows)
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
    loss_cls = normalised_sum(focal, rows, M, ref_norm, grouped, cfg_.loss_cls_weight, ref_denom);
  } else {
    loss_cls = sum(logits) * 0.0;
  }
  // points: smooth L1 between points2bbox(absolute points) / (base_scale * stride) and gt / (same)
  const float* pp = t.points.data<float>();
  auto pts_loss = [&](const std::vector<Var>& maps, const Tensor& pos_inds, const Tensor& pos_gt,
                      const std::vector<double>& norms, double weight, double denom) {
    Var all = RetinaHead::flatten_levels(maps, P2);  // [N*M, 2P] (y, x) offsets
    const int64_t Pn = pos_inds.numel();
    if (Pn == 0) return sum(all) * 0.0;
    const auto prow = pos_inds.to_vector<int64_t>();
    Tensor stride = Tensor::empty({Pn, 1}, DType::F64), centre = Tensor::empty({Pn, P2}, DType::F64);
    Tensor nrm = Tensor::empty({Pn, 1}, DType::F64);
    double* ps = stride.data<double>();
    double* pc = centre.data<double>();
    double* pn = nrm.data<double>();
    for (int64_t i = 0; i < Pn; ++i) {
      const float* q = pp + (prow[i] % M) * 4;
      ps[i] = q[2];
      pn[i] = static_cast<double>(static_cast<float>(cfg_.point_base_scale) * q[2]);
      for (int64_t j = 0; j < P2; j += 2) pc[i * P2 + j] = q[1], pc[i * P2 + j + 1] = q[0];  // (y, x)
    }
    Var off = index_select(all, 0, pos_inds);
    Var abs_pts = off * Var(stride.to(dt).to(dev)) + Var(centre.to(dt).to(dev));
    Var nrm_v(nrm.to(dt).to(dev));
    Var pred = points2bbox(abs_pts, true) / nrm_v;
    Tensor target = ops::div(pos_gt.to(dt), nrm.to(dt)).to(dev);
    Var per = smooth_l1_loss(pred, target, cfg_.smooth_l1_beta);
    return normalised_sum(per, prow, M, norms, grouped, weight, denom);
  };
  Var loss_init = pts_loss(out.pts_init, t.init_pos_inds, t.init_pos_gt, init_norm, cfg_.loss_init_weight, init_denom);
  Var loss_refine =
      pts_loss(out.pts_refine, t.refine_pos_inds, t.refine_pos_gt, ref_norm, cfg_.loss_refine_weight, ref_denom);
  return {{"loss_cls", loss_cls}, {"loss_pts_init", loss_init}, {"loss_pts_refine", loss_refine}};
}

std::vector<Detections> RepPointsHead::predict(const RepPointsHeadOutputs& out, const std::vector<ImageGeometry>& geo,
                                               const DenseTestConfig* test) const {
  KDET_CHECK(!out.cls_scores.empty() && out.cls_scores.size() == out.pts_refine.size(),
             "RepPointsHead::predict: bad head outputs");
  const int64_t N = out.cls_scores[0].size(0);
  KDET_CHECK(static_cast<int64_t>(geo.size()) == N, "RepPointsHead::predict: ", N, " images, ", geo.size(),
             " geometries");
  std::vector<Detections> res;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<Tensor> cls;
    for (const Var& c : out.cls_scores) cls.push_back(c.data().select(0, n));  // dense_to_rows brings them to the host
    std::vector<Tensor> boxes = decode_boxes(out.pts_refine, n);
    // clip to img_shape
    for (Tensor& b : boxes) {
      float* p = b.data<float>();
      const float W = static_cast<float>(geo[n].img_w), H = static_cast<float>(geo[n].img_h);
      for (int64_t i = 0; i < b.size(0); ++i) {
        p[i * 4] = std::clamp(p[i * 4], 0.f, W), p[i * 4 + 2] = std::clamp(p[i * 4 + 2], 0.f, W);
        p[i * 4 + 1] = std::clamp(p[i * 4 + 1], 0.f, H), p[i * 4 + 3] = std::clamp(p[i * 4 + 3], 0.f, H);
      }
    }
    res.push_back(dense_postprocess_boxes(cls, boxes, cfg_.num_classes, geo[n], test ? *test : cfg_.test));
  }
  return res;
}

}  // namespace kdet
