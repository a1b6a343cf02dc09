// tests/gradcheck.h — float64 finite-difference gradient checks.
//
// gradcheck(fn, inputs) evaluates y = fn(inputs) in f64, draws a fixed random r of y's shape and
// compares the analytic gradient of L = Σ y ⊙ r (one backward with grad_out = r) with central
// differences of L for every element of every input that requires grad. The report names the op that
// produced y and the worst element.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <vector>

#include "engine/autograd.h"
#include "engine/random.h"

namespace kdet::test {

struct GradcheckOptions {
  double eps = 1e-6;
  double rtol = 1e-5;
  double atol = 1e-8;
  uint64_t seed = 1234;
};

inline double weighted_sum(const Tensor& y, const Tensor& r) {
  Tensor yc = y.contiguous();
  const double* py = yc.data<double>();
  const double* pr = r.data<double>();
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += py[i] * pr[i];
  return s;
}

// fn receives Vars built from `inputs` (f64). needs_grad[i] (default: all) selects which get gradients.
inline bool gradcheck(const std::function<Var(const std::vector<Var>&)>& fn, const std::vector<Tensor>& inputs,
                      GradcheckOptions opt = {}, std::vector<bool> needs_grad = {}) {
  if (needs_grad.empty()) needs_grad.assign(inputs.size(), true);
  std::vector<Tensor> xs;
  for (auto& t : inputs) {
    REQUIRE_MESSAGE(t.dtype() == DType::F64, "gradcheck inputs must be f64, got " << t.desc());
    xs.push_back(t.clone());
  }
  std::vector<Var> vars;
  for (size_t i = 0; i < xs.size(); ++i) vars.emplace_back(xs[i], needs_grad[i]);
  Var y = fn(vars);
  const std::string op = y.op();
  Generator g(opt.seed);
  Tensor r = rand_normal(y.shape(), g, 0.0, 1.0, DType::F64);
  y.backward(r);

  bool ok = true;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!needs_grad[i]) continue;
    Tensor analytic = vars[i].grad();
    if (!analytic.defined()) analytic = Tensor::zeros(xs[i].shape(), DType::F64);
    analytic = analytic.contiguous();
    const double* pa = analytic.data<double>();
    double* px = xs[i].data<double>();
    double worst = 0;
    int64_t worst_idx = -1;
    double worst_num = 0, worst_ana = 0;
    for (int64_t k = 0; k < xs[i].numel(); ++k) {
      double orig = px[k];
      double lp, lm;
      {
        NoGradGuard ng;
        px[k] = orig + opt.eps;
        std::vector<Var> vp;
        for (auto& t : xs) vp.emplace_back(t, false);
        lp = weighted_sum(fn(vp).data(), r);
        px[k] = orig - opt.eps;
        std::vector<Var> vm;
        for (auto& t : xs) vm.emplace_back(t, false);
        lm = weighted_sum(fn(vm).data(), r);
        px[k] = orig;
      }
      double num = (lp - lm) / (2 * opt.eps);
      double err = std::abs(num - pa[k]);
      double tol = opt.atol + opt.rtol * std::abs(num);
      if (err > tol && err - tol > worst) {
        worst = err - tol;
        worst_idx = k;
        worst_num = num;
        worst_ana = pa[k];
      }
    }
    if (worst_idx >= 0) {
      ok = false;
      std::ostringstream s;
      s.precision(12);
      s << "gradcheck failed for op '" << op << "', input " << i << " " << xs[i].desc() << ", element "
        << worst_idx << ": numeric " << worst_num << " vs analytic " << worst_ana;
      FAIL_CHECK(s.str());
    }
  }
  return ok;
}

// Random f64 tensor in [lo, hi).
inline Tensor rnd(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator g(seed);
  return rand_uniform(s, g, lo, hi, DType::F64);
}

// Max |a - b| over all elements (both converted to f64).
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE_MESSAGE(a.shape() == b.shape(), "shape mismatch " << a.desc() << " vs " << b.desc());
  auto va = a.to_vector<double>();
  auto vb = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::abs(va[i] - vb[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

// Checks |a - b| <= atol + rtol * |b| elementwise; reports the worst element.
inline void check_close(const Tensor& a, const Tensor& b, double rtol, double atol, const std::string& what) {
  REQUIRE_MESSAGE(a.shape() == b.shape(), what << ": shape " << a.desc() << " vs " << b.desc());
  auto va = a.to_vector<double>();
  auto vb = b.to_vector<double>();
  int64_t worst = -1;
  double worst_excess = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::abs(va[i] - vb[i]);
    double tol = atol + rtol * std::abs(vb[i]);
    if (!(d <= tol) && (worst < 0 || d - tol > worst_excess)) {
      worst = static_cast<int64_t>(i);
      worst_excess = std::isnan(d) ? INFINITY : d - tol;
    }
  }
  if (worst >= 0)
    FAIL_CHECK(what << ": element " << worst << " got " << va[worst] << " expected " << vb[worst] << " (rtol "
                    << rtol << ", atol " << atol << ")");
}

}  // namespace kdet::test
