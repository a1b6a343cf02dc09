// Conv2d / ConvModule / norm modules: mmcv names, bias='auto', gradcheck, frozen norm, init.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/ops/conv2d.h"
#include "engine/ops/unary.h"
#include "layers/conv.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "tests/gradcheck.h"
#include "tests/layers/layers_test_util.h"

using namespace kdet;
using namespace kdet::test;

TEST_CASE("conv: ConvModule names and bias='auto' follow mmcv") {
  ConvModule plain(4, 8, 3, 1, 1, {ConvModuleCfg::Bias::Auto, NormCfg::none(), Act::None});
  CHECK(plain.state_dict_keys() == std::vector<std::string>{"conv.weight", "conv.bias"});
  ConvModule bn(4, 8, 3, 1, 1, {ConvModuleCfg::Bias::Auto, NormCfg::bn(), Act::ReLU});
  CHECK(bn.state_dict_keys() == std::vector<std::string>{"conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                                         "bn.running_var", "bn.num_batches_tracked"});
  ConvModule gn(4, 64, 1, 1, 0, {ConvModuleCfg::Bias::On, NormCfg::gn(32), Act::None});
  CHECK(gn.state_dict_keys() == std::vector<std::string>{"conv.weight", "conv.bias", "gn.weight", "gn.bias"});
  CHECK(gn.conv().weight().shape() == Shape{64, 4, 1, 1});
  Conv2d grouped(8, 16, 3, 2, 1, 1, 4, false);
  CHECK(grouped.weight().shape() == Shape{16, 2, 3, 3});
  CHECK_FALSE(grouped.has_bias());
  CHECK_THROWS_AS(grouped.bias(), Error);
  CHECK_THROWS_WITH_AS(Conv2d(6, 16, 3, 1, 1, 1, 4), doctest::Contains("not divisible by groups 4"), Error);
  CHECK_THROWS_WITH_AS(GroupNorm(32, 48), doctest::Contains("not divisible"), Error);
  // Frozen norm (mmdet norm_cfg requires_grad=False)
  ConvModule frozen(4, 8, 3, 1, 1, {ConvModuleCfg::Bias::Auto, NormCfg::bn(false), Act::ReLU});
  CHECK(frozen.conv().weight().requires_grad());
  CHECK_FALSE(frozen.norm().parameters()[0]->requires_grad());
  CHECK(frozen.num_parameters(true) == 8 * 4 * 9);
}

TEST_CASE("conv: ConvModule forward = relu(bn(conv(x))) built from the ops") {
  Generator g(3);
  ConvModule cm(3, 6, 3, 2, 1, {ConvModuleCfg::Bias::Auto, NormCfg::bn(), Act::ReLU});
  cm.init_weights(g);
  auto* bn = dynamic_cast<BatchNorm2d*>(&cm.norm());
  REQUIRE(bn != nullptr);
  normal_(bn->running_mean(), g, 0, 0.1);
  uniform_(bn->running_var(), g, 0.5, 2);
  normal_(bn->weight().data(), g, 1, 0.1);
  cm.eval();
  Var x(rand_normal({2, 3, 9, 8}, g), false);
  Var y = cm.forward(x);
  CHECK(y.shape() == Shape{2, 6, 5, 4});
  // Reference: conv2d op, then the per-channel affine of eval BN, then relu.
  Tensor c = ops::conv2d(x.data(), cm.conv().weight().data(), Tensor(), Conv2dArgs::make(2, 1));
  auto cv = c.to_vector<float>();
  auto rm = bn->running_mean().to_vector<float>(), rv = bn->running_var().to_vector<float>();
  auto w = bn->weight().data().to_vector<float>();
  std::vector<float> ref(cv.size());
  for (size_t i = 0; i < cv.size(); ++i) {
    size_t ch = (i / 20) % 6;
    double v = (cv[i] - rm[ch]) / std::sqrt(rv[ch] + 1e-5) * w[ch];
    ref[i] = static_cast<float>(std::max(0.0, v));
  }
  check_close(y.data(), Tensor::from_vector(ref, y.shape()), 1e-5, 1e-6, "ConvModule eval");
}

TEST_CASE("conv: f64 gradcheck of a tiny ConvModule (conv + train-mode BN + ReLU) and a GN one") {
  for (bool use_gn : {false, true}) {
    CAPTURE(use_gn);
    ConvModuleCfg cfg{ConvModuleCfg::Bias::On, use_gn ? NormCfg::gn(2) : NormCfg::bn(), Act::ReLU};
    ConvModule cm(2, 4, 3, 1, 1, cfg);
    cm.to(DType::F64);
    Var* nw = cm.norm().parameters()[0];
    Var* nb = cm.norm().parameters()[1];
    // Route gradcheck's Vars into the module's parameter slots.
    auto fn = [&](const std::vector<Var>& v) {
      cm.conv().weight() = v[1];
      cm.conv().bias() = v[2];
      *nw = v[3];
      *nb = v[4];
      return cm.forward(v[0]);
    };
    CHECK(gradcheck(fn, {rnd({2, 2, 5, 4}, 1), rnd({4, 2, 3, 3}, 2), rnd({4}, 3), rnd({4}, 4, 0.5, 1.5),
                         rnd({4}, 5, -0.2, 0.2)}));
  }
}

TEST_CASE("conv: init_weights (ConvModule kaiming fan_out relu; Conv2d PyTorch default)") {
  Generator g(9);
  ConvModule cm(64, 128, 3, 1, 1, {ConvModuleCfg::Bias::On, NormCfg::gn(32), Act::ReLU});
  cm.conv().bias().data().fill_(3.0);
  cm.init_weights(g);
  auto v = cm.conv().weight().data().to_vector<double>();
  double s = 0;
  for (double x : v) s += x * x;
  CHECK(std::sqrt(s / v.size()) == doctest::Approx(std::sqrt(2.0 / (128 * 9))).epsilon(0.02));
  CHECK(max_abs(cm.conv().bias().data()) == 0);
  CHECK(cm.norm().parameters()[0]->data().to_vector<float>()[7] == 1.0f);
  Conv2d c(64, 32, 3);
  c.init_weights(g);
  double bound = 1.0 / std::sqrt(64.0 * 9);
  CHECK(max_abs(c.weight().data()) <= bound);
  CHECK(max_abs(c.weight().data()) > 0.95 * bound);
  CHECK(max_abs(c.bias().data()) <= bound);
}

TEST_CASE("conv: Linear module (torch layout, keys, forward = x Wt + b, gradcheck)") {
  Linear fc(5, 3);
  CHECK(fc.state_dict_keys() == std::vector<std::string>{"weight", "bias"});
  CHECK(fc.weight().shape() == Shape{3, 5});
  Generator g(2);
  fc.init_weights(g);
  CHECK(max_abs(fc.weight().data()) <= 1 / std::sqrt(5.0));
  Var x(rand_normal({4, 5}, g));
  Var y = fc.forward(x);
  auto xv = x.data().to_vector<double>(), wv = fc.weight().data().to_vector<double>(),
       bv = fc.bias().data().to_vector<double>(), yv = y.data().to_vector<double>();
  double err = 0;
  for (int i = 0; i < 4; ++i)
    for (int o = 0; o < 3; ++o) {
      double s = bv[o];
      for (int k = 0; k < 5; ++k) s += xv[i * 5 + k] * wv[o * 5 + k];
      err = std::max(err, std::abs(s - yv[i * 3 + o]));
    }
  CHECK(err < 1e-5);
  CHECK_THROWS_WITH_AS(fc.forward(Var(Tensor::zeros({2, 4}))), doctest::Contains("does not end in 5"), Error);
  fc.to(DType::F64);
  CHECK(gradcheck(
      [&](const std::vector<Var>& v) {
        fc.weight() = v[1];
        fc.bias() = v[2];
        return fc.forward(v[0]);
      },
      {rnd({2, 3, 5}, 1), rnd({3, 5}, 2), rnd({3}, 3)}));
  Linear nob(5, 2, false);
  CHECK(nob.state_dict_keys() == std::vector<std::string>{"weight"});
}
