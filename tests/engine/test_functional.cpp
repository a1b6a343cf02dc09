// The README's engine tour, compiled and checked: if this breaks, the README is wrong.
#include <doctest/doctest.h>

#include "engine/functional.h"
#include "tests/gradcheck.h"

using namespace kdet;

TEST_CASE("functional: README tour runs and gives a gradient") {
  Generator g(0);
  Var x(rand_normal({2, 3, 32, 32}, g));
  Var w(rand_normal({8, 3, 3, 3}, g, 0, 0.1), /*requires_grad=*/true);
  Var y = relu(conv2d(x, w, Var(), Conv2dArgs::make(/*stride*/ 1, /*pad*/ 1)));
  Var loss = mean(y * y);
  loss.backward();
  REQUIRE(w.grad().defined());
  CHECK(w.grad().shape() == w.shape());
  // d mean(y^2) / dw is non-zero for random data
  CHECK(test::max_abs_diff(w.grad(), Tensor::zeros(w.shape())) > 0);
}

TEST_CASE("functional: a small conv net in f64 gradchecks end to end") {
  auto x = test::rnd({2, 3, 8, 8}, 11), w1 = test::rnd({4, 3, 3, 3}, 12, -0.5, 0.5),
       w2 = test::rnd({2, 4, 1, 1}, 13, -0.5, 0.5);
  Tensor rm = Tensor::zeros({4}, DType::F64), rv = Tensor::ones({4}, DType::F64);
  CHECK(test::gradcheck(
      [&](const std::vector<Var>& v) {
        Tensor m = rm.clone(), s = rv.clone();
        Var h = conv2d(v[0], v[1], Var(), Conv2dArgs::make(2, 1));
        h = batch_norm(h, Var(), Var(), m, s, /*training=*/true);
        h = sigmoid(h);
        h = conv2d(h, v[2], Var(), Conv2dArgs::make(1, 0));
        return log_softmax(reshape(h, {2, -1}), 1);
      },
      {x, w1, w2}));
}
