// Non-learned detection logic: anchors, IoU, box coder, MaxIoU assigner, NMS, dense post-processing.
// Parity fixtures come from tests/ref/gen_detectors.py (replicas of mmdet 2.25 code, torchvision NMS).
#include <doctest/doctest.h>

#include <cmath>

#include "detectors/anchors.h"
#include "detectors/assigner.h"
#include "detectors/box_coder.h"
#include "detectors/iou.h"
#include "detectors/nms.h"
#include "detectors/postprocess.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {
void check_equal_i64(const Tensor& a, const Tensor& b, const std::string& what) {
  auto va = a.to_vector<int64_t>(), vb = b.to_vector<int64_t>();
  REQUIRE_MESSAGE(va.size() == vb.size(), what << ": " << va.size() << " vs " << vb.size() << " entries");
  for (size_t i = 0; i < va.size(); ++i)
    if (va[i] != vb[i]) {
      FAIL_CHECK(what << ": entry " << i << " is " << va[i] << ", expected " << vb[i]);
      return;
    }
}
}  // namespace

TEST_CASE("det anchors: RetinaNet base anchors match the spec table and mmdet") {
  AnchorGenerator gen(AnchorGeneratorConfig::retinanet());
  CHECK(gen.num_base_anchors() == 9);
  CHECK(gen.num_levels() == 5);
  auto b = gen.base_anchors(0).to_vector<float>();
  // specs/detectors.md 4.3, stride 8, index order (ratio outer, scale inner)
  const double spec[9][4] = {{-22.6274, -11.3137, 22.6274, 11.3137}, {-28.5088, -14.2544, 28.5088, 14.2544},
                             {-35.9188, -17.9594, 35.9188, 17.9594}, {-16, -16, 16, 16},
                             {-20.1587, -20.1587, 20.1587, 20.1587}, {-25.3984, -25.3984, 25.3984, 25.3984},
                             {-11.3137, -22.6274, 11.3137, 22.6274}, {-14.2544, -28.5088, 14.2544, 28.5088},
                             {-17.9594, -35.9188, 17.9594, 35.9188}};
  for (int a = 0; a < 9; ++a)
    for (int k = 0; k < 4; ++k) CHECK(b[a * 4 + k] == doctest::Approx(spec[a][k]).epsilon(1e-5));
  // anchor counts for 800x1216 (spec): 182,403
  int64_t total = 0;
  const int64_t hs[5] = {100, 50, 25, 13, 7}, ws[5] = {152, 76, 38, 19, 10};
  for (int l = 0; l < 5; ++l) total += gen.grid_anchors(l, hs[l], ws[l]).size(0);
  CHECK(total == 182403);

  auto f = load_fixture("det_anchors");
  if (!f) return;
  const int64_t fh[5] = {13, 7, 4, 2, 1}, fw[5] = {19, 10, 5, 3, 2};
  for (int l = 0; l < 5; ++l) {
    check_close(gen.base_anchors(l), f->at("base" + std::to_string(l)), 0, 0, "base anchors");
    check_close(gen.grid_anchors(l, fh[l], fw[l]), f->at("grid" + std::to_string(l)), 0, 0, "grid anchors");
    Tensor v = gen.valid_flags(l, fh[l], fw[l], 90, 130);
    check_close(v.to(DType::F32), f->at("valid" + std::to_string(l)).to(DType::F32), 0, 0, "valid flags");
  }
  AnchorGenerator rpn(AnchorGeneratorConfig::rpn());
  check_close(rpn.base_anchors(0), f->at("rpn_base0"), 0, 0, "rpn base anchors");
  AnchorGeneratorConfig mc;
  mc.strides = {8};
  mc.scales = {1.0, 2.0};
  mc.center_offset = 0.5;
  mc.scale_major = false;
  check_close(AnchorGenerator(mc).base_anchors(0), f->at("minor_base0"), 0, 0, "scale-minor base anchors");
}

TEST_CASE("det iou: bbox_overlaps iou/iof/giou") {
  Tensor a = Tensor::from_vector<float>({0, 0, 10, 10, 5, 5, 15, 15}, {2, 4});
  Tensor b = Tensor::from_vector<float>({0, 0, 10, 10, 20, 20, 30, 30, 0, 0, 5, 5}, {3, 4});
  auto iou = bbox_overlaps(a, b).to_vector<float>();
  CHECK(iou[0] == 1.0f);
  CHECK(iou[1] == 0.0f);
  CHECK(iou[2] == doctest::Approx(0.25));
  CHECK(iou[3] == doctest::Approx(25.0 / 175.0));
  auto iof = bbox_overlaps(a, b, IouMode::IoF).to_vector<float>();
  CHECK(iof[2] == doctest::Approx(0.25));
  CHECK(bbox_overlaps(Tensor::zeros({0, 4}), b).shape() == Shape{0, 3});
  auto f = load_fixture("det_boxes");
  if (!f) return;
  check_close(bbox_overlaps(f->at("a"), f->at("b")), f->at("iou"), 0, 0, "iou");
  check_close(bbox_overlaps(f->at("a"), f->at("b"), IouMode::IoF), f->at("iof"), 0, 0, "iof");
  check_close(bbox_overlaps(f->at("a"), f->at("b"), IouMode::GIoU), f->at("giou"), 1e-6, 1e-7, "giou");
}

TEST_CASE("det box coder: encode/decode parity, clamp, clip, round trip") {
  DeltaXYWHBBoxCoder plain;
  DeltaXYWHBBoxCoder ms;
  ms.means = {0.01, -0.02, 0.03, 0.0};
  ms.stds = {0.1, 0.1, 0.2, 0.2};
  Tensor p = Tensor::from_vector<float>({0, 0, 10, 20, 5, 5, 25, 15}, {2, 4});
  Tensor g = Tensor::from_vector<float>({1, 2, 12, 18, 0, 0, 40, 10}, {2, 4});
  check_close(plain.decode(p, plain.encode(p, g)), g, 1e-5, 1e-4, "round trip");
  check_close(ms.decode(p, ms.encode(p, g)), g, 1e-5, 1e-4, "round trip means/stds");
  // wh clamp: dw = 10 -> exp(4.135) * pw = 62.5 * pw
  Tensor d = Tensor::from_vector<float>({0, 0, 10, -10}, {1, 4});
  auto o = plain.decode(p.slice(0, 0, 1), d).to_vector<float>();
  CHECK(o[2] - o[0] == doctest::Approx(10 * 62.5).epsilon(1e-5));
  CHECK(o[3] - o[1] == doctest::Approx(20 / 62.5).epsilon(1e-5));
  auto oc = plain.decode(p.slice(0, 0, 1), d, std::make_pair<int64_t, int64_t>(30, 40)).to_vector<float>();
  CHECK(oc[0] == 0.0f);
  CHECK(oc[2] == 40.0f);
  auto f = load_fixture("det_boxes");
  if (!f) return;
  check_close(plain.encode(f->at("p"), f->at("gt")), f->at("enc"), 1e-6, 1e-6, "encode");
  check_close(ms.encode(f->at("p"), f->at("gt")), f->at("enc_ms"), 1e-6, 1e-5, "encode means/stds");
  check_close(plain.decode(f->at("p"), f->at("d")), f->at("dec"), 1e-6, 1e-4, "decode (2 classes)");
  check_close(ms.decode(f->at("p"), f->at("d"), std::make_pair<int64_t, int64_t>(90, 120)), f->at("dec_ms_clip"),
              1e-6, 1e-4, "decode means/stds clipped");
}

TEST_CASE("det box coder: decode_var gradcheck and value") {
  DeltaXYWHBBoxCoder ms;
  ms.means = {0.01, -0.02, 0.03, 0.0};
  ms.stds = {0.1, 0.1, 0.2, 0.2};
  Tensor pri = Tensor::from_vector<double>({0, 0, 10, 20, 5, 5, 25, 15, -3, 4, 9, 30}, {3, 4});
  Tensor d = rnd({3, 4}, 7, -2, 2);
  CHECK(gradcheck([&](const std::vector<Var>& v) { return ms.decode_var(pri, v[0]); }, {d}));
  Tensor df = d.to(DType::F32);
  check_close(ms.decode_var(pri.to(DType::F32), Var(df)).data(), ms.decode(pri, df), 1e-6, 1e-5, "decode_var");
}

TEST_CASE("det assigner: MaxIoUAssigner parity (retina, rpn, single, tuple, noLQ, ignore, ties)") {
  MaxIoUAssigner r = MaxIoUAssigner::retinanet();
  {  // no gt: everything negative
    auto res = r.assign(Tensor::from_vector<float>({0, 0, 10, 10}, {1, 4}), Tensor::zeros({0, 4}));
    CHECK(res.gt_inds.to_vector<int64_t>()[0] == 0);
  }
  auto f = load_fixture("det_assigner");
  if (!f) return;
  const Tensor& an = f->at("anchors");
  const Tensor& gt = f->at("gt");
  const Tensor& lab = f->at("labels");
  struct Case {
    std::string name;
    MaxIoUAssigner a;
    bool ignore = false;
  };
  MaxIoUAssigner single = r, tuple = r, nolq = r, ign = r;
  single.gt_max_assign_all = false;
  tuple.neg_iou_lo = 0.1, tuple.neg_iou_hi = 0.4;
  nolq.match_low_quality = false;
  ign.ignore_iof_thr = 0.5;
  std::vector<Case> cases = {{"retina", r},  {"rpn", MaxIoUAssigner::rpn()}, {"single", single},
                             {"tuple", tuple}, {"noLQ", nolq},           {"ignore", ign, true}};
  for (auto& c : cases) {
    auto res = c.a.assign(an, gt, lab, c.ignore ? f->at("ignore") : Tensor());
    check_equal_i64(res.gt_inds, f->at(c.name + "_inds"), c.name + " gt_inds");
    check_close(res.max_overlaps, f->at(c.name + "_max"), 0, 0, c.name + " max_overlaps");
    check_equal_i64(res.labels, f->at(c.name + "_labels"), c.name + " labels");
  }
  auto rt = r.assign(f->at("tie_priors"), f->at("tie_gt"), Tensor::from_vector<int64_t>({0, 1, 2}));
  check_equal_i64(rt.gt_inds, f->at("tie_inds"), "tie gt_inds");
  check_equal_i64(rt.labels, f->at("tie_labels"), "tie labels");
  auto s = pseudo_sample(rt);
  auto inds = rt.gt_inds.to_vector<int64_t>();
  int64_t npos = 0, nneg = 0;
  for (auto v : inds) npos += v > 0, nneg += v == 0;
  CHECK(static_cast<int64_t>(s.pos_inds.size()) == npos);
  CHECK(static_cast<int64_t>(s.neg_inds.size()) == nneg);
  CHECK(npos > 0);
}

TEST_CASE("det nms: nms / batched_nms parity with torchvision and mmdet, including ties") {
  {  // hand case: strictly-greater threshold and tie order (lower index first)
    Tensor b = Tensor::from_vector<float>({0, 0, 10, 10, 0, 0, 10, 10, 0, 5, 10, 15, 50, 50, 60, 60}, {4, 4});
    Tensor s = Tensor::from_vector<float>({0.9f, 0.9f, 0.8f, 0.1f});
    check_equal_i64(nms(b, s, 0.5), Tensor::from_vector<int64_t>({0, 2, 3}), "hand nms");
    // IoU of box 0 and 2 = 50/150 = 1/3: threshold exactly at 1/3 keeps it
    check_equal_i64(nms(b, s, 0.2), Tensor::from_vector<int64_t>({0, 3}), "hand nms 0.2");
    Tensor ids = Tensor::from_vector<int64_t>({0, 1, 0, 0});
    check_equal_i64(batched_nms(b, s, ids, 0.5).keep, Tensor::from_vector<int64_t>({0, 1, 2, 3}), "hand batched");
  }
  auto f = load_fixture("det_nms");
  if (!f) return;
  const Tensor &b = f->at("boxes"), &s = f->at("scores"), &id = f->at("idxs");
  check_equal_i64(nms(b, s, 0.5), f->at("nms05"), "nms 0.5");
  check_equal_i64(nms(b, s, 0.7), f->at("nms07"), "nms 0.7");
  auto r = batched_nms(b, s, id, 0.5);
  check_equal_i64(r.keep, f->at("bnms05"), "batched_nms vs torchvision");
  check_equal_i64(r.keep, f->at("bnms05_mmdet"), "batched_nms vs mmdet");
  check_equal_i64(batched_nms(b, s, id, 0.5, true).keep, f->at("bnms05_agn"), "class agnostic");
  auto big = batched_nms(f->at("big_boxes"), f->at("big_scores"), f->at("big_idxs"), 0.5);
  check_equal_i64(big.keep, f->at("big_bnms"), "batched_nms per-class path (12000 boxes)");
}

TEST_CASE("det postprocess: RetinaNet dense inference parity (mmdet 2.18+ and legacy 2.11)") {
  auto f = load_fixture("det_postprocess");
  if (!f) return;
  std::vector<Tensor> cls, reg, pri;
  for (int l = 0; l < 5; ++l) {
    cls.push_back(f->at("cls" + std::to_string(l)));
    reg.push_back(f->at("reg" + std::to_string(l)));
    pri.push_back(f->at("priors" + std::to_string(l)));
  }
  ImageGeometry geo{120, 150, {1.25, 1.2, 1.25, 1.2}};
  DenseTestConfig cfg;
  cfg.nms_pre = 200;
  cfg.max_per_img = 60;
  DeltaXYWHBBoxCoder coder;
  Detections d = dense_postprocess(cls, reg, pri, 6, coder, geo, cfg);
  REQUIRE(d.size() == f->at("boxes").size(0));
  check_close(d.boxes, f->at("boxes"), 1e-5, 1e-4, "boxes");
  check_close(d.scores, f->at("scores"), 1e-5, 1e-6, "scores");
  check_equal_i64(d.labels, f->at("labels"), "labels");
  cfg.legacy = true;
  Detections dl = dense_postprocess(cls, reg, pri, 6, coder, geo, cfg);
  REQUIRE(dl.size() == f->at("lboxes").size(0));
  check_close(dl.boxes, f->at("lboxes"), 1e-5, 1e-4, "legacy boxes");
  check_close(dl.scores, f->at("lscores"), 1e-5, 1e-6, "legacy scores");
  check_equal_i64(dl.labels, f->at("llabels"), "legacy labels");
}
