#include "detectors/reppoints.h"

#include <optional>

namespace kdet {

void RepPointsConfig::sync_channels() {
  const int64_t e = backbone.depth >= 50 ? 4 : 1;
  neck.in_channels.clear();
  for (int i : backbone.out_indices) neck.in_channels.push_back(backbone.base_channels * (int64_t{1} << i) * e);
  head.in_channels = neck.out_channels;
}

RepPointsConfig RepPointsConfig::mmdet(int depth, bool gn, int64_t num_classes) {
  RepPointsConfig c;
  c.backbone = resnet_cfg(depth, 1, true);
  const int64_t e = depth >= 50 ? 4 : 1;
  c.neck = retinanet_fpn_cfg({64 * e, 128 * e, 256 * e, 512 * e}, 256);
  c.neck.norm = gn ? NormCfg::gn(32) : NormCfg::none();
  c.head.norm = gn ? NormCfg::gn(32) : NormCfg::none();
  c.head.num_classes = num_classes;
  c.head.in_channels = c.head.feat_channels = c.head.point_feat_channels = 256;
  c.head.stacked_convs = 3;
  return c;
}

RepPointsConfig RepPointsConfig::from_config(const Config& c, const std::string& sec) {
  auto k = [&](const char* name) { return sec + "." + name; };
  const int depth = static_cast<int>(c.get_int(k("depth"), 50));
  const int64_t num_classes = c.get_int(k("num_classes"), 80);
  RepPointsConfig r = mmdet(depth, true, num_classes);
  const int64_t groups = c.get_int(k("groups"), 1), base_width = c.get_int(k("base_width"), 4);
  if (groups > 1) r.backbone = resnext_cfg(depth, groups, base_width, 1, true);
  r.backbone.base_channels = c.get_int(k("base_channels"), 64);
  r.backbone.frozen_stages = static_cast<int>(c.get_int(k("frozen_stages"), 1));
  r.backbone.norm_eval = c.get_bool(k("norm_eval"), true);
  resnet_dcn_from_config(c, sec, r.backbone);  // dcn none|dcn|dcnv2, stage_with_dcn (dconv_c3-c5 teachers)
  r.neck.out_channels = c.get_int(k("neck_channels"), 256);
  r.sync_channels();
  const int64_t gn_groups = c.get_int(k("gn_groups"), 32);
  auto norm = [&](const char* key) {
    const std::string v = c.get_string(k(key), "gn");
    KDET_CHECK(v == "none" || v == "gn", "RepPointsConfig: ", k(key), " must be none or gn, got '", v, "'");
    return v == "gn" ? NormCfg::gn(gn_groups) : NormCfg::none();
  };
  r.neck.norm = norm("neck_norm");
  r.head.norm = norm("head_norm");
  r.head.feat_channels = c.get_int(k("feat_channels"), r.neck.out_channels);
  r.head.point_feat_channels = c.get_int(k("point_feat_channels"), r.head.feat_channels);
  r.head.stacked_convs = c.get_int(k("stacked_convs"), 3);
  r.head.num_points = c.get_int(k("num_points"), 9);
  r.head.transform = points_transform(c.get_string(k("transform"), "moment"));
  r.head.gradient_mul = c.get_double(k("gradient_mul"), 0.1);
  r.head.moment_mul = c.get_double(k("moment_mul"), 0.01);
  r.head.point_base_scale = c.get_double(k("point_base_scale"), 4.0);
  r.head.init_assigner.scale = r.head.point_base_scale;
  const std::string di = c.get_string(k("dcn_init"), "normal");
  KDET_CHECK(di == "normal" || di == "mmcv", "RepPointsConfig: ", k("dcn_init"), " must be normal or mmcv, got '", di,
             "'");
  r.head.dcn_normal_init = di == "normal";
  r.head.avg_factor_eps = c.get_double(k("avg_factor_eps"), FLT_EPSILON);
  r.head.images_per_group = c.get_int(k("images_per_group"), 0);
  r.head.test.nms_pre = c.get_int(k("test_nms_pre"), 1000);
  r.head.test.score_thr = c.get_double(k("test_score_thr"), 0.05);
  r.head.test.nms_iou = c.get_double(k("test_nms_iou"), 0.5);
  r.head.test.max_per_img = c.get_int(k("test_max_per_img"), 100);
  r.head.test.legacy = c.get_bool(k("test_legacy"), false);
  return r;
}

RepPointsDetector::RepPointsDetector(RepPointsConfig cfg) : cfg_(std::move(cfg)) {
  backbone_ = &register_module("backbone", std::make_unique<ResNet>(cfg_.backbone));
  KDET_CHECK(backbone_->out_channels() == cfg_.neck.in_channels, "RepPointsDetector: backbone gives ",
             Shape(backbone_->out_channels()), " channels, neck expects ", Shape(cfg_.neck.in_channels),
             " (call RepPointsConfig::sync_channels after editing the backbone)");
  KDET_CHECK(cfg_.head.in_channels == cfg_.neck.out_channels, "RepPointsDetector: neck gives ",
             cfg_.neck.out_channels, " channels, head expects ", cfg_.head.in_channels);
  neck_ = &register_module("neck", std::make_unique<FPN>(cfg_.neck));
  head_ = &register_module("bbox_head", std::make_unique<RepPointsHead>(cfg_.head));
  KDET_CHECK(cfg_.neck.num_outs == head_->num_levels(), "RepPointsDetector: neck has ", cfg_.neck.num_outs,
             " outputs, head has ", head_->num_levels(), " point strides");
}

void RepPointsDetector::init_weights(Generator& g) {
  backbone_->init_weights(g);
  neck_->init_weights(g);
  head_->init_weights(g);
}

DetectorTaps RepPointsDetector::forward(const Var& images) { return forward(images, nullptr); }

DetectorTaps RepPointsDetector::forward(const Var& images, RepPointsHeadOutputs* head_out) {
  KDET_CHECK(images.ndim() == 4 && images.size(1) == cfg_.backbone.in_channels, "RepPointsDetector: images ",
             images.data().desc(), " expected [N, ", cfg_.backbone.in_channels, ", H, W]");
  DetectorTaps t;
  t.cls_name = "reppoints_cls_out";
  t.reg_name = "pts_refine";
  t.backbone = backbone_->forward(images);
  t.neck = neck_->forward(t.backbone, &t.neck_conv);
  RepPointsHeadOutputs o = head_->forward(t.neck);
  t.head.cls_scores = o.cls_scores;
  t.head.bbox_preds = o.pts_refine;
  t.head.cls_feats = o.cls_feats;
  t.head.reg_feats = o.reg_feats;
  if (head_out) *head_out = std::move(o);
  return t;
}

int64_t RepPointsDetector::tap_levels(TapKind k) const {
  if (k == TapKind::Backbone) return static_cast<int64_t>(cfg_.neck.in_channels.size());
  return cfg_.neck.num_outs;
}

int64_t RepPointsDetector::tap_channels(TapKind k, int64_t level) const {
  KDET_CHECK(level >= 0 && level < tap_levels(k), "tap level ", level, " out of range (the detector has ",
             tap_levels(k), " levels of this kind)");
  switch (k) {
    case TapKind::Backbone: return cfg_.neck.in_channels[static_cast<size_t>(level)];
    case TapKind::Neck:
    case TapKind::NeckConv: return cfg_.neck.out_channels;
    case TapKind::ClsScore: return cfg_.head.num_classes;
    case TapKind::BboxPred: return 2 * cfg_.head.num_points;
    case TapKind::ClsFeat:
    case TapKind::RegFeat: return cfg_.head.stacked_convs > 0 ? cfg_.head.feat_channels : cfg_.head.in_channels;
  }
  return 0;
}

LossList RepPointsDetector::loss(const data::Batch& batch, DetectorTaps* taps) {
  KDET_CHECK(batch.gts.size() == batch.size(), "RepPointsDetector::loss: ", batch.size(), " images, ",
             batch.gts.size(), " GT lists");
  RepPointsHeadOutputs o;
  DetectorTaps t = forward(Var(batch.images), &o);
  LossList l = head_->loss(o, gt_instances(batch), geometry(batch));
  if (taps) *taps = std::move(t);
  return l;
}

std::vector<Detections> RepPointsDetector::predict(const data::Batch& batch, bool rescale, DetectorTaps* taps) {
  std::optional<NoGradGuard> ng;
  if (!taps) ng.emplace();
  RepPointsHeadOutputs o;
  DetectorTaps t = forward(Var(batch.images), &o);
  DenseTestConfig tc = cfg_.head.test;
  tc.rescale = rescale;
  std::vector<Detections> d = head_->predict(o, geometry(batch), &tc);
  unflip_detections(d, batch, rescale);
  if (taps) *taps = std::move(t);
  return d;
}

}  // namespace kdet
