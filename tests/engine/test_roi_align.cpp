#include <doctest/doctest.h>
#include <omp.h>

#include <cstring>

#include "engine/ops/roi_align.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

Tensor rois_f64(const std::vector<double>& v) {
  return Tensor::from_vector(v, Shape{static_cast<int64_t>(v.size() / 5), 5});
}

RoIAlignArgs args_of(const Fixture& f) {
  const auto& m = f.metadata;
  RoIAlignArgs a;
  a.out_h = std::stoll(m.at("out_h"));
  a.out_w = std::stoll(m.at("out_w"));
  a.spatial_scale = std::stod(m.at("spatial_scale"));
  a.sampling_ratio = std::stoll(m.at("sampling_ratio"));
  a.aligned = m.at("aligned") == "1";
  return a;
}

}  // namespace

TEST_CASE("roi_align: gradcheck f64 (adaptive and fixed sampling, RoIs partly outside the map)") {
  Tensor feat = rnd({2, 2, 6, 7}, 11);
  // (batch, x1, y1, x2, y2) in image coordinates; spatial_scale 0.5 -> map coordinates halved
  Tensor rois = rois_f64({0, 1.3, 2.1, 9.7, 8.2,    //
                          1, -3.0, -2.5, 5.4, 4.1,  // partly outside
                          1, 10.2, 7.7, 16.9, 14.3, // partly outside bottom-right
                          0, 4.4, 4.6, 5.1, 5.0});  // tiny
  for (int64_t ratio : {0, 2}) {
    CAPTURE(ratio);
    RoIAlignArgs a{3, 2, 0.5, ratio, true};
    CHECK(gradcheck([&](const std::vector<Var>& v) { return roi_align(v[0], rois, a); }, {feat}));
  }
  RoIAlignArgs un{2, 2, 0.5, 0, false};
  CHECK(gradcheck([&](const std::vector<Var>& v) { return roi_align(v[0], rois, un); }, {feat}));
}

TEST_CASE("roi_align: torchvision parity, forward and backward") {
  for (const char* name : {"adaptive_f64", "ratio2_f64", "unaligned_f64", "adaptive_f32"}) {
    CAPTURE(name);
    auto f = load_fixture(std::string("roi_align_") + name);
    if (!f) return;
    const RoIAlignArgs a = args_of(*f);
    const Tensor& feat = f->at("feat");
    const bool f32 = feat.dtype() == DType::F32;
    const double tol = f32 ? 1e-5 : 1e-12;
    Var x(feat, true);
    Var y = roi_align(x, f->at("rois"), a);
    check_close(y.data(), f->at("out"), tol, tol, "roi_align out");
    y.backward(f->at("grad_out"));
    check_close(x.grad(), f->at("grad_feat"), tol, tol, "roi_align grad");
  }
}

TEST_CASE("roi_align: a RoI on a constant map averages to the constant; outside samples count as 0") {
  Tensor feat = Tensor::full({1, 1, 4, 4}, 2.0, DType::F64);
  Tensor y = ops::roi_align(feat, rois_f64({0, 0.5, 0.5, 3.5, 3.5}), RoIAlignArgs{2, 2, 1.0, 0, true});
  for (double v : y.to_vector<double>()) CHECK(v == doctest::Approx(2.0).epsilon(1e-14));
  // wholly outside (samples at x > W): 0; zero-sized RoI: grid 0 -> 0
  Tensor z = ops::roi_align(feat, rois_f64({0, 20, 20, 30, 30, 0, 1, 1, 1, 1}), RoIAlignArgs{2, 2, 1.0, 0, true});
  for (double v : z.to_vector<double>()) CHECK(v == 0.0);
  // empty RoI list
  CHECK(ops::roi_align(feat, Tensor::zeros({0, 5}, DType::F64), RoIAlignArgs{}).shape() == Shape{0, 1, 7, 7});
}

TEST_CASE("roi_align: backward is bit-identical for 1 and 2 threads") {
  Generator g(3);
  Tensor feat = rand_normal({2, 16, 20, 20}, g);
  std::vector<float> rv;
  for (int k = 0; k < 40; ++k) {
    const float x1 = static_cast<float>(g.uniform(-10, 70)), y1 = static_cast<float>(g.uniform(-10, 70));
    rv.insert(rv.end(), {static_cast<float>(k % 2), x1, y1, x1 + static_cast<float>(g.uniform(1, 40)),
                         y1 + static_cast<float>(g.uniform(1, 40))});
  }
  Tensor rois = Tensor::from_vector(rv, Shape{40, 5});
  RoIAlignArgs a{7, 7, 0.25, 0, true};
  Tensor go = rand_normal({40, 16, 7, 7}, g);
  const int prev = omp_get_max_threads();
  omp_set_num_threads(1);
  Tensor y1 = ops::roi_align(feat, rois, a), g1 = ops::roi_align_backward(go, rois, feat.shape(), a);
  omp_set_num_threads(2);
  Tensor y2 = ops::roi_align(feat, rois, a), g2 = ops::roi_align_backward(go, rois, feat.shape(), a);
  omp_set_num_threads(prev);
  CHECK(std::memcmp(y1.data<float>(), y2.data<float>(), y1.nbytes()) == 0);
  CHECK(std::memcmp(g1.data<float>(), g2.data<float>(), g1.nbytes()) == 0);
}

TEST_CASE("roi_align: channels-last and per-plane kernels agree bit for bit (f32 and f64)") {
  // 16 channels with many samples take the channels-last kernel; one channel at a time the plane kernel.
  for (DType dt : {DType::F32, DType::F64}) {
    CAPTURE(dtype_name(dt));
    Generator g(4);
    Tensor feat = rand_normal({2, 16, 12, 14}, g, 0, 1, dt);
    std::vector<double> rv;
    for (int k = 0; k < 30; ++k) {
      const double x1 = g.uniform(-8, 50), y1 = g.uniform(-8, 45);
      rv.insert(rv.end(), {static_cast<double>(k % 2), x1, y1, x1 + g.uniform(0.5, 40), y1 + g.uniform(0.5, 40)});
    }
    Tensor rois = Tensor::from_vector(rv, Shape{30, 5}).to(dt);
    const RoIAlignArgs a{5, 4, 0.25, 0, true};
    Tensor go = rand_normal({30, 16, 5, 4}, g, 0, 1, dt);
    Tensor y = ops::roi_align(feat, rois, a), gx = ops::roi_align_backward(go, rois, feat.shape(), a);
    for (int64_t c = 0; c < 16; ++c) {
      CAPTURE(c);
      Tensor fc = feat.slice(1, c, c + 1).contiguous();
      Tensor yc = ops::roi_align(fc, rois, a);
      Tensor gc = ops::roi_align_backward(go.slice(1, c, c + 1).contiguous(), rois, fc.shape(), a);
      CHECK(max_abs_diff(yc, y.slice(1, c, c + 1).contiguous()) == 0.0);
      CHECK(max_abs_diff(gc, gx.slice(1, c, c + 1).contiguous()) == 0.0);
    }
  }
}

TEST_CASE("roi_align: argument errors name the op and the shapes") {
  Tensor feat = Tensor::zeros({1, 2, 4, 4});
  CHECK_THROWS_WITH_AS(ops::roi_align(Tensor::zeros({2, 4, 4}), Tensor::zeros({1, 5}), {}),
                       doctest::Contains("roi_align: features must be [N, C, H, W], got f32[2, 4, 4]"), Error);
  CHECK_THROWS_WITH_AS(ops::roi_align(feat, Tensor::zeros({3, 4}), {}),
                       doctest::Contains("roi_align: rois must be [K, 5]"), Error);
  CHECK_THROWS_WITH_AS(ops::roi_align(feat, Tensor::zeros({3, 5}, DType::F64), {}),
                       doctest::Contains("must have the features' dtype f32"), Error);
  CHECK_THROWS_WITH_AS(ops::roi_align(feat, Tensor::from_vector(std::vector<float>{1, 0, 0, 2, 2}, Shape{1, 5}), {}),
                       doctest::Contains("roi_align: RoI 0 has batch index 1 outside [0, 1)"), Error);
  CHECK_THROWS_WITH_AS(ops::roi_align_backward(Tensor::zeros({1, 2, 3, 3}), Tensor::zeros({1, 5}), feat.shape(), {}),
                       doctest::Contains("roi_align_backward: grad f32[1, 2, 3, 3]"), Error);
}
