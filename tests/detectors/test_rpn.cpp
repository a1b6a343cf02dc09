// RPNHead and RandomSampler: mmdet key names and init, parity with a PyTorch replica of mmdet's RPNHead
// (head outputs, targets, losses, parameter gradients, proposals; tests/ref/gen_rpn.py), loss
// gradcheck, and the RandomSampler's mmdet behaviour (caps, gt added as proposals, determinism).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "detectors/loss_norm.h"
#include "detectors/rpn_head.h"
#include "detectors/sampler.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

RPNHeadConfig tiny_rpn_cfg() {
  RPNHeadConfig c;
  c.in_channels = 8;
  c.feat_channels = 8;
  c.sampler.num = 1 << 30;  // takes every candidate: deterministic targets (the reference does the same)
  return c;
}

std::vector<ImageGeometry> rpn_fixture_geometry() {
  // tests/ref/gen_rpn.py: img_shapes (64,96), (30,60), (60,90); pad_shapes (64,96), (32,64), (64,96)
  std::vector<ImageGeometry> geo(3);
  geo[0].img_h = 64, geo[0].img_w = 96, geo[0].pad_h = 64, geo[0].pad_w = 96;
  geo[1].img_h = 30, geo[1].img_w = 60, geo[1].pad_h = 32, geo[1].pad_w = 64;
  geo[2].img_h = 60, geo[2].img_w = 90, geo[2].pad_h = 64, geo[2].pad_w = 96;
  return geo;
}

}  // namespace

TEST_CASE("rpn head: mmdet keys, shapes and init") {
  RPNHead h(tiny_rpn_cfg());
  const std::vector<std::string> expect = {"rpn_conv.weight", "rpn_conv.bias", "rpn_cls.weight",
                                           "rpn_cls.bias",    "rpn_reg.weight", "rpn_reg.bias"};
  CHECK(h.state_dict_keys() == expect);
  CHECK(h.find_parameter("rpn_conv.weight")->shape() == Shape{8, 8, 3, 3});
  CHECK(h.find_parameter("rpn_cls.weight")->shape() == Shape{3, 8, 1, 1});
  CHECK(h.find_parameter("rpn_reg.weight")->shape() == Shape{12, 8, 1, 1});
  Generator g(0);
  h.init_weights(g);
  auto w = h.find_parameter("rpn_conv.weight")->data().to_vector<float>();
  double s2 = 0;
  for (float v : w) s2 += double(v) * v;
  CHECK(std::sqrt(s2 / w.size()) == doctest::Approx(0.01).epsilon(0.15));
  for (const char* b : {"rpn_conv.bias", "rpn_cls.bias", "rpn_reg.bias"})
    for (float v : h.find_parameter(b)->data().to_vector<float>()) CHECK(v == 0.0f);
  // full-size mmdet head
  RPNHead full(RPNHeadConfig::mmdet());
  CHECK(full.num_parameters() == 256 * 256 * 9 + 256 + 256 * 3 + 3 + 256 * 12 + 12);
  CHECK(RPNHeadConfig::cascade().allowed_border == 0);
  CHECK_THROWS_WITH_AS(h.forward({Var(Tensor::zeros({1, 8, 4, 4}))}), doctest::Contains("1 feature levels for 5"),
                       Error);
}

TEST_CASE("rpn head: parity with the mmdet replica (outputs, targets, losses, gradients)") {
  auto f = load_fixture("rpn_head");
  if (!f) return;
  TensorMap sd;
  for (auto& [k, v] : f->tensors)
    if (k.rfind("w.", 0) == 0) sd[k.substr(2)] = v;
  std::vector<Var> feats;
  for (int l = 0; l < 5; ++l) feats.emplace_back(f->at("feat" + std::to_string(l)));  // f64
  std::vector<GtInstances> gts;
  for (int n = 0; n < 3; ++n) gts.push_back({f->at("gt" + std::to_string(n)), Tensor(), Tensor()});
  const auto geo = rpn_fixture_geometry();
  for (const char* variant : {"faster", "cascade"}) {
    CAPTURE(variant);
    const std::string v = variant;
    RPNHeadConfig cfg = tiny_rpn_cfg();
    if (v == "cascade") {
      cfg.allowed_border = 0;
      cfg.smooth_l1_beta = 1.0 / 9.0;
    }
    RPNHead h(cfg);
    h.to(DType::F64);
    h.load_state_dict(sd);
    DenseHeadOutputs out = h.forward(feats);
    REQUIRE(out.num_levels() == 5);
    for (int l = 0; l < 5; ++l) {
      check_close(out.cls_scores[l].data(), f->at("cls" + std::to_string(l)), 1e-10, 1e-12, "cls " + std::to_string(l));
      check_close(out.bbox_preds[l].data(), f->at("reg" + std::to_string(l)), 1e-10, 1e-12, "reg " + std::to_string(l));
    }
    CHECK(out.cls_feats.size() == 5);
    CHECK(out.reg_feats[2].data().data<double>() == out.cls_feats[2].data().data<double>());
    std::vector<std::pair<int64_t, int64_t>> sizes;
    for (const Var& c : out.cls_scores) sizes.emplace_back(c.size(2), c.size(3));
    Generator g(1);
    DenseTargets t = h.get_targets(sizes, gts, geo, g);
    CHECK(t.labels.to_vector<int64_t>() == f->at(v + "_labels").to_vector<int64_t>());
    check_close(t.label_weights, f->at(v + "_label_weights").to(DType::F32), 0, 0, "label weights");
    CHECK(t.avg_factor == f->at(v + "_avg_factor").item());
    LossList l = h.loss(out, t);
    REQUIRE(l.size() == 2);
    CHECK(l[0].first == "loss_rpn_cls");
    CHECK(l[1].first == "loss_rpn_bbox");
    check_close(l[0].second.data(), f->at(v + "_loss_cls"), 1e-10, 0, "loss_rpn_cls");
    check_close(l[1].second.data(), f->at(v + "_loss_bbox"), 1e-6, 0, "loss_rpn_bbox");  // f32 targets
    total_loss(l).backward();
    for (auto& [name, p] : h.named_parameters()) {
      Tensor ref = f->at(v + "_grad." + name);
      double scale = 0;
      for (double x : ref.to_vector<double>()) scale = std::max(scale, std::abs(x));
      check_close(p.grad(), ref, 1e-6, 1e-8 * scale, "grad " + name);
    }
    // the one-call form with the same (take-all) sampler gives the same losses
    Generator g2(5);
    LossList l2 = h.loss(out, gts, geo, g2);
    CHECK(l2[0].second.item() == l[0].second.item());
    CHECK(l2[1].second.item() == l[1].second.item());
  }
}

TEST_CASE("rpn head: proposals match the mmdet replica (per-level top-k, level-wise NMS, max_per_img)") {
  auto f = load_fixture("rpn_head");
  if (!f) return;
  const auto geo = rpn_fixture_geometry();
  RPNHead h(tiny_rpn_cfg());
  struct Cfg {
    const char* name;
    ProposalConfig pc;
  };
  for (const Cfg& c : {Cfg{"train", {2000, 1000, 0.7, 0.0}}, Cfg{"test", {40, 30, 0.7, 0.0}},
                       Cfg{"tight", {25, 12, 0.3, 0.0}}}) {
    CAPTURE(c.name);
    DenseHeadOutputs out;
    for (int l = 0; l < 5; ++l) {
      out.cls_scores.emplace_back(f->at("cls" + std::to_string(l)).to(DType::F32));
      out.bbox_preds.emplace_back(f->at("reg" + std::to_string(l)).to(DType::F32));
    }
    RPNHeadConfig cfg = tiny_rpn_cfg();
    cfg.train = cfg.test = c.pc;
    RPNHead hc(cfg);
    for (bool training : {true, false}) {
      auto props = hc.get_proposals(out, geo, training);
      REQUIRE(props.size() == 3);
      for (int n = 0; n < 3; ++n) {
        CAPTURE(n);
        const Tensor& ref = f->at(std::string("props_") + c.name + "_" + std::to_string(n));
        REQUIRE(props[n].shape() == ref.shape());
        check_close(props[n], ref, 1e-4, 1e-4, "proposals");
      }
    }
  }
  // the default (mmdet) proposal configs
  CHECK(h.config().train.nms_pre == 2000);
  CHECK(h.config().train.max_per_img == 1000);
  CHECK(h.config().test.nms_pre == 1000);
  CHECK(RPNHeadConfig::cascade().train.max_per_img == 2000);
}

TEST_CASE("rpn head: loss gradcheck w.r.t. cls / reg maps (f64, L1 and SmoothL1)") {
  RPNHeadConfig c = tiny_rpn_cfg();
  c.anchors.strides = {8, 16};
  c.anchors.scales = {2.0};      // 16 / 32 px anchors on a 32 px image
  c.assigner.pos_iou_thr = 0.5;  // a few positives on this tiny map
  std::vector<GtInstances> gts = {{Tensor::from_vector<float>({4, 5, 30, 22, 10, 2, 20, 30}, {2, 4}), Tensor(), {}}};
  std::vector<ImageGeometry> geo(1);
  geo[0].img_h = 32, geo[0].img_w = 32;
  for (double beta : {0.0, 1.0 / 9.0}) {
    c.smooth_l1_beta = beta;
    RPNHead h(c);
    Generator g(0);
    DenseTargets t = h.get_targets({{4, 4}, {2, 2}}, gts, geo, g);
    REQUIRE(t.num_pos > 0);
    auto fn = [&](const std::vector<Var>& v) {
      DenseHeadOutputs o;
      o.cls_scores = {v[0], v[1]};
      o.bbox_preds = {v[2], v[3]};
      return total_loss(h.loss(o, t));
    };
    // deltas well away from the L1 / SmoothL1 kinks: targets are O(0.1..1), predictions shifted by 3
    CHECK(gradcheck(fn, {rnd({1, 3, 4, 4}, 1, -3, 1), rnd({1, 3, 2, 2}, 2, -3, 1), rnd({1, 12, 4, 4}, 3, 2.5, 3.5),
                         rnd({1, 12, 2, 2}, 4, 2.5, 3.5)}));
  }
}

TEST_CASE("rpn head: sampled targets follow RandomSampler(256, 0.5) and are reproducible") {
  RPNHead h{RPNHeadConfig{}};  // full mmdet config: 256 samples @ 0.5
  std::vector<GtInstances> gts = {
      {Tensor::from_vector<float>({10, 10, 200, 150, 300, 40, 500, 300, 50, 200, 120, 300}, {3, 4}), Tensor(), {}},
      {Tensor::zeros({0, 4}), Tensor(), {}}};
  std::vector<ImageGeometry> geo(2);
  for (auto& g : geo) g.img_h = 320, g.img_w = 512, g.pad_h = 320, g.pad_w = 512;
  std::vector<std::pair<int64_t, int64_t>> sizes = {{80, 128}, {40, 64}, {20, 32}, {10, 16}, {5, 8}};
  Generator g1(7), g2(7), g3(8);
  DenseTargets a = h.get_targets(sizes, gts, geo, g1), b = h.get_targets(sizes, gts, geo, g2),
               c = h.get_targets(sizes, gts, geo, g3);
  CHECK(a.labels.to_vector<int64_t>() == b.labels.to_vector<int64_t>());
  CHECK(a.label_weights.to_vector<float>() == b.label_weights.to_vector<float>());
  CHECK(a.label_weights.to_vector<float>() != c.label_weights.to_vector<float>());
  // per image: #pos <= 128, #pos + #neg == 256 (plenty of negatives); image 1 has no gt: 256 negatives
  const int64_t M = a.num_anchors;
  auto w = a.label_weights.to_vector<float>();
  auto lab = a.labels.to_vector<int64_t>();
  for (int n = 0; n < 2; ++n) {
    int64_t pos = 0, sampled = 0;
    for (int64_t m = 0; m < M; ++m) {
      sampled += w[n * M + m] > 0;
      pos += lab[n * M + m] == 0;
    }
    CHECK(pos == a.num_pos_per_image[n]);
    CHECK(pos <= 128);
    CHECK(sampled == 256);
    if (n == 1) CHECK(pos == 0);
  }
  CHECK(a.num_pos > 0);
  CHECK(a.avg_factor == (a.num_pos + 1) + 256 - a.num_pos + 256);
  // positives have IoU >= 0.7 with a gt or are a gt's best anchor: every sampled positive's target
  // decodes back to its gt box
  Tensor dec = h.config().coder.decode(a.pos_anchors, a.pos_bbox_targets);
  check_close(dec, a.pos_gt_boxes, 1e-4, 1e-3, "decoded targets");
}

TEST_CASE("rpn sampler: RandomSampler caps, gt boxes added as proposals, neg_pos_ub, explicit indices") {
  // 40 candidates; gts 0 and 1; assignment: 0..9 positive (gt 1 or 2), 10..35 negative, 36..39 ignored
  const int64_t N = 40;
  std::vector<float> cand;
  for (int64_t i = 0; i < N; ++i) cand.insert(cand.end(), {float(i), float(i), float(i + 10), float(i + 12)});
  Tensor candidates = Tensor::from_vector(cand, Shape{N, 4});
  AssignResult ar;
  ar.num_gts = 2;
  std::vector<int64_t> gi(N), lab(N, -1);
  for (int64_t i = 0; i < N; ++i) gi[i] = i < 10 ? 1 + i % 2 : (i < 36 ? 0 : -1);
  for (int64_t i = 0; i < 10; ++i) lab[i] = i % 2 == 0 ? 5 : 7;
  ar.gt_inds = Tensor::from_vector(gi, Shape{N});
  ar.labels = Tensor::from_vector(lab, Shape{N});
  ar.max_overlaps = Tensor::full({N}, 0.5);
  GtInstances gt{Tensor::from_vector<float>({0, 0, 10, 10, 5, 5, 30, 30}, {2, 4}),
                 Tensor::from_vector<int64_t>({5, 7}), {}};

  RandomSampler s{16, 0.25, -1, true};  // <= 4 positives, 12 negatives; 2 gts prepended (12 positives in all)
  Generator g(3);
  RandomSamplingResult r = s.sample(ar, candidates, gt, g);
  CHECK(r.num_gts_added == 2);
  CHECK(r.num_pos() == 4);
  CHECK(r.num_neg() == 12);
  CHECK(r.bboxes.shape() == Shape{16, 4});
  auto pi = r.pos_inds.to_vector<int64_t>(), ni = r.neg_inds.to_vector<int64_t>();
  CHECK(std::is_sorted(pi.begin(), pi.end()));
  CHECK(std::is_sorted(ni.begin(), ni.end()));
  auto pg = r.pos_assigned_gt_inds.to_vector<int64_t>(), pl = r.pos_gt_labels.to_vector<int64_t>();
  Tensor all = s.candidates_with_gts(candidates, gt);
  REQUIRE(all.size(0) == N + 2);
  for (size_t k = 0; k < pi.size(); ++k) {
    CHECK(pi[k] < 12);  // gts (0, 1) or original positives (2..11)
    const int64_t expect_gt = pi[k] < 2 ? pi[k] : (pi[k] - 2) % 2;
    CHECK(pg[k] == expect_gt);
    CHECK(pl[k] == (expect_gt == 0 ? 5 : 7));
    CHECK(r.pos_is_gt.to_vector<bool>()[k] == (pi[k] < 2));
    check_close(r.bboxes.select(0, static_cast<int64_t>(k)), all.select(0, pi[k]), 0, 0, "sampled pos box");
    check_close(r.pos_gt_bboxes.select(0, static_cast<int64_t>(k)), gt.boxes.select(0, expect_gt), 0, 0, "pos gt box");
  }
  for (int64_t k : ni) CHECK((k >= 12 && k < 38));
  // every positive eventually drawn: over many draws all 12 positives appear (uniform subset)
  std::set<int64_t> seen;
  for (int rep = 0; rep < 60; ++rep)
    for (int64_t k : s.sample(ar, candidates, gt, g).pos_inds.to_vector<int64_t>()) seen.insert(k);
  CHECK(seen.size() == 12);
  // no gt added, num large: everything is taken (no randomness)
  RandomSampler all_s{1000, 0.5, -1, false};
  RandomSamplingResult ra = all_s.sample(ar, candidates, gt, g);
  CHECK(ra.num_gts_added == 0);
  CHECK(ra.num_pos() == 10);
  CHECK(ra.num_neg() == 26);
  // neg_pos_ub: at most ub * max(#pos, 1) negatives
  RandomSampler ub{1000, 0.5, 2, false};
  CHECK(ub.sample(ar, candidates, gt, g).num_neg() == 20);
  // explicit indices (after gts were added)
  int64_t added = 0;
  AssignResult ag = s.with_gts(ar, gt, &added);
  CHECK(added == 2);
  CHECK(ag.gt_inds.to_vector<int64_t>()[0] == 1);
  CHECK(ag.gt_inds.to_vector<int64_t>()[1] == 2);
  CHECK(ag.max_overlaps.to_vector<float>()[1] == 1.0f);
  RandomSamplingResult re = sampling_result_from_indices(ag, all, gt.boxes, {1, 3}, {20}, added);
  CHECK(re.pos_assigned_gt_inds.to_vector<int64_t>() == std::vector<int64_t>{1, 1});
  CHECK(re.pos_gt_labels.to_vector<int64_t>() == std::vector<int64_t>{7, 7});
  check_close(re.neg_bboxes(), all.slice(0, 20, 21), 0, 0, "neg box");
  CHECK_THROWS_WITH_AS(sampling_result_from_indices(ag, all, gt.boxes, {20}, {}, added),
                       doctest::Contains("index 20 is not a positive"), Error);
  CHECK_THROWS_WITH_AS(sampling_result_from_indices(ag, all, gt.boxes, {}, {3}, added),
                       doctest::Contains("index 3 is not a negative"), Error);
}

TEST_CASE("rpn head: images_per_group normalises per group and averages (mmdet per-GPU)") {
  RPNHeadConfig c = tiny_rpn_cfg();
  c.anchors.strides = {8, 16};
  c.anchors.scales = {2.0};
  c.assigner.pos_iou_thr = 0.5;
  std::vector<GtInstances> gts = {{Tensor::from_vector<float>({4, 5, 30, 22, 10, 2, 20, 30, 1, 1, 9, 9}, {3, 4}), {}, {}},
                                  {Tensor::from_vector<float>({2, 2, 28, 30}, {1, 4}), {}, {}},
                                  {Tensor::zeros({0, 4}), {}, {}}};
  std::vector<ImageGeometry> geo(3);
  for (auto& g : geo) g.img_h = g.img_w = 32;
  Tensor c0 = rnd({3, 3, 4, 4}, 1, -3, 1).to(DType::F32), c1 = rnd({3, 3, 2, 2}, 2, -3, 1).to(DType::F32);
  Tensor r0 = rnd({3, 12, 4, 4}, 3, -.5, .5).to(DType::F32), r1 = rnd({3, 12, 2, 2}, 4, -.5, .5).to(DType::F32);
  auto outs = [&](int64_t a, int64_t b) {
    DenseHeadOutputs o;
    o.cls_scores = {Var(c0.slice(0, a, b).contiguous()), Var(c1.slice(0, a, b).contiguous())};
    o.bbox_preds = {Var(r0.slice(0, a, b).contiguous()), Var(r1.slice(0, a, b).contiguous())};
    return o;
  };
  for (double beta : {0.0, 1.0 / 9.0}) {
    c.smooth_l1_beta = beta;
    c.images_per_group = 0;
    RPNHead whole(c);
    c.images_per_group = 1;
    RPNHead grouped(c);
    Generator g(0);
    LossList lg = grouped.loss(outs(0, 3), gts, geo, g);
    double ref_cls = 0, ref_bbox = 0;
    for (int64_t n = 0; n < 3; ++n) {
      LossList li = whole.loss(outs(n, n + 1), {gts[n]}, {geo[n]}, g);
      ref_cls += li[0].second.item() / 3, ref_bbox += li[1].second.item() / 3;
    }
    CHECK(ref_bbox > 0);
    CHECK(lg[0].second.item() == doctest::Approx(ref_cls).epsilon(1e-5));
    CHECK(lg[1].second.item() == doctest::Approx(ref_bbox).epsilon(1e-5));
    LossList lw = whole.loss(outs(0, 3), gts, geo, g);  // one group: differs (global avg_factor)
    CHECK(std::abs(lw[0].second.item() - lg[0].second.item()) > 1e-4);
  }
  // the normalisers themselves: groups of 2 over 3 images -> groups {0, 1} and {2}
  auto w = group_norms({3, 5, 7}, 2, 0.0);
  CHECK(w[0] == doctest::Approx(1.0 / (2 * 8)));
  CHECK(w[1] == doctest::Approx(1.0 / (2 * 8)));
  CHECK(w[2] == doctest::Approx(1.0 / (2 * 7)));
  auto one = group_norms({3, 5, 7}, 0, 0.0);
  CHECK(one[2] == doctest::Approx(1.0 / 15));
}
