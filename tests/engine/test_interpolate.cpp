#include <doctest/doctest.h>

#include "engine/ops/interpolate.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {
void interp_parity(const std::string& name, DType dt, int mode) {
  auto f = load_fixture(name);
  if (!f) return;
  INFO(name << " " << dtype_name(dt));
  const int64_t oh = std::stoll(f->metadata.at("out_h")), ow = std::stoll(f->metadata.at("out_w"));
  Var x(f->at("x").to(dt).clone(), true);
  Var y = mode == 0 ? interpolate_nearest(x, oh, ow)
                    : interpolate_bilinear(x, oh, ow, f->metadata.at("align_corners") == "1");
  y.backward(f->at("gy").to(dt));
  const double rt = dt == DType::F64 ? 1e-12 : 1e-5, at = dt == DType::F64 ? 1e-12 : 1e-5;
  check_close(y.data(), f->at("y"), rt, at, name + " y");
  check_close(x.grad(), f->at("gx"), rt, at, name + " gx");
}
}  // namespace

TEST_CASE("interpolate: gradcheck nearest and bilinear, up and down") {
  Tensor x = rnd({2, 2, 5, 4}, 7);
  const int64_t sizes[][2] = {{10, 8}, {7, 9}, {3, 2}, {5, 4}, {1, 1}, {2, 7}};
  for (auto& s : sizes) {
    INFO("out " << s[0] << "x" << s[1]);
    CHECK(gradcheck([&](const std::vector<Var>& v) { return interpolate_nearest(v[0], s[0], s[1]); }, {x}));
    for (bool ac : {false, true}) {
      INFO("align_corners=" << ac);
      CHECK(gradcheck([&](const std::vector<Var>& v) { return interpolate_bilinear(v[0], s[0], s[1], ac); }, {x}));
    }
  }
}

TEST_CASE("interpolate: PyTorch parity (nearest, bilinear align_corners false/true)") {
  for (DType dt : {DType::F64, DType::F32})
    for (int i = 0; i < 6; ++i) {
      interp_parity("interp_nearest_" + std::to_string(i), dt, 0);
      interp_parity("interp_bilinear_" + std::to_string(i) + "_0", dt, 1);
      interp_parity("interp_bilinear_" + std::to_string(i) + "_1", dt, 1);
    }
}

TEST_CASE("interpolate: semantics and errors") {
  // 2x nearest upsampling repeats every pixel 2x2; its backward sums the 2x2 block.
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4}, {1, 1, 2, 2});
  Var xv(x, true);
  Var y = interpolate_nearest(xv, 4, 4);
  auto yv = y.data().to_vector<double>();
  CHECK(yv == std::vector<double>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
  y.backward(Tensor::ones({1, 1, 4, 4}, DType::F64));
  CHECK(xv.grad().to_vector<double>() == std::vector<double>{4, 4, 4, 4});
  // align_corners=true keeps the corners exactly; a constant image stays constant either way.
  auto yc = interpolate_bilinear(Var(x), 3, 5, true).data().to_vector<double>();
  CHECK(yc[0] == 1.0);
  CHECK(yc[4] == 2.0);
  CHECK(yc[10] == 3.0);
  CHECK(yc[14] == 4.0);
  CHECK(yc[2] == doctest::Approx(1.5));
  Tensor c = Tensor::full({1, 2, 3, 3}, 2.5, DType::F32);
  for (float v : interpolate_bilinear(Var(c), 7, 4, false).data().to_vector<float>()) CHECK(v == 2.5f);
  CHECK_THROWS_WITH_AS(interpolate_nearest(Var(Tensor::zeros({2, 3, 4})), 8, 8),
                       doctest::Contains("interpolate_nearest: expected an NCHW input, got f32[2, 3, 4]"), Error);
  CHECK_THROWS_WITH_AS(interpolate_bilinear(Var(Tensor::zeros({1, 1, 4, 4})), 0, 8),
                       doctest::Contains("interpolate_bilinear: output size must be positive"), Error);
}
