// Shape ops (shape_ops.h): views, concat/stack, slice/select, expand.
#include <doctest/doctest.h>

#include "engine/ops/elementwise.h"
#include "engine/ops/shape_ops.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

TEST_CASE("shape ops: forward values and views") {
  Tensor x = Tensor::from_vector<double>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {2, 3, 2});
  Var v(x);
  // permute: y[i][j][k] = x[j][k][i]
  Var p = permute(v, {2, 0, 1});
  CHECK(p.shape() == Shape{2, 2, 3});
  auto pv = p.data().to_vector<double>();
  auto xv = x.to_vector<double>();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 3; ++k) CHECK(pv[(i * 2 + j) * 3 + k] == xv[(j * 3 + k) * 2 + i]);
  CHECK(p.data().storage() == x.storage());  // a view
  CHECK(transpose(v, 0, -1).shape() == Shape{2, 3, 2});
  CHECK(reshape(v, {3, -1}).shape() == Shape{3, 4});
  CHECK(reshape(p, {4, 3}).data().to_vector<double>() == pv);  // non-contiguous reshape copies in order
  CHECK(flatten(v, 1).shape() == Shape{2, 6});
  CHECK(flatten(v, 0, 1).shape() == Shape{6, 2});
  CHECK(unsqueeze(v, -1).shape() == Shape{2, 3, 2, 1});
  CHECK(squeeze(unsqueeze(v, 1), 1).shape() == Shape{2, 3, 2});
  CHECK(expand(unsqueeze(v, 0), {4, 2, 3, 2}).shape() == Shape{4, 2, 3, 2});
  // slice with step and negative begin: x[:, -2::1, ::2]
  Var s = slice(slice(v, 1, -2, 3), 2, 0, 2, 2);
  CHECK(s.shape() == Shape{2, 2, 1});
  CHECK(s.data().to_vector<double>() == std::vector<double>{2, 4, 8, 10});
  CHECK(select(v, 1, -1).data().to_vector<double>() == std::vector<double>{4, 5, 10, 11});
  // concat / stack
  Tensor a = Tensor::from_vector<double>({1, 2}, {1, 2}), b = Tensor::from_vector<double>({3, 4, 5, 6}, {2, 2});
  CHECK(ops::concat({a, b}, 0).to_vector<double>() == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK(ops::concat({b, b.transpose(0, 1)}, -1).to_vector<double>() == std::vector<double>{3, 4, 3, 5, 5, 6, 4, 6});
  Tensor st = ops::stack({a, a}, 1);
  CHECK(st.shape() == Shape{1, 2, 2});
  CHECK(ops::stack({a.view({2}), a.view({2}), a.view({2})}, -1).shape() == Shape{2, 3});
  CHECK(contiguous(p).data().is_contiguous());
  CHECK(ops::concat({a, Tensor::zeros({0, 2}, DType::F64)}, 0).shape() == Shape{1, 2});
  // errors name the op and the shapes
  CHECK_THROWS_WITH_AS(ops::concat({a, Tensor::zeros({2, 3}, DType::F64)}, 0),
                       doctest::Contains("concat: along axis 0 tensor 1 is f64[2, 3] but tensor 0 is f64[1, 2]"),
                       Error);
  CHECK_THROWS_WITH_AS(ops::concat({a, a.to(DType::F32)}, 0), doctest::Contains("concat: along axis 0 tensor 1 is f32"),
                       Error);
  CHECK_THROWS_WITH_AS(ops::stack({a, b}, 0), doctest::Contains("stack: tensor 1 is f64[2, 2]"), Error);
  CHECK_THROWS_WITH_AS(reshape(v, {5, -1}), doctest::Contains("view: cannot view"), Error);
  CHECK_THROWS_WITH_AS(flatten(v, 2, 1), doctest::Contains("flatten: start_dim 2 after end_dim 1"), Error);
}

TEST_CASE("gradcheck: reshape permute transpose flatten unsqueeze squeeze contiguous") {
  auto x = rnd({2, 3, 4}, 71);
  CHECK(gradcheck([](const std::vector<Var>& v) { return reshape(v[0], {4, -1}); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return view(v[0], {6, 4}) * 2.0; }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return permute(v[0], {2, 0, 1}); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return reshape(permute(v[0], {1, 2, 0}), {12, 2}); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return transpose(v[0], -1, 0); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return flatten(transpose(v[0], 0, 1), 1); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return squeeze(unsqueeze(v[0], 2), -2) * v[0]; }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return contiguous(permute(v[0], {2, 1, 0})); }, {x}));
}

TEST_CASE("gradcheck: concat stack slice select expand") {
  auto a = rnd({2, 3, 4}, 81), b = rnd({2, 1, 4}, 82), c = rnd({2, 5, 4}, 83);
  CHECK(gradcheck([](const std::vector<Var>& v) { return concat({v[0], v[1], v[2]}, 1); }, {a, b, c}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return concat({v[0], v[0] * v[0]}, -1); }, {a}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return concat({permute(v[0], {0, 2, 1}), permute(v[1], {0, 2, 1})}, 2); }, {a, b},
                  {}, {true, false}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return stack({v[0], v[1]}, 0); }, {a, a}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return stack({v[0], transpose(v[1], 0, 0)}, -1); }, {b, b}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return slice(v[0], 2, 1, 4, 2); }, {c}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return slice(slice(v[0], 1, -3, 100), 0, 1, 2); }, {c}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return select(v[0], 1, -2); }, {c}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return expand(v[0], {3, 2, 4, 4}); }, {b}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return expand(slice(v[0], 1, 0, 1), {2, 3, 4}) * v[1]; }, {c, a}));
}
