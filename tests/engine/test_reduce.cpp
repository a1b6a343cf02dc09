// Reductions (reduce.h) and softmax / log_softmax / logsumexp (softmax.h).
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>

#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/softmax.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {
// Naive reference: reduces a 3-D f64 tensor over the axes flagged in red (0..2), keepdim shape.
std::vector<double> naive_reduce(const Tensor& x, std::array<bool, 3> red, bool is_max) {
  const Shape& s = x.shape();
  auto xv = x.to_vector<double>();
  Shape k = s;
  for (int d = 0; d < 3; ++d)
    if (red[d]) k[d] = 1;
  std::vector<double> out(k.numel(), is_max ? -INFINITY : 0.0);
  for (int64_t i = 0; i < s[0]; ++i)
    for (int64_t j = 0; j < s[1]; ++j)
      for (int64_t l = 0; l < s[2]; ++l) {
        int64_t o = ((red[0] ? 0 : i) * k[1] + (red[1] ? 0 : j)) * k[2] + (red[2] ? 0 : l);
        double v = xv[(i * s[1] + j) * s[2] + l];
        out[o] = is_max ? std::max(out[o], v) : out[o] + v;
      }
  return out;
}

void check_vec(const Tensor& got, const std::vector<double>& want, double tol, const std::string& what) {
  auto g = got.to_vector<double>();
  REQUIRE_MESSAGE(g.size() == want.size(), what);
  for (size_t i = 0; i < g.size(); ++i)
    CHECK_MESSAGE(std::abs(g[i] - want[i]) <= tol * (1 + std::abs(want[i])), what << " element " << i);
}
}  // namespace

TEST_CASE("reduce: sum/mean/amax over every axis subset match a naive loop") {
  Tensor x = rnd({3, 4, 5}, 21, -2.0, 2.0);
  for (int m = 1; m < 8; ++m) {
    std::array<bool, 3> red{bool(m & 1), bool(m & 2), bool(m & 4)};
    std::vector<int> axes;
    Shape keep{3, 4, 5}, nokeep;
    for (int d = 0; d < 3; ++d) {
      if (red[d]) {
        axes.push_back(d - 3 * (m % 2));  // mix negative and positive axes
        keep[d] = 1;
      } else {
        nokeep.push_back(keep[d]);
      }
    }
    auto ref = naive_reduce(x, red, false);
    auto refmax = naive_reduce(x, red, true);
    int64_t cnt = 1;
    for (int d = 0; d < 3; ++d)
      if (red[d]) cnt *= x.shape()[d];
    std::vector<double> refmean(ref);
    for (auto& v : refmean) v /= cnt;
    Tensor s = ops::sum(x, axes, true);
    CHECK(s.shape() == keep);
    check_vec(s, ref, 1e-14, "sum mask " + std::to_string(m));
    CHECK(ops::sum(x, axes, false).shape() == nokeep);
    check_vec(ops::mean(x, axes, false), refmean, 1e-14, "mean mask " + std::to_string(m));
    check_vec(ops::amax(x, axes, true), refmax, 0, "amax mask " + std::to_string(m));
    // non-contiguous input: same results through the permuted layout (x^T^T)
    Tensor xt = x.permute({2, 0, 1}).contiguous().permute({1, 2, 0});
    REQUIRE_FALSE(xt.is_contiguous());
    check_vec(ops::sum(xt, axes, true), ref, 1e-14, "sum non-contiguous mask " + std::to_string(m));
    check_vec(ops::amax(xt, axes, true), refmax, 0, "amax non-contiguous mask " + std::to_string(m));
  }
  CHECK(ops::sum(x).shape() == Shape{});
  CHECK(ops::sum(x).item() == doctest::Approx(naive_reduce(x, {true, true, true}, false)[0]).epsilon(1e-14));
  CHECK(ops::sum(x, {}, true).shape() == Shape{1, 1, 1});
  auto mn = ops::min(x, 1, false);
  auto neg = ops::max(ops::neg(x), 1, false);
  check_vec(mn.first, ops::neg(neg.first).to_vector<double>(), 0, "min = -max(-x)");
  CHECK(mn.second.to_vector<int64_t>() == neg.second.to_vector<int64_t>());
  CHECK_THROWS_WITH_AS(ops::sum(x, {1, -2}), doctest::Contains("sum: axis -2 repeated"), Error);
  CHECK_THROWS_WITH_AS(ops::mean(x, {3}), doctest::Contains("mean: axis 3 out of range for a tensor of rank 3"), Error);
  CHECK_THROWS_WITH_AS(ops::amax(Tensor::zeros({2, 0}), {1}), doctest::Contains("amax: reduction over an empty axis"),
                       Error);
  CHECK_THROWS_WITH_AS(ops::sum(Tensor::arange(4)), doctest::Contains("sum: expects an f32 or f64 tensor, got i64[4]"),
                       Error);
}

TEST_CASE("reduce: f32 sums of millions of elements are accurate and deterministic") {
  const int64_t n = 1 << 22;  // 4M
  Tensor x = Tensor::full({n}, 0.1, DType::F32);
  const double exact = static_cast<double>(0.1f) * n;
  const double got = ops::sum(x).item();
  CHECK(std::abs(got - exact) / exact < 1e-7);  // a naive float loop is off by ~1e-2 relative here
  // inner (I > 1) layout: sum over axis 0 of [n/8, 8]
  Tensor x2 = Tensor::full({n / 8, 8}, 0.1, DType::F32);
  auto s2 = ops::sum(x2, {0}).to_vector<float>();
  CHECK(std::abs(s2[3] - exact / 8) / (exact / 8) < 1e-7);
  // bit-identical whatever the thread count
  Generator g(5);
  Tensor r = rand_normal({3, 1 << 19}, g);
  const int nt = omp_get_max_threads();
  omp_set_num_threads(1);
  Tensor a1 = ops::sum(r, {1}), b1 = ops::mean(r.view({3, 512, 1024}), {0, 2});
  omp_set_num_threads(std::max(2, nt));
  Tensor a2 = ops::sum(r, {1}), b2 = ops::mean(r.view({3, 512, 1024}), {0, 2});
  omp_set_num_threads(nt);
  CHECK(std::memcmp(a1.data<float>(), a2.data<float>(), 3 * sizeof(float)) == 0);
  CHECK(std::memcmp(b1.data<float>(), b2.data<float>(), 512 * sizeof(float)) == 0);
}

TEST_CASE("gradcheck: sum/mean with keepdim, negative axes, non-contiguous inputs") {
  auto x = rnd({3, 4, 5}, 31);
  CHECK(gradcheck([](const std::vector<Var>& v) { return sum(v[0]); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return mean(v[0]); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return sum(v[0], {1}); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return sum(v[0], {0, -1}, true); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return mean(v[0], {-2}, true); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return mean(v[0], {0, 2}); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return sum(permute(v[0], {2, 0, 1}), {1, 2}); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return mean(slice(v[0], 2, 1, 5, 2), {-1}, true); }, {x}));
}

TEST_CASE("gradcheck: max/min/amax/amin (first index, ties split like torch)") {
  auto x = rnd({3, 4, 5}, 41);  // continuous values: no ties
  CHECK(gradcheck([](const std::vector<Var>& v) { return max(v[0], 1); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return max(v[0], -1, true); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return min(v[0], 0); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return max(permute(v[0], {1, 2, 0}), 2); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return amax(v[0], {0, 2}); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return amin(v[0], {-1}, true); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return amax(slice(v[0], 1, 0, 4, 3), {1, 2}, true); }, {x}));
  // ties: max sends the gradient to the first maximum, amax splits it evenly
  Var t(Tensor::from_vector<double>({1, 3, 3, 2, 2, 2}, {2, 3}), true);
  max(t, 1).backward(Tensor::ones({2}, DType::F64));
  CHECK(t.grad().to_vector<double>() == std::vector<double>{0, 1, 0, 1, 0, 0});
  t.zero_grad();
  amax(t, {1}).backward(Tensor::ones({2}, DType::F64));
  auto ga = t.grad().to_vector<double>();
  CHECK(ga[1] == 0.5);
  CHECK(ga[2] == 0.5);
  CHECK(ga[3] == doctest::Approx(1.0 / 3));
  // NaN propagates
  Tensor nanx = Tensor::from_vector<double>({1, NAN, 3});
  CHECK(std::isnan(ops::amax(nanx, {0}).item()));
  CHECK(std::isnan(ops::sum(nanx).item()));
}

TEST_CASE("softmax: forward properties and numerical edge cases") {
  // log_softmax of [1000, 0] (f32 and f64): [0, -1000] exactly, no NaN/Inf
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor x = Tensor::from_vector<double>({1000.0, 0.0}).to(dt);
    auto ls = ops::log_softmax(x, 0).to_vector<double>();
    CHECK(ls[0] == 0.0);
    CHECK(ls[1] == -1000.0);
    auto sm = ops::softmax(x, 0).to_vector<double>();
    CHECK(sm[0] == 1.0);
    CHECK(sm[1] == 0.0);
    CHECK(ops::logsumexp(x, 0).item() == 1000.0);
    Var v(x, true);
    log_softmax(v, 0).backward(Tensor::ones({2}, dt));
    auto g = v.grad().to_vector<double>();
    CHECK(g[0] == doctest::Approx(-1.0));
    CHECK(g[1] == doctest::Approx(1.0));
  }
  // rows sum to 1 along any axis, including a middle axis (inner stride > 1)
  Tensor x = ops::mul_scalar(rnd({3, 6, 7}, 51), 50.0);
  for (int ax : {0, 1, 2, -1}) {
    Tensor s = ops::sum(ops::softmax(x, ax), {ax});
    for (double v : s.to_vector<double>()) CHECK(v == doctest::Approx(1.0).epsilon(1e-14));
    // log_softmax == log(softmax) where softmax is not tiny
    Tensor ls = ops::log_softmax(x, ax), sm = ops::softmax(x, ax);
    auto lv = ls.to_vector<double>(), sv = sm.to_vector<double>();
    for (size_t i = 0; i < lv.size(); ++i)
      if (sv[i] > 1e-200) CHECK(lv[i] == doctest::Approx(std::log(sv[i])).epsilon(1e-12));
  }
  // non-contiguous input equals the contiguous result
  Tensor xt = x.transpose(0, 2);
  CHECK(max_abs_diff(ops::softmax(xt, 1), ops::softmax(xt.contiguous(), 1)) == 0.0);
  CHECK_THROWS_WITH_AS(ops::softmax(x, 3), doctest::Contains("softmax: axis 3 out of range"), Error);
}

TEST_CASE("gradcheck: softmax / log_softmax / logsumexp over all axes") {
  auto x = ops::mul_scalar(rnd({2, 3, 4}, 61), 3.0);
  for (int ax : {0, 1, 2, -1, -2}) {
    CHECK_MESSAGE(gradcheck([ax](const std::vector<Var>& v) { return softmax(v[0], ax); }, {x}), "axis " << ax);
    CHECK_MESSAGE(gradcheck([ax](const std::vector<Var>& v) { return log_softmax(v[0], ax); }, {x}), "axis " << ax);
    CHECK_MESSAGE(gradcheck([ax](const std::vector<Var>& v) { return logsumexp(v[0], ax); }, {x}), "axis " << ax);
  }
  CHECK(gradcheck([](const std::vector<Var>& v) { return logsumexp(v[0], 1, true); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return softmax(permute(v[0], {2, 0, 1}), 1); }, {x}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return log_softmax(slice(v[0], 2, 0, 4, 2), -1); }, {x}));
}

TEST_CASE("softmax + reduce: parity with torch (large logits)") {
  auto f = load_fixture("pointwise");
  if (!f) return;
  const Tensor& x = f->at("x");
  const Tensor& gy = f->at("gy");
  for (auto [name, ax] : std::vector<std::pair<std::string, int>>{{"1", 1}, {"m1", -1}, {"0", 0}}) {
    check_close(ops::softmax(x, ax), f->at("softmax_" + name), 1e-12, 1e-300, "softmax axis " + name);
    check_close(ops::log_softmax(x, ax), f->at("log_softmax_" + name), 1e-12, 1e-10, "log_softmax axis " + name);
    Var v(x, true);
    softmax(v, ax).backward(gy);
    check_close(v.grad(), f->at("softmax_" + name + "_grad"), 1e-10, 1e-14, "softmax grad axis " + name);
    Var w(x, true);
    log_softmax(w, ax).backward(gy);
    check_close(w.grad(), f->at("log_softmax_" + name + "_grad"), 1e-10, 1e-12, "log_softmax grad axis " + name);
  }
  const Tensor& x32 = f->at("x32");
  check_close(ops::softmax(x32, -1), f->at("softmax_m1_f32"), 1e-5, 1e-30, "softmax f32");
  check_close(ops::log_softmax(x32, -1), f->at("log_softmax_m1_f32"), 1e-5, 1e-4, "log_softmax f32");
  check_close(ops::logsumexp(x, 1), f->at("logsumexp_1"), 1e-13, 1e-12, "logsumexp");
  check_close(ops::sum(x, {0, 2}), f->at("sum_02"), 1e-13, 1e-11, "sum (0, 2)");
  check_close(ops::sum(x), f->at("sum_all"), 1e-13, 1e-10, "sum all");
  check_close(ops::mean(x, {-1}, true), f->at("mean_m1_keep"), 1e-13, 1e-12, "mean -1 keepdim");
  check_close(ops::mean(x, {0, 1}), f->at("mean_01"), 1e-13, 1e-12, "mean (0, 1)");
  check_close(ops::amax(x, {1, 2}), f->at("amax_12"), 0, 0, "amax (1, 2)");
  check_close(ops::amin(x, {0}), f->at("amin_0"), 0, 0, "amin 0");
  auto mx = ops::max(x, 1);
  check_close(mx.first, f->at("max_1_values"), 0, 0, "max values");
  CHECK(mx.second.to_vector<int64_t>() == f->at("max_1_indices").to_vector<int64_t>());
}
