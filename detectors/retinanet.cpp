#include "detectors/retinanet.h"

#include <optional>

namespace kdet {

void RetinaNetConfig::sync_channels() {
  const int64_t e = backbone.depth >= 50 ? 4 : 1;
  neck.in_channels.clear();
  for (int i : backbone.out_indices) neck.in_channels.push_back(backbone.base_channels * (int64_t{1} << i) * e);
  head.in_channels = neck.out_channels;
}

RetinaNetConfig RetinaNetConfig::mmdet(int depth, int64_t num_classes) {
  RetinaNetConfig c;
  c.backbone = resnet_cfg(depth, 1, true);
  const int64_t e = depth >= 50 ? 4 : 1;
  c.neck = retinanet_fpn_cfg({64 * e, 128 * e, 256 * e, 512 * e}, 256);
  c.head.num_classes = num_classes;
  c.head.in_channels = c.head.feat_channels = 256;
  return c;
}

RetinaNetConfig RetinaNetConfig::mmdet_resnext(int depth, int64_t groups, int64_t base_width, int64_t num_classes) {
  RetinaNetConfig c = mmdet(depth, num_classes);
  c.backbone = resnext_cfg(depth, groups, base_width, 1, true);
  return c;
}

RetinaNetConfig RetinaNetConfig::small(int depth, int64_t base, int64_t width, int64_t stacked, int64_t num_classes) {
  RetinaNetConfig c = mmdet(depth, num_classes);
  c.backbone.base_channels = base;
  const int64_t e = depth >= 50 ? 4 : 1;
  c.neck = retinanet_fpn_cfg({base * e, 2 * base * e, 4 * base * e, 8 * base * e}, width);
  c.head.in_channels = c.head.feat_channels = width;
  c.head.stacked_convs = stacked;
  return c;
}

RetinaNetConfig RetinaNetConfig::from_config(const Config& c, const std::string& sec) {
  auto k = [&](const char* name) { return sec + "." + name; };
  const int depth = static_cast<int>(c.get_int(k("depth"), 50));
  const int64_t groups = c.get_int(k("groups"), 1), base_width = c.get_int(k("base_width"), 4);
  const int64_t num_classes = c.get_int(k("num_classes"), 80);
  RetinaNetConfig r = groups > 1 ? mmdet_resnext(depth, groups, base_width, num_classes) : mmdet(depth, num_classes);
  r.backbone.base_channels = c.get_int(k("base_channels"), 64);
  r.backbone.frozen_stages = static_cast<int>(c.get_int(k("frozen_stages"), 1));
  r.backbone.norm_eval = c.get_bool(k("norm_eval"), true);
  resnet_dcn_from_config(c, sec, r.backbone);  // dcn = none|dcn|dcnv2, stage_with_dcn = 0,1,1,1 (dconv_c3-c5)
  r.neck.out_channels = c.get_int(k("neck_channels"), 256);
  r.sync_channels();
  r.head.feat_channels = c.get_int(k("feat_channels"), r.neck.out_channels);
  r.head.stacked_convs = c.get_int(k("stacked_convs"), 4);
  const std::string hn = c.get_string(k("head_norm"), "none");
  KDET_CHECK(hn == "none" || hn == "gn", "RetinaNetConfig: ", k("head_norm"), " must be none or gn, got '", hn, "'");
  if (hn == "gn") r.head.norm = NormCfg::gn(32);
  const std::string rl = c.get_string(k("reg_loss"), "l1");
  KDET_CHECK(rl == "l1" || rl == "giou", "RetinaNetConfig: ", k("reg_loss"), " must be l1 or giou, got '", rl, "'");
  r.head.reg_loss = rl == "giou" ? RetinaHeadConfig::RegLoss::GIoU : RetinaHeadConfig::RegLoss::L1;
  r.head.avg_factor_eps = c.get_double(k("avg_factor_eps"), FLT_EPSILON);
  r.head.images_per_group = c.get_int(k("images_per_group"), 0);
  r.head.allowed_border = c.get_int(k("allowed_border"), -1);
  r.head.test.nms_pre = c.get_int(k("test_nms_pre"), 1000);
  r.head.test.score_thr = c.get_double(k("test_score_thr"), 0.05);
  r.head.test.nms_iou = c.get_double(k("test_nms_iou"), 0.5);
  r.head.test.max_per_img = c.get_int(k("test_max_per_img"), 100);
  r.head.test.legacy = c.get_bool(k("test_legacy"), false);
  // Anchor sizes (mmdet AnchorGenerator): octave_base_scale * stride * 2^(i / scales_per_octave).
  r.head.anchors.octave_base_scale = c.get_double(k("anchor_octave_base_scale"), r.head.anchors.octave_base_scale);
  r.head.anchors.scales_per_octave =
      static_cast<int>(c.get_int(k("anchor_scales_per_octave"), r.head.anchors.scales_per_octave));
  KDET_CHECK(r.head.anchors.octave_base_scale > 0 && r.head.anchors.scales_per_octave >= 1, "RetinaNetConfig: ",
             k("anchor_octave_base_scale"), " must be > 0 and ", k("anchor_scales_per_octave"), " >= 1");
  return r;
}

RetinaNet::RetinaNet(RetinaNetConfig cfg) : cfg_(std::move(cfg)) {
  backbone_ = &register_module("backbone", std::make_unique<ResNet>(cfg_.backbone));
  KDET_CHECK(backbone_->out_channels() == cfg_.neck.in_channels, "RetinaNet: backbone gives ",
             Shape(backbone_->out_channels()), " channels, neck expects ", Shape(cfg_.neck.in_channels),
             " (call RetinaNetConfig::sync_channels after editing the backbone)");
  KDET_CHECK(cfg_.head.in_channels == cfg_.neck.out_channels, "RetinaNet: neck gives ", cfg_.neck.out_channels,
             " channels, head expects ", cfg_.head.in_channels);
  neck_ = &register_module("neck", std::make_unique<FPN>(cfg_.neck));
  head_ = &register_module("bbox_head", std::make_unique<RetinaHead>(cfg_.head));
  KDET_CHECK(cfg_.neck.num_outs == head_->anchor_generator().num_levels(), "RetinaNet: neck has ",
             cfg_.neck.num_outs, " outputs, head has ", head_->anchor_generator().num_levels(), " anchor levels");
}

void RetinaNet::init_weights(Generator& g) {
  backbone_->init_weights(g);
  neck_->init_weights(g);
  head_->init_weights(g);
}

RetinaNetTaps RetinaNet::forward(const Var& images) {
  KDET_CHECK(images.ndim() == 4 && images.size(1) == cfg_.backbone.in_channels, "RetinaNet: images ",
             images.data().desc(), " expected [N, ", cfg_.backbone.in_channels, ", H, W]");
  RetinaNetTaps t;
  t.backbone = backbone_->forward(images);
  t.neck = neck_->forward(t.backbone, &t.neck_conv);
  t.head = head_->forward(t.neck);
  return t;
}

std::vector<Var> RetinaNet::extract_feat(const Var& images) { return neck_->forward(backbone_->forward(images)); }

int64_t RetinaNet::tap_levels(TapKind k) const {
  if (k == TapKind::Backbone) return static_cast<int64_t>(cfg_.neck.in_channels.size());
  return cfg_.neck.num_outs;
}

int64_t RetinaNet::tap_channels(TapKind k, int64_t level) const {
  KDET_CHECK(level >= 0 && level < tap_levels(k), "tap level ", level, " out of range (the detector has ",
             tap_levels(k), " levels of this kind)");
  const int64_t A = head_->num_anchors();
  switch (k) {
    case TapKind::Backbone: return cfg_.neck.in_channels[static_cast<size_t>(level)];
    case TapKind::Neck:
    case TapKind::NeckConv: return cfg_.neck.out_channels;
    case TapKind::ClsScore: return A * cfg_.head.num_classes;
    case TapKind::BboxPred: return A * 4;
    case TapKind::ClsFeat:
    case TapKind::RegFeat: return cfg_.head.stacked_convs > 0 ? cfg_.head.feat_channels : cfg_.head.in_channels;
  }
  return 0;
}

Tensor RetinaNet::per_image_loss(const data::Batch& b, const DetectorTaps& taps) {
  NoGradGuard ng;
  const auto gts = gt_instances(b);
  const auto geo = geometry(b);
  const int64_t N = static_cast<int64_t>(b.size());
  KDET_CHECK(taps.head.num_levels() > 0 && taps.head.cls_scores[0].size(0) == N, "RetinaNet::per_image_loss: taps "
             "of a batch of ", taps.head.num_levels() ? taps.head.cls_scores[0].size(0) : 0, " images, batch has ", N);
  std::vector<float> out(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    RetinaHeadOutputs o;
    for (const Var& v : taps.head.cls_scores) o.cls_scores.emplace_back(v.data().slice(0, i, i + 1).contiguous());
    for (const Var& v : taps.head.bbox_preds) o.bbox_preds.emplace_back(v.data().slice(0, i, i + 1).contiguous());
    LossList l = head_->loss(o, {gts[static_cast<size_t>(i)]}, {geo[static_cast<size_t>(i)]});
    double s = 0;
    for (const auto& [n, v] : l) s += v.item();
    out[static_cast<size_t>(i)] = static_cast<float>(s);
  }
  return Tensor::from_vector(out, {N});
}

LossList RetinaNet::loss(const data::Batch& batch, RetinaNetTaps* taps) {
  KDET_CHECK(batch.gts.size() == batch.size(), "RetinaNet::loss: ", batch.size(), " images, ", batch.gts.size(),
             " GT lists");
  RetinaNetTaps t = forward(Var(batch.images));
  LossList l = head_->loss(t.head, gt_instances(batch), geometry(batch));
  if (taps) *taps = std::move(t);
  return l;
}

std::vector<Detections> RetinaNet::predict(const data::Batch& batch, bool rescale, RetinaNetTaps* taps) {
  std::optional<NoGradGuard> ng;
  if (!taps) ng.emplace();
  RetinaNetTaps t = forward(Var(batch.images));
  auto geo = geometry(batch);
  DenseTestConfig tc = cfg_.head.test;
  tc.rescale = rescale;
  std::vector<Detections> d = head_->predict(t.head, geo, &tc);
  unflip_detections(d, batch, rescale);
  if (taps) *taps = std::move(t);
  return d;
}

}  // namespace kdet
