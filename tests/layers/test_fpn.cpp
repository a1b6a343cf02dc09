// FPN: key names and forward/backward parity with a PyTorch replica of mmdet's FPN
// (tests/ref/gen_layers.py) for every extra-level mode, odd-sized inputs and a GN neck.
#include <doctest/doctest.h>

#include <sstream>

#include "layers/fpn.h"
#include "layers/init.h"
#include "tests/gradcheck.h"
#include "tests/layers/layers_test_util.h"

using namespace kdet;
using namespace kdet::test;

namespace {
FPNCfg cfg_from_meta(const std::map<std::string, std::string>& m) {
  FPNCfg c;
  std::istringstream in(m.at("in_channels"));
  for (std::string t; std::getline(in, t, ',');) c.in_channels.push_back(std::stoll(t));
  c.out_channels = std::stoll(m.at("out_channels"));
  c.num_outs = std::stoi(m.at("num_outs"));
  c.start_level = std::stoi(m.at("start_level"));
  const std::string& e = m.at("add_extra_convs");
  c.add_extra_convs = e == "on_input"     ? FPNCfg::Extra::OnInput
                      : e == "on_lateral" ? FPNCfg::Extra::OnLateral
                      : e == "on_output"  ? FPNCfg::Extra::OnOutput
                                          : FPNCfg::Extra::None;
  c.relu_before_extra_convs = m.at("relu_before_extra_convs") == "True";
  if (m.at("gn") == "True") c.norm = NormCfg::gn(32);
  return c;
}
}  // namespace

TEST_CASE("fpn: state-dict keys equal mmdet's (RetinaNet, Faster R-CNN, GN neck)") {
  auto f = load_fixture("layers_keys");
  if (!f) return;
  FPN retina(retinanet_fpn_cfg({256, 512, 1024, 2048}));
  CHECK(key_lines(retina) == split_lines(f->metadata.at("fpn_retinanet_r50")));
  CHECK(retina.find_parameter("fpn_convs.3.conv.weight")->shape() == Shape{256, 2048, 3, 3});
  FPNCfg faster;
  faster.in_channels = {256, 512, 1024, 2048};
  FPN fr(faster);
  CHECK(key_lines(fr) == split_lines(f->metadata.at("fpn_faster_r50")));
  FPNCfg gn;
  gn.in_channels = {64, 128};
  gn.out_channels = 64;
  gn.num_outs = 3;
  gn.add_extra_convs = FPNCfg::Extra::OnOutput;
  gn.norm = NormCfg::gn(32);
  FPN g(gn);
  CHECK(key_lines(g) == split_lines(f->metadata.at("fpn_gn")));
  auto np = retina.named_parameters("neck");
  CHECK(np[0].first == "neck.lateral_convs.0.conv.weight");
  CHECK(np[1].first == "neck.lateral_convs.0.conv.bias");
}

TEST_CASE("fpn: forward and backward match the mmdet FPN replica (all extra modes, f64 and f32)") {
  for (const char* name : {"retina", "maxpool", "on_output_relu", "on_lateral", "gn"}) {
    CAPTURE(name);
    auto f = load_fixture(std::string("layers_fpn_") + name);
    if (!f) return;
    FPNCfg cfg = cfg_from_meta(f->metadata);
    FPN fpn(cfg);
    fpn.to(DType::F64);
    fpn.load_state_dict(with_prefix(*f, "w."));
    std::vector<Var> xs;
    for (size_t i = 0; i < cfg.in_channels.size(); ++i) xs.emplace_back(f->at(std::string("x") + std::to_string(i)), true);
    std::vector<Var> taps;
    auto ys = fpn.forward(xs, &taps);
    REQUIRE(ys.size() == static_cast<size_t>(cfg.num_outs));
    REQUIRE(taps.size() == ys.size());
    // Without a norm the conv hook points are the outputs themselves; with GN they are pre-GN.
    if (cfg.norm.type == NormCfg::None)
      for (size_t i = 0; i < ys.size(); ++i) CHECK(max_abs_diff(taps[i].data(), ys[i].data()) == 0);
    else
      CHECK(max_abs_diff(taps[0].data(), ys[0].data()) > 0.1);
    std::vector<Tensor> rs;
    for (int i = 0; i < cfg.num_outs; ++i) {
      check_close(ys[i].data(), f->at(std::string("y") + std::to_string(i)), 1e-10, 1e-10, std::string("P") + std::to_string(i));
      rs.push_back(f->at(std::string("r") + std::to_string(i)));
    }
    weighted_sum(ys, rs).backward();
    for (size_t i = 0; i < xs.size(); ++i) {
      const Tensor& want = f->at("grad.x" + std::to_string(i));
      Tensor got = xs[i].grad().defined() ? xs[i].grad() : Tensor::zeros(want.shape(), DType::F64);
      check_close(got, want, 1e-9, 1e-10, "grad x" + std::to_string(i));
    }
    for (auto& [k, t] : with_prefix(*f, "grad.")) {
      if (k[0] == 'x') continue;
      REQUIRE_MESSAGE(fpn.find_parameter(k) != nullptr, k);
      check_close(fpn.find_parameter(k)->grad(), t, 1e-9, 1e-10, "grad " + k);
    }
    // f32 model on f32 inputs, against the f64 reference.
    fpn.to(DType::F32);
    NoGradGuard ng;
    std::vector<Var> x32;
    for (auto& x : xs) x32.emplace_back(x.data().to(DType::F32));
    auto y32 = fpn.forward(x32);
    for (int i = 0; i < cfg.num_outs; ++i) {
      const Tensor& ref = f->at(std::string("y") + std::to_string(i));
      check_close(y32[i].data(), ref, 1e-4, 1e-5 * max_abs(ref), "f32 P" + std::to_string(i));
    }
  }
}

TEST_CASE("fpn: output sizes, init and argument checks") {
  FPN fpn(retinanet_fpn_cfg({8, 16, 32, 64}, 16));
  Generator g(1);
  fpn.init_weights(g);
  CHECK(max_abs(fpn.find_parameter("fpn_convs.4.conv.bias")->data()) == 0);
  const Tensor& w = fpn.find_parameter("fpn_convs.0.conv.weight")->data();  // [16, 16, 3, 3]
  double bound = std::sqrt(6.0 / (16 * 9 + 16 * 9));
  CHECK(max_abs(w) <= bound);
  CHECK(max_abs(w) > 0.9 * bound);
  // Padded 800x1216 input sizes of spec §3.2 (scaled by 1/8 in resolution): C3..C5 = 100x152, 50x76, 25x38.
  std::vector<Var> xs = {Var(Tensor::zeros({1, 8, 200, 304})), Var(Tensor::zeros({1, 16, 100, 152})),
                         Var(Tensor::zeros({1, 32, 50, 76})), Var(Tensor::zeros({1, 64, 25, 38}))};
  NoGradGuard ng;
  auto ys = fpn.forward(xs);
  REQUIRE(ys.size() == 5);
  CHECK(ys[0].shape() == Shape{1, 16, 100, 152});
  CHECK(ys[2].shape() == Shape{1, 16, 25, 38});
  CHECK(ys[3].shape() == Shape{1, 16, 13, 19});
  CHECK(ys[4].shape() == Shape{1, 16, 7, 10});
  CHECK_THROWS_WITH_AS(fpn.forward({xs[0], xs[1]}), doctest::Contains("got 2 inputs, expected 4"), Error);
  FPNCfg bad = retinanet_fpn_cfg({8, 16, 32, 64});
  bad.num_outs = 2;
  CHECK_THROWS_AS(FPN{bad}, Error);
}
