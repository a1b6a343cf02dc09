#include <doctest/doctest.h>

#include "engine/ops/pool2d.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

TEST_CASE("pool2d: gradcheck f64 max/avg (padding, ceil_mode, count_include_pad)") {
  // Values spaced apart so no two elements of a window tie (max is differentiable there).
  Tensor x = rnd({2, 2, 7, 8}, 5);
  {
    auto v = x.to_vector<double>();
    for (size_t i = 0; i < v.size(); ++i) v[i] = v[i] + 0.01 * static_cast<double>((i * 37) % 101);
    x = Tensor::from_vector(v, x.shape());
  }
  CHECK(gradcheck([](const std::vector<Var>& v) { return max_pool2d(v[0], 3, 2, 1); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return max_pool2d(v[0], 2, 2, 0, true); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return max_pool2d(v[0], 3, 1, 1); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return avg_pool2d(v[0], 3, 2, 1); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return avg_pool2d(v[0], 3, 2, 1, false); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return avg_pool2d(v[0], 2, 2, 1, true, true); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return avg_pool2d(v[0], 3, 2, 1, false, true); }, {x}));
}

TEST_CASE("pool2d: output shapes follow torch (ceil_mode drops a window starting in the padding)") {
  Tensor x = Tensor::zeros({1, 1, 7, 7});
  CHECK(ops::max_pool2d_with_indices(x, 2, 2, 0, false).first.shape() == Shape{1, 1, 3, 3});
  CHECK(ops::max_pool2d_with_indices(x, 2, 2, 0, true).first.shape() == Shape{1, 1, 4, 4});
  CHECK(ops::avg_pool2d(Tensor::zeros({1, 1, 6, 6}), 2, 2, 1, true, true).shape() == Shape{1, 1, 4, 4});
  CHECK(ops::max_pool2d_with_indices(Tensor::zeros({1, 1, 5, 5}), 3, 2, 1, true).first.shape() == Shape{1, 1, 3, 3});
  CHECK_THROWS_WITH_AS(ops::avg_pool2d(x, 2, 2, 2), doctest::Contains("avg_pool2d: padding 2"), Error);
  CHECK_THROWS_WITH_AS(ops::max_pool2d_with_indices(Tensor::zeros({3, 7, 7}), 2, 2, 0), doctest::Contains("4-D"), Error);
}

TEST_CASE("pool2d: max_pool2d picks the first maximum and ignores padding") {
  Tensor x = Tensor::from_vector(std::vector<float>{-5, -5, -5, -5}, {1, 1, 2, 2});
  auto [y, idx] = ops::max_pool2d_with_indices(x, 3, 1, 1);
  CHECK(y.to_vector<float>() == std::vector<float>{-5, -5, -5, -5});
  CHECK(idx.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0, 0});
}

TEST_CASE("pool2d: PyTorch parity") {
  for (int i = 0; i < 9; ++i) {
    CAPTURE(i);
    auto f = load_fixture("pool2d_" + std::to_string(i));
    if (!f) return;
    const auto& m = f->metadata;
    const int64_t k = std::stoll(m.at("kernel")), s = std::stoll(m.at("stride")), p = std::stoll(m.at("pad"));
    const bool ceil = m.at("ceil_mode") == "1", cip = m.at("count_include_pad") == "1";
    for (DType dt : {DType::F32, DType::F64}) {
      CAPTURE(dtype_name(dt));
      const double tol = dt == DType::F32 ? 1e-6 : 1e-12;
      Var x(f->at("x").to(dt), true);
      Var y = m.at("kind") == "max" ? max_pool2d(x, k, s, p, ceil) : avg_pool2d(x, k, s, p, cip, ceil);
      check_close(y.data(), f->at("y"), tol, tol, "pool y");
      y.backward(f->at("r").to(dt));
      check_close(x.grad(), f->at("gx"), tol, tol, "pool grad x");
    }
  }
}
