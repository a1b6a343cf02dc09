// ResNet / ResNeXt: mmdet/torchvision key names, forward and backward parity with torchvision
// (tests/ref/gen_layers.py), frozen stages, norm_eval, init.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/ops/unary.h"
#include "layers/fpn.h"
#include "layers/init.h"
#include "layers/resnet.h"
#include "tests/gradcheck.h"
#include "tests/layers/layers_test_util.h"

using namespace kdet;
using namespace kdet::test;

namespace {
ResNetCfg parity_cfg(int depth) {
  ResNetCfg c = resnet_cfg(depth, /*frozen_stages=*/-1, /*norm_eval=*/false);
  return c;
}
}  // namespace

TEST_CASE("resnet: state-dict keys and shapes equal torchvision's (= mmdet backbone.*)") {
  auto f = load_fixture("layers_keys");
  if (!f) return;
  struct Case {
    const char* name;
    ResNetCfg cfg;
  } cases[] = {{"resnet18", resnet_cfg(18)},
               {"resnet50", resnet_cfg(50)},
               {"resnext50_32x4d", resnext_cfg(50, 32, 4)},
               {"resnext101_32x4d", resnext_cfg(101, 32, 4)},
               {"resnext101_64x4d", resnext_cfg(101, 64, 4)}};
  for (auto& c : cases) {
    ResNet m(c.cfg);
    auto want = split_lines(f->metadata.at(c.name));
    auto got = key_lines(m);
    CHECK_MESSAGE(got.size() == want.size(), c.name);
    size_t n = std::min(got.size(), want.size());
    int bad = 0;
    for (size_t i = 0; i < n && bad < 3; ++i)
      if (got[i] != want[i]) {
        ++bad;
        FAIL_CHECK(c.name << " key " << i << ": got '" << got[i] << "' want '" << want[i] << "'");
      }
  }
  ResNet r50(resnet_cfg(50));
  auto np = r50.named_parameters("backbone");
  CHECK(np.front().first == "backbone.conv1.weight");
  CHECK(r50.find_parameter("layer1.0.downsample.0.weight") != nullptr);
  CHECK(r50.find_buffer("layer1.0.downsample.1.running_mean") != nullptr);
  CHECK(r50.out_channels() == std::vector<int64_t>{256, 512, 1024, 2048});
  CHECK(r50.out_strides() == std::vector<int64_t>{4, 8, 16, 32});
}

TEST_CASE("resnet: parameter counts of RetinaNet R50/R18-FPN equal the spec's table (§14)") {
  // Head (spec §6.1): 2 towers x 4 conv3x3 256->256 (+bias), retina_cls 256->720, retina_reg 256->36.
  const int64_t head = 8 * (256 * 256 * 9 + 256) + (256 * 720 * 9 + 720) + (256 * 36 * 9 + 36);
  ResNet r50(resnet_cfg(50, 1, true));
  FPN fpn50(retinanet_fpn_cfg(r50.out_channels()));
  CHECK(r50.num_parameters() + fpn50.num_parameters() + head == 37968692);
  // trainable with frozen stem + layer1: 37.743 M
  CHECK(std::llround((r50.num_parameters(true) + fpn50.num_parameters() + head) / 1e3) == 37743);
  ResNet r18(resnet_cfg(18, 1, true));
  FPN fpn18(retinanet_fpn_cfg(r18.out_channels()));
  CHECK(std::llround((r18.num_parameters() + fpn18.num_parameters() + head) / 1e3) == 21410);
  CHECK(std::llround((r18.num_parameters(true) + fpn18.num_parameters() + head) / 1e3) == 21253);
}

TEST_CASE("resnet: ResNet-18 eval forward matches torchvision (f32 and f64)") {
  auto f = load_fixture("layers_resnet18");
  if (!f) return;
  ResNet m(parity_cfg(18));
  m.load_state_dict(with_prefix(*f, "w."));
  const Tensor& x = f->at("x");
  {  // f32, eval: float32 kernels vs a float64 reference
    m.eval();
    NoGradGuard ng;
    auto outs = m.forward(Var(x));
    REQUIRE(outs.size() == 4);
    for (int i = 0; i < 4; ++i) {
      const Tensor& ref = f->at("eval.c" + std::to_string(i + 2));
      check_close(outs[i].data(), ref, 1e-4, 1e-4 * max_abs(ref), "f32 eval C" + std::to_string(i + 2));
    }
  }
  m.to(DType::F64);
  {
    m.eval();
    NoGradGuard ng;
    auto outs = m.forward(Var(x.to(DType::F64)));
    for (int i = 0; i < 4; ++i)
      check_close(outs[i].data(), f->at("eval.c" + std::to_string(i + 2)), 1e-10, 1e-10,
                  "f64 eval C" + std::to_string(i + 2));
  }
  // mmdet's training configuration (frozen_stages 1, norm_eval): in train() mode every BN uses its
  // running statistics, so the forward equals torch's eval forward and no statistic moves.
  ResNet mm(resnet_cfg(18, 1, true));
  mm.to(DType::F64);
  mm.load_state_dict(with_prefix(*f, "w."));
  mm.train();
  auto outs = mm.forward(Var(x.to(DType::F64)));
  for (int i = 0; i < 4; ++i)
    check_close(outs[i].data(), f->at("eval.c" + std::to_string(i + 2)), 1e-10, 1e-10,
                "norm_eval train C" + std::to_string(i + 2));
  check_close(*mm.find_buffer("layer3.0.bn1.running_mean"), f->at("w.layer3.0.bn1.running_mean"), 0, 0,
              "running_mean unchanged");
  CHECK(outs[3].requires_grad());
}

TEST_CASE("resnet: ResNet-18 train-mode forward, running stats and backward match torch (f64)") {
  auto f = load_fixture("layers_resnet18");
  if (!f) return;
  ResNet m(parity_cfg(18));
  m.to(DType::F64);
  m.load_state_dict(with_prefix(*f, "w."));
  const Tensor& x = f->at("x");
  m.train();
  CHECK(m.modules_of_type<BatchNorm2d>().front()->training());
  Var xv(x.to(DType::F64), true);
  auto outs = m.forward(xv);
  for (int i = 0; i < 4; ++i)
    check_close(outs[i].data(), f->at("train.c" + std::to_string(i + 2)), 1e-9, 1e-9,
                "f64 train C" + std::to_string(i + 2));
  for (auto& k : {"bn1.running_mean", "bn1.running_var", "layer2.0.downsample.1.running_mean",
                  "layer4.1.bn2.running_var"})
    check_close(*m.find_buffer(k), f->at(std::string("after.") + k), 1e-10, 1e-10, k);
  CHECK(m.find_buffer("layer4.1.bn2.num_batches_tracked")->to_vector<int64_t>()[0] ==
        f->at("after.layer4.1.bn2.num_batches_tracked").to_vector<int64_t>()[0]);

  // Backward of sum_i <C_i, R_i>: input and parameter gradients equal torch's; every parameter gets one.
  std::vector<Tensor> rs;
  for (int i = 0; i < 4; ++i) rs.push_back(f->at("train.r" + std::to_string(i + 2)));
  weighted_sum(outs, rs).backward();
  check_close(xv.grad(), f->at("grad.x"), 1e-8, 1e-9 * max_abs(f->at("grad.x")), "grad x");
  for (auto& [k, t] : with_prefix(*f, "grad.")) {
    if (k == "x") continue;
    Var* p = m.find_parameter(k);
    REQUIRE_MESSAGE(p != nullptr, k);
    REQUIRE_MESSAGE(p->grad().defined(), k);
    check_close(p->grad(), t, 1e-8, 1e-9 * max_abs(t), "grad " + k);
  }
  for (auto& [name, v] : m.named_parameters()) {
    CHECK_MESSAGE(v.grad().defined(), name);
    if (v.grad().defined()) CHECK_MESSAGE(max_abs(v.grad()) > 0, name);
  }
}

TEST_CASE("resnet: ResNeXt bottleneck (32 groups x 4) matches torchvision in eval and train mode") {
  auto f = load_fixture("layers_resnext_block");
  if (!f) return;
  ResNetCfg cfg = resnext_cfg(50, 32, 4);
  Bottleneck blk(64, 64, 2, 1, true, cfg);
  CHECK(blk.width() == std::stoll(f->metadata.at("width")));
  blk.to(DType::F64);
  blk.load_state_dict(with_prefix(*f, "w."));
  const Tensor& x = f->at("x");
  blk.eval();
  {
    NoGradGuard ng;
    check_close(blk.forward(Var(x)).data(), f->at("eval.y"), 1e-10, 1e-10, "eval");
  }
  blk.train();
  Var xv(x, true);
  Var y = blk.forward(xv);
  check_close(y.data(), f->at("train.y"), 1e-9, 1e-9, "train");
  weighted_sum({y}, {f->at("train.r")}).backward();
  check_close(xv.grad(), f->at("grad.x"), 1e-8, 1e-10, "grad x");
  check_close(blk.find_parameter("conv2.weight")->grad(), f->at("grad.conv2.weight"), 1e-8, 1e-10,
              "grad conv2.weight");
  check_close(*blk.find_buffer("bn2.running_var"), f->at("after.bn2.running_var"), 1e-10, 1e-10, "running_var");
}

TEST_CASE("resnet: frozen_stages and norm_eval follow mmdet (requires_grad, eval modes, no gradients)") {
  ResNetCfg cfg = resnet_cfg(18, /*frozen_stages=*/1, /*norm_eval=*/false);
  cfg.base_channels = 8;  // a narrow variant keeps this fast
  ResNet m(cfg);
  Generator g(5);
  m.init_weights(g);
  CHECK(m.out_channels() == std::vector<int64_t>{8, 16, 32, 64});
  for (auto& [name, v] : m.named_parameters()) {
    bool frozen = name.rfind("conv1.", 0) == 0 || name.rfind("bn1.", 0) == 0 || name.rfind("layer1.", 0) == 0;
    CHECK_MESSAGE(v.requires_grad() == !frozen, name);
  }
  m.train();
  CHECK_FALSE(m.find_module("bn1")->training());
  CHECK_FALSE(m.find_module("layer1.1.bn2")->training());
  CHECK_FALSE(m.find_module("layer1.0.conv1")->training());
  CHECK(m.find_module("layer2.0.bn1")->training());
  CHECK(m.find_module("layer2.0.downsample.1")->training());
  Var x(rand_normal({2, 3, 32, 32}, g), false);
  auto outs = m.forward(x);
  weighted_sum(outs, {rand_normal(outs[0].shape(), g), rand_normal(outs[1].shape(), g),
                      rand_normal(outs[2].shape(), g), rand_normal(outs[3].shape(), g)})
      .backward();
  for (auto& [name, v] : m.named_parameters()) CHECK_MESSAGE(v.grad().defined() == v.requires_grad(), name);
  // Frozen BN statistics did not move; trainable stages' did.
  CHECK(m.find_buffer("bn1.num_batches_tracked")->to_vector<int64_t>()[0] == 0);
  CHECK(m.find_buffer("layer2.0.bn1.num_batches_tracked")->to_vector<int64_t>()[0] == 1);

  // norm_eval: every BN in eval mode after train(), affine still trainable; eval() -> train() round trip.
  ResNetCfg c2 = cfg;
  c2.frozen_stages = 0;
  c2.norm_eval = true;
  ResNet m2(c2);
  m2.eval();
  m2.train();
  CHECK(m2.training());
  for (auto* bn : m2.modules_of_type<BatchNorm2d>()) CHECK_FALSE(bn->training());
  CHECK(m2.find_module("layer1.0.conv1")->training());
  CHECK_FALSE(m2.find_parameter("conv1.weight")->requires_grad());
  CHECK(m2.find_parameter("layer1.0.conv1.weight")->requires_grad());
  CHECK(m2.find_parameter("layer1.0.bn1.weight")->requires_grad());
  // caffe-style frozen norms: NormCfg requires_grad=false
  ResNetCfg c3 = cfg;
  c3.frozen_stages = -1;
  c3.norm = NormCfg::bn(false);
  ResNet m3(c3);
  CHECK_FALSE(m3.find_parameter("layer3.0.bn2.bias")->requires_grad());
  CHECK(m3.find_parameter("layer3.0.conv2.weight")->requires_grad());

  // Style: pytorch puts the stride on the 3x3 conv2, caffe on the 1x1 conv1 (same keys and shapes).
  ResNetCfg c4 = resnet_cfg(50, -1, false);
  c4.base_channels = 8;
  ResNet py(c4);
  c4.style = ResNetCfg::Style::Caffe;
  ResNet caffe(c4);
  auto conv = [](ResNet& r, const char* n) { return dynamic_cast<Conv2d*>(r.find_module(n))->spec().stride; };
  CHECK(conv(py, "layer2.0.conv1") == 1);
  CHECK(conv(py, "layer2.0.conv2") == 2);
  CHECK(conv(caffe, "layer2.0.conv1") == 2);
  CHECK(conv(caffe, "layer2.0.conv2") == 1);
  CHECK(conv(caffe, "layer2.0.downsample.0") == 2);
  CHECK(key_lines(py) == key_lines(caffe));
  {
    NoGradGuard ng;
    Var x(Tensor::zeros({1, 3, 64, 64}));
    auto a = py.forward(x), b = caffe.forward(x);
    for (int i = 0; i < 4; ++i) CHECK(a[i].shape() == b[i].shape());
    CHECK(a[3].shape() == Shape{1, 256, 2, 2});
  }

  CHECK_THROWS_WITH_AS(ResNet(resnet_cfg(42)), doctest::Contains("invalid depth 42"), Error);
  CHECK_THROWS_WITH_AS(ResNet(resnext_cfg(18, 32, 4)), doctest::Contains("needs depth 50/101/152"), Error);
  CHECK_THROWS_AS(ResNet(resnet_cfg(18, 5)), Error);
}

TEST_CASE("resnet: init_weights = kaiming fan_out for convs, BN 1/0, zero_init_residual") {
  ResNetCfg cfg = resnet_cfg(50, -1, false);
  cfg.base_channels = 16;
  ResNet m(cfg);
  Generator g(11);
  m.init_weights(g);
  auto std_of = [](const Tensor& t) {
    double s = 0;
    auto v = t.to_vector<double>();
    for (double x : v) s += x * x;
    return std::sqrt(s / v.size());
  };
  const Tensor& w = m.find_parameter("layer4.0.conv2.weight")->data();  // [128, 128, 3, 3]
  CHECK(std_of(w) == doctest::Approx(std::sqrt(2.0 / (128 * 9))).epsilon(0.02));
  CHECK(max_abs(m.find_parameter("layer1.0.bn3.weight")->data()) == 0);
  CHECK(max_abs(m.find_parameter("layer1.0.bn3.bias")->data()) == 0);
  auto bn1 = m.find_parameter("layer1.0.bn1.weight")->data().to_vector<float>();
  CHECK(bn1.front() == 1.0f);
  CHECK(m.find_parameter("layer1.0.downsample.1.weight")->data().to_vector<float>()[0] == 1.0f);
  // A Bottleneck with a zeroed bn3 is the identity branch: block output = relu(shortcut).
  Var x(rand_normal({1, 128, 8, 8}, g), false);
  m.eval();
  Var y = m.layer(1)[1].forward(x);
  check_close(y.data(), ops::relu(x.data()), 0, 0, "zero-init residual block");
}
