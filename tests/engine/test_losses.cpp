#include <doctest/doctest.h>

#include <cmath>

#include "engine/ops/losses.h"
#include "engine/random.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

using LossFn = std::function<Var(const Var&, const Tensor&)>;

// Compares loss(pred, target) and d(sum loss*gy)/dpred with the float64 PyTorch reference.
void loss_parity(const std::string& name, const std::string& pred_key, const LossFn& fn, double rtol32 = 2e-5,
                 double atol32 = 2e-5) {
  auto f = load_fixture(name);
  if (!f) return;
  for (DType dt : {DType::F64, DType::F32}) {
    INFO(name << " " << dtype_name(dt));
    Var x(f->at(pred_key).to(dt).clone(), true);
    const Tensor& t = f->at(f->tensors.count("labels") ? "labels" : "t");
    Var y = fn(x, t.dtype() == DType::I64 ? t : t.to(dt));
    y.backward(f->at("gy").to(dt));
    const double rt = dt == DType::F64 ? 1e-10 : rtol32, at = dt == DType::F64 ? 1e-12 : atol32;
    check_close(y.data(), f->at("y"), rt, at, name + " loss");
    check_close(x.grad(), f->at("gx"), rt, at, name + " grad");
  }
}

Tensor boxes(int64_t n, uint64_t seed) {
  Tensor xy = rnd({n, 2}, seed, 0.0, 20.0), wh = rnd({n, 2}, seed + 1, 1.0, 10.0);
  auto a = xy.to_vector<double>(), b = wh.to_vector<double>();
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.insert(v.end(), {a[2 * i], a[2 * i + 1], a[2 * i] + b[2 * i], a[2 * i + 1] + b[2 * i + 1]});
  return Tensor::from_vector(v, {n, 4});
}

}  // namespace

TEST_CASE("losses: gradcheck of every loss") {
  Tensor x = rnd({6, 5}, 1, -4.0, 4.0);
  Tensor soft = rnd({6, 5}, 2, 0.0, 1.0);
  std::vector<double> oh(30, 0.0);
  for (int i = 0; i < 6; ++i) oh[i * 5 + (i % 5)] = 1.0;
  Tensor hard = Tensor::from_vector(oh, {6, 5});
  for (const Tensor* t : {&soft, &hard}) {
    CHECK(gradcheck([&](const std::vector<Var>& v) { return sigmoid_focal_loss(v[0], *t); }, {x}));
    CHECK(gradcheck([&](const std::vector<Var>& v) { return sigmoid_focal_loss(v[0], *t, 1.5, 0.4); }, {x}));
    CHECK(gradcheck([&](const std::vector<Var>& v) { return sigmoid_focal_loss(v[0], *t, 0.0, -1.0); }, {x}));
    CHECK(gradcheck([&](const std::vector<Var>& v) { return binary_cross_entropy_with_logits(v[0], *t); }, {x}));
  }
  Tensor p = rnd({6, 5}, 3, 0.02, 0.98);
  CHECK(gradcheck([&](const std::vector<Var>& v) { return binary_cross_entropy(v[0], soft); }, {p}));
  // Smooth L1 / L1: keep |pred - target| away from beta and from 0.
  std::vector<double> dv;
  Tensor base = rnd({24}, 4, 0.05, 0.45);
  auto bv = base.to_vector<double>();
  for (int i = 0; i < 24; ++i) dv.push_back((i % 2 ? -1.0 : 1.0) * (i % 3 == 0 ? bv[i] + 0.6 : bv[i]));
  Tensor tgt = rnd({24}, 5);
  Tensor pred = Tensor::from_vector(dv, {24});
  auto tv = tgt.to_vector<double>();
  for (int i = 0; i < 24; ++i) dv[i] += tv[i];
  pred = Tensor::from_vector(dv, {6, 4});
  tgt = tgt.view({6, 4});
  for (double beta : {0.5, 1.0 / 9.0, 0.0}) {
    INFO("beta=" << beta);
    CHECK(gradcheck([&](const std::vector<Var>& v) { return smooth_l1_loss(v[0], tgt, beta); }, {pred}));
  }
  CHECK(gradcheck([&](const std::vector<Var>& v) { return l1_loss(v[0], tgt); }, {pred}));
  // Cross entropy with an ignored row.
  Tensor logits = rnd({5, 7}, 6, -3.0, 3.0);
  Tensor labels = Tensor::from_vector<int64_t>({3, 0, -100, 6, 2});
  CHECK(gradcheck([&](const std::vector<Var>& v) { return cross_entropy(v[0], labels); }, {logits}));
}

TEST_CASE("losses: GIoU / IoU gradcheck incl. disjoint and nested boxes") {
  Tensor t = boxes(8, 10);
  auto tv = t.to_vector<double>();
  std::vector<double> pv = tv;
  Tensor noise = rnd({8, 4}, 12, -1.5, 1.5);
  auto nv = noise.to_vector<double>();
  for (size_t i = 0; i < pv.size(); ++i) pv[i] += nv[i];
  // row 0: disjoint; row 1: target nested in prediction; row 2: prediction nested in target
  const double special_p[3][4] = {{0, 0, 2, 3}, {1, 1, 10, 12}, {3.2, 2.7, 5.1, 6.3}};
  const double special_t[3][4] = {{5, 6, 9, 8.5}, {3, 2.5, 6, 7}, {1, 1, 10, 12}};
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 4; ++k) {
      pv[r * 4 + k] = special_p[r][k];
      tv[r * 4 + k] = special_t[r][k];
    }
  Tensor pred = Tensor::from_vector(pv, {8, 4});
  t = Tensor::from_vector(tv, {8, 4});
  CHECK(gradcheck([&](const std::vector<Var>& v) { return giou_loss(v[0], t); }, {pred}));
  for (auto m : {IoULossMode::Linear, IoULossMode::Square, IoULossMode::Log}) {
    // IoU loss has zero gradient on disjoint boxes; skip row 0 for the log mode (iou clamped at eps)
    Tensor pp = pred.slice(0, 1, 8).clone(), tt = t.slice(0, 1, 8).clone();
    CHECK(gradcheck([&](const std::vector<Var>& v) { return iou_loss(v[0], tt, m); }, {pp}));
  }
  // Known values: disjoint boxes [0,0,2,3] vs [5,6,9,8.5]: IoU 0, enclose 9*8.5, union 6+10 -> loss 2 - 16/76.5
  auto l = giou_loss(Var(pred), t).data().to_vector<double>();
  CHECK(l[0] == doctest::Approx(2.0 - 16.0 / 76.5).epsilon(1e-12));
  // nested: IoU = inner/outer, enclose == union -> loss = 1 - 13.5/99
  CHECK(l[1] == doctest::Approx(1.0 - 13.5 / 99.0).epsilon(1e-12));
  auto same = giou_loss(Var(t), t).data().to_vector<double>();
  for (double v : same) CHECK(std::abs(v) < 1e-12);
}

TEST_CASE("losses: PyTorch parity (torchvision focal, mmdet GIoU/IoU, CE, BCE, smooth L1, L1)") {
  for (const char* n : {"loss_focal_hard", "loss_focal_soft", "loss_focal_g15", "loss_focal_noalpha"}) {
    auto f = load_fixture(n);
    if (!f) continue;
    const double gamma = std::stod(f->metadata.at("gamma")), alpha = std::stod(f->metadata.at("alpha"));
    loss_parity(n, "x", [&](const Var& x, const Tensor& t) { return sigmoid_focal_loss(x, t, gamma, alpha); });
  }
  loss_parity("loss_giou", "pred", [](const Var& x, const Tensor& t) { return giou_loss(x, t); }, 2e-5, 1e-4);
  loss_parity("loss_iou_linear", "pred", [](const Var& x, const Tensor& t) { return iou_loss(x, t, IoULossMode::Linear); },
              2e-5, 1e-4);
  loss_parity("loss_iou_square", "pred", [](const Var& x, const Tensor& t) { return iou_loss(x, t, IoULossMode::Square); },
              2e-5, 1e-4);
  loss_parity("loss_iou_log", "pred", [](const Var& x, const Tensor& t) { return iou_loss(x, t, IoULossMode::Log); },
              2e-5, 1e-4);
  loss_parity("loss_ce", "x", [](const Var& x, const Tensor& t) { return cross_entropy(x, t); });
  loss_parity("loss_bce_logits", "x", [](const Var& x, const Tensor& t) { return binary_cross_entropy_with_logits(x, t); });
  loss_parity("loss_bce", "x", [](const Var& x, const Tensor& t) { return binary_cross_entropy(x, t); });
  for (const char* n : {"loss_smooth_l1_1", "loss_smooth_l1_19", "loss_smooth_l1_011", "loss_smooth_l1_0"}) {
    auto f = load_fixture(n);
    if (!f) continue;
    const double beta = std::stod(f->metadata.at("beta"));
    loss_parity(n, "x", [&](const Var& x, const Tensor& t) { return smooth_l1_loss(x, t, beta); });
  }
  loss_parity("loss_l1", "x", [](const Var& x, const Tensor& t) { return l1_loss(x, t); });
}

TEST_CASE("losses: semantics, stability and errors") {
  // focal == alpha_t * BCE * (1 - p_t)^gamma at a hand-computed point
  Tensor x = Tensor::from_vector<double>({0.3, -1.2});
  Tensor t = Tensor::from_vector<double>({1.0, 0.0});
  auto fl = sigmoid_focal_loss(Var(x), t).data().to_vector<double>();
  const double p0 = 1 / (1 + std::exp(-0.3)), p1 = 1 / (1 + std::exp(1.2));
  CHECK(fl[0] == doctest::Approx(0.25 * -std::log(p0) * (1 - p0) * (1 - p0)).epsilon(1e-12));
  CHECK(fl[1] == doctest::Approx(0.75 * -std::log(1 - p1) * p1 * p1).epsilon(1e-12));
  // extreme logits stay finite in f32 (loss and gradient)
  Var xf(Tensor::from_vector<float>({-100.f, 100.f, -100.f, 100.f}), true);
  Tensor tf = Tensor::from_vector<float>({1.f, 0.f, 0.f, 1.f});
  for (auto* fn : {+[](const Var& a, const Tensor& b) { return sigmoid_focal_loss(a, b); },
                   +[](const Var& a, const Tensor& b) { return binary_cross_entropy_with_logits(a, b); }}) {
    xf.zero_grad();
    Var y = fn(xf, tf);
    y.backward(Tensor::ones({4}));
    auto yv = y.data().to_vector<float>(), gv = xf.grad().to_vector<float>();
    for (int i = 0; i < 4; ++i) {
      CHECK(std::isfinite(yv[i]));
      CHECK(std::isfinite(gv[i]));
    }
    CHECK(yv[0] > 20.f);       // confidently wrong
    CHECK(yv[2] < 1e-20f);     // confidently right
  }
  // BCE log clamp at -100 (like torch)
  auto b = binary_cross_entropy(Var(Tensor::from_vector<double>({0.0, 1.0})), Tensor::from_vector<double>({1.0, 0.0}));
  CHECK(b.data().to_vector<double>() == std::vector<double>{100.0, 100.0});
  // CE: ignored rows are exactly 0 and get zero gradient
  Var lg(rnd({3, 4}, 9), true);
  Var ce = cross_entropy(lg, Tensor::from_vector<int64_t>({1, 7, 2}), 7);
  CHECK(ce.data().to_vector<double>()[1] == 0.0);
  ce.backward(Tensor::ones({3}, DType::F64));
  auto gl = lg.grad().to_vector<double>();
  for (int c = 0; c < 4; ++c) CHECK(gl[4 + c] == 0.0);
  CHECK_THROWS_WITH_AS(cross_entropy(lg, Tensor::from_vector<int64_t>({1, 4, 2})),
                       doctest::Contains("cross_entropy: label 4 at row 1 out of range for 4 classes"), Error);
  CHECK_THROWS_WITH_AS(giou_loss(Var(Tensor::zeros({3, 5})), Tensor::zeros({3, 5})),
                       doctest::Contains("giou_loss: expected boxes [N, 4]"), Error);
  CHECK_THROWS_WITH_AS(smooth_l1_loss(Var(Tensor::zeros({3, 4})), Tensor::zeros({4, 3})),
                       doctest::Contains("smooth_l1_loss: prediction f32[3, 4]"), Error);
  CHECK_THROWS_WITH_AS(binary_cross_entropy(Var(Tensor::full({2}, 1.5)), Tensor::zeros({2})),
                       doctest::Contains("between 0 and 1"), Error);
  // smooth L1 with beta 0 is L1
  Tensor a = rnd({10}, 3), c = rnd({10}, 4);
  CHECK(max_abs_diff(smooth_l1_loss(Var(a), c, 0.0).data(), l1_loss(Var(a), c).data()) == 0.0);
}

TEST_CASE("losses: focal loss on a RetinaNet-sized batch is deterministic") {
  Generator g(3);
  Tensor x = rand_normal({20000, 80}, g, -2.0, 2.0, DType::F32);
  Tensor t = Tensor::zeros({20000, 80});
  float* pt = t.data<float>();
  for (int i = 0; i < 20000; i += 7) pt[i * 80 + (i % 80)] = 1.f;
  std::vector<Tensor> gs;
  for (int k = 0; k < 2; ++k) {
    Var xv(x, true);
    Var y = sigmoid_focal_loss(xv, t);
    y.backward(Tensor::ones({20000, 80}));
    gs.push_back(xv.grad());
  }
  CHECK(max_abs_diff(gs[0], gs[1]) == 0.0);
}
