#include <doctest/doctest.h>

#include <omp.h>

#include <chrono>

#include "engine/ops/norm.h"
#include "engine/random.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

// Tolerances for a result computed in `dt` against a float64 PyTorch reference.
double rtol_for(DType dt) { return dt == DType::F64 ? 1e-10 : 2e-5; }
double atol_for(DType dt) { return dt == DType::F64 ? 1e-11 : 2e-5; }

Tensor param(const Tensor& t, DType dt) { return t.to(dt).clone(); }

void bn_parity(const std::string& name, DType dt) {
  auto f = load_fixture(name);
  if (!f) return;
  INFO(name << " " << dtype_name(dt));
  const bool training = f->metadata.at("training") == "1";
  const bool affine = f->metadata.at("affine") == "1";
  Var x(param(f->at("x"), dt), true);
  Var w, b;
  if (affine) {
    w = Var(param(f->at("weight"), dt), true);
    b = Var(param(f->at("bias"), dt), true);
  }
  Tensor rm = param(f->at("running_mean"), dt), rv = param(f->at("running_var"), dt);
  Var y = batch_norm(x, w, b, rm, rv, training);
  y.backward(f->at("gy").to(dt));
  const double rt = rtol_for(dt), at = atol_for(dt);
  check_close(y.data(), f->at("y"), rt, at, name + " y");
  check_close(x.grad(), f->at("gx"), rt, at, name + " gx");
  if (affine) {
    check_close(w.grad(), f->at("gw"), rt, at * 10, name + " gw");
    check_close(b.grad(), f->at("gb"), rt, at * 10, name + " gb");
  }
  check_close(rm, f->at("running_mean_after"), rt, at, name + " running_mean");
  check_close(rv, f->at("running_var_after"), rt, at, name + " running_var");
}

void affine_parity(const std::string& name, DType dt, const std::function<Var(Var&, Var&, Var&)>& fn) {
  auto f = load_fixture(name);
  if (!f) return;
  INFO(name << " " << dtype_name(dt));
  Var x(param(f->at("x"), dt), true), w(param(f->at("weight"), dt), true), b(param(f->at("bias"), dt), true);
  Var y = fn(x, w, b);
  y.backward(f->at("gy").to(dt));
  const double rt = rtol_for(dt), at = atol_for(dt);
  check_close(y.data(), f->at("y"), rt, at, name + " y");
  check_close(x.grad(), f->at("gx"), rt, at, name + " gx");
  check_close(w.grad(), f->at("gw"), rt, at * 10, name + " gw");
  check_close(b.grad(), f->at("gb"), rt, at * 10, name + " gb");
}

}  // namespace

TEST_CASE("norm: batch_norm gradcheck (train, eval, no affine, 2-D input)") {
  Tensor x = rnd({3, 4, 3, 5}, 11, -2.0, 2.0), w = rnd({4}, 12, 0.5, 1.5), b = rnd({4}, 13);
  Tensor rm0 = rnd({4}, 14, -0.2, 0.2), rv0 = rnd({4}, 15, 0.5, 1.5);
  for (bool training : {true, false}) {
    INFO("training=" << training);
    CHECK(gradcheck(
        [&](const std::vector<Var>& v) {
          Tensor rm = rm0.clone(), rv = rv0.clone();
          return batch_norm(v[0], v[1], v[2], rm, rv, training);
        },
        {x, w, b}));
    // frozen BN: affine given but not trained; still differentiable w.r.t. x
    CHECK(gradcheck(
        [&](const std::vector<Var>& v) {
          Tensor rm = rm0.clone(), rv = rv0.clone();
          return batch_norm(v[0], v[1], v[2], rm, rv, training);
        },
        {x, w, b}, {}, {true, false, false}));
    CHECK(gradcheck(
        [&](const std::vector<Var>& v) {
          Tensor rm = rm0.clone(), rv = rv0.clone();
          return batch_norm(v[0], Var(), Var(), rm, rv, training);
        },
        {x}));
  }
  // bias only (weight undefined), 2-D input [N, C]
  Tensor x2 = rnd({7, 3}, 16, -2.0, 2.0), b2 = rnd({3}, 17);
  CHECK(gradcheck(
      [&](const std::vector<Var>& v) {
        Tensor rm, rv;  // no running stats: batch statistics
        return batch_norm(v[0], Var(), v[1], rm, rv, false);
      },
      {x2, b2}));
}

TEST_CASE("norm: group_norm and layer_norm gradcheck") {
  Tensor x = rnd({2, 6, 3, 4}, 21, -2.0, 2.0), w = rnd({6}, 22, 0.5, 1.5), b = rnd({6}, 23);
  for (int64_t G : {1, 3, 6}) {
    INFO("groups=" << G);
    CHECK(gradcheck([&](const std::vector<Var>& v) { return group_norm(v[0], G, v[1], v[2]); }, {x, w, b}));
  }
  CHECK(gradcheck([&](const std::vector<Var>& v) { return group_norm(v[0], 2, Var(), Var()); }, {x}));
  Tensor x3 = rnd({2, 4, 5}, 24, -2.0, 2.0);  // N, C, L
  CHECK(gradcheck([&](const std::vector<Var>& v) { return group_norm(v[0], 2, v[1], v[2]); },
                  {x3, rnd({4}, 25, 0.5, 1.5), rnd({4}, 26)}));
  Tensor xl = rnd({3, 2, 5}, 27, -2.0, 2.0), wl = rnd({2, 5}, 28, 0.5, 1.5), bl = rnd({2, 5}, 29);
  CHECK(gradcheck([&](const std::vector<Var>& v) { return layer_norm(v[0], {2, 5}, v[1], v[2]); }, {xl, wl, bl}));
  CHECK(gradcheck([&](const std::vector<Var>& v) { return layer_norm(v[0], {5}, v[1], v[2]); },
                  {xl, rnd({5}, 30, 0.5, 1.5), rnd({5}, 31)}));
  CHECK(gradcheck([&](const std::vector<Var>& v) { return layer_norm(v[0], {5}, Var(), Var()); }, {xl}));
}

TEST_CASE("norm: batch_norm PyTorch parity (outputs, gradients, running stats)") {
  for (DType dt : {DType::F64, DType::F32})
    for (const char* n : {"norm_bn_train", "norm_bn_eval", "norm_bn_train_2d", "norm_bn_train_noaffine"})
      bn_parity(n, dt);
}

TEST_CASE("norm: group_norm / layer_norm PyTorch parity") {
  for (DType dt : {DType::F64, DType::F32}) {
    affine_parity("norm_gn", dt, [](Var& x, Var& w, Var& b) { return group_norm(x, 4, w, b); });
    affine_parity("norm_gn_32", dt, [](Var& x, Var& w, Var& b) { return group_norm(x, 32, w, b); });
    affine_parity("norm_ln", dt, [](Var& x, Var& w, Var& b) { return layer_norm(x, {4, 10}, w, b); });
  }
}

TEST_CASE("norm: semantics and errors") {
  // Eval mode with running stats is the fixed affine (x - rm) / sqrt(rv + eps) * w + b.
  Tensor x = rnd({2, 3, 2, 2}, 41, -2.0, 2.0);
  Tensor rm = Tensor::from_vector<double>({0.1, -0.2, 0.3}), rv = Tensor::from_vector<double>({0.5, 1.0, 2.0});
  Var w(Tensor::from_vector<double>({1.5, 0.5, -1.0})), b(Tensor::from_vector<double>({0.0, 1.0, 2.0}));
  Var y = batch_norm(Var(x), w, b, rm, rv, false);
  auto xv = x.to_vector<double>(), yv = y.data().to_vector<double>();
  for (size_t i = 0; i < xv.size(); ++i) {
    const int c = (i / 4) % 3;
    const double m[3] = {0.1, -0.2, 0.3}, v[3] = {0.5, 1.0, 2.0}, ww[3] = {1.5, 0.5, -1.0}, bb[3] = {0, 1, 2};
    CHECK(yv[i] == doctest::Approx((xv[i] - m[c]) / std::sqrt(v[c] + 1e-5) * ww[c] + bb[c]).epsilon(1e-12));
  }
  CHECK(rm.to_vector<double>()[1] == -0.2);  // eval never updates
  // Training: per-channel output has mean b and (biased) variance w^2 * var/(var+eps).
  Tensor rm2 = Tensor::zeros({3}, DType::F64), rv2 = Tensor::ones({3}, DType::F64);
  Var yt = batch_norm(Var(x), Var(), Var(), rm2, rv2, true);
  auto yt_v = yt.data().to_vector<double>();
  for (int c = 0; c < 3; ++c) {
    double s = 0;
    for (int n = 0; n < 2; ++n)
      for (int k = 0; k < 4; ++k) s += yt_v[(n * 3 + c) * 4 + k];
    CHECK(std::abs(s) < 1e-12);
  }
  CHECK_THROWS_WITH_AS(group_norm(Var(Tensor::zeros({2, 30, 4, 4})), 32, Var(), Var()),
                       doctest::Contains("group_norm: C=30 not divisible by num_groups=32"), Error);
  CHECK_THROWS_WITH_AS(batch_norm(Var(Tensor::zeros({1, 3}, DType::F64)), Var(), Var(), rm2, rv2, true),
                       doctest::Contains("more than 1 value per channel"), Error);
  Tensor rmf = Tensor::zeros({4}), rvf = Tensor::ones({4});
  CHECK_THROWS_WITH_AS(batch_norm(Var(Tensor::zeros({2, 3, 4, 4})), Var(), Var(), rmf, rvf, true),
                       doctest::Contains("batch_norm: running stat f32[4]"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(Var(Tensor::zeros({2, 3, 4})), {3}, Var(), Var()),
                       doctest::Contains("layer_norm: normalized_shape [3]"), Error);
  CHECK_THROWS_WITH_AS(group_norm(Var(Tensor::zeros({2, 4, 3})), 2, Var(Tensor::ones({3})), Var()),
                       doctest::Contains("group_norm: weight f32[3]"), Error);
}

TEST_CASE("norm: f32 kernels are deterministic and match f64 on a large input") {
  Generator g(5);
  Tensor x = rand_normal({4, 64, 40, 40}, g, 0.5, 2.0, DType::F32);
  Tensor w = rand_uniform({64}, g, 0.5, 1.5, DType::F32), b = rand_uniform({64}, g, -1.0, 1.0, DType::F32);
  Tensor gy = rand_normal({4, 64, 40, 40}, g, 0.0, 1.0, DType::F32);
  auto run = [&](DType dt, const char* which) {
    Var xv(x.to(dt).clone(), true), wv(w.to(dt).clone(), true), bv(b.to(dt).clone(), true);
    Tensor rm = Tensor::zeros({64}, dt), rv = Tensor::ones({64}, dt);
    Var y = std::string(which) == "bn" ? batch_norm(xv, wv, bv, rm, rv, true) : group_norm(xv, 32, wv, bv);
    y.backward(gy.to(dt));
    return std::vector<Tensor>{y.data(), xv.grad(), wv.grad(), bv.grad()};
  };
  for (const char* which : {"bn", "gn"}) {
    INFO(which);
    auto a = run(DType::F32, which), a2 = run(DType::F32, which), d = run(DType::F64, which);
    const int nt = omp_get_max_threads();
    omp_set_num_threads(1);  // the reductions do not depend on the thread count either
    auto a1 = run(DType::F32, which);
    omp_set_num_threads(nt);
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(max_abs_diff(a[i], a2[i]) == 0.0);
      CHECK(max_abs_diff(a[i], a1[i]) == 0.0);
      check_close(a[i], d[i], 1e-4, i < 2 ? 1e-4 : 2e-2, std::string(which) + " f32 vs f64 #" + std::to_string(i));
    }
  }
}
