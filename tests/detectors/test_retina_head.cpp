// RetinaHead / RetinaNet: mmdet key names, init, parity with a PyTorch replica of mmdet's RetinaHead
// (outputs, losses, parameter gradients, detections), loss gradcheck, and a tiny end-to-end training run.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>

#include "detectors/results.h"
#include "detectors/retinanet.h"
#include "engine/ops/reduce.h"
#include "engine/optim.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {
RetinaHeadConfig tiny_head_cfg() {
  RetinaHeadConfig c;
  c.num_classes = 4;
  c.in_channels = 8;
  c.feat_channels = 8;
  c.stacked_convs = 2;
  return c;
}

bool has_key(const std::vector<std::string>& keys, const std::string& k) {
  return std::find(keys.begin(), keys.end(), k) != keys.end();
}
}  // namespace

TEST_CASE("det retina head: mmdet keys, init and parameter counts") {
  RetinaHead h(tiny_head_cfg());
  auto keys = h.state_dict_keys();
  const std::vector<std::string> expect = {"cls_convs.0.conv.weight", "cls_convs.0.conv.bias", "cls_convs.1.conv.weight",
                                           "cls_convs.1.conv.bias",   "reg_convs.0.conv.weight", "reg_convs.0.conv.bias",
                                           "reg_convs.1.conv.weight", "reg_convs.1.conv.bias",   "retina_cls.weight",
                                           "retina_cls.bias",         "retina_reg.weight",       "retina_reg.bias"};
  CHECK(keys == expect);
  CHECK(h.find_parameter("retina_cls.weight")->shape() == Shape{36, 8, 3, 3});
  CHECK(h.find_parameter("retina_reg.weight")->shape() == Shape{36, 8, 3, 3});
  Generator g(0);
  h.init_weights(g);
  auto b = h.find_parameter("retina_cls.bias")->data().to_vector<float>();
  CHECK(b[0] == doctest::Approx(-4.59512).epsilon(1e-5));
  auto w = h.find_parameter("cls_convs.0.conv.weight")->data().to_vector<float>();
  double s2 = 0;
  for (float v : w) s2 += double(v) * v;
  CHECK(std::sqrt(s2 / w.size()) == doctest::Approx(0.01).epsilon(0.15));
  CHECK(h.find_parameter("reg_convs.1.conv.bias")->data().to_vector<float>()[3] == 0.0f);

  // GN head (RetinaNet-v2 style): conv without bias + gn
  RetinaHeadConfig gc = tiny_head_cfg();
  gc.norm = NormCfg::gn(4);
  RetinaHead hg(gc);
  auto kg = hg.state_dict_keys();
  CHECK(has_key(kg, "cls_convs.0.gn.weight"));
  CHECK(has_key(kg, "reg_convs.1.gn.bias"));
  CHECK_FALSE(has_key(kg, "cls_convs.0.conv.bias"));
  CHECK(has_key(kg, "retina_cls.bias"));
  hg.init_weights(g);
  CHECK(hg.find_parameter("cls_convs.0.gn.weight")->data().to_vector<float>()[0] == 1.0f);

  // full-size models: parameter counts from specs/detectors.md 14
  RetinaNet r50(RetinaNetConfig::mmdet(50));
  CHECK(r50.num_parameters() == 37968692);
  auto k50 = r50.state_dict_keys();
  CHECK(has_key(k50, "bbox_head.cls_convs.3.conv.weight"));
  CHECK(has_key(k50, "bbox_head.retina_cls.bias"));
  CHECK(has_key(k50, "neck.fpn_convs.4.conv.weight"));
  CHECK(has_key(k50, "backbone.layer4.2.bn3.running_var"));
  CHECK(r50.find_parameter("bbox_head.retina_cls.weight")->shape() == Shape{720, 256, 3, 3});
  RetinaNet r18(RetinaNetConfig::mmdet(18));
  CHECK(std::abs(r18.num_parameters() - 21.410e6) < 0.0006e6);
  CHECK(std::abs(r18.num_parameters(true) - 21.253e6) < 0.0006e6);
}

TEST_CASE("det retina head: parity with the mmdet replica (outputs, losses, gradients, detections)") {
  auto f = load_fixture("det_retina_head");
  if (!f) return;
  RetinaHead h(tiny_head_cfg());
  TensorMap sd;
  for (auto& [k, v] : f->tensors)
    if (k.rfind("head.", 0) == 0) sd[k.substr(5)] = v;
  h.load_state_dict(sd);
  std::vector<Var> feats;
  for (int l = 0; l < 5; ++l) feats.emplace_back(f->at("feat" + std::to_string(l)));
  RetinaHeadOutputs out = h.forward(feats);
  REQUIRE(out.num_levels() == 5);
  for (int l = 0; l < 5; ++l) {
    check_close(out.cls_scores[l].data(), f->at("cls" + std::to_string(l)), 1e-4, 1e-5, "cls level " + std::to_string(l));
    check_close(out.bbox_preds[l].data(), f->at("reg" + std::to_string(l)), 1e-4, 1e-5, "reg level " + std::to_string(l));
  }
  std::vector<GtInstances> gts;
  for (int n = 0; n < 2; ++n) gts.push_back({f->at("gt_boxes" + std::to_string(n)), f->at("gt_labels" + std::to_string(n)), {}});
  std::vector<ImageGeometry> geo(2);
  geo[0].img_h = 64, geo[0].img_w = 90, geo[0].pad_h = 64, geo[0].pad_w = 96;
  geo[1].img_h = 40, geo[1].img_w = 60, geo[1].pad_h = 64, geo[1].pad_w = 64;
  geo[0].scale_factor = geo[1].scale_factor = {1.5, 1.6, 1.5, 1.6};
  LossList l = h.loss(out, gts, geo);
  REQUIRE(l.size() == 2);
  CHECK(l[0].first == "loss_cls");
  CHECK(l[1].first == "loss_bbox");
  check_close(l[0].second.data(), f->at("loss_cls"), 1e-4, 0, "loss_cls");
  check_close(l[1].second.data(), f->at("loss_bbox"), 1e-4, 0, "loss_bbox");
  total_loss(l).backward();
  for (auto& [name, p] : h.named_parameters()) {
    Tensor ref = f->at("grad." + name);
    double scale = 0;
    for (double v : ref.to_vector<double>()) scale = std::max(scale, std::abs(v));
    check_close(p.grad(), ref, 1e-3, 1e-4 * scale, "grad " + name);
  }
  // GIoU variant (reg_decoded_bbox)
  RetinaHeadConfig gc = tiny_head_cfg();
  gc.reg_loss = RetinaHeadConfig::RegLoss::GIoU;
  RetinaHead hg(gc);
  hg.load_state_dict(sd);
  RetinaHeadOutputs og = hg.forward(feats);
  LossList lg = hg.loss(og, gts, geo);
  check_close(lg[0].second.data(), f->at("giou_loss_cls"), 1e-4, 0, "giou loss_cls");
  check_close(lg[1].second.data(), f->at("giou_loss_bbox"), 1e-4, 0, "giou loss_bbox");
  lg[1].second.backward();
  check_close(hg.find_parameter("retina_reg.weight")->grad(), f->at("giou_grad.retina_reg.weight"), 1e-3, 1e-6,
              "giou grad retina_reg.weight");
  check_close(hg.find_parameter("retina_reg.bias")->grad(), f->at("giou_grad.retina_reg.bias"), 1e-3, 1e-6,
              "giou grad retina_reg.bias");
  // detections (mmdet >= 2.18 inference, rescaled by (1.5, 1.6))
  NoGradGuard ng;
  auto dets = h.predict(h.forward(feats), geo);
  REQUIRE(dets.size() == 2);
  for (int n = 0; n < 2; ++n) {
    const std::string s = std::to_string(n);
    REQUIRE(dets[n].size() == f->at("det_boxes" + s).size(0));
    check_close(dets[n].boxes, f->at("det_boxes" + s), 1e-4, 1e-4, "det boxes " + s);
    check_close(dets[n].scores, f->at("det_scores" + s), 1e-4, 1e-6, "det scores " + s);
    auto a = dets[n].labels.to_vector<int64_t>(), b = f->at("det_labels" + s).to_vector<int64_t>();
    CHECK(a == b);
  }
}

TEST_CASE("det retina head: loss gradcheck w.r.t. cls / reg maps (f64, L1 and GIoU)") {
  RetinaHeadConfig c = tiny_head_cfg();
  c.anchors.strides = {8, 16};
  std::vector<GtInstances> gts = {{Tensor::from_vector<float>({4, 5, 30, 22, 10, 2, 20, 30}, {2, 4}),
                                   Tensor::from_vector<int64_t>({1, 3}), {}}};
  std::vector<ImageGeometry> geo(1);
  geo[0].img_h = 32, geo[0].img_w = 32;
  for (auto rl : {RetinaHeadConfig::RegLoss::L1, RetinaHeadConfig::RegLoss::GIoU}) {
    c.reg_loss = rl;
    RetinaHead h(c);
    auto fn = [&](const std::vector<Var>& v) {
      RetinaHeadOutputs o;
      o.cls_scores = {v[0], v[1]};
      o.bbox_preds = {v[2], v[3]};
      return total_loss(h.loss(o, gts, geo));
    };
    CHECK(gradcheck(fn, {rnd({1, 36, 4, 4}, 1, -3, 1), rnd({1, 36, 2, 2}, 2, -3, 1), rnd({1, 36, 4, 4}, 3, -0.5, 0.5),
                         rnd({1, 36, 2, 2}, 4, -0.5, 0.5)}));
  }
}

namespace {
// Synthetic 64x64 batch: bright rectangles on a dark background, class = rectangle colour channel.
data::Batch synthetic_batch(uint64_t seed, int n, bool empty_gt = false) {
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
    if (!empty_gt) {
      for (int k = 0; k < 2; ++k) {
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
    }
    b.gts.push_back(anns);
  }
  return b;
}
}  // namespace

TEST_CASE("det retinanet: tiny RetinaNet trains on a fixed batch; empty GT; predict") {
  RetinaNetConfig cfg = RetinaNetConfig::small(18, 8, 16, 1, 3);
  cfg.backbone.frozen_stages = -1;
  RetinaNet model(cfg);
  Generator g(42);
  model.init_weights(g);
  model.train();
  auto keys = model.state_dict_keys();
  CHECK(has_key(keys, "bbox_head.cls_convs.0.conv.weight"));
  CHECK(has_key(keys, "bbox_head.retina_reg.bias"));

  data::Batch batch = synthetic_batch(7, 2);
  SGD opt(model.named_parameters("", true), 0.01, 0.9, 1e-4);
  std::vector<double> losses;
  for (int it = 0; it < 20; ++it) {
    RetinaNetTaps taps;
    LossList l = model.loss(batch, &taps);
    if (it == 0) {
      CHECK(taps.neck.size() == 5);
      CHECK(taps.head.cls_scores.size() == 5);
      CHECK(taps.head.cls_scores[0].shape() == Shape{2, 27, 8, 8});
      CHECK(taps.head.bbox_preds[4].shape() == Shape{2, 36, 1, 1});
      auto named = taps.named();
      CHECK(named.size() == 4 + 5 + 5 + 4 * 5);
      CHECK(named.at("neck.fpn_convs.2.conv").shape() == Shape{2, 16, 2, 2});
      CHECK(named.at("neck.fpn_convs.3.conv").shape() == Shape{2, 16, 1, 1});
      CHECK(named.at("backbone.layer4").shape() == Shape{2, 64, 2, 2});
      CHECK(named.at("bbox_head.retina_cls.0").shape() == Shape{2, 27, 8, 8});
      CHECK(named.at("bbox_head.cls_feat.2").shape() == Shape{2, 16, 2, 2});
      CHECK(l[1].second.item() > 0);
    }
    Var total = total_loss(l);
    losses.push_back(total.item());
    opt.zero_grad();
    total.backward();
    opt.step();
  }
  MESSAGE("tiny RetinaNet loss: " << losses.front() << " -> " << losses.back());
  for (double v : losses) REQUIRE(std::isfinite(v));
  CHECK(losses.back() < 0.7 * losses.front());

  data::Batch empty = synthetic_batch(8, 2, true);
  LossList le = model.loss(empty);
  CHECK(le[0].second.item() > 0);
  CHECK(le[1].second.item() == 0.0);
  total_loss(le).backward();  // graph is connected (zero bbox gradient)

  model.eval();
  auto dets = model.predict(batch);
  REQUIRE(dets.size() == 2);
  for (auto& d : dets) {
    CHECK(d.size() <= 100);
    auto s = d.scores.to_vector<float>();
    CHECK(std::is_sorted(s.rbegin(), s.rend()));
    for (float v : d.boxes.to_vector<float>()) CHECK((v >= 0 && v <= 64));
  }
}

TEST_CASE("det retinanet: end-to-end parity with the mmdet replica (features, losses, gradients, detections)") {
  auto f = load_fixture("det_retinanet");
  if (!f) return;
  RetinaNetConfig cfg = RetinaNetConfig::small(18, 8, 16, 1, 3);
  RetinaNet model(cfg);
  TensorMap sd;
  for (auto& [k, v] : f->tensors)
    if (k.rfind("model.", 0) == 0) sd[k.substr(6)] = v;
  model.load_state_dict(sd);  // strict: every mmdet key present, nothing extra
  model.train();              // frozen stage 1 + norm_eval, as mmdet training
  data::Batch b;
  b.images = f->at("images");
  const int ih[2] = {64, 48}, iw[2] = {90, 60}, ph[2] = {64, 64}, pw[2] = {96, 64};
  const float boxes[2][2][4] = {{{5, 6, 40, 30}, {50, 10, 88, 60}}, {{10, 4, 50, 38}, {30, 30, 44, 46}}};
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
  RetinaNetTaps taps;
  LossList l = model.loss(b, &taps);
  for (int i = 0; i < 4; ++i)
    check_close(taps.backbone[i].data(), f->at(std::string("c") + std::to_string(i)), 1e-4, 1e-5, std::string("C") + std::to_string(i + 2));
  for (int i = 0; i < 5; ++i) {
    const std::string s = std::to_string(i);
    check_close(taps.neck[i].data(), f->at("p" + s), 1e-4, 1e-5, std::string("P") + std::to_string(i + 3));
    check_close(taps.head.cls_scores[i].data(), f->at("cls" + s), 1e-4, 1e-5, "cls " + s);
    check_close(taps.head.bbox_preds[i].data(), f->at("reg" + s), 1e-4, 1e-5, "reg " + s);
  }
  check_close(l[0].second.data(), f->at("loss_cls"), 1e-4, 0, "loss_cls");
  check_close(l[1].second.data(), f->at("loss_bbox"), 1e-4, 0, "loss_bbox");
  total_loss(l).backward();
  for (auto& [k, ref] : f->tensors) {
    if (k.rfind("grad.", 0) != 0) continue;
    const std::string name = k.substr(5);
    Var* p = model.find_parameter(name);
    REQUIRE_MESSAGE(p != nullptr, name);
    double scale = 0;
    for (double v : ref.to_vector<double>()) scale = std::max(scale, std::abs(v));
    check_close(p->grad(), ref, 1e-3, 1e-4 * scale, "grad " + name);
  }
  CHECK_FALSE(model.find_parameter("backbone.layer1.0.conv1.weight")->grad().defined());  // frozen stage 1
  model.eval();
  auto dets = model.predict(b);
  for (int n = 0; n < 2; ++n) {
    const std::string s = std::to_string(n);
    REQUIRE(dets[n].size() == f->at("det_boxes" + s).size(0));
    check_close(dets[n].boxes, f->at("det_boxes" + s), 1e-4, 1e-4, "det boxes " + s);
    check_close(dets[n].scores, f->at("det_scores" + s), 1e-4, 1e-6, "det scores " + s);
    CHECK(dets[n].labels.to_vector<int64_t>() == f->at("det_labels" + s).to_vector<int64_t>());
  }
}

TEST_CASE("det retinanet: full-size R50 state-dict keys and shapes equal mmdet's") {
  auto f = load_fixture("det_retinanet_r50_keys");
  if (!f) return;
  auto ref = nlohmann::json::parse(f->metadata.at("keys"));
  RetinaNet model(RetinaNetConfig::mmdet(50));
  TensorMap sd = model.state_dict();
  std::vector<std::string> missing, extra, bad;
  for (auto& [k, shape] : ref.items()) {
    auto it = sd.find(k);
    if (it == sd.end()) {
      missing.push_back(k);
      continue;
    }
    if (Shape(shape.get<std::vector<int64_t>>()) != it->second.shape()) bad.push_back(k);
  }
  for (auto& [k, v] : sd)
    if (!ref.contains(k)) extra.push_back(k);
  CHECK_MESSAGE(missing.empty(), "missing " << missing.size() << (missing.empty() ? "" : ": " + missing[0]));
  CHECK_MESSAGE(extra.empty(), "extra " << extra.size() << (extra.empty() ? "" : ": " + extra[0]));
  CHECK_MESSAGE(bad.empty(), "mis-shaped " << bad.size() << (bad.empty() ? "" : ": " + bad[0]));
  CHECK(sd.size() == ref.size());
}

TEST_CASE("det retinanet: config from a flat config section") {
  Config c = Config::parse(
      "[model]\ndepth = 18\nbase_channels = 8\nneck_channels = 16\nstacked_convs = 2\nnum_classes = 5\n"
      "reg_loss = giou\ntest_max_per_img = 30\n");
  RetinaNetConfig r = RetinaNetConfig::from_config(c);
  c.check_all_used();
  CHECK(r.neck.in_channels == std::vector<int64_t>{8, 16, 32, 64});
  CHECK(r.head.in_channels == 16);
  CHECK(r.head.feat_channels == 16);
  CHECK(r.head.num_classes == 5);
  CHECK(r.head.reg_loss == RetinaHeadConfig::RegLoss::GIoU);
  CHECK(r.head.test.max_per_img == 30);
  RetinaNet m(r);
  CHECK(m.find_parameter("bbox_head.retina_cls.weight")->shape() == Shape{45, 16, 3, 3});
  CHECK(m.find_parameter("bbox_head.cls_convs.1.conv.weight") != nullptr);
  Config bad = Config::parse("[model]\nreg_loss = smooth\n");
  CHECK_THROWS_WITH_AS(RetinaNetConfig::from_config(bad), doctest::Contains("reg_loss"), Error);
}

TEST_CASE("det retinanet: save / load round trip gives identical detections; COCO results") {
  RetinaNetConfig cfg = RetinaNetConfig::small(18, 8, 16, 1, 3);
  cfg.head.test.score_thr = 0.0;  // keep detections from an untrained model
  RetinaNet a(cfg), b(cfg);
  Generator g(3);
  a.init_weights(g);
  a.eval();
  b.eval();
  const std::string path = "/tmp/kdet_det_roundtrip_" + std::to_string(::getpid()) + ".safetensors";
  a.save(path);
  b.load(path);
  std::remove(path.c_str());
  data::Batch batch = synthetic_batch(9, 2);
  for (auto& m : batch.metas) m.scale_w = 0.5f, m.scale_h = 0.5f, m.image_id = 7;
  auto da = a.predict(batch), db = b.predict(batch);
  REQUIRE(da.size() == 2);
  REQUIRE(da[0].size() > 0);
  check_close(da[0].boxes, db[0].boxes, 0, 0, "boxes after reload");
  check_close(da[1].scores, db[1].scores, 0, 0, "scores after reload");
  // rescale: original image is 128x128 (scale 0.5)
  float mx = 0;
  for (float v : da[0].boxes.to_vector<float>()) mx = std::max(mx, v);
  CHECK(mx > 64.0f);
  CHECK(mx <= 128.0f);
  data::Dataset ds;
  for (int k = 0; k < 3; ++k) ds.categories.push_back({10 + k, std::string("c") + std::to_string(k), ""});
  ds.reindex();
  auto res = to_coco_results(ds, batch, da);
  CHECK(res.size() == static_cast<size_t>(da[0].size() + da[1].size()));
  auto lab = da[0].labels.to_vector<int64_t>();
  auto box = da[0].boxes.to_vector<float>();
  CHECK(res[0].image_id == 7);
  CHECK(res[0].category_id == 10 + lab[0]);
  CHECK(res[0].bbox[2] == doctest::Approx(double(box[2]) - double(box[0])));
}

TEST_CASE("det retina head: images_per_group normalises per group and averages (mmdet per-GPU)") {
  RetinaHeadConfig c = tiny_head_cfg();
  c.anchors.strides = {8, 16};
  std::vector<GtInstances> gts = {
      {Tensor::from_vector<float>({4, 5, 30, 22, 10, 2, 20, 30, 1, 1, 9, 9}, {3, 4}), Tensor::from_vector<int64_t>({1, 3, 0}), {}},
      {Tensor::from_vector<float>({2, 2, 28, 30}, {1, 4}), Tensor::from_vector<int64_t>({2}), {}},
      {Tensor::zeros({0, 4}), Tensor::zeros({0}, DType::I64), {}}};
  std::vector<ImageGeometry> geo(3);
  for (auto& g : geo) g.img_h = g.img_w = 32;
  Tensor c0 = rnd({3, 36, 4, 4}, 1, -3, 1).to(DType::F32), c1 = rnd({3, 36, 2, 2}, 2, -3, 1).to(DType::F32);
  Tensor r0 = rnd({3, 36, 4, 4}, 3, -.5, .5).to(DType::F32), r1 = rnd({3, 36, 2, 2}, 4, -.5, .5).to(DType::F32);
  for (auto rl : {RetinaHeadConfig::RegLoss::L1, RetinaHeadConfig::RegLoss::GIoU}) {
    c.reg_loss = rl;
    RetinaHead whole(c);
    c.images_per_group = 1;
    RetinaHead grouped(c);
    c.images_per_group = 0;
    auto outs = [&](int64_t a, int64_t b) {
      RetinaHeadOutputs o;
      o.cls_scores = {Var(c0.slice(0, a, b).contiguous()), Var(c1.slice(0, a, b).contiguous())};
      o.bbox_preds = {Var(r0.slice(0, a, b).contiguous()), Var(r1.slice(0, a, b).contiguous())};
      return o;
    };
    LossList lg = grouped.loss(outs(0, 3), gts, geo);
    double ref_cls = 0, ref_bbox = 0;
    for (int64_t n = 0; n < 3; ++n) {
      LossList li = whole.loss(outs(n, n + 1), {gts[n]}, {geo[n]});
      ref_cls += li[0].second.item() / 3, ref_bbox += li[1].second.item() / 3;
    }
    CHECK(lg[0].second.item() == doctest::Approx(ref_cls).epsilon(1e-5));
    CHECK(lg[1].second.item() == doctest::Approx(ref_bbox).epsilon(1e-5));
    LossList lw = whole.loss(outs(0, 3), gts, geo);  // one group: differs (global avg_factor)
    CHECK(std::abs(lw[0].second.item() - lg[0].second.item()) > 1e-4);
  }
}
