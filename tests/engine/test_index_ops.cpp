// Indexing ops (index_ops.h): index_select, gather, scatter_add, index_add/index_copy, masked_select_rows.
#include <doctest/doctest.h>

#include "engine/ops/compare.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/index_ops.h"
#include "engine/ops/shape_ops.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {
// Bool tensor from 0/1 values (std::vector<bool> has no data()).
inline Tensor bools(const std::vector<int64_t>& v, Shape s = {}) {
  if (s.empty()) s = Shape{static_cast<int64_t>(v.size())};
  return Tensor::from_vector(v, s).to(DType::Bool);
}
Tensor idx(const std::vector<int64_t>& v, const Shape& s) { return Tensor::from_vector(v, s); }
Tensor idx(const std::vector<int64_t>& v) { return Tensor::from_vector(v); }
}  // namespace

TEST_CASE("index ops: forward values against direct loops") {
  Tensor x = rnd({3, 4, 2}, 91);
  auto xv = x.to_vector<double>();
  // index_select along dim 1 with duplicates and a negative index
  Tensor s = ops::index_select(x, 1, idx({3, 0, 3, -3}));
  CHECK(s.shape() == Shape{3, 4, 2});
  auto sv = s.to_vector<double>();
  const int64_t map[4] = {3, 0, 3, 1};
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 2; ++j) CHECK(sv[(i * 4 + k) * 2 + j] == xv[(i * 4 + map[k]) * 2 + j]);
  // i64 and bool inputs are fine for index_select
  CHECK(ops::index_select(Tensor::arange(5), 0, idx({4, 4, 1})).to_vector<int64_t>() == std::vector<int64_t>{4, 4, 1});
  // gather along every dim: out[i][j][k] = x[..index..]
  Generator g(7);
  for (int d = 0; d < 3; ++d) {
    Shape is{2, 3, 2};
    std::vector<int64_t> iv(is.numel());
    for (auto& e : iv) e = g.randint(0, x.shape()[d]);
    Tensor gi = idx(iv, is);
    auto gv = ops::gather(x, d - 3 * (d == 2), gi).to_vector<double>();
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 2; ++k) {
          int64_t c[3] = {i, j, k};
          int64_t lin = (i * 3 + j) * 2 + k;
          c[d] = iv[lin];
          CHECK(gv[lin] == xv[(c[0] * 4 + c[1]) * 2 + c[2]]);
        }
    // scatter_add: base + Σ src at the indexed places (duplicates accumulate)
    Tensor src = rnd(is, 100 + d);
    auto srcv = src.to_vector<double>();
    std::vector<double> want = xv;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 2; ++k) {
          int64_t c[3] = {i, j, k};
          int64_t lin = (i * 3 + j) * 2 + k;
          c[d] = iv[lin];
          want[(c[0] * 4 + c[1]) * 2 + c[2]] += srcv[lin];
        }
    auto got = ops::scatter_add(x, d, gi, src).to_vector<double>();
    for (size_t e = 0; e < want.size(); ++e) CHECK(got[e] == doctest::Approx(want[e]).epsilon(1e-15));
  }
  // index_add / index_copy along dim 0
  Tensor base = Tensor::zeros({3, 2}, DType::F64);
  Tensor src = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {3, 2});
  CHECK(ops::index_add(base, 0, idx({2, 0, 2}), src).to_vector<double>() == std::vector<double>{3, 4, 0, 0, 6, 8});
  CHECK(ops::index_copy(base, 0, idx({2, 0, 1}), src).to_vector<double>() == std::vector<double>{3, 4, 5, 6, 1, 2});
  // masked_select_rows
  Tensor m = bools({1, 0, 1});
  CHECK(ops::masked_select_rows(src, m).to_vector<double>() == std::vector<double>{1, 2, 5, 6});
  CHECK(ops::masked_select_rows(src, Tensor::zeros({3}, DType::Bool)).shape() == Shape{0, 2});
}

TEST_CASE("index ops: errors name the op, the index and the shapes") {
  Tensor x = rnd({3, 4}, 1);
  CHECK_THROWS_WITH_AS(ops::index_select(x, 1, idx({0, 4})),
                       doctest::Contains("index_select: index 4 (at position 1) out of range for dim 1 of f64[3, 4]"),
                       Error);
  CHECK_THROWS_WITH_AS(ops::index_select(x, 0, Tensor::zeros({2}, DType::F32)),
                       doctest::Contains("index_select: index must be i64, got f32[2]"), Error);
  CHECK_THROWS_WITH_AS(ops::gather(x, 1, idx({0, 1}, {2})), doctest::Contains("gather: index i64[2] must have the rank of f64[3, 4]"), Error);
  CHECK_THROWS_WITH_AS(ops::gather(x, 0, idx({0, 1, 2, 3, 0, 1, 2, 3, 0, 1}, {2, 5})),
                       doctest::Contains("gather: index i64[2, 5] larger than f64[3, 4]"), Error);
  CHECK_THROWS_WITH_AS(ops::scatter_add(x, 1, idx({-5}, {1, 1}), rnd({1, 1}, 2)),
                       doctest::Contains("scatter_add: index -5 (at position 0) out of range for dim 1"), Error);
  CHECK_THROWS_WITH_AS(ops::index_add(x, 0, idx({0}), rnd({2, 4}, 3)),
                       doctest::Contains("index_add: src f64[2, 4] should have shape [1, 4]"), Error);
  CHECK_THROWS_WITH_AS(ops::masked_select_rows(x, Tensor::ones({4}, DType::Bool)),
                       doctest::Contains("masked_select_rows: mask bool[4] must be bool [N] for input f64[3, 4]"),
                       Error);
}

TEST_CASE("gradcheck: index_select gather scatter_add index_add masked_select_rows") {
  auto x = rnd({3, 4, 5}, 111);
  Tensor dup = idx({2, 0, 2, 3, -1});
  CHECK(gradcheck([dup](const std::vector<Var>& v) { return index_select(v[0], 1, dup); }, {x}));
  CHECK(gradcheck([dup](const std::vector<Var>& v) { return index_select(v[0], -1, dup); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return index_select(permute(v[0], {2, 0, 1}), 0, idx({4, 0, 0})); }, {x}));
  Generator g(9);
  for (int d = 0; d < 3; ++d) {
    Shape is{2, 3, 3};
    std::vector<int64_t> iv(is.numel());
    for (auto& e : iv) e = g.randint(0, x.shape()[d]);  // duplicates are likely
    Tensor gi = idx(iv, is);
    CHECK_MESSAGE(gradcheck([gi, d](const std::vector<Var>& v) { return gather(v[0], d, gi); }, {x}), "gather dim " << d);
    auto src = rnd({2, 3, 4}, 120 + d);  // larger than the index in the last dim
    CHECK_MESSAGE(gradcheck([gi, d](const std::vector<Var>& v) { return scatter_add(v[0], d, gi, v[1]); }, {x, src}),
                  "scatter_add dim " << d);
  }
  // gather on a non-contiguous input
  Tensor gi = idx({0, 1, 1, 1, 0, 0}, {2, 3});
  CHECK(gradcheck([gi](const std::vector<Var>& v) { return gather(slice(transpose(v[0], 0, 2), 1, 0, 4, 2), 1, gi.view({2, 1, 3}).expand({2, 2, 3}).contiguous()); }, {x}));
  auto base = rnd({4, 3}, 130), src = rnd({5, 3}, 131);
  Tensor ai = idx({1, 3, 1, 0, 3});
  CHECK(gradcheck([ai](const std::vector<Var>& v) { return index_add(v[0], 0, ai, v[1]); }, {base, src}));
  Tensor m = bools({1, 0, 1});
  CHECK(gradcheck([m](const std::vector<Var>& v) { return masked_select_rows(v[0], m); }, {x}));
}

TEST_CASE("index ops: parity with torch (gather, scatter_add, index_select)") {
  auto f = load_fixture("pointwise");
  if (!f) return;
  const Tensor& base = f->at("base");
  check_close(ops::scatter_add(base, 1, f->at("idx"), f->at("src")), f->at("scatter_add_1"), 1e-14, 1e-14,
              "scatter_add dim 1");
  check_close(ops::gather(base, 1, f->at("idx")), f->at("gather_1"), 0, 0, "gather dim 1");
  check_close(ops::gather(base, 0, f->at("idx0")), f->at("gather_0"), 0, 0, "gather dim 0");
  check_close(ops::scatter_add(base, 0, f->at("idx0"), f->at("src").slice(0, 0, 2).slice(1, 0, 4)),
              f->at("scatter_add_0"), 1e-14, 1e-14, "scatter_add dim 0");
  check_close(ops::index_select(base, 1, f->at("sel")), f->at("index_select_1"), 0, 0, "index_select");
}
