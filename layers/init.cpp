#include "layers/init.h"

#include <cmath>
#include <vector>

namespace kdet {

namespace {
// Draws numel values on the CPU in f64 and copies them into t (converting dtype / device).
template <class F>
void fill_with(Tensor& t, F&& draw) {
  KDET_CHECK(t.defined() && is_floating(t.dtype()), "init: expected a floating tensor, got ",
             t.defined() ? t.desc() : std::string("undefined"));
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (auto& x : v) x = draw();
  Tensor src = Tensor::from_vector(v, t.shape());
  if (!t.device().is_cpu()) src = src.to(t.dtype()).to(t.device());
  t.copy_(src);
}
}  // namespace

std::pair<int64_t, int64_t> fan_in_out(const Shape& s) {
  KDET_CHECK(s.size() >= 2, "init: fan in/out need a tensor of rank >= 2, got shape ", s);
  int64_t rf = 1;
  for (size_t i = 2; i < s.size(); ++i) rf *= s[i];
  return {s[1] * rf, s[0] * rf};
}

double calculate_gain(Nonlinearity nl, double param) {
  switch (nl) {
    case Nonlinearity::Linear:
    case Nonlinearity::Sigmoid: return 1.0;
    case Nonlinearity::Tanh: return 5.0 / 3.0;
    case Nonlinearity::ReLU: return std::sqrt(2.0);
    case Nonlinearity::LeakyReLU: return std::sqrt(2.0 / (1.0 + param * param));
  }
  return 1.0;
}

void constant_(Tensor& t, double v) {
  KDET_CHECK(t.defined(), "constant_: undefined tensor");
  t.fill_(v);
}

void uniform_(Tensor& t, Generator& g, double lo, double hi) {
  fill_with(t, [&] { return g.uniform(lo, hi); });
}

void normal_(Tensor& t, Generator& g, double mean, double std) {
  fill_with(t, [&] { return g.normal(mean, std); });
}

static double kaiming_std(const Shape& s, double a, FanMode mode, Nonlinearity nl) {
  auto [fi, fo] = fan_in_out(s);
  double fan = static_cast<double>(mode == FanMode::FanIn ? fi : fo);
  KDET_CHECK(fan > 0, "kaiming init: zero fan for shape ", s);
  return calculate_gain(nl, a) / std::sqrt(fan);
}

void kaiming_normal_(Tensor& t, Generator& g, double a, FanMode mode, Nonlinearity nl) {
  normal_(t, g, 0.0, kaiming_std(t.shape(), a, mode, nl));
}

void kaiming_uniform_(Tensor& t, Generator& g, double a, FanMode mode, Nonlinearity nl) {
  double bound = std::sqrt(3.0) * kaiming_std(t.shape(), a, mode, nl);
  uniform_(t, g, -bound, bound);
}

void xavier_uniform_(Tensor& t, Generator& g, double gain) {
  auto [fi, fo] = fan_in_out(t.shape());
  double bound = gain * std::sqrt(6.0 / static_cast<double>(fi + fo));
  uniform_(t, g, -bound, bound);
}

void xavier_normal_(Tensor& t, Generator& g, double gain) {
  auto [fi, fo] = fan_in_out(t.shape());
  normal_(t, g, 0.0, gain * std::sqrt(2.0 / static_cast<double>(fi + fo)));
}

double bias_init_with_prob(double prior_prob) {
  KDET_CHECK(prior_prob > 0 && prior_prob < 1, "bias_init_with_prob: prior ", prior_prob, " not in (0, 1)");
  return -std::log((1.0 - prior_prob) / prior_prob);
}

void torch_default_init_(Tensor& weight, Tensor* bias, Generator& g) {
  kaiming_uniform_(weight, g, std::sqrt(5.0), FanMode::FanIn, Nonlinearity::LeakyReLU);
  if (bias && bias->defined()) {
    auto [fi, fo] = fan_in_out(weight.shape());
    double bound = fi > 0 ? 1.0 / std::sqrt(static_cast<double>(fi)) : 0.0;
    uniform_(*bias, g, -bound, bound);
  }
}

}  // namespace kdet
