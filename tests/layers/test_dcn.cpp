// layers/dcn.h modules and ResNet/ResNeXt with DCN (mmdet dconv_c3-c5): state-dict keys and shapes against
// torchvision's ResNet + mmcv's DeformConv2dPack keys, one DCN / DCNv2 bottleneck against a torch replica
// (tests/ref/gen_deform_conv.py), mmcv's zero-initialised offsets, config keys.
#include <doctest/doctest.h>

#include "engine/config.h"
#include "engine/ops/conv2d.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/unary.h"
#include "detectors/retinanet.h"
#include "layers/dcn.h"
#include "layers/resnet.h"
#include "tests/gradcheck.h"
#include "tests/layers/layers_test_util.h"

using namespace kdet;
using namespace kdet::test;

namespace {
ResNetCfg with_dcn(ResNetCfg c, ResNetCfg::Dcn d) {
  c.dcn = d;
  c.stage_with_dcn = {false, true, true, true};
  return c;
}
}  // namespace

TEST_CASE("dcn: ResNet-50/X101 with DCN in c3-c5 have exactly mmdet's state-dict keys and shapes") {
  auto f = load_fixture("resnet_dcn_keys");
  if (!f) return;
  struct Case {
    const char* name;
    ResNetCfg cfg;
  } cases[] = {{"r50_dcn", with_dcn(resnet_cfg(50), ResNetCfg::Dcn::DCN)},
               {"r50_dcnv2", with_dcn(resnet_cfg(50), ResNetCfg::Dcn::DCNv2)},
               {"x101_32x4d_dcn", with_dcn(resnext_cfg(101, 32, 4), ResNetCfg::Dcn::DCN)}};
  for (auto& c : cases) {
    CAPTURE(c.name);
    ResNet m(c.cfg);
    const auto want = split_lines(f->metadata.at(c.name)), got = key_lines(m);
    CHECK(got.size() == want.size());
    int bad = 0;
    for (size_t i = 0; i < std::min(got.size(), want.size()) && bad < 3; ++i)
      if (got[i] != want[i]) {
        ++bad;
        FAIL_CHECK("key " << i << ": got '" << got[i] << "' want '" << want[i] << "'");
      }
    // 13 (R50) / 30 (X101) bottlenecks in layer2..layer4 each add conv2.conv_offset.{weight, bias}.
    const int64_t dcn_blocks = c.cfg.depth == 50 ? 4 + 6 + 3 : 4 + 23 + 3;
    CHECK(m.modules_of_type<Bottleneck>().size() == size_t(c.cfg.depth == 50 ? 16 : 33));
    int64_t n = 0;
    for (auto* b : m.modules_of_type<Bottleneck>()) n += b->with_dcn();
    CHECK(n == dcn_blocks);
  }
}

TEST_CASE("dcn: DCN / DCNv2 bottleneck forward and backward match a torch replica (torchvision deform_conv2d)") {
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    auto f = load_fixture("dcn_bottleneck_" + std::to_string(i));
    if (!f) return;
    const auto& md = f->metadata;
    ResNetCfg cfg = std::stoll(md.at("groups")) > 1
                        ? resnext_cfg(50, std::stoll(md.at("groups")), std::stoll(md.at("base_width")))
                        : resnet_cfg(50);
    cfg.dcn = parse_dcn(md.at("dcn"));
    for (DType dt : {DType::F64, DType::F32}) {
      CAPTURE(dtype_name(dt));
      const double tol = dt == DType::F64 ? 1e-10 : 2e-4;
      Bottleneck blk(std::stoll(md.at("inplanes")), std::stoll(md.at("planes")), std::stoll(md.at("stride")), 1,
                     true, cfg, true);
      REQUIRE(blk.with_dcn());
      blk.to(dt);
      blk.load_state_dict(with_prefix(*f, "sd."));  // strict: the key sets must be equal
      blk.eval();
      Var x(f->at("in.x").to(dt), true);
      Var y = blk.forward(x);
      check_close(y.data(), f->at("out.y"), tol, tol, "y");
      weighted_sum({y}, {f->at("in.r").to(dt)}).backward();
      check_close(x.grad(), f->at("out.gx"), tol, tol, "grad x");
      check_close(blk.find_parameter("conv2.conv_offset.weight")->grad(), f->at("out.g_conv_offset"), tol, 10 * tol,
                  "grad conv2.conv_offset.weight");
      check_close(blk.find_parameter("conv2.weight")->grad(), f->at("out.g_conv2"), tol, 10 * tol,
                  "grad conv2.weight");
    }
  }
}

TEST_CASE("dcn: mmcv init (zero offsets): DeformConv2dPack = conv, ModulatedDeformConv2dPack = conv / 2") {
  Generator g(3);
  DeformConvSpec s{6, 8, 3, 2, 1, 1, 2, 2, false};
  DeformConv2dPack dcn(s);
  dcn.init_weights(g);
  CHECK(dcn.conv_offset().weight().shape() == Shape{2 * 2 * 9, 6, 3, 3});
  CHECK(dcn.conv_offset().spec().stride == 2);
  auto kk = key_lines(dcn);
  CHECK(kk == std::vector<std::string>{"weight f32[8, 3, 3, 3]", "conv_offset.weight f32[36, 6, 3, 3]",
                                       "conv_offset.bias f32[36]"});
  CHECK(max_abs_diff(dcn.conv_offset().weight().data(), Tensor::zeros({36, 6, 3, 3})) == 0);
  // kaiming_uniform(relu): bound sqrt(6 / fan_in) with fan_in = 3*9.
  auto wv = dcn.weight().data().to_vector<float>();
  const double bound = std::sqrt(6.0 / 27);
  CHECK(*std::max_element(wv.begin(), wv.end()) <= bound);
  CHECK(*std::max_element(wv.begin(), wv.end()) > 0.8 * bound);
  Tensor x = rand_normal({2, 6, 9, 8}, g);
  Tensor conv = ops::conv2d(x, dcn.weight().data(), Tensor(), Conv2dArgs::make(2, 1, 1, 2));
  check_close(dcn.forward(Var(x)).data(), conv, 1e-5, 1e-5, "DeformConv2dPack at init");

  DeformConvSpec s2 = s;
  s2.bias = true;
  ModulatedDeformConv2dPack m2(s2);
  m2.init_weights(g);
  CHECK(key_lines(m2) == std::vector<std::string>{"weight f32[8, 3, 3, 3]", "bias f32[8]",
                                                  "conv_offset.weight f32[54, 6, 3, 3]", "conv_offset.bias f32[54]"});
  Var off, mask;
  Var y2 = m2.forward(Var(x), &off, &mask);
  CHECK(off.shape() == Shape{2, 36, 5, 4});
  CHECK(mask.shape() == Shape{2, 18, 5, 4});
  check_close(mask.data(), Tensor::full({2, 18, 5, 4}, 0.5), 0, 0, "mask = sigmoid(0)");
  Tensor conv2 = ops::conv2d(x, m2.weight().data(), Tensor(), Conv2dArgs::make(2, 1, 1, 2));
  check_close(y2.data(), ops::mul_scalar(conv2, 0.5), 1e-5, 1e-5, "DCNv2 at init");
}

TEST_CASE("dcn: ModulatedDeformConv2dPack splits conv_offset as mmcv (offset = chunks 0,1; mask = sigmoid(2))") {
  Generator g(9);
  DeformConvSpec s{4, 5, 3, 1, 1, 1, 1, 1, false};
  ModulatedDeformConv2dPack m(s);
  m.init_weights(g);
  m.to(DType::F64);
  Tensor cw = rand_normal({27, 4, 3, 3}, g, 0, 0.2, DType::F64), cb = rand_normal({27}, g, 0, 0.5, DType::F64);
  m.conv_offset().weight().data().copy_(cw);
  m.conv_offset().bias().data().copy_(cb);
  Tensor x = rand_normal({1, 4, 6, 7}, g, 0, 1, DType::F64);
  Tensor out = ops::conv2d(x, cw, cb, Conv2dArgs::make(1, 1));
  auto ov = out.to_vector<double>();
  const int64_t P = 6 * 7;
  std::vector<double> off(ov.begin(), ov.begin() + 18 * P), mk(ov.begin() + 18 * P, ov.end());
  for (double& v : mk) v = 1.0 / (1.0 + std::exp(-v));
  Tensor want = ops::deform_conv2d(x, Tensor::from_vector(off, {1, 18, 6, 7}), Tensor::from_vector(mk, {1, 9, 6, 7}),
                                   m.weight().data(), Tensor(), s.args());
  check_close(m.forward(Var(x)).data(), want, 1e-12, 1e-12, "ModulatedDeformConv2dPack");
  // gradcheck of the whole module through conv_offset (offsets away from integers are not guaranteed here,
  // but small random offsets make a kink within eps vanishingly unlikely).
  CHECK(gradcheck([&](const std::vector<Var>& v) { return m.forward(v[0]); }, {x}));
}

TEST_CASE("dcn: ResNet DCN at init equals the plain ResNet with the same weights; gradients reach conv_offset") {
  ResNetCfg plain = resnet_cfg(50, 1, true);
  plain.base_channels = 8;
  plain.zero_init_residual = false;  // otherwise bn3 = 0 cuts every gradient through conv2 at init
  ResNetCfg dcfg = with_dcn(plain, ResNetCfg::Dcn::DCN);
  ResNet a(plain), b(dcfg);
  Generator g(1), g2(1);
  a.init_weights(g);
  b.init_weights(g2);
  for (auto* blk : b.modules_of_type<DeformConv2dPack>()) {
    auto z = blk->conv_offset().weight().data().to_vector<float>();
    CHECK(std::all_of(z.begin(), z.end(), [](float v) { return v == 0; }));
  }
  TensorMap sd = b.state_dict();
  TensorMap plain_sd;
  for (auto& [k, v] : sd)
    if (k.find("conv_offset") == std::string::npos) plain_sd[k] = v;
  CHECK(plain_sd.size() + 2 * 13 == sd.size());
  a.load_state_dict(plain_sd);
  a.eval(), b.eval();
  Generator gx(4);
  Tensor x = rand_normal({1, 3, 64, 64}, gx);
  auto ya = a.forward(Var(x)), yb = b.forward(Var(x));
  for (size_t i = 0; i < ya.size(); ++i) check_close(yb[i].data(), ya[i].data(), 1e-4, 1e-5, std::string("C") + std::to_string(i + 2));
  // Training: the offset convs get gradients (through d offset), the frozen stage none.
  b.train();
  auto ys = b.forward(Var(x));
  Var loss = sum(ys[3] * ys[3]);
  loss.backward();
  Var* og = b.find_parameter("layer4.0.conv2.conv_offset.weight");
  REQUIRE(og != nullptr);
  REQUIRE(og->grad().defined());
  auto gv = og->grad().to_vector<float>();
  CHECK(std::any_of(gv.begin(), gv.end(), [](float v) { return v != 0; }));
}

TEST_CASE("dcn: config keys dcn / stage_with_dcn / fallback_on_stride; errors") {
  CHECK(parse_dcn("none") == ResNetCfg::Dcn::None);
  CHECK(parse_dcn("DCN") == ResNetCfg::Dcn::DCN);
  CHECK(parse_dcn("dcnv2") == ResNetCfg::Dcn::DCNv2);
  CHECK_THROWS_WITH_AS(parse_dcn("dcnv3"), doctest::Contains("unknown dcn type 'dcnv3'"), Error);
  Config c = Config::parse("[model]\ndcn = dcnv2\nstage_with_dcn = 0,0,1,1\ndcn_fallback_on_stride = true\n");
  ResNetCfg r = resnet_cfg(50);
  r.base_channels = 8;
  resnet_dcn_from_config(c, "model", r);
  CHECK(r.dcn == ResNetCfg::Dcn::DCNv2);
  CHECK(r.stage_with_dcn == std::vector<bool>{false, false, true, true});
  CHECK(r.dcn_fallback_on_stride);
  ResNet m(r);
  // fallback_on_stride: the strided first block of layer3/layer4 keeps a plain conv2.
  CHECK(dynamic_cast<Conv2d*>(m.find_module("layer3.0.conv2")) != nullptr);
  CHECK(dynamic_cast<ModulatedDeformConv2dPack*>(m.find_module("layer3.1.conv2")) != nullptr);
  CHECK(dynamic_cast<Conv2d*>(m.find_module("layer2.1.conv2")) != nullptr);
  ResNetCfg bad = with_dcn(resnet_cfg(18), ResNetCfg::Dcn::DCN);
  CHECK_THROWS_WITH_AS(ResNet{bad}, doctest::Contains("DCN needs Bottleneck blocks"), Error);
  bad = with_dcn(resnet_cfg(50), ResNetCfg::Dcn::DCN);
  bad.stage_with_dcn = {true};
  CHECK_THROWS_WITH_AS(ResNet{bad}, doctest::Contains("stage_with_dcn has 1 entries"), Error);
}

TEST_CASE("dcn: RetinaNetConfig::from_config reads the DCN backbone keys (X101-DCN-style teacher)") {
  Config c = Config::parse("[model]\ndepth = 50\ngroups = 4\nbase_width = 4\nbase_channels = 8\ndcn = dcn\n"
                           "stage_with_dcn = 0,1,1,1\nneck_channels = 16\nnum_classes = 3\n");
  RetinaNetConfig r = RetinaNetConfig::from_config(c, "model");
  CHECK(r.backbone.dcn == ResNetCfg::Dcn::DCN);
  CHECK(r.backbone.stage_with_dcn == std::vector<bool>{false, true, true, true});
  RetinaNet net(r);
  CHECK(net.find_parameter("backbone.layer2.0.conv2.conv_offset.weight") != nullptr);
  CHECK(net.find_parameter("backbone.layer1.0.conv2.conv_offset.weight") == nullptr);
  CHECK(dynamic_cast<DeformConv2dPack*>(net.find_module("backbone.layer4.2.conv2")) != nullptr);
  Config plain = Config::parse("[model]\ndepth = 50\nbase_channels = 8\nneck_channels = 16\nnum_classes = 3\n");
  CHECK(RetinaNetConfig::from_config(plain, "model").backbone.dcn == ResNetCfg::Dcn::None);
}
