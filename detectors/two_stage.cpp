#include "detectors/two_stage.h"

#include <optional>

namespace kdet {

FPNCfg two_stage_fpn_cfg(const std::vector<int64_t>& in_channels, int64_t out_channels) {
  FPNCfg c;
  c.in_channels = in_channels;
  c.out_channels = out_channels;
  c.num_outs = 5;
  c.start_level = 0;
  c.add_extra_convs = FPNCfg::Extra::None;
  return c;
}

void TwoStageConfig::sync_channels() {
  const int64_t e = backbone.depth >= 50 ? 4 : 1;
  neck.in_channels.clear();
  for (int i : backbone.out_indices) neck.in_channels.push_back(backbone.base_channels * (int64_t{1} << i) * e);
  rpn.in_channels = neck.out_channels;
  for (auto& s : roi.stages) s.head.in_channels = neck.out_channels;
}

TwoStageConfig TwoStageConfig::faster_rcnn(int depth, int64_t num_classes) {
  TwoStageConfig c;
  c.backbone = resnet_cfg(depth, 1, true);
  c.neck = two_stage_fpn_cfg({}, 256);
  c.rpn = RPNHeadConfig::mmdet();
  c.roi = RoIHeadConfig::faster(num_classes);
  c.sync_channels();
  return c;
}

TwoStageConfig TwoStageConfig::cascade_rcnn(int depth, int64_t num_classes) {
  TwoStageConfig c = faster_rcnn(depth, num_classes);
  c.cascade = true;
  c.rpn = RPNHeadConfig::cascade();
  c.roi = RoIHeadConfig::cascade_rcnn(num_classes);
  c.sync_channels();
  return c;
}

TwoStageConfig TwoStageConfig::from_config(const Config& c, const std::string& sec) {
  auto k = [&](const char* name) { return sec + "." + name; };
  const std::string type = c.get_string(k("type"), "faster_rcnn");
  KDET_CHECK(type == "faster_rcnn" || type == "cascade_rcnn", "TwoStageConfig: ", k("type"),
             " must be faster_rcnn or cascade_rcnn, got '", type, "'");
  const bool cascade = type == "cascade_rcnn";
  const int depth = static_cast<int>(c.get_int(k("depth"), 50));
  const int64_t num_classes = c.get_int(k("num_classes"), 80);
  TwoStageConfig r = cascade ? cascade_rcnn(depth, num_classes) : faster_rcnn(depth, num_classes);
  const int64_t groups = c.get_int(k("groups"), 1), base_width = c.get_int(k("base_width"), 4);
  if (groups > 1) r.backbone = resnext_cfg(depth, groups, base_width, 1, true);
  r.backbone.base_channels = c.get_int(k("base_channels"), 64);
  r.backbone.frozen_stages = static_cast<int>(c.get_int(k("frozen_stages"), 1));
  r.backbone.norm_eval = c.get_bool(k("norm_eval"), true);
  resnet_dcn_from_config(c, sec, r.backbone);  // dcn none|dcn|dcnv2, stage_with_dcn (the dconv_c3-c5 Cascade teachers)
  r.neck.out_channels = c.get_int(k("neck_channels"), 256);
  r.sync_channels();
  r.rpn.feat_channels = c.get_int(k("rpn_feat_channels"), r.neck.out_channels);
  r.roi.set_widths(r.neck.out_channels, c.get_int(k("fc_out_channels"), 1024));
  r.rpn.anchors.scales = c.get_doubles(k("rpn_anchor_scales"), r.rpn.anchors.scales);
  r.rpn.allowed_border = c.get_int(k("rpn_allowed_border"), r.rpn.allowed_border);
  const std::string rl = c.get_string(k("rpn_reg_loss"), r.rpn.smooth_l1_beta > 0 ? "smooth_l1" : "l1");
  KDET_CHECK(rl == "l1" || rl == "smooth_l1", "TwoStageConfig: ", k("rpn_reg_loss"), " must be l1 or smooth_l1, got '",
             rl, "'");
  r.rpn.smooth_l1_beta = rl == "l1" ? 0.0 : 1.0 / 9.0;
  r.rpn.train.nms_pre = c.get_int(k("rpn_train_nms_pre"), r.rpn.train.nms_pre);
  r.rpn.train.max_per_img = c.get_int(k("rpn_train_max_per_img"), r.rpn.train.max_per_img);
  r.rpn.test.nms_pre = c.get_int(k("rpn_test_nms_pre"), r.rpn.test.nms_pre);
  r.rpn.test.max_per_img = c.get_int(k("rpn_test_max_per_img"), r.rpn.test.max_per_img);
  r.rpn.train.nms_iou = r.rpn.test.nms_iou = c.get_double(k("rpn_nms_iou"), 0.7);
  r.rpn.sampler.num = c.get_int(k("rpn_sampler_num"), r.rpn.sampler.num);
  const int64_t rcnn_num = c.get_int(k("rcnn_sampler_num"), 512);
  const double rcnn_pos = c.get_double(k("rcnn_pos_fraction"), 0.25);
  const double eps = c.get_double(k("avg_factor_eps"), FLT_EPSILON);
  r.rpn.avg_factor_eps = eps;
  for (auto& s : r.roi.stages) {
    s.sampler.num = rcnn_num;
    s.sampler.pos_fraction = rcnn_pos;
    s.head.avg_factor_eps = eps;
  }
  r.roi.test.score_thr = c.get_double(k("test_score_thr"), 0.05);
  r.roi.test.nms_iou = c.get_double(k("test_nms_iou"), 0.5);
  r.roi.test.max_per_img = c.get_int(k("test_max_per_img"), 100);
  r.sampler_seed = static_cast<uint64_t>(c.get_int(k("sampler_seed"), 0));
  return r;
}

TwoStageDetector::TwoStageDetector(TwoStageConfig cfg) : cfg_(std::move(cfg)) {
  backbone_ = &register_module("backbone", std::make_unique<ResNet>(cfg_.backbone));
  KDET_CHECK(backbone_->out_channels() == cfg_.neck.in_channels, "TwoStageDetector: backbone gives ",
             Shape(backbone_->out_channels()), " channels, neck expects ", Shape(cfg_.neck.in_channels),
             " (call TwoStageConfig::sync_channels after editing the backbone)");
  KDET_CHECK(cfg_.rpn.in_channels == cfg_.neck.out_channels, "TwoStageDetector: neck gives ", cfg_.neck.out_channels,
             " channels, RPN head expects ", cfg_.rpn.in_channels);
  for (const auto& s : cfg_.roi.stages)
    KDET_CHECK(s.head.in_channels == cfg_.neck.out_channels, "TwoStageDetector: neck gives ", cfg_.neck.out_channels,
               " channels, the R-CNN head expects ", s.head.in_channels);
  neck_ = &register_module("neck", std::make_unique<FPN>(cfg_.neck));
  rpn_ = &register_module("rpn_head", std::make_unique<RPNHead>(cfg_.rpn));
  roi_ = &register_module("roi_head", std::make_unique<RoIHead>(cfg_.roi));
  KDET_CHECK(cfg_.neck.num_outs == rpn_->anchor_generator().num_levels() &&
                 cfg_.neck.num_outs >= roi_->roi_extractor().num_inputs(),
             "TwoStageDetector: neck has ", cfg_.neck.num_outs, " outputs, RPN has ",
             rpn_->anchor_generator().num_levels(), " anchor levels, the RoI extractor uses ",
             roi_->roi_extractor().num_inputs());
  KDET_CHECK(cfg_.cascade == cfg_.roi.cascade, "TwoStageDetector: cascade flag of the detector and the RoI head differ");
}

FasterRCNN::FasterRCNN(TwoStageConfig cfg) : TwoStageDetector(std::move(cfg)) {
  KDET_CHECK(!config().cascade, "FasterRCNN: the config is a Cascade R-CNN config");
}

CascadeRCNN::CascadeRCNN(TwoStageConfig cfg) : TwoStageDetector(std::move(cfg)) {
  KDET_CHECK(config().cascade, "CascadeRCNN: the config is not a Cascade R-CNN config");
}

void TwoStageDetector::init_weights(Generator& g) {
  backbone_->init_weights(g);
  neck_->init_weights(g);
  rpn_->init_weights(g);
  roi_->init_weights(g);
}

DetectorTaps TwoStageDetector::forward(const Var& images) {
  KDET_CHECK(images.ndim() == 4 && images.size(1) == cfg_.backbone.in_channels, arch(), ": images ",
             images.data().desc(), " expected [N, ", cfg_.backbone.in_channels, ", H, W]");
  DetectorTaps t;
  t.head_name = "rpn_head", t.cls_name = "rpn_cls", t.reg_name = "rpn_reg";
  t.backbone = backbone_->forward(images);
  t.neck = neck_->forward(t.backbone, &t.neck_conv);
  t.head = rpn_->forward(t.neck);
  return t;
}

Generator TwoStageDetector::sampling_generator(const data::Batch& batch) const {
  // FNV-1a over the batch's (image id, flip, img_h, img_w) values.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * 1099511628211ull;
  };
  for (const auto& m : batch.metas) {
    mix(static_cast<uint64_t>(m.image_id));
    mix(m.flip ? 1 : 0);
    mix(static_cast<uint64_t>(m.img_h));
    mix(static_cast<uint64_t>(m.img_w));
  }
  return Generator(cfg_.sampler_seed).fork(h);
}

LossList TwoStageDetector::loss(const data::Batch& batch, DetectorTaps* taps) {
  Generator g = sampling_generator(batch);
  return loss(batch, taps, g);
}

LossList TwoStageDetector::loss(const data::Batch& batch, DetectorTaps* taps, Generator& g) {
  KDET_CHECK(batch.gts.size() == batch.size(), arch(), "::loss: ", batch.size(), " images, ", batch.gts.size(),
             " GT lists");
  DetectorTaps t = forward(Var(batch.images));
  const auto gts = gt_instances(batch);
  const auto geo = geometry(batch);
  LossList l = rpn_->loss(t.head, gts, geo, g);
  std::vector<Tensor> proposals;
  {
    NoGradGuard ng;
    proposals = rpn_->get_proposals(t.head, geo, /*training=*/true);
  }
  std::vector<RoIStageResult> stages;
  for (auto& e : roi_->loss(t.neck, proposals, gts, geo, g, taps ? &stages : nullptr)) l.push_back(std::move(e));
  if (taps) {
    if (!stages.empty()) {
      t.rois = stages[0].rois;
      t.roi_cls_score = stages[0].out.cls_score;
      t.roi_bbox_pred = stages[0].out.bbox_pred;
    }
    *taps = std::move(t);
  }
  return l;
}

std::vector<Detections> TwoStageDetector::predict(const data::Batch& batch, bool rescale, DetectorTaps* taps) {
  std::optional<NoGradGuard> ng;
  if (!taps) ng.emplace();
  DetectorTaps t = forward(Var(batch.images));
  const auto geo = geometry(batch);
  std::vector<Tensor> proposals;
  {
    NoGradGuard ng2;
    proposals = rpn_->get_proposals(t.head, geo, /*training=*/false);
  }
  RCNNTestConfig tc = cfg_.roi.test;
  tc.rescale = rescale;
  RoIPredictResult r = roi_->predict(t.neck, proposals, geo, &tc);
  std::vector<Detections> d = std::move(r.detections);
  unflip_detections(d, batch, rescale);
  if (taps) {
    t.rois = r.rois;
    t.roi_cls_score = r.cls_score;
    t.roi_bbox_pred = r.bbox_pred;
    *taps = std::move(t);
  }
  return d;
}

int64_t TwoStageDetector::tap_levels(TapKind k) const {
  if (k == TapKind::Backbone) return static_cast<int64_t>(cfg_.neck.in_channels.size());
  return cfg_.neck.num_outs;  // neck P2..P6 and the RPN's maps on every level
}

int64_t TwoStageDetector::tap_channels(TapKind k, int64_t level) const {
  KDET_CHECK(level >= 0 && level < tap_levels(k), arch(), ": tap level ", level, " out of range (the detector has ",
             tap_levels(k), " levels of this kind)");
  const int64_t A = rpn_->num_anchors();
  switch (k) {
    case TapKind::Backbone: return cfg_.neck.in_channels[static_cast<size_t>(level)];
    case TapKind::Neck:
    case TapKind::NeckConv: return cfg_.neck.out_channels;
    case TapKind::ClsScore: return A;
    case TapKind::BboxPred: return A * 4;
    case TapKind::ClsFeat:
    case TapKind::RegFeat: return cfg_.rpn.feat_channels;
  }
  return 0;
}

}  // namespace kdet
