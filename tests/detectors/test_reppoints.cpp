// RepPoints (issue 10): point generator, PointAssigner, points2bbox, RepPointsHead and RepPointsDetector —
// mmdet keys and parameter counts, parity with a PyTorch replica of mmdet 2.25's RepPointsHead
// (tests/ref/gen_reppoints.py; torchvision.ops.deform_conv2d as the DCN oracle) for head outputs, points,
// targets, losses, gradients and detections, f64 gradchecks, the empty-GT / one-GT invariants, and a tiny
// end-to-end training run.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "detectors/build.h"
#include "detectors/reppoints.h"
#include "distill/distiller.h"
#include "engine/ops/reduce.h"
#include "engine/optim.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

RepPointsHeadConfig tiny_head_cfg(int64_t gn_groups = 4) {
  RepPointsHeadConfig c;
  c.num_classes = 3;
  c.in_channels = c.feat_channels = c.point_feat_channels = 8;
  c.stacked_convs = 3;
  c.norm = gn_groups > 0 ? NormCfg::gn(gn_groups) : NormCfg::none();
  return c;
}

bool has_key(const std::vector<std::string>& keys, const std::string& k) {
  return std::find(keys.begin(), keys.end(), k) != keys.end();
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to(DType::F64).to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

TensorMap with_prefix(const Fixture& f, const std::string& p) {
  TensorMap sd;
  for (auto& [k, v] : f.tensors)
    if (k.rfind(p, 0) == 0) sd[k.substr(p.size())] = v;
  return sd;
}

std::vector<ImageGeometry> fixture_geometry(const int ih[2], const int iw[2], const int ph[2], const int pw[2],
                                            std::array<double, 4> sf) {
  std::vector<ImageGeometry> geo(2);
  for (int n = 0; n < 2; ++n) {
    geo[n].img_h = ih[n], geo[n].img_w = iw[n], geo[n].pad_h = ph[n], geo[n].pad_w = pw[n];
    geo[n].scale_factor = sf;
  }
  return geo;
}

void check_dets(const std::vector<Detections>& dets, const Fixture& f) {
  for (size_t n = 0; n < dets.size(); ++n) {
    const std::string s = std::to_string(n);
    REQUIRE(dets[n].size() == f.at("det_boxes" + s).size(0));
    check_close(dets[n].boxes, f.at("det_boxes" + s), 1e-4, 1e-4, "det boxes " + s);
    check_close(dets[n].scores, f.at("det_scores" + s), 1e-4, 1e-6, "det scores " + s);
    CHECK(dets[n].labels.to_vector<int64_t>() == f.at("det_labels" + s).to_vector<int64_t>());
  }
}

// Synthetic 64x64 batch: bright rectangles on a dark background, class = rectangle colour channel.
data::Batch synthetic_batch(uint64_t seed, int n, int objects = 2) {
  Generator g(seed);
  data::Batch b;
  b.images = Tensor::zeros({n, 3, 64, 64});
  float* p = b.images.data<float>();
  for (int i = 0; i < n; ++i) {
    data::ImageMeta m;
    m.ori_h = m.img_h = m.pad_h = 64;
    m.ori_w = m.img_w = m.pad_w = 64;
    b.metas.push_back(m);
    std::vector<data::BoxAnn> anns;
    for (int k = 0; k < objects; ++k) {
      data::BoxAnn a;
      const float w = static_cast<float>(g.uniform(14, 30)), h = static_cast<float>(g.uniform(14, 30));
      a.x1 = static_cast<float>(g.uniform(0, 64 - w));
      a.y1 = static_cast<float>(g.uniform(0, 64 - h));
      a.x2 = a.x1 + w;
      a.y2 = a.y1 + h;
      a.label = g.randint(0, 3);
      for (int y = static_cast<int>(a.y1); y < static_cast<int>(a.y2); ++y)
        for (int x = static_cast<int>(a.x1); x < static_cast<int>(a.x2); ++x)
          p[((i * 3 + a.label) * 64 + y) * 64 + x] = 2.0f;
      anns.push_back(a);
    }
    b.gts.push_back(anns);
  }
  return b;
}

}  // namespace

TEST_CASE("reppoints point_generator: grid points, strides, valid flags, COCO point count") {
  MlvlPointGenerator pg;
  CHECK(pg.num_levels() == 5);
  Tensor p = pg.grid_points(1, 2, 3, true);
  CHECK(p.shape() == Shape{6, 4});
  // row (y=1, x=2) of stride 16: (32, 16, 16, 16)
  auto v = p.to_vector<float>();
  CHECK(v[5 * 4 + 0] == 32.f);
  CHECK(v[5 * 4 + 1] == 16.f);
  CHECK(v[5 * 4 + 2] == 16.f);
  CHECK(v[5 * 4 + 3] == 16.f);
  CHECK(pg.grid_points(0, 2, 2, false).shape() == Shape{4, 2});
  MlvlPointGenerator half({8}, 0.5);
  CHECK(half.grid_points(0, 1, 2, false).to_vector<float>() == std::vector<float>{4, 4, 12, 4});
  // 800x1216 input (specs/detectors.md 4.4): 15,200 + 3,800 + 950 + 247 + 70 = 20,267 points
  std::vector<std::pair<int64_t, int64_t>> sizes;
  int64_t total = 0;
  for (int64_t s : pg.strides()) sizes.emplace_back((800 + s - 1) / s, (1216 + s - 1) / s);
  for (auto& t : pg.grid_priors(sizes)) total += t.size(0);
  CHECK(total == 20267);
  // valid flags: pad 40x60 on a 8x12 map of stride 8 -> 5 rows x 8 columns valid
  Tensor vf = pg.valid_flags(0, 8, 12, 40, 60);
  auto b = vf.to_vector<bool>();
  int64_t nvalid = std::count(b.begin(), b.end(), true);
  CHECK(nvalid == 40);
  CHECK(b[4 * 12 + 7]);
  CHECK_FALSE(b[4 * 12 + 8]);
  CHECK_FALSE(b[5 * 12 + 0]);
  CHECK_THROWS_AS(pg.grid_points(5, 1, 1), Error);
}

TEST_CASE("reppoints point_assigner: parity with mmdet's PointAssigner; level rule; overwrite rule") {
  PointAssigner a;
  // level rule: a 32x32 box -> log2(8) = 3 (stride 8); 128x128 -> 5 (stride 32); tiny boxes clamp to 3
  Tensor pts = Tensor::from_vector<float>({0, 0, 8, 8, 8, 0, 8, 8, 0, 0, 32, 32, 32, 32, 32, 32}, {4, 4});
  AssignResult r = a.assign(pts, Tensor::from_vector<float>({0, 0, 32, 32, 0, 0, 128, 128, 7, 0, 9, 1}, {3, 4}),
                            Tensor::from_vector<int64_t>({5, 6, 7}));
  // gt 0 (centre 16,16) -> nearest stride-8 point (8, 0) at distance |(-8, -16)/32| = 0.559; gt 1 (centre
  // 64, 64) -> (32, 32) at stride 32; gt 2 (centre (8, 0.5), 2x1, level -1 clamped to 3) -> (8, 0) again at
  // |(0, -0.5)/(2, 1)| = 0.5 < 0.559: it takes the point over from gt 0
  CHECK(r.gt_inds.to_vector<int64_t>() == std::vector<int64_t>{0, 3, 0, 2});
  CHECK(r.labels.to_vector<int64_t>() == std::vector<int64_t>{-1, 7, -1, 6});
  AssignResult e = a.assign(pts, Tensor::zeros({0, 4}));
  CHECK(e.gt_inds.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0, 0});
  CHECK_THROWS_AS(a.assign(Tensor::zeros({3, 2}), Tensor::zeros({0, 4})), Error);

  auto f = load_fixture("rep_point_assigner");
  if (!f) return;
  for (int64_t pos_num : {1, 3}) {
    PointAssigner pa;
    pa.pos_num = pos_num;
    AssignResult ar = pa.assign(f->at("points"), f->at("gt"), f->at("labels"));
    const std::string s = pos_num == 1 ? "" : "_pos3";
    CHECK(ar.gt_inds.to_vector<int64_t>() == f->at("inds" + s).to_vector<int64_t>());
    CHECK(ar.labels.to_vector<int64_t>() == f->at(pos_num == 1 ? "assigned_labels" : "labels_pos3").to_vector<int64_t>());
  }
}

TEST_CASE("reppoints points2bbox: parity (moment / minmax / partial_minmax, y- and x-first) and f64 gradcheck") {
  auto f = load_fixture("rep_points2bbox");
  if (f) {
    const Tensor pts = f->at("pts");
    for (auto [name, tr] : {std::pair{"moment", PointsTransform::Moment}, std::pair{"minmax", PointsTransform::MinMax},
                            std::pair{"partial_minmax", PointsTransform::PartialMinMax}}) {
      for (bool yf : {true, false}) {
        const std::string key = std::string(name) + (yf ? "_y" : "_x");
        Var p(pts.clone(), true);
        Var mt(Tensor::from_vector<double>({0.3, -0.2}, {2}), true);
        Var box = points2bbox(p, yf, tr, mt, 0.01);
        check_close(box.data(), f->at(key), 1e-10, 1e-10, key);
        const int64_t n = box.numel();
        Tensor w = Tensor::empty({n}, DType::F64);
        for (int64_t i = 0; i < n; ++i) w.data<double>()[i] = (1.0 + i) / n;
        sum(box * Var(w.reshape(box.shape()))).backward();
        check_close(p.grad(), f->at(key + "_grad"), 1e-9, 1e-10, key + " grad");
        if (tr == PointsTransform::Moment) check_close(mt.grad(), f->at(key + "_grad_mt"), 1e-9, 1e-12, key + " grad mt");
      }
    }
  }
  for (auto tr : {PointsTransform::Moment, PointsTransform::MinMax, PointsTransform::PartialMinMax}) {
    // points spread (no ties for min / max), moment_mul 1 so the transfer's gradient is the plain one
    auto fn = [&](const std::vector<Var>& v) { return sum(points2bbox(v[0], true, tr, v[1], 1.0) * v[0].size(0)); };
    CHECK(gradcheck(fn, {rnd({3, 18}, 21, -4, 4), rnd({2}, 22, -0.5, 0.5)}));
  }
  CHECK(points_transform("partial_minmax") == PointsTransform::PartialMinMax);
  CHECK_THROWS_AS(points_transform("bbox"), Error);
}

TEST_CASE("reppoints head: mmdet keys, init, parameter counts") {
  RepPointsHead h(tiny_head_cfg());
  auto keys = h.state_dict_keys();
  CHECK(keys.front() == "moment_transfer");
  for (const char* k : {"cls_convs.0.conv.weight", "cls_convs.2.gn.weight", "reg_convs.1.gn.bias", "reppoints_cls_conv.weight",
                        "reppoints_cls_out.weight", "reppoints_cls_out.bias", "reppoints_pts_init_conv.weight",
                        "reppoints_pts_init_conv.bias", "reppoints_pts_init_out.bias", "reppoints_pts_refine_conv.weight",
                        "reppoints_pts_refine_out.weight", "reppoints_pts_refine_out.bias"})
    CHECK_MESSAGE(has_key(keys, k), k);
  CHECK_FALSE(has_key(keys, "cls_convs.0.conv.bias"));
  CHECK_FALSE(has_key(keys, "reppoints_cls_conv.bias"));
  CHECK(keys.size() == 1 + 3 * 3 * 2 + 1 + 2 + 2 + 2 + 1 + 2);
  CHECK(h.find_parameter("reppoints_cls_conv.weight")->shape() == Shape{8, 8, 3, 3});
  CHECK(h.find_parameter("reppoints_pts_init_out.weight")->shape() == Shape{18, 8, 1, 1});
  Generator g(0);
  h.init_weights(g);
  CHECK(h.find_parameter("reppoints_cls_out.bias")->data().to_vector<float>()[1] == doctest::Approx(-4.59512).epsilon(1e-5));
  CHECK(h.find_parameter("cls_convs.1.gn.weight")->data().to_vector<float>()[0] == 1.0f);
  CHECK(h.find_parameter("moment_transfer")->data().to_vector<float>() == std::vector<float>{0, 0});
  CHECK(h.find_parameter("reppoints_pts_init_conv.bias")->data().to_vector<float>()[3] == 0.0f);
  auto w = h.find_parameter("reppoints_pts_refine_conv.weight")->data().to_vector<float>();
  double s2 = 0;
  for (float v : w) s2 += double(v) * v;
  CHECK(std::sqrt(s2 / w.size()) == doctest::Approx(0.01).epsilon(0.25));
  RepPointsHeadConfig mc = tiny_head_cfg(0);
  mc.transform = PointsTransform::MinMax;
  mc.dcn_normal_init = false;
  RepPointsHead hm(mc);
  auto km = hm.state_dict_keys();
  CHECK_FALSE(has_key(km, "moment_transfer"));
  CHECK(has_key(km, "cls_convs.0.conv.bias"));
  hm.init_weights(g);
  float mx = 0;
  for (float v : hm.find_parameter("reppoints_cls_conv.weight")->data().to_vector<float>()) mx = std::max(mx, std::abs(v));
  CHECK(mx <= std::sqrt(6.0f / 72.0f));  // mmcv >= 1.3.15: kaiming-uniform (fan_in 72, ReLU gain), not Normal(0.01)
  CHECK(mx > 0.6f * std::sqrt(6.0f / 72.0f));
  // full-size models: parameter counts of specs/detectors.md 14
  RepPointsDetector r50(RepPointsConfig::mmdet(50, false));
  CHECK(std::abs(r50.num_parameters() - 36.845e6) < 0.0006e6);
  CHECK(std::abs(r50.num_parameters(true) - 36.620e6) < 0.0006e6);
  RepPointsDetector r50gn(RepPointsConfig::mmdet(50, true));
  CHECK(std::abs(r50gn.num_parameters() - 36.849e6) < 0.0006e6);
  CHECK(std::abs(r50gn.num_parameters(true) - 36.624e6) < 0.0006e6);
  RepPointsDetector r101(RepPointsConfig::mmdet(101, true));
  CHECK(std::abs(r101.num_parameters() - 55.841e6) < 0.0006e6);
  auto k50 = r50gn.state_dict_keys();
  CHECK(has_key(k50, "bbox_head.moment_transfer"));
  CHECK(has_key(k50, "neck.fpn_convs.4.gn.weight"));
  CHECK(has_key(k50, "neck.lateral_convs.0.gn.bias"));
  CHECK_FALSE(has_key(k50, "neck.lateral_convs.0.conv.bias"));
  CHECK(r50gn.find_parameter("bbox_head.reppoints_cls_out.weight")->shape() == Shape{80, 256, 1, 1});
}

TEST_CASE("reppoints configs: R50 / R101 GN, X101-32x4d DCN c3-c5 teacher, tiny synth") {
  RepPointsConfig r50 = RepPointsConfig::from_config(Config::load("configs/reppoints_moment_r50_fpn_gn-neck+head_1x.cfg"));
  CHECK(r50.backbone.depth == 50);
  CHECK(r50.neck.norm.type == NormCfg::GN);
  CHECK(r50.neck.norm.num_groups == 32);
  CHECK(r50.head.norm.type == NormCfg::GN);
  CHECK(r50.head.stacked_convs == 3);
  CHECK(r50.head.transform == PointsTransform::Moment);
  CHECK(r50.backbone.dcn == ResNetCfg::Dcn::None);
  RepPointsConfig r101 = RepPointsConfig::from_config(Config::load("configs/reppoints_moment_r101_fpn_gn-neck+head_2x.cfg"));
  CHECK(r101.backbone.depth == 101);
  RepPointsConfig tiny = RepPointsConfig::from_config(Config::load("configs/reppoints_r18_tiny_synth.cfg"));
  CHECK(tiny.neck.in_channels == std::vector<int64_t>{16, 32, 64, 128});
  CHECK(tiny.head.norm.num_groups == 8);
  RepPointsConfig x = RepPointsConfig::from_config(Config::load("configs/reppoints_moment_x101_dcn_fpn_2x.cfg"));
  CHECK(x.backbone.groups == 32);
  CHECK(x.backbone.base_width == 4);
  CHECK(x.backbone.dcn == ResNetCfg::Dcn::DCN);
  CHECK(x.backbone.stage_with_dcn == std::vector<bool>{false, true, true, true});
  RepPointsDetector m(x);
  auto keys = m.state_dict_keys();
  CHECK(has_key(keys, "backbone.layer2.0.conv2.conv_offset.weight"));
  CHECK(has_key(keys, "backbone.layer4.2.conv2.conv_offset.bias"));
  CHECK(has_key(keys, "backbone.layer3.22.conv2.weight"));
  CHECK_FALSE(has_key(keys, "backbone.layer1.0.conv2.conv_offset.weight"));
  CHECK(m.find_parameter("backbone.layer1.0.conv2.weight")->shape() == Shape{128, 4, 3, 3});  // 32 groups x 4
  CHECK(m.find_parameter("backbone.layer2.0.conv2.conv_offset.weight")->shape() == Shape{18, 256, 3, 3});
  CHECK(has_key(keys, "bbox_head.moment_transfer"));
  CHECK(has_key(keys, "neck.fpn_convs.4.gn.bias"));
}

TEST_CASE("reppoints head: parity with the mmdet replica (outputs, targets, losses, gradients, detections)") {
  auto f = load_fixture("rep_head");
  if (!f) return;
  RepPointsHead h(tiny_head_cfg());
  h.load_state_dict(with_prefix(*f, "head."));
  std::vector<Var> feats;
  for (int l = 0; l < 5; ++l) feats.emplace_back(f->at("feat" + std::to_string(l)));
  RepPointsHeadOutputs out = h.forward(feats);
  REQUIRE(out.num_levels() == 5);
  for (int l = 0; l < 5; ++l) {
    const std::string s = std::to_string(l);
    check_close(out.cls_feats[l].data(), f->at("cls_feat" + s), 1e-4, 1e-5, "cls_feat " + s);
    check_close(out.reg_feats[l].data(), f->at("reg_feat" + s), 1e-4, 1e-5, "reg_feat " + s);
    check_close(out.pts_init[l].data(), f->at("pts_init" + s), 1e-4, 1e-5, "pts_init " + s);
    check_close(out.cls_scores[l].data(), f->at("cls" + s), 1e-4, 1e-5, "cls " + s);
    check_close(out.pts_refine[l].data(), f->at("pts_refine" + s), 1e-4, 1e-5, "pts_refine " + s);
  }
  std::vector<GtInstances> gts;
  for (int n = 0; n < 2; ++n) gts.push_back({f->at("gt_boxes" + std::to_string(n)), f->at("gt_labels" + std::to_string(n)), {}});
  const int ih[2] = {64, 40}, iw[2] = {90, 60}, ph[2] = {64, 64}, pw[2] = {96, 64};
  auto geo = fixture_geometry(ih, iw, ph, pw, {1.5, 1.6, 1.5, 1.6});
  // targets
  RepPointsTargets t = h.get_targets(out, gts, geo);
  CHECK(t.init_pos_inds.to_vector<int64_t>() == f->at("t.init_pos_rows").to_vector<int64_t>());
  CHECK(t.refine_pos_inds.to_vector<int64_t>() == f->at("t.refine_pos_rows").to_vector<int64_t>());
  CHECK(t.labels.to_vector<int64_t>() == f->at("t.labels").to_vector<int64_t>());
  check_close(t.label_weights, f->at("t.label_weights"), 0, 0, "label_weights");
  check_close(t.init_boxes, f->at("t.init_boxes"), 1e-4, 1e-4, "refine candidates (init pseudo boxes)");
  CHECK(t.init_avg_factor == f->at("t.avg_init").item());
  CHECK(t.refine_avg_factor == f->at("t.avg_refine").item());
  // losses on those targets and their gradients
  LossList l = h.loss(out, t);
  REQUIRE(l.size() == 3);
  CHECK(l[0].first == "loss_cls");
  CHECK(l[1].first == "loss_pts_init");
  CHECK(l[2].first == "loss_pts_refine");
  for (auto& [name, v] : l) check_close(v.data(), f->at(name), 1e-4, 0, name);
  total_loss(l).backward();
  for (auto& [name, p] : h.named_parameters()) {
    Tensor ref = f->at("grad." + name);
    check_close(p.grad(), ref, 1e-3, 1e-4 * max_abs(ref), "grad " + name);
  }
  // loss_cls alone: its gradient reaches the init branch only through the 0.1-scaled DCN offset path
  h.zero_grad();
  RepPointsHeadOutputs o2 = h.forward(feats);
  h.loss(o2, gts, geo)[0].second.backward();
  for (const char* k : {"reppoints_pts_init_out.weight", "reppoints_pts_init_out.bias", "reg_convs.0.conv.weight"}) {
    Tensor ref = f->at(std::string("cls_grad.") + k);
    CHECK(max_abs(ref) > 0);
    check_close(h.find_parameter(k)->grad(), ref, 1e-3, 1e-4 * max_abs(ref), std::string("loss_cls grad ") + k);
  }
  // the other transforms, same weights
  for (auto [name, tr] : {std::pair{"minmax", PointsTransform::MinMax}, std::pair{"partial_minmax", PointsTransform::PartialMinMax}}) {
    RepPointsHeadConfig c = tiny_head_cfg();
    c.transform = tr;
    RepPointsHead hm(c);
    TensorMap sd = with_prefix(*f, "head.");
    sd.erase("moment_transfer");
    hm.load_state_dict(sd);
    NoGradGuard ng;
    LossList lm = hm.loss(hm.forward(feats), gts, geo);
    for (auto& [ln, v] : lm) check_close(v.data(), f->at(std::string(name) + "." + ln), 1e-4, 0, std::string(name) + " " + ln);
  }
  // detections (mmdet >= 2.18 inference, rescaled by (1.5, 1.6))
  NoGradGuard ng;
  check_dets(h.predict(h.forward(feats), geo), *f);
}

TEST_CASE("reppoints head: loss gradcheck w.r.t. the cls / init / refine maps (f64)") {
  RepPointsHeadConfig c = tiny_head_cfg();
  c.point_strides = {8, 16};
  RepPointsHead h(c);
  h.to(DType::F64);
  h.find_parameter("moment_transfer")->data().fill_(0.1);
  std::vector<GtInstances> gts = {{Tensor::from_vector<float>({4, 5, 30, 22, 2, 20, 12, 30}, {2, 4}),
                                   Tensor::from_vector<int64_t>({1, 2}), {}}};
  std::vector<ImageGeometry> geo(1);
  geo[0].img_h = geo[0].img_w = 32;
  // targets fixed from one set of maps (the refine assignment depends on the init points)
  std::vector<Tensor> x = {rnd({1, 3, 4, 4}, 1, -3, 1), rnd({1, 3, 2, 2}, 2, -3, 1), rnd({1, 18, 4, 4}, 3, -1.5, 1.5),
                           rnd({1, 18, 2, 2}, 4, -1.5, 1.5), rnd({1, 18, 4, 4}, 5, -1.5, 1.5), rnd({1, 18, 2, 2}, 6, -1.5, 1.5)};
  auto outs = [](const std::vector<Var>& v) {
    RepPointsHeadOutputs o;
    o.cls_scores = {v[0], v[1]};
    o.pts_init = {v[2], v[3]};
    o.pts_refine = {v[4], v[5]};
    return o;
  };
  std::vector<Var> xv(x.begin(), x.end());
  RepPointsTargets t = h.get_targets(outs(xv), gts, geo);
  REQUIRE(t.init_pos_inds.numel() == 2);
  REQUIRE(t.refine_pos_inds.numel() >= 1);
  auto fn = [&](const std::vector<Var>& v) { return total_loss(h.loss(outs(v), t)); };
  CHECK(gradcheck(fn, x));
}

TEST_CASE("reppoints head: empty GT gives cls loss only; one GT gives init loss on exactly one level") {
  RepPointsHeadConfig c = tiny_head_cfg();
  RepPointsHead h(c);
  Generator g(3);
  h.init_weights(g);
  std::vector<Var> feats;
  const int64_t sz[5][2] = {{8, 8}, {4, 4}, {2, 2}, {1, 1}, {1, 1}};
  for (int l = 0; l < 5; ++l) feats.emplace_back(rnd({1, 8, sz[l][0], sz[l][1]}, 30 + l).to(DType::F32));
  std::vector<ImageGeometry> geo(1);
  geo[0].img_h = geo[0].img_w = 64;
  RepPointsHeadOutputs out = h.forward(feats);
  LossList le = h.loss(out, {{Tensor::zeros({0, 4}), Tensor::zeros({0}, DType::I64), {}}}, geo);
  CHECK(le[0].second.item() > 0);
  CHECK(le[1].second.item() == 0.0);
  CHECK(le[2].second.item() == 0.0);
  total_loss(le).backward();  // graph connected with zero point losses
  // one GT: loss_pts_init comes from exactly one level, the one PointAssigner picks: a 64x64 box ->
  // trunc(log2(64/4)) = 4 (stride 16, level 1), a 10x8 box -> 3 (stride 8, level 0)
  for (auto [box, level] : {std::pair{std::vector<float>{0, 0, 64, 64}, 1}, std::pair{std::vector<float>{20, 20, 30, 28}, 0}}) {
    std::vector<GtInstances> gts = {{Tensor::from_vector<float>(box, {1, 4}), Tensor::from_vector<int64_t>({1}), {}}};
    RepPointsTargets t = h.get_targets(out, gts, geo);
    REQUIRE(t.init_pos_inds.numel() == 1);
    std::vector<bool> nonzero;
    for (int l = 0; l < 5; ++l) {
      // the same outputs with every other level's init points replaced by zeros: the loss is unchanged
      // only when all of it comes from level l
      RepPointsHeadOutputs ol = out;
      for (int k = 0; k < 5; ++k)
        if (k != l) ol.pts_init[k] = Var(Tensor::zeros(out.pts_init[k].shape()));
      const double v = h.loss(ol, t)[1].second.item();
      const double full = h.loss(out, t)[1].second.item();
      nonzero.push_back(std::abs(v - full) < 1e-9 && full > 0);
    }
    CHECK(std::count(nonzero.begin(), nonzero.end(), true) == 1);
    CHECK(nonzero[level]);
  }
}

TEST_CASE("reppoints head: images_per_group normalises per group and averages (mmdet per-GPU)") {
  RepPointsHeadConfig c = tiny_head_cfg();
  c.point_strides = {8, 16};
  std::vector<GtInstances> gts = {
      {Tensor::from_vector<float>({4, 5, 30, 22, 10, 2, 20, 30, 1, 1, 9, 9}, {3, 4}), Tensor::from_vector<int64_t>({1, 2, 0}), {}},
      {Tensor::from_vector<float>({2, 2, 28, 30}, {1, 4}), Tensor::from_vector<int64_t>({2}), {}},
      {Tensor::zeros({0, 4}), Tensor::zeros({0}, DType::I64), {}}};
  std::vector<ImageGeometry> geo(3);
  for (auto& g : geo) g.img_h = g.img_w = 32;
  const Tensor c0 = rnd({3, 3, 4, 4}, 1, -3, 1).to(DType::F32), c1 = rnd({3, 3, 2, 2}, 2, -3, 1).to(DType::F32);
  const Tensor i0 = rnd({3, 18, 4, 4}, 3, -1, 1).to(DType::F32), i1 = rnd({3, 18, 2, 2}, 4, -1, 1).to(DType::F32);
  const Tensor r0 = rnd({3, 18, 4, 4}, 5, -1, 1).to(DType::F32), r1 = rnd({3, 18, 2, 2}, 6, -1, 1).to(DType::F32);
  auto outs = [&](int64_t a, int64_t b) {
    RepPointsHeadOutputs o;
    auto sl = [&](const Tensor& t) { return Var(t.slice(0, a, b).contiguous()); };
    o.cls_scores = {sl(c0), sl(c1)};
    o.pts_init = {sl(i0), sl(i1)};
    o.pts_refine = {sl(r0), sl(r1)};
    return o;
  };
  RepPointsHead whole(c);
  c.images_per_group = 1;
  RepPointsHead grouped(c);
  LossList lg = grouped.loss(outs(0, 3), gts, geo);
  std::vector<double> ref(3, 0.0);
  for (int64_t n = 0; n < 3; ++n) {
    LossList li = whole.loss(outs(n, n + 1), {gts[n]}, {geo[n]});
    for (int k = 0; k < 3; ++k) ref[k] += li[k].second.item() / 3;
  }
  for (int k = 0; k < 3; ++k) CHECK(lg[k].second.item() == doctest::Approx(ref[k]).epsilon(1e-5));
  LossList lw = whole.loss(outs(0, 3), gts, geo);  // one group: differs (global avg_factor)
  CHECK(std::abs(lw[0].second.item() - lg[0].second.item()) > 1e-4);
}

TEST_CASE("reppoints detector: end-to-end parity with the mmdet replica (GN neck, losses, gradients, detections)") {
  auto f = load_fixture("rep_detector");
  if (!f) return;
  RepPointsConfig cfg = RepPointsConfig::mmdet(18, true, 3);
  cfg.backbone.base_channels = 8;
  cfg.neck.out_channels = 16;
  cfg.neck.norm = cfg.head.norm = NormCfg::gn(4);
  cfg.sync_channels();
  cfg.head.feat_channels = cfg.head.point_feat_channels = 16;
  cfg.head.stacked_convs = 1;
  RepPointsDetector model(cfg);
  model.load_state_dict(with_prefix(*f, "model."));  // strict: every mmdet key present, nothing extra
  model.train();                                     // frozen stage 1 + norm_eval, as mmdet training
  data::Batch b;
  b.images = f->at("images");
  const int ih[2] = {64, 48}, iw[2] = {90, 60}, ph[2] = {64, 64}, pw[2] = {96, 64};
  const float boxes[2][2][4] = {{{5, 6, 40, 30}, {50, 10, 87, 61}}, {{10, 4, 51, 37}, {30, 29, 45, 46}}};
  const int64_t labels[2][2] = {{0, 2}, {1, 1}};
  for (int n = 0; n < 2; ++n) {
    data::ImageMeta m;
    m.img_h = ih[n], m.img_w = iw[n], m.pad_h = ph[n], m.pad_w = pw[n];
    m.scale_w = 0.8f, m.scale_h = 0.75f;
    b.metas.push_back(m);
    std::vector<data::BoxAnn> anns;
    for (int k = 0; k < 2; ++k) {
      data::BoxAnn a;
      a.x1 = boxes[n][k][0], a.y1 = boxes[n][k][1], a.x2 = boxes[n][k][2], a.y2 = boxes[n][k][3];
      a.label = labels[n][k];
      anns.push_back(a);
    }
    b.gts.push_back(anns);
  }
  DetectorTaps taps;
  LossList l = model.loss(b, &taps);
  REQUIRE(taps.neck.size() == 5);
  for (int i = 0; i < 5; ++i) {
    const std::string s = std::to_string(i);
    check_close(taps.neck[i].data(), f->at("p" + s), 1e-4, 1e-5, std::string("P") + std::to_string(i + 3));
    // neck.fpn_convs.{i}.conv, the official FGD / MGD hook point: before GN, so not the FPN output here
    check_close(taps.neck_conv[i].data(), f->at("p_conv" + s), 1e-4, 1e-5, "fpn_convs conv " + s);
    CHECK(max_abs(ops::sub(taps.neck_conv[i].data(), taps.neck[i].data())) > 1e-2);
    check_close(taps.head.cls_scores[i].data(), f->at("cls" + s), 1e-4, 1e-5, "cls " + s);
    check_close(taps.head.bbox_preds[i].data(), f->at("pts_refine" + s), 1e-4, 1e-5, "pts_refine " + s);
  }
  auto named = taps.named();
  CHECK(named.count("bbox_head.reppoints_cls_out.0") == 1);
  CHECK(named.count("bbox_head.pts_refine.4") == 1);
  CHECK(named.count("neck.fpn_convs.4.conv") == 1);
  for (auto& [name, v] : l) check_close(v.data(), f->at(name), 1e-4, 0, name);
  total_loss(l).backward();
  for (auto& [k, ref] : f->tensors) {
    if (k.rfind("grad.", 0) != 0) continue;
    const std::string name = k.substr(5);
    Var* p = model.find_parameter(name);
    REQUIRE_MESSAGE(p != nullptr, name);
    check_close(p->grad(), ref, 1e-3, 1e-4 * max_abs(ref), "grad " + name);
  }
  CHECK_FALSE(model.find_parameter("backbone.layer1.0.conv1.weight")->grad().defined());  // frozen stage 1
  model.eval();
  check_dets(model.predict(b), *f);
}

TEST_CASE("reppoints detector: config section, build_detector, taps; a tiny model trains on a fixed batch") {
  Config c = Config::parse(
      "[model]\ntype = reppoints\ndepth = 18\nbase_channels = 8\nneck_channels = 16\ngn_groups = 4\n"
      "stacked_convs = 1\nnum_classes = 3\nfrozen_stages = -1\ntest_max_per_img = 30\ntransform = moment\n");
  RepPointsConfig r = RepPointsConfig::from_config(c);
  CHECK(r.neck.in_channels == std::vector<int64_t>{8, 16, 32, 64});
  CHECK(r.head.in_channels == 16);
  CHECK(r.head.point_feat_channels == 16);
  CHECK(r.neck.norm.type == NormCfg::GN);
  CHECK(r.neck.norm.num_groups == 4);
  CHECK(r.head.test.max_per_img == 30);
  std::unique_ptr<Detector> m = build_detector(c);
  c.check_all_used();
  REQUIRE(m);
  CHECK(m->arch() == "reppoints");
  CHECK(m->num_classes() == 3);
  CHECK(m->tap_levels(TapKind::Neck) == 5);
  CHECK(m->tap_channels(TapKind::BboxPred, 2) == 18);
  CHECK(m->tap_channels(TapKind::ClsScore, 0) == 3);
  CHECK(m->inherit_prefixes() == std::vector<std::string>{"neck.", "bbox_head."});
  CHECK_THROWS_AS(m->tap_channels(TapKind::Neck, 5), Error);
  Config bad = Config::parse("[model]\ntype = reppoints\ntransform = bbox\n");
  CHECK_THROWS_WITH_AS(RepPointsConfig::from_config(bad), doctest::Contains("bbox"), Error);

  Generator g(42);
  m->init_weights(g);
  m->train();
  data::Batch batch = synthetic_batch(7, 2);
  SGD opt(m->named_parameters("", true), 0.02, 0.9, 1e-4);
  std::vector<double> losses;
  for (int it = 0; it < 30; ++it) {
    DetectorTaps taps;
    LossList l = m->loss(batch, &taps);
    if (it == 0) {
      REQUIRE(l.size() == 3);
      CHECK(taps.head.cls_scores[0].shape() == Shape{2, 3, 8, 8});
      CHECK(taps.head.bbox_preds[4].shape() == Shape{2, 18, 1, 1});
      CHECK(taps.neck[1].shape() == Shape{2, 16, 4, 4});
      CHECK(l[1].second.item() > 0);
      CHECK(l[2].second.item() > 0);
    }
    Var total = total_loss(l);
    losses.push_back(total.item());
    opt.zero_grad();
    total.backward();
    clip_grad_norm(opt.params(), 35.0);
    opt.step();
  }
  MESSAGE("tiny RepPoints loss: " << losses.front() << " -> " << losses.back());
  for (double v : losses) REQUIRE(std::isfinite(v));
  CHECK(losses.back() < 0.8 * losses.front());
  m->eval();
  auto dets = m->predict(batch);
  REQUIRE(dets.size() == 2);
  for (auto& d : dets) {
    CHECK(d.size() <= 30);
    auto s = d.scores.to_vector<float>();
    CHECK(std::is_sorted(s.rbegin(), s.rend()));
    for (float v : d.boxes.to_vector<float>()) CHECK((v >= 0 && v <= 64));
  }
}

namespace {
// depth / base channels / FPN+head width 16, GN(4), 1 tower conv, 3 classes, nothing frozen.
std::unique_ptr<RepPointsDetector> tiny_reppoints(int depth, uint64_t seed) {
  RepPointsConfig c = RepPointsConfig::mmdet(depth, true, 3);
  c.backbone.base_channels = 8;
  c.backbone.frozen_stages = -1;
  c.neck.out_channels = 16;
  c.neck.norm = c.head.norm = NormCfg::gn(4);
  c.sync_channels();
  c.head.feat_channels = c.head.point_feat_channels = 16;
  c.head.stacked_convs = 1;
  auto m = std::make_unique<RepPointsDetector>(c);
  Generator g(seed);
  m->init_weights(g);
  return m;
}
}  // namespace

TEST_CASE("reppoints kd: every FPN-level method, RepPoints-R34 teacher -> RepPoints-R18 student, P3-P7 (FGD / MGD: inherit, 2 steps)") {
  const data::Batch batch = synthetic_batch(11, 2);
  for (auto m : {kd::KdMethod::FGD, kd::KdMethod::MGD, kd::KdMethod::AMD, kd::KdMethod::DMKD, kd::KdMethod::FitNet,
                 kd::KdMethod::SSIM, kd::KdMethod::FBKD, kd::KdMethod::AID}) {
    const bool main_pair = m == kd::KdMethod::FGD || m == kd::KdMethod::MGD;
    CAPTURE(kd::kd_method_name(m));
    kd::DistillConfig c = kd::DistillConfig::defaults(m);
    // specs/kd_losses.md 1d / 2d, RepPoints rows: FGD α 1.6e-3, β 8e-4, γ 8e-4, λ 8e-6; MGD α 2e-5, λ 0.65
    c.fgd.alpha_fgd = 1.6e-3, c.fgd.beta_fgd = 8e-4, c.fgd.gamma_fgd = 8e-4, c.fgd.lambda_fgd = 8e-6;
    // 64-px images: P5..P7 are 2x2, 1x1, 1x1, too small for the spec's pool-2 non-local blocks.
    if (m == kd::KdMethod::FBKD || m == kd::KdMethod::AID) c.fbkd.nonlocal = {{8, 4}, {8, 2}, {8, 1}, {8, 1}, {8, 1}};
    CHECK(c.inherit == (main_pair || m == kd::KdMethod::AMD || m == kd::KdMethod::DMKD));
    kd::Distiller d(tiny_reppoints(34, 1), tiny_reppoints(18, 2), c);
    REQUIRE(d.student_taps().size() == 5);  // neck.0..neck.4 = P3..P7
    Generator g(3);
    d.init_kd_weights(g);
    TensorMap before;
    for (auto& [k, v] : d.teacher().state_dict()) before[k] = v.clone();
    if (main_pair) {
      d.inherit_from_teacher();
      check_close(d.student().find_parameter("bbox_head.reppoints_cls_conv.weight")->data(),
                  before.at("bbox_head.reppoints_cls_conv.weight"), 0, 0, "inherited head");
      check_close(d.student().find_parameter("bbox_head.moment_transfer")->data(), before.at("bbox_head.moment_transfer"),
                  0, 0, "inherited moment_transfer");
      check_close(d.student().find_parameter("neck.fpn_convs.4.gn.weight")->data(), before.at("neck.fpn_convs.4.gn.weight"),
                  0, 0, "inherited neck");
    }
    d.train(true);
    SGD opt(d.named_parameters(), 0.01, 0.9);
    for (int it = 0; it < (main_pair ? 2 : 1); ++it) {
      kd::Distiller::Extra ex;
      LossList l = d.loss(batch, &ex);
      const auto names = kd::kd_component_names(m);
      REQUIRE(l.size() == 3 + names.size());
      CHECK(l[0].first == "loss_cls");
      CHECK(l[1].first == "loss_pts_init");
      CHECK(l[2].first == "loss_pts_refine");
      for (size_t i = 0; i < l.size(); ++i) {
        CHECK_MESSAGE(std::isfinite(l[i].second.item()), l[i].first);
        if (i >= 3) CHECK_MESSAGE(l[i].second.item() > 0, l[i].first);
      }
      CHECK(ex.teacher_taps.neck.size() == 5);
      CHECK(!ex.teacher_taps.neck[0].requires_grad());
      opt.zero_grad();
      total_loss(l).backward();
      for (auto& [k, v] : d.teacher().named_parameters()) REQUIRE(!v.grad().defined());
      CHECK(d.student().find_parameter("bbox_head.reppoints_pts_refine_conv.weight")->grad().defined());
      opt.step();
    }
    for (auto& [k, v] : d.teacher().state_dict())
      CHECK_MESSAGE(std::memcmp(v.contiguous().raw_data(), before.at(k).contiguous().raw_data(), v.nbytes()) == 0, k);
    CHECK(!d.teacher().training());
  }
}
