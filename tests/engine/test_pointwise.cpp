// Pointwise ops (unary.h), where, comparisons and index-producing ops (compare.h).
#include <doctest/doctest.h>

#include <bit>
#include <cmath>

#include "engine/ops/compare.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/unary.h"
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

// Moves every element at least `margin` away from each kink point (keeps gradchecks off kinks).
Tensor avoid(Tensor t, std::vector<double> kinks, double margin = 0.05) {
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i)
    for (double k : kinks)
      if (std::abs(p[i] - k) < margin) p[i] = k + (p[i] >= k ? margin : -margin) * 2;
  return t;
}

template <class T>
std::vector<T> vec(const Tensor& t) { return t.to_vector<T>(); }
}  // namespace

TEST_CASE("pointwise: forward values match the C library") {
  auto x = rnd({5, 7}, 11, 0.1, 3.0);
  auto xv = vec<double>(x);
  auto chk = [&](const Tensor& y, auto f, const char* what) {
    auto yv = vec<double>(y);
    for (size_t i = 0; i < xv.size(); ++i) CHECK_MESSAGE(yv[i] == doctest::Approx(f(xv[i])).epsilon(1e-14), what);
  };
  chk(ops::exp(x), [](double v) { return std::exp(v); }, "exp");
  chk(ops::log(x), [](double v) { return std::log(v); }, "log");
  chk(ops::sqrt(x), [](double v) { return std::sqrt(v); }, "sqrt");
  chk(ops::pow(x, 1.7), [](double v) { return std::pow(v, 1.7); }, "pow");
  chk(ops::pow(x, 2.0), [](double v) { return v * v; }, "pow2");
  chk(ops::tanh(x), [](double v) { return std::tanh(v); }, "tanh");
  chk(ops::sigmoid(x), [](double v) { return 1.0 / (1.0 + std::exp(-v)); }, "sigmoid");
  chk(ops::clamp(x, 0.5, 2.0), [](double v) { return std::min(std::max(v, 0.5), 2.0); }, "clamp");
  auto xn = ops::add_scalar(x, -1.5);
  auto xnv = vec<double>(xn), an = vec<double>(ops::abs(xn)), rn = vec<double>(ops::relu(xn));
  for (size_t i = 0; i < xnv.size(); ++i) {
    CHECK(an[i] == std::abs(xnv[i]));
    CHECK(rn[i] == std::max(xnv[i], 0.0));
  }
  // f32 path and a non-contiguous input
  Tensor x32 = x.to(DType::F32).transpose(0, 1);
  Tensor e32 = ops::exp(x32);
  CHECK(e32.shape() == Shape{7, 5});
  CHECK(e32.to_vector<float>()[1] == doctest::Approx(std::exp(static_cast<float>(xv[7]))).epsilon(1e-6));
}

TEST_CASE("gradcheck: abs exp log sqrt pow clamp sigmoid relu tanh") {
  auto a = avoid(rnd({3, 4}, 1, -2.0, 2.0), {0.0});
  auto pos = rnd({3, 4}, 2, 0.3, 2.5);
  CHECK(gradcheck([](const std::vector<Var>& v) { return abs(v[0]); }, {a}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return exp(v[0]); }, {a}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return log(v[0]); }, {pos}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return sqrt(v[0]); }, {pos}));
  for (double p : {2.0, 3.0, 0.5, -1.5, 1.7, 1.0, 0.0})
    CHECK_MESSAGE(gradcheck([p](const std::vector<Var>& v) { return pow(v[0], p); }, {pos}), "p = " << p);
  CHECK(gradcheck([](const std::vector<Var>& v) { return pow(v[0], 3.0); }, {a}));  // integer p, negative x
  auto c = avoid(rnd({4, 5}, 3, -1.0, 1.0), {-0.5, 0.5});
  CHECK(gradcheck([](const std::vector<Var>& v) { return clamp(v[0], -0.5, 0.5); }, {c}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return clamp_min(v[0], -0.5); }, {c}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return clamp_max(v[0], 0.5); }, {c}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return sigmoid(v[0] * 4.0); }, {a}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return relu(v[0]); }, {a}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return tanh(v[0] * 2.0); }, {a}));
}

TEST_CASE("gradcheck: pointwise ops on non-contiguous inputs (permute, strided slice)") {
  auto a = avoid(rnd({3, 4, 5}, 4, -2.0, 2.0), {0.0});
  CHECK(gradcheck([](const std::vector<Var>& v) { return sigmoid(permute(v[0], {2, 0, 1})); }, {a}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return abs(slice(v[0], 2, 0, 5, 2)); }, {a}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return tanh(transpose(v[0], 0, 2)) * exp(permute(v[0], {2, 1, 0})); },
                  {a}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return relu(slice(transpose(v[0], 1, 2), 1, 1, 5, 3)); }, {a}));
}

TEST_CASE("gradcheck: where with broadcasting condition and operands") {
  auto a = rnd({3, 4}, 5), b = rnd({4}, 6);
  Tensor cond = bools({1, 0, 1}, {3, 1});
  CHECK(gradcheck([cond](const std::vector<Var>& v) { return where(cond, v[0], v[1]); }, {a, b}));
  Tensor cond2 = ops::gt_scalar(rnd({2, 3, 4}, 7), 0.0);  // broadcasts a and b up to [2, 3, 4]
  CHECK(gradcheck([cond2](const std::vector<Var>& v) { return where(cond2, v[0], v[1]); }, {a, b}));
  CHECK(gradcheck([cond2](const std::vector<Var>& v) { return where(cond2, v[0] * v[0], 0.5); }, {a}));
  // forward: values picked per element
  Tensor y = ops::where(cond2, a, b);
  auto cv = vec<bool>(cond2);
  auto av = vec<double>(a), bv = vec<double>(b), yv = vec<double>(y);
  for (int64_t i = 0; i < 24; ++i) CHECK(yv[i] == (cv[i] ? av[i % 12] : bv[i % 4]));
  CHECK_THROWS_WITH_AS(ops::where(a, a, b), doctest::Contains("where: condition must be bool"), Error);
}

TEST_CASE("pointwise: numerical edge cases") {
  // sigmoid far in the tails: no NaN/Inf, forward and backward, f32 and f64
  for (DType dt : {DType::F32, DType::F64}) {
    Var x(Tensor::from_vector<double>({-100.0, 100.0, -1000.0, 1000.0}).to(dt), true);
    Var y = sigmoid(x);
    auto yv = y.data().to_vector<double>();
    CHECK(yv[0] >= 0.0);
    CHECK(yv[0] < 1e-40);
    CHECK(yv[1] == 1.0);
    CHECK(yv[2] == 0.0);
    CHECK(yv[3] == 1.0);
    y.backward(Tensor::ones({4}, dt));
    for (double g : x.grad().to_vector<double>()) CHECK(std::isfinite(g));
    for (double v : ops::tanh(x.data()).to_vector<double>()) CHECK(std::isfinite(v));
  }
  // sqrt gradient away from 0 is 0.5/sqrt(x)
  Var s(Tensor::from_vector<double>({1e-4, 4.0}), true);
  sqrt(s).backward(Tensor::ones({2}, DType::F64));
  CHECK(s.grad().to_vector<double>()[0] == doctest::Approx(50.0).epsilon(1e-12));
  CHECK(s.grad().to_vector<double>()[1] == doctest::Approx(0.25).epsilon(1e-12));
  // clamp: gradient passes on the closed interval [lo, hi] and is 0 outside (torch semantics)
  Var c(Tensor::from_vector<double>({-2.0, -1.0, 0.0, 1.0, 2.0}), true);
  clamp(c, -1.0, 1.0).backward(Tensor::ones({5}, DType::F64));
  CHECK(c.grad().to_vector<double>() == std::vector<double>{0, 1, 1, 1, 0});
  // relu at 0 and abs at 0 have gradient 0
  Var r(Tensor::from_vector<double>({-1.0, 0.0, 2.0}), true);
  (relu(r) + abs(r)).backward(Tensor::ones({3}, DType::F64));
  CHECK(r.grad().to_vector<double>() == std::vector<double>{-1, 0, 2});
  CHECK_THROWS_WITH_AS(ops::exp(Tensor::arange(3)), doctest::Contains("exp: expects an f32 or f64 tensor, got i64[3]"),
                       Error);
  CHECK_THROWS_WITH_AS(ops::clamp(rnd({2}, 1), 1.0, 0.0), doctest::Contains("clamp: lo 1 > hi 0"), Error);
}

TEST_CASE("pointwise: parity with torch (saturating sigmoid/tanh, pow/log/sqrt)") {
  auto f = load_fixture("pointwise");
  if (!f) return;
  const Tensor& p = f->at("p");
  check_close(ops::sigmoid(p), f->at("sigmoid_p"), 1e-14, 1e-300, "sigmoid f64");
  check_close(ops::tanh(p), f->at("tanh_p"), 1e-14, 1e-300, "tanh f64");
  check_close(ops::sigmoid(p.to(DType::F32)), f->at("sigmoid_p_f32"), 1e-6, 1e-38, "sigmoid f32");
  const Tensor& q = f->at("q");
  check_close(ops::pow(q, 1.7), f->at("pow_q_1_7"), 1e-14, 0, "pow 1.7");
  check_close(ops::pow(q, -0.5), f->at("pow_q_m0_5"), 1e-14, 0, "pow -0.5");
  check_close(ops::log(q), f->at("log_q"), 1e-14, 1e-15, "log");
  check_close(ops::sqrt(q), f->at("sqrt_q"), 1e-14, 0, "sqrt");
}

TEST_CASE("compare: broadcasting comparisons, scalars and logical ops") {
  Tensor a = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<double>({2, 2, 5});
  CHECK(vec<bool>(ops::gt(a, b)) == std::vector<bool>{false, false, false, true, true, true});
  CHECK(vec<bool>(ops::ge(a, b)) == std::vector<bool>{false, true, false, true, true, true});
  CHECK(vec<bool>(ops::lt(a, b)) == std::vector<bool>{true, false, true, false, false, false});
  CHECK(vec<bool>(ops::le(a, b)) == std::vector<bool>{true, true, true, false, false, false});
  CHECK(vec<bool>(ops::eq(a, b)) == std::vector<bool>{false, true, false, false, false, false});
  CHECK(vec<bool>(ops::ne(a, b)) == std::vector<bool>{true, false, true, true, true, true});
  CHECK(ops::gt(a, b).dtype() == DType::Bool);
  CHECK(vec<bool>(ops::gt_scalar(a, 3.5)) == std::vector<bool>{false, false, false, true, true, true});
  CHECK(vec<bool>(ops::ge_scalar(a, 3)) == std::vector<bool>{false, false, true, true, true, true});
  CHECK(vec<bool>(ops::lt_scalar(a, 2)) == std::vector<bool>{true, false, false, false, false, false});
  CHECK(vec<bool>(ops::le_scalar(a, 2)) == std::vector<bool>{true, true, false, false, false, false});
  CHECK(vec<bool>(ops::eq_scalar(Tensor::arange(4), 2)) == std::vector<bool>{false, false, true, false});
  CHECK(vec<bool>(ops::ne_scalar(Tensor::arange(3), 0.5)) == std::vector<bool>{true, true, true});
  Tensor m1 = ops::gt_scalar(a, 2.5), m2 = bools({1, 0, 1});
  CHECK(vec<bool>(ops::logical_and(m1, m2)) == std::vector<bool>{false, false, true, true, false, true});
  CHECK(vec<bool>(ops::logical_or(m1, m2)) == std::vector<bool>{true, false, true, true, true, true});
  CHECK(vec<bool>(ops::logical_not(m2)) == std::vector<bool>{false, true, false});
  CHECK(ops::count_nonzero(m1) == 4);
  CHECK(ops::any(m1));
  CHECK_FALSE(ops::all(m1));
  // transposed (non-contiguous) operand
  CHECK(vec<bool>(ops::gt(a.transpose(0, 1), Tensor::full({1}, 2.5, DType::F64))) ==
        std::vector<bool>{false, true, false, true, true, true});
  CHECK_THROWS_WITH_AS(ops::gt(a, Tensor::arange(3)), doctest::Contains("gt: dtype mismatch f64[2, 3]"), Error);
  CHECK_THROWS_WITH_AS(ops::lt(a, rnd({4}, 1)), doctest::Contains("lt: shapes [2, 3] and [4] cannot be broadcast"),
                       Error);
  CHECK_THROWS_WITH_AS(ops::logical_and(a, m2), doctest::Contains("logical_and: expects a bool tensor"), Error);
}

TEST_CASE("compare: nonzero, argmax/argmin, topk_indices and argsort (stable)") {
  CHECK(vec<int64_t>(ops::nonzero(bools({0, 1, 1, 0, 1}))) ==
        std::vector<int64_t>{1, 2, 4});
  CHECK(ops::nonzero(Tensor::zeros({3}, DType::Bool)).shape() == Shape{0});
  Tensor x = Tensor::from_vector<double>({1, 5, 5, 2, 0, 7, 7, 3}, {2, 4});
  CHECK(vec<int64_t>(ops::argmax(x, 1)) == std::vector<int64_t>{1, 1});  // first of ties
  CHECK(vec<int64_t>(ops::argmax(x, -2)) == std::vector<int64_t>{0, 1, 1, 1});
  CHECK(vec<int64_t>(ops::argmin(x, 1)) == std::vector<int64_t>{0, 0});
  CHECK(ops::argmax(x, 0, true).shape() == Shape{1, 4});
  Tensor s = Tensor::from_vector<float>({0.5f, 0.9f, 0.1f, 0.9f, 0.5f, 0.7f});
  CHECK(vec<int64_t>(ops::topk_indices(s, 4)) == std::vector<int64_t>{1, 3, 5, 0});
  CHECK(vec<int64_t>(ops::topk_indices(s, 0)).empty());
  CHECK(vec<int64_t>(ops::argsort(s, true)) == std::vector<int64_t>{1, 3, 5, 0, 4, 2});
  CHECK(vec<int64_t>(ops::argsort(s, false)) == std::vector<int64_t>{2, 0, 4, 5, 1, 3});
  // large input: topk equals the head of the stable descending argsort
  Generator g(3);
  Tensor big = ops::mul_scalar(rand_uniform({5000}, g), 100.0);
  // quantise to create many ties
  {
    float* p = big.data<float>();
    for (int64_t i = 0; i < big.numel(); ++i) p[i] = std::floor(p[i]);
  }
  auto full = vec<int64_t>(ops::argsort(big, true));
  auto top = vec<int64_t>(ops::topk_indices(big, 300));
  CHECK(std::vector<int64_t>(full.begin(), full.begin() + 300) == top);
  auto bv = vec<float>(big);
  for (size_t i = 1; i < full.size(); ++i) {
    REQUIRE(bv[full[i - 1]] >= bv[full[i]]);
    if (bv[full[i - 1]] == bv[full[i]]) REQUIRE(full[i - 1] < full[i]);
  }
  CHECK_THROWS_WITH_AS(ops::topk_indices(s, 7), doctest::Contains("topk_indices: k = 7 out of range for f32[6]"), Error);
  CHECK_THROWS_WITH_AS(ops::argsort(x, true), doctest::Contains("argsort: expects a 1-D tensor, got f64[2, 4]"), Error);
}

TEST_CASE("pointwise: vectorised f32 exp is within 1 ulp of the double-precision exp") {
  // Sweep 2M points over the whole finite range, including gradual underflow.
  const float lo = -103.97f, hi = 88.72f;
  const int n = 1 << 21;
  int64_t worst = 0;
  float worst_x = 0;
  for (int i = 0; i <= n; ++i) {
    const float x = lo + (hi - lo) * static_cast<float>(i) / n;
    const float ref = static_cast<float>(std::exp(static_cast<double>(x)));
    const float got = cpu::exp_f32(x);
    const int64_t d = std::abs(static_cast<int64_t>(std::bit_cast<int32_t>(got)) - std::bit_cast<int32_t>(ref));
    if (d > worst) {
      worst = d;
      worst_x = x;
    }
  }
  CHECK_MESSAGE(worst <= 1, "worst " << worst << " ulp at x = " << worst_x);
  CHECK(cpu::exp_f32(0.0f) == 1.0f);
  CHECK(cpu::exp_f32(89.0f) == INFINITY);
  CHECK(cpu::exp_f32(INFINITY) == INFINITY);
  CHECK(cpu::exp_f32(-104.0f) == 0.0f);
  CHECK(cpu::exp_f32(-INFINITY) == 0.0f);
  CHECK(std::isnan(cpu::exp_f32(NAN)));
  CHECK(cpu::exp_f32(-100.0f) > 0.0f);  // denormal, not flushed
  // the tensor op uses it for f32 (and the C library for f64)
  Tensor x = Tensor::from_vector<float>({-50.0f, -1.5f, 0.25f, 30.0f});
  auto e = ops::exp(x).to_vector<float>();
  for (int i = 0; i < 4; ++i) CHECK(e[i] == cpu::exp_f32(x.to_vector<float>()[i]));
}
