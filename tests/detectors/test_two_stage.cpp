// Faster R-CNN / Cascade R-CNN (issue 9): RoI extractor parity with torchvision.ops.roi_align (aligned, adaptive
// sampling) + mmdet level mapping; Shared2FCBBoxHead / StandardRoIHead / CascadeRoIHead parity with a PyTorch
// replica of mmdet 2.25 on given proposals (sampling with every candidate kept, targets, losses, gradients,
// cascade refinement, test-time logit averaging, detections); mmdet key names and parameter counts; tiny
// end-to-end detectors (loss, backward, predict, deterministic sampling, a few SGD steps).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "detectors/build.h"
#include "detectors/two_stage.h"
#include "distill/distiller.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/optim.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {
bool has_key(const std::vector<std::string>& keys, const std::string& k) {
  return std::find(keys.begin(), keys.end(), k) != keys.end();
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

// The fixtures' scene: two images, P2..P6 features, GT, training and test proposals.
struct Scene {
  std::vector<Var> feats;
  std::vector<GtInstances> gts;
  std::vector<Tensor> proposals, test_proposals;
  std::vector<ImageGeometry> geo;
};

Scene load_scene(const Fixture& f) {
  Scene s;
  for (int l = 0; l < 5; ++l) s.feats.emplace_back(f.at("feat" + std::to_string(l)), /*requires_grad=*/true);
  for (int i = 0; i < 2; ++i) {
    const std::string k = std::to_string(i);
    s.gts.push_back({f.at("gt_boxes" + k), f.at("gt_labels" + k), Tensor()});
    s.proposals.push_back(f.at("proposals" + k));
    s.test_proposals.push_back(f.at("test_proposals" + k));
    ImageGeometry g;
    auto hw = f.at("img_shape" + k).to_vector<int64_t>();
    auto sf = f.at("scale_factor" + k).to_vector<double>();
    g.img_h = hw[0], g.img_w = hw[1], g.pad_h = 96, g.pad_w = 128;
    for (int c = 0; c < 4; ++c) g.scale_factor[c] = sf[c];
    s.geo.push_back(g);
  }
  return s;
}

RoIHeadConfig tiny_roi_cfg(bool cascade) {
  RoIHeadConfig c = cascade ? RoIHeadConfig::cascade_rcnn(3) : RoIHeadConfig::faster(3);
  c.set_widths(8, 16);
  return c;
}

void load_heads(RoIHead& h, const Fixture& f) {
  TensorMap sd;
  for (auto& [k, v] : f.tensors)
    if (k.rfind("head.", 0) == 0) sd["bbox_head." + k.substr(5)] = v;
  h.load_state_dict(sd);
}

void check_grads(Module& m, const Fixture& f, const std::string& prefix_in_module, const std::string& what) {
  for (auto& [name, p] : m.named_parameters()) {
    REQUIRE(name.rfind(prefix_in_module, 0) == 0);
    const Tensor& ref = f.at("grad." + name.substr(prefix_in_module.size()));
    check_close(p.grad(), ref, 1e-3, 1e-4 * max_abs(ref), what + " grad " + name);
  }
}

void check_detections(const std::vector<Detections>& d, const Fixture& f, const std::string& what) {
  REQUIRE(d.size() == 2);
  for (int i = 0; i < 2; ++i) {
    const std::string k = std::to_string(i);
    REQUIRE_MESSAGE(d[i].size() == f.at("det_boxes" + k).size(0), what << " image " << i);
    CHECK(d[i].size() > 10);
    check_close(d[i].boxes, f.at("det_boxes" + k), 1e-4, 1e-3, what + " boxes " + k);
    check_close(d[i].scores, f.at("det_scores" + k), 1e-4, 1e-6, what + " scores " + k);
    CHECK(d[i].labels.to_vector<int64_t>() == f.at("det_labels" + k).to_vector<int64_t>());
  }
}

data::Batch tiny_batch(uint64_t seed, int64_t n = 2, int64_t size = 64) {
  Generator g(seed);
  data::Batch b;
  b.images = rand_normal({n, 3, size, size}, g);
  for (int64_t i = 0; i < n; ++i) {
    data::ImageMeta m;
    m.image_id = 10 + i;
    m.img_h = m.img_w = static_cast<int>(size - 8 * i);
    m.pad_h = m.pad_w = static_cast<int>(size);
    m.ori_h = m.ori_w = m.img_h;
    b.metas.push_back(m);
    std::vector<data::BoxAnn> anns;
    for (int k = 0; k < 3; ++k) {
      data::BoxAnn a;
      a.x1 = static_cast<float>(g.uniform(0, size / 2.0));
      a.y1 = static_cast<float>(g.uniform(0, size / 2.0));
      a.x2 = a.x1 + static_cast<float>(g.uniform(8, size / 2.0 - 8));
      a.y2 = a.y1 + static_cast<float>(g.uniform(8, size / 2.0 - 8));
      a.label = k % 3;
      anns.push_back(a);
    }
    b.gts.push_back(anns);
  }
  return b;
}

Config tiny_config(const std::string& type) {
  return Config::parse("[model]\ntype = " + type +
                       "\ndepth = 18\nnum_classes = 3\nbase_channels = 8\nfrozen_stages = -1\nnorm_eval = false\n"
                       "neck_channels = 16\nfc_out_channels = 32\nrcnn_sampler_num = 64\nrpn_train_max_per_img = 100\n"
                       "rpn_test_max_per_img = 50\n");
}
}  // namespace

TEST_CASE("rcnn roi extractor: mmdet level mapping, parity with torchvision roi_align (aligned, ratio 0)") {
  // level mapping thresholds (finest_scale 56): < 112 -> 0, [112, 224) -> 1, [224, 448) -> 2, >= 448 -> 3
  SingleRoIExtractor ex;
  Tensor r = Tensor::from_vector(std::vector<float>{0, 0, 0, 111, 111, 0, 0, 0, 112, 112, 1, 0, 0, 223, 223,
                                                    0, 0, 0, 224, 224, 0, 0, 0, 447, 447, 0, 0, 0, 448, 448,
                                                    0, 0, 0, 2000, 2000, 0, 5, 5, 6, 6},
                                 Shape{8, 5});
  CHECK(ex.map_roi_levels(r).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 1, 2, 2, 3, 3, 0});
  CHECK_THROWS_WITH_AS(ex.map_roi_levels(Tensor::zeros({3, 4})), doctest::Contains("[K, 5]"), Error);

  auto f = load_fixture("rcnn_roi_extractor");
  if (!f) return;
  std::vector<Var> feats;
  for (int l = 0; l < 4; ++l) feats.emplace_back(f->at("feat" + std::to_string(l)), true);
  CHECK(ex.map_roi_levels(f->at("rois")).to_vector<int64_t>() == f->at("levels").to_vector<int64_t>());
  Var out = ex(feats, f->at("rois"));
  check_close(out.data(), f->at("out"), 1e-4, 1e-5, "roi features");
  out.backward(f->at("grad_out"));
  for (int l = 0; l < 4; ++l)
    check_close(feats[l].grad(), f->at("grad_feat" + std::to_string(l)), 1e-4, 1e-4, "grad level " + std::to_string(l));
  // no RoI: an empty [0, C, 7, 7] result
  CHECK(ex(feats, Tensor::zeros({0, 5})).shape() == Shape{0, 4, 7, 7});
}

TEST_CASE("rcnn heads: mmdet keys, init, parameter counts of the R-50 models") {
  Shared2FCBBoxHead h(BBoxHeadConfig::faster(80));
  CHECK(h.state_dict_keys() == std::vector<std::string>{"shared_fcs.0.weight", "shared_fcs.0.bias",
                                                         "shared_fcs.1.weight", "shared_fcs.1.bias", "fc_cls.weight",
                                                         "fc_cls.bias", "fc_reg.weight", "fc_reg.bias"});
  CHECK(h.find_parameter("shared_fcs.0.weight")->shape() == Shape{1024, 12544});
  CHECK(h.find_parameter("fc_cls.weight")->shape() == Shape{81, 1024});
  CHECK(h.find_parameter("fc_reg.weight")->shape() == Shape{320, 1024});
  Generator g(0);
  h.init_weights(g);
  auto rms = [](const Tensor& t) {
    double s = 0;
    for (double v : t.to_vector<double>()) s += v * v;
    return std::sqrt(s / t.numel());
  };
  CHECK(rms(h.find_parameter("fc_cls.weight")->data()) == doctest::Approx(0.01).epsilon(0.05));
  CHECK(rms(h.find_parameter("fc_reg.weight")->data()) == doctest::Approx(0.001).epsilon(0.05));
  // Xavier uniform: std = sqrt(2 / (fan_in + fan_out))
  CHECK(rms(h.find_parameter("shared_fcs.1.weight")->data()) == doctest::Approx(std::sqrt(2.0 / 2048)).epsilon(0.05));
  CHECK(max_abs(h.find_parameter("shared_fcs.0.bias")->data()) == 0.0);

  FasterRCNN faster(TwoStageConfig::faster_rcnn(50));
  CHECK(faster.num_parameters() == 41753056);  // specs/detectors.md 14
  CHECK(std::abs(faster.num_parameters(true) - 41.528e6) < 0.0006e6);
  auto kf = faster.state_dict_keys();
  CHECK(has_key(kf, "roi_head.bbox_head.fc_reg.weight"));
  CHECK(has_key(kf, "rpn_head.rpn_conv.weight"));
  CHECK(has_key(kf, "neck.fpn_convs.3.conv.weight"));
  CHECK_FALSE(has_key(kf, "neck.fpn_convs.4.conv.weight"));  // P6 is a max-pool
  CHECK(faster.find_parameter("rpn_head.rpn_cls.weight")->shape() == Shape{3, 256, 1, 1});
  CHECK(faster.arch() == "faster_rcnn");
  CHECK(faster.two_stage());
  CHECK(faster.tap_levels(TapKind::Neck) == 5);
  CHECK(faster.tap_channels(TapKind::Backbone, 3) == 2048);
  CHECK(faster.tap_channels(TapKind::ClsScore, 0) == 3);
  CHECK(faster.inherit_prefixes() == std::vector<std::string>{"neck.", "rpn_head.", "roi_head."});
  CascadeRCNN cascade(TwoStageConfig::cascade_rcnn(50));
  CHECK(std::abs(cascade.num_parameters() - 69.395e6) < 0.0006e6);
  CHECK(std::abs(cascade.num_parameters(true) - 69.169e6) < 0.0006e6);
  auto kc = cascade.state_dict_keys();
  CHECK(has_key(kc, "roi_head.bbox_head.2.shared_fcs.1.weight"));
  CHECK(cascade.find_parameter("roi_head.bbox_head.1.fc_reg.weight")->shape() == Shape{4, 1024});
  CHECK_FALSE(has_key(kc, "roi_head.bbox_head.fc_cls.weight"));
  CHECK(cascade.arch() == "cascade_rcnn");
  CHECK_THROWS_WITH_AS(FasterRCNN(TwoStageConfig::cascade_rcnn(18)), doctest::Contains("Cascade"), Error);
}

TEST_CASE("rcnn faster head: parity on given proposals (sampling, targets, losses, gradients, detections)") {
  auto f = load_fixture("rcnn_faster_head");
  if (!f) return;
  Scene sc = load_scene(*f);
  RoIHead h(tiny_roi_cfg(false));
  CHECK(std::string(h.type_name()) == "StandardRoIHead");
  load_heads(h, *f);
  // every candidate fits in the 512-RoI sample: the sampler is deterministic here
  Generator g(0);
  auto samples = h.sample(0, sc.proposals, sc.gts, g);
  for (int i = 0; i < 2; ++i) {
    const std::string k = std::to_string(i);
    CHECK(samples[i].pos_inds.to_vector<int64_t>() == f->at("pos_inds" + k).to_vector<int64_t>());
    CHECK(samples[i].neg_inds.to_vector<int64_t>() == f->at("neg_inds" + k).to_vector<int64_t>());
  }
  RoIStageResult r = h.stage_loss(0, sc.feats, samples);
  check_close(r.rois, f->at("rois"), 0, 0, "rois");
  check_close(r.out.cls_score.data(), f->at("cls_score"), 1e-4, 1e-5, "cls_score");
  check_close(r.out.bbox_pred.data(), f->at("bbox_pred"), 1e-4, 1e-5, "bbox_pred");
  CHECK(r.targets.labels.to_vector<int64_t>() == f->at("labels").to_vector<int64_t>());
  check_close(r.targets.label_weights, f->at("label_weights"), 0, 0, "label_weights");
  check_close(r.targets.bbox_targets, f->at("bbox_targets"), 1e-5, 1e-6, "bbox_targets");
  check_close(r.targets.bbox_weights, f->at("bbox_weights"), 0, 0, "bbox_weights");
  REQUIRE(r.losses.size() == 2);
  CHECK(r.losses[0].first == "loss_cls");
  CHECK(r.losses[1].first == "loss_bbox");
  check_close(r.losses[0].second.data(), f->at("loss_cls"), 1e-4, 0, "loss_cls");
  check_close(r.losses[1].second.data(), f->at("loss_bbox"), 1e-4, 0, "loss_bbox");
  total_loss(r.losses).backward();
  check_grads(h, *f, "bbox_head.", "faster");
  for (int l = 0; l < 4; ++l) {
    const Tensor& ref = f->at("grad_feat" + std::to_string(l));
    if (max_abs(ref) == 0) {  // no RoI on this level (a 128-px image only reaches P2)
      CHECK_FALSE(sc.feats[l].grad().defined());
      continue;
    }
    check_close(sc.feats[l].grad(), ref, 1e-3, 1e-4 * max_abs(ref), "grad feat " + std::to_string(l));
  }
  // the full loss() (sample + stage loss) gives the same values and mmdet's names
  Generator g2(5);
  LossList l = h.loss(sc.feats, sc.proposals, sc.gts, sc.geo, g2);
  REQUIRE(l.size() == 2);
  CHECK(l[0].first == "loss_cls");
  check_close(l[1].second.data(), f->at("loss_bbox"), 1e-4, 0, "loss() loss_bbox");
  // inference on the test proposals (softmax, class-specific decode, clip, rescale, multiclass NMS)
  NoGradGuard ng;
  RoIPredictResult p = h.predict(sc.feats, sc.test_proposals, sc.geo);
  check_close(p.cls_score.data(), f->at("test_cls_score"), 1e-4, 1e-5, "test cls_score");
  check_detections(p.detections, *f, "faster");
}

TEST_CASE("rcnn cascade head: parity of 3 stages (per-stage IoU / stds, refinement, weighted losses, logit mean)") {
  auto f = load_fixture("rcnn_cascade_head");
  if (!f) return;
  Scene sc = load_scene(*f);
  RoIHead h(tiny_roi_cfg(true));
  CHECK(std::string(h.type_name()) == "CascadeRoIHead");
  load_heads(h, *f);
  Generator g(0);
  std::vector<RoIStageResult> st;
  LossList l = h.loss(sc.feats, sc.proposals, sc.gts, sc.geo, g, &st);
  REQUIRE(st.size() == 3);
  REQUIRE(l.size() == 6);
  const double w[3] = {1.0, 0.5, 0.25};
  for (int s = 0; s < 3; ++s) {
    const std::string p = std::string("s") + std::to_string(s) + ".";
    for (int i = 0; i < 2; ++i) {
      CHECK(st[s].samples[i].pos_inds.to_vector<int64_t>() == f->at(p + "pos_inds" + std::to_string(i)).to_vector<int64_t>());
      CHECK(st[s].samples[i].neg_inds.to_vector<int64_t>() == f->at(p + "neg_inds" + std::to_string(i)).to_vector<int64_t>());
    }
    check_close(st[s].rois, f->at(p + "rois"), 1e-5, 1e-4, p + "rois");
    check_close(st[s].out.cls_score.data(), f->at(p + "cls_score"), 1e-4, 1e-5, p + "cls_score");
    check_close(st[s].out.bbox_pred.data(), f->at(p + "bbox_pred"), 1e-4, 1e-5, p + "bbox_pred");
    CHECK(st[s].targets.labels.to_vector<int64_t>() == f->at(p + "labels").to_vector<int64_t>());
    check_close(st[s].targets.bbox_targets, f->at(p + "bbox_targets"), 1e-4, 1e-5, p + "bbox_targets");
    CHECK(l[2 * s].first == p + "loss_cls");
    CHECK(l[2 * s + 1].first == p + "loss_bbox");
    check_close(st[s].losses[0].second.data(), f->at(p + "loss_cls"), 1e-4, 0, p + "loss_cls");
    check_close(st[s].losses[1].second.data(), f->at(p + "loss_bbox"), 1e-4, 0, p + "loss_bbox");
    CHECK(l[2 * s].second.item() == doctest::Approx(w[s] * st[s].losses[0].second.item()).epsilon(1e-6));
    if (s < 2) {
      auto refined = h.refine(s, st[s], sc.geo);
      for (int i = 0; i < 2; ++i)
        check_close(refined[i], f->at(p + "refined" + std::to_string(i)), 1e-5, 1e-4, p + "refined " + std::to_string(i));
    }
  }
  Var total = total_loss(l);
  check_close(total.data(), f->at("total_loss"), 1e-4, 0, "total loss");
  total.backward();
  check_grads(h, *f, "bbox_head.", "cascade");
  const Tensor& ref0 = f->at("grad_feat0");
  check_close(sc.feats[0].grad(), ref0, 1e-3, 1e-4 * max_abs(ref0), "grad feat 0");
  NoGradGuard ng;
  RoIPredictResult p = h.predict(sc.feats, sc.test_proposals, sc.geo);
  check_close(p.rois, f->at("test_rois2"), 1e-5, 1e-4, "stage-3 input rois");
  check_close(p.cls_score.data(), f->at("test_cls_score"), 1e-4, 1e-5, "stage-mean logits");
  check_detections(p.detections, *f, "cascade");
  CHECK(p.counts == std::vector<int64_t>{30, 30});
  // forward_rois: the same logits on the same RoIs; rows must be grouped by image
  Tensor rois = bbox2roi(sc.test_proposals);
  check_close(h.forward_rois(sc.feats, rois, sc.geo).cls_score.data(), f->at("test_cls_score"), 1e-4, 1e-5,
              "forward_rois logits");
  Tensor swapped = ops::concat({rois.slice(0, 30, 60), rois.slice(0, 0, 30)}, 0);
  CHECK_THROWS_WITH_AS(h.forward_rois(sc.feats, swapped, sc.geo), doctest::Contains("grouped by ascending image"), Error);
}

TEST_CASE("rcnn RoI head: f64 gradcheck of a cascade stage's loss w.r.t. the feature map (extractor + head + loss)") {
  RoIHeadConfig cfg = RoIHeadConfig::cascade_rcnn(2);
  cfg.set_widths(2, 6);
  RoIHead h(cfg);
  Generator g(4);
  h.init_weights(g);
  for (auto& [n, p] : h.named_parameters())  // larger weights than the init's 0.01 / 0.001: a non-trivial loss
    p.data().copy_(rand_normal(p.shape(), g, 0.0, 0.5));
  h.to(DType::F64);
  std::vector<GtInstances> gts = {{Tensor::from_vector(std::vector<float>{4, 5, 20, 22, 10, 2, 30, 14}, Shape{2, 4}),
                                   Tensor::from_vector(std::vector<int64_t>{0, 1}), Tensor()}};
  std::vector<Tensor> props = {Tensor::from_vector(
      std::vector<float>{5, 6, 19, 23, 3, 4, 21, 20, 11, 3, 29, 15, 0, 0, 12, 12, 15, 15, 31, 31}, Shape{5, 4})};
  auto samples = h.sample(1, props, gts, g);  // every candidate kept: 2 GT + 5 proposals
  REQUIRE(samples[0].num_pos() + samples[0].num_neg() == 7);
  REQUIRE(samples[0].num_pos() >= 2);
  const Tensor p2 = rnd({1, 2, 8, 8}, 9), p3 = rnd({1, 2, 4, 4}, 10), p4 = rnd({1, 2, 2, 2}, 11), p5 = rnd({1, 2, 1, 1}, 12);
  CHECK(gradcheck(
      [&](const std::vector<Var>& v) { return total_loss(h.stage_loss(1, {v[0], v[1], v[2], v[3]}, samples).losses); },
      {p2, p3, p4, p5}));
  Var v2(p2, true);  // the loss does depend on P2 (all these RoIs map to it)
  total_loss(h.stage_loss(1, {v2, Var(p3), Var(p4), Var(p5)}, samples).losses).backward();
  CHECK(max_abs(v2.grad()) > 1e-3);
}

TEST_CASE("rcnn bbox head: no positives, empty inputs, refinement drops the GT rows") {
  BBoxHeadConfig c = BBoxHeadConfig::faster(3);
  c.in_channels = 2, c.fc_out_channels = 4;
  Shared2FCBBoxHead h(c);
  Generator g(1);
  h.init_weights(g);
  // two negatives only: loss_bbox = 0 (with a graph), loss_cls = mean CE of background
  RandomSamplingResult s;
  s.pos_inds = Tensor::zeros({0}, DType::I64);
  s.neg_inds = Tensor::from_vector(std::vector<int64_t>{0, 1});
  s.pos_assigned_gt_inds = s.pos_gt_labels = Tensor::zeros({0}, DType::I64);
  s.pos_gt_bboxes = Tensor::zeros({0, 4});
  s.pos_is_gt = Tensor::zeros({0}, DType::Bool);
  s.bboxes = Tensor::from_vector(std::vector<float>{0, 0, 10, 10, 5, 5, 20, 30}, Shape{2, 4});
  BBoxTargets t = h.get_targets({s});
  CHECK(t.labels.to_vector<int64_t>() == std::vector<int64_t>{3, 3});
  Var x(rand_normal({2, 2, 7, 7}, g));
  BBoxHeadOutputs o = h.forward(x);
  LossList l = h.loss(o, t);
  CHECK(l[1].second.item() == 0.0);
  auto logits = o.cls_score.data().to_vector<double>();
  double ce = 0;
  for (int r = 0; r < 2; ++r) {
    double m = -1e30, z = 0;
    for (int k = 0; k < 4; ++k) m = std::max(m, logits[r * 4 + k]);
    for (int k = 0; k < 4; ++k) z += std::exp(logits[r * 4 + k] - m);
    ce += -(logits[r * 4 + 3] - m - std::log(z));
  }
  CHECK(l[0].second.item() == doctest::Approx(ce / 2).epsilon(1e-5));
  total_loss(l).backward();
  CHECK(h.find_parameter("fc_reg.weight")->grad().defined());
  // no RoIs at all
  ImageGeometry geo;
  geo.img_h = geo.img_w = 50;
  CHECK(h.get_bboxes(Tensor::zeros({0, 5}), Tensor::zeros({0, 4}), Tensor::zeros({0, 12}), geo, {}).size() == 0);
  // refine_bboxes: rows of image 1 only, its first (GT) positive dropped; decode of zero deltas = the RoI
  Tensor rois = Tensor::from_vector(std::vector<float>{1, 1, 2, 11, 12, 1, 3, 4, 13, 14, 1, 0, 0, 5, 5}, Shape{3, 5});
  Tensor isgt = Tensor::from_vector(std::vector<uint8_t>{1, 0}).to(DType::Bool);
  ImageGeometry g0 = geo;
  auto ref = h.refine_bboxes(rois, Tensor::from_vector(std::vector<int64_t>{0, 2, 1}), Tensor::zeros({3, 12}),
                             {Tensor(), isgt}, {g0, g0});
  REQUIRE(ref.size() == 2);
  CHECK(ref[0].size(0) == 0);
  CHECK(ref[1].to_vector<float>() == std::vector<float>{3, 4, 13, 14, 0, 0, 5, 5});
}

TEST_CASE("rcnn detectors: tiny Faster / Cascade R-CNN end to end (losses, backward, predict, determinism)") {
  for (const std::string type : {"faster_rcnn", "cascade_rcnn"}) {
    CAPTURE(type);
    Config c = tiny_config(type);
    TwoStageConfig tc = TwoStageConfig::from_config(c);
    c.check_all_used();
    std::unique_ptr<TwoStageDetector> m;
    if (type == "faster_rcnn")
      m = std::make_unique<FasterRCNN>(tc);
    else
      m = std::make_unique<CascadeRCNN>(tc);
    Generator g(3);
    m->init_weights(g);
    m->train();
    data::Batch b = tiny_batch(7);
    DetectorTaps taps;
    LossList l = m->loss(b, &taps);
    std::vector<std::string> names;
    for (auto& [n, v] : l) {
      names.push_back(n);
      CHECK(std::isfinite(v.item()));
    }
    if (type == "faster_rcnn")
      CHECK(names == std::vector<std::string>{"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"});
    else
      CHECK(names == std::vector<std::string>{"loss_rpn_cls", "loss_rpn_bbox", "s0.loss_cls", "s0.loss_bbox",
                                              "s1.loss_cls", "s1.loss_bbox", "s2.loss_cls", "s2.loss_bbox"});
    CHECK(taps.neck.size() == 5);
    CHECK(taps.head.cls_scores.size() == 5);
    CHECK(taps.head.cls_scores[0].size(1) == 3);
    REQUIRE(taps.rois.defined());
    CHECK(taps.roi_cls_score.size(0) == taps.rois.size(0));
    CHECK(taps.named().count("rpn_head.rpn_cls.0") == 1);
    CHECK(taps.named().count("roi_head.cls_score") == 1);
    // the same batch samples the same way
    LossList l2 = m->loss(b);
    for (size_t i = 0; i < l.size(); ++i) CHECK(l2[i].second.item() == l[i].second.item());
    total_loss(l).backward();
    for (const char* p : {"backbone.conv1.weight", "neck.lateral_convs.0.conv.weight", "rpn_head.rpn_reg.weight",
                          type == "faster_rcnn" ? "roi_head.bbox_head.fc_reg.weight" : "roi_head.bbox_head.2.fc_reg.weight"}) {
      CAPTURE(p);
      Var* v = m->find_parameter(p);
      REQUIRE(v);
      REQUIRE(v->grad().defined());
      CHECK(max_abs(v->grad()) > 0);
    }
    m->eval();
    DetectorTaps pt;
    auto d = m->predict(b, true, &pt);
    REQUIRE(d.size() == 2);
    for (auto& det : d) {
      CHECK(det.size() <= 100);
      if (det.size() > 0) CHECK(det.labels.to_vector<int64_t>()[0] < 3);
    }
    CHECK(pt.roi_cls_score.size(1) == 4);
  }
}

TEST_CASE("rcnn detectors: a tiny Faster R-CNN fits one batch (loss falls under SGD)") {
  Config c = tiny_config("faster_rcnn");
  FasterRCNN m(TwoStageConfig::from_config(c));
  Generator g(11);
  m.init_weights(g);
  m.train();
  data::Batch b = tiny_batch(21);
  SGD opt(m.named_parameters("", true), 0.02, 0.9, 1e-4);
  double first = 0, last = 0;
  for (int it = 0; it < 12; ++it) {
    opt.zero_grad();
    Var t = total_loss(m.loss(b));
    if (it == 0) first = t.item();
    last = t.item();
    t.backward();
    opt.step();
  }
  CHECK(std::isfinite(last));
  CHECK(last < 0.8 * first);
}

TEST_CASE("rcnn KD: FGD on P2-P5, Cascade R-CNN teacher -> Faster R-CNN student (2 steps, teacher untouched)") {
  std::unique_ptr<Detector> teacher = build_detector(tiny_config("cascade_rcnn"));
  std::unique_ptr<Detector> student = build_detector(tiny_config("faster_rcnn"));
  REQUIRE(teacher->arch() == "cascade_rcnn");
  REQUIRE(student->arch() == "faster_rcnn");
  Generator g(5);
  teacher->init_weights(g);
  student->init_weights(g);
  const TensorMap before = [&] {
    TensorMap m;
    for (auto& [k, v] : teacher->state_dict()) m[k] = v.clone();
    return m;
  }();
  // specs/kd_losses.md 1d, Cascade -> Faster: P2-P5, alpha 5e-5, beta 2.5e-5, gamma 5e-5, lambda 5e-7, no inheritance
  kd::DistillConfig c = kd::DistillConfig::defaults(kd::KdMethod::FGD);
  c.inherit = false;
  c.taps = {"neck.0", "neck.1", "neck.2", "neck.3"};
  c.fgd.alpha_fgd = 5e-5, c.fgd.beta_fgd = 2.5e-5, c.fgd.gamma_fgd = 5e-5, c.fgd.lambda_fgd = 5e-7;
  kd::Distiller d(std::move(teacher), std::move(student), c);
  d.init_kd_weights(g);
  // different detectors (3 RoI heads vs 1): inheriting is refused
  CHECK_THROWS_WITH_AS(d.inherit_from_teacher(), doctest::Contains("same kind"), Error);
  d.train(true);
  SGD opt(d.named_parameters(), 0.01, 0.9);
  const data::Batch b = tiny_batch(9);
  const auto kd_names = kd::kd_component_names(kd::KdMethod::FGD);
  for (int it = 0; it < 2; ++it) {
    LossList l = d.loss(b);
    REQUIRE(l.size() == 4 + kd_names.size());
    CHECK(l[0].first == "loss_rpn_cls");
    CHECK(l[3].first == "loss_bbox");
    for (size_t i = 0; i < l.size(); ++i) {
      CAPTURE(l[i].first);
      CHECK(std::isfinite(l[i].second.item()));
      if (i >= 4) {
        CHECK(l[i].first == kd_names[i - 4]);
        CHECK(l[i].second.item() > 0);
      }
    }
    opt.zero_grad();
    total_loss(l).backward();
    for (auto& [k, v] : d.teacher().named_parameters()) REQUIRE(!v.grad().defined());
    CHECK(d.student().find_parameter("neck.fpn_convs.0.conv.weight")->grad().defined());
    opt.step();
  }
  for (auto& [k, v] : d.teacher().state_dict()) {
    const Tensor& a = before.at(k);
    CHECK_MESSAGE(std::memcmp(a.raw_data(), v.contiguous().raw_data(), a.nbytes()) == 0, k);
  }
  CHECK(!d.teacher().training());
}

TEST_CASE("rcnn configs: every [model] key is read, mmdet constants per config") {
  struct Expect {
    const char* file;
    bool cascade;
    int depth;
    int64_t groups, epochs, rpn_train_max;
  };
  const Expect all[] = {{"faster_rcnn_r50_fpn_1x", false, 50, 1, 12, 1000},
                        {"faster_rcnn_r50_fpn_2x", false, 50, 1, 24, 1000},
                        {"faster_rcnn_r101_fpn_1x", false, 101, 1, 12, 1000},
                        {"faster_rcnn_r101_fpn_2x", false, 101, 1, 24, 1000},
                        {"cascade_rcnn_r50_fpn_1x", true, 50, 1, 12, 2000},
                        {"cascade_rcnn_r50_fpn_2x", true, 50, 1, 24, 2000},
                        {"cascade_rcnn_r101_fpn_1x", true, 101, 1, 12, 2000},
                        {"cascade_rcnn_r101_fpn_2x", true, 101, 1, 24, 2000},
                        {"cascade_rcnn_x101_32x4d_fpn_1x", true, 101, 32, 12, 2000},
                        {"cascade_rcnn_x101_32x4d_fpn_2x", true, 101, 32, 24, 2000},
                        {"faster_rcnn_r18_tiny_synth", false, 18, 1, 40, 1000},
                        {"cascade_rcnn_r34_tiny_synth", true, 34, 1, 40, 2000}};
  for (const Expect& e : all) {
    CAPTURE(e.file);
    Config c = Config::load(std::string("configs/") + e.file + ".cfg");
    // the [model] section alone: TwoStageConfig must read every key of it
    std::string text = "[model]\n";
    for (const auto& k : c.keys("model")) text += k + " = " + c.get_string("model." + k) + "\n";
    Config m = Config::parse(text, e.file);
    TwoStageConfig t = TwoStageConfig::from_config(m);
    m.check_all_used();
    CHECK(t.cascade == e.cascade);
    CHECK(t.backbone.depth == e.depth);
    CHECK(t.backbone.groups == e.groups);
    CHECK(t.rpn.train.max_per_img == e.rpn_train_max);
    CHECK(c.get_int("train.epochs") == e.epochs);
    CHECK(t.rpn.allowed_border == (e.cascade ? 0 : -1));
    CHECK(t.rpn.smooth_l1_beta == doctest::Approx(e.cascade ? 1.0 / 9.0 : 0.0));
    CHECK(t.roi.stages.size() == (e.cascade ? 3u : 1u));
    CHECK(t.roi.stages[0].sampler.num == 512);
    const bool tiny = std::string(e.file).find("tiny") != std::string::npos;
    CHECK(c.get_double("train.lr") == doctest::Approx(0.02));
    CHECK(t.rpn.anchors.scales == std::vector<double>{tiny ? 4.0 : 8.0});
    CHECK(t.roi.stages[0].head.fc_out_channels == (tiny ? 256 : 1024));
    CHECK(t.neck.out_channels == (tiny ? 64 : 256));
  }
}
