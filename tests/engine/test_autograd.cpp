#include <doctest/doctest.h>

#include "engine/ops/elementwise.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

TEST_CASE("gradcheck: broadcasting add/sub/mul/div") {
  auto a = rnd({2, 3, 4}, 1), b = rnd({3, 1}, 2), c = rnd({4}, 3, 0.5, 2.0);
  CHECK(gradcheck([](const std::vector<Var>& v) { return v[0] + v[1]; }, {a, b}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return v[0] - v[1]; }, {a, b}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return v[0] * v[1]; }, {a, b}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return v[0] / v[1]; }, {a, c}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return (v[0] * 3.0 - 1.0) / v[1]; }, {a, c}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return -v[0] + 2.0; }, {a}));
}

TEST_CASE("autograd: accumulation, reuse, no_grad, detach") {
  Var x(Tensor::full({3}, 2.0, DType::F64), true);
  Var y = x * x + x;  // dy/dx = 2x + 1 = 5
  y.backward(Tensor::ones({3}, DType::F64));
  CHECK(x.grad().to_vector<double>()[0] == 5.0);
  Var y2 = x * 2.0;
  y2.backward(Tensor::ones({3}, DType::F64));  // accumulates: 5 + 2
  CHECK(x.grad().to_vector<double>()[1] == 7.0);
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  {
    NoGradGuard ng;
    Var z = x * x;
    CHECK_FALSE(z.requires_grad());
  }
  Var d = x.detach();
  CHECK_FALSE((d * d).requires_grad());
}

TEST_CASE("autograd: graph is freed after backward unless retained") {
  Var x(Tensor::full({2}, 1.0, DType::F64), true);
  Var y = x * x;
  y.backward(Tensor::ones({2}, DType::F64), /*retain_graph=*/true);
  y.backward(Tensor::ones({2}, DType::F64));
  CHECK(x.grad().to_vector<double>()[0] == 4.0);
  CHECK_THROWS_WITH_AS(y.backward(Tensor::ones({2}, DType::F64)), doctest::Contains("already freed"), Error);
}

TEST_CASE("autograd: a 20000-op chain backpropagates without recursion") {
  Var x(Tensor::full({1}, 1.0, DType::F64), true);
  Var y = x;
  for (int i = 0; i < 20000; ++i) y = y * 1.0001 + 0.0;
  y.backward();
  CHECK(x.grad().item() == doctest::Approx(std::pow(1.0001, 20000)).epsilon(1e-9));
}

TEST_CASE("autograd: diamond graph accumulates both paths") {
  Var x(Tensor::full({2}, 3.0, DType::F64), true);
  Var a = x * 2.0, b = x * x;
  Var y = a * b;  // 2x^3 -> 6x^2 = 54
  y.backward(Tensor::ones({2}, DType::F64));
  CHECK(x.grad().to_vector<double>()[0] == doctest::Approx(54.0));
}
