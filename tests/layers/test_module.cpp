// Module base: naming, state dicts (strict errors list everything), safetensors round trip, modes,
// requires_grad toggling, dtype conversion; initialisers' statistics.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "engine/ops/elementwise.h"
#include "engine/safetensors.h"
#include "layers/init.h"
#include "layers/module.h"
#include "layers/norm.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

// A toy module shaped like mmdet's names: weight/bias + a "bn" child + a list of leaves.
struct Leaf : UnaryModule {
  Var* w;
  explicit Leaf(int64_t n) { w = &register_parameter("weight", Tensor::full({n}, 2.0)); }
  const char* type_name() const override { return "Leaf"; }
  Var forward(const Var& x) override { return x * *w; }
};

struct Toy : Module {
  Var* w;
  Tensor* counter;
  BatchNorm2d* bn;
  ModuleList<Leaf>* list;
  Toy() {
    w = &register_parameter("weight", Tensor::zeros({4, 3}));
    counter = &register_buffer("counter", Tensor::zeros({}, DType::I64));
    bn = &register_module("bn", std::make_unique<BatchNorm2d>(4));
    list = &register_module("blocks", std::make_unique<ModuleList<Leaf>>());
    list->emplace_back<Leaf>(2);
    list->emplace_back<Leaf>(5);
  }
  const char* type_name() const override { return "Toy"; }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("module: names, order and lookup follow PyTorch") {
  Toy t;
  std::vector<std::string> want = {"weight",          "counter",         "bn.weight",           "bn.bias",
                                   "bn.running_mean", "bn.running_var",  "bn.num_batches_tracked", "blocks.0.weight",
                                   "blocks.1.weight"};
  CHECK(t.state_dict_keys() == want);
  auto np = t.named_parameters("backbone");
  REQUIRE(np.size() == 5);
  CHECK(np[0].first == "backbone.weight");
  CHECK(np[3].first == "backbone.blocks.0.weight");
  CHECK(t.named_buffers().size() == 4);
  CHECK(t.num_parameters() == 12 + 4 + 4 + 2 + 5);
  CHECK(t.find_parameter("blocks.1.weight") == t.list->operator[](1).w);
  CHECK(t.find_parameter("blocks.2.weight") == nullptr);
  CHECK(t.find_buffer("bn.running_var") == &t.bn->running_var());
  CHECK(t.find_module("blocks.0") == &(*t.list)[0]);
  auto mods = t.named_modules();
  REQUIRE(mods.size() == 5);
  CHECK(mods[0].first == "");
  CHECK(mods[2].first == "blocks");
  CHECK(mods[4].first == "blocks.1");
  CHECK(t.modules_of_type<Leaf>().size() == 2);
  // Vars from named_parameters share the value and the gradient slot with the module's own.
  np[0].second.data().fill_(3.0);
  CHECK(t.w->data().to_vector<float>()[5] == 3.0f);
  CHECK(np[0].second.slot() == t.w->slot());
}

TEST_CASE("module: duplicate or dotted names are rejected") {
  struct Bad : Module {
    void dup() { register_parameter("w", Tensor::zeros({1})), register_buffer("w", Tensor::zeros({1})); }
    void dotted() { register_parameter("a.b", Tensor::zeros({1})); }
  } b;
  CHECK_THROWS_WITH_AS(b.dup(), doctest::Contains("registered twice"), Error);
  CHECK_THROWS_WITH_AS(b.dotted(), doctest::Contains("contain no '.'"), Error);
}

TEST_CASE("module: strict load lists every missing, unexpected and mis-shaped key, and changes nothing") {
  Toy t;
  TensorMap sd = t.state_dict();
  for (auto& [k, v] : sd) v = v.clone();
  sd.erase("bn.running_var");
  sd.erase("blocks.1.weight");
  sd["extra.weight"] = Tensor::zeros({7});
  sd["fc.bias"] = Tensor::zeros({2, 2});
  sd["weight"] = Tensor::full({3, 4}, 1.0);
  sd["bn.bias"] = Tensor::full({4}, 5.0);  // valid: must NOT be applied when the load fails
  std::string e = error_of([&] { t.load_state_dict(sd); });
  CHECK(e.find("2 missing, 2 unexpected, 1 mismatched") != std::string::npos);
  CHECK(e.find("missing key:    bn.running_var f32[4]") != std::string::npos);
  CHECK(e.find("missing key:    blocks.1.weight f32[5]") != std::string::npos);
  CHECK(e.find("unexpected key: extra.weight f32[7]") != std::string::npos);
  CHECK(e.find("unexpected key: fc.bias f32[2, 2]") != std::string::npos);
  CHECK(e.find("weight: checkpoint f32[3, 4] vs model f32[4, 3]") != std::string::npos);
  CHECK(t.bn->bias().data().to_vector<float>()[0] == 0.0f);

  // Non-strict: missing/unexpected are reported, the rest loads; a shape mismatch still throws.
  CHECK_THROWS_AS(t.load_state_dict(sd, false), Error);
  sd["weight"] = Tensor::full({4, 3}, 1.0);
  sd["counter"] = Tensor::full({}, 1.0, DType::F64);  // f64 into an i64 buffer: a dtype mismatch
  CHECK_THROWS_WITH_AS(t.load_state_dict(sd, false), doctest::Contains("counter: checkpoint f64[] vs model i64[]"),
                       Error);
  sd["counter"] = Tensor::full({}, 9.0, DType::I64);
  sd["bn.weight"] = Tensor::full({4}, 0.5, DType::F64);  // f64 -> f32 converts
  LoadReport r = t.load_state_dict(sd, false);
  CHECK(r.missing.size() == 2);
  CHECK(r.unexpected.size() == 2);
  CHECK(t.bn->bias().data().to_vector<float>()[3] == 5.0f);
  CHECK(t.bn->weight().data().to_vector<float>()[3] == 0.5f);
  CHECK(t.counter->to_vector<int64_t>()[0] == 9);
  CHECK(t.w->data().to_vector<float>()[0] == 1.0f);

  // A BatchNorm num_batches_tracked absent from the file (old torchvision checkpoints) is set to 0,
  // not reported missing; any other missing buffer still is.
  TensorMap full = t.state_dict();
  full.erase("bn.num_batches_tracked");
  t.bn->num_batches_tracked().fill_(5);
  r = t.load_state_dict(full);
  CHECK(r.ok());
  CHECK(r.defaulted == std::vector<std::string>{"bn.num_batches_tracked"});
  CHECK(t.bn->num_batches_tracked().to_vector<int64_t>()[0] == 0);
  full.erase("counter");
  CHECK_THROWS_WITH_AS(t.load_state_dict(full), doctest::Contains("missing key:    counter i64[]"), Error);
}

TEST_CASE("module: safetensors save/load round trip, with a prefix") {
  Toy a, b;
  Generator g(3);
  for (auto* v : a.parameters()) normal_(v->data(), g, 0, 1);
  a.bn->running_mean().fill_(0.25);
  a.bn->num_batches_tracked().fill_(17);
  auto path = (std::filesystem::temp_directory_path() / "kdet_test_module_rt.safetensors").string();
  a.save(path, {{"arch", "toy"}});
  b.load(path);
  for (auto& [k, v] : a.state_dict()) CHECK_MESSAGE(max_abs_diff(v, b.state_dict().at(k)) == 0, k);
  CHECK(b.bn->num_batches_tracked().dtype() == DType::I64);
  CHECK(b.bn->num_batches_tracked().to_vector<int64_t>()[0] == 17);

  // A detector-style file: keys under "backbone." load into the bare module with prefix.
  TensorMap full;
  for (auto& [k, v] : a.state_dict()) full["backbone." + k] = v;
  full["neck.x"] = Tensor::zeros({1});
  save_safetensors(path, full);
  Toy c;
  c.load(path, true, "backbone.");
  CHECK(max_abs_diff(c.w->data(), a.w->data()) == 0);
  CHECK_THROWS_AS(c.load(path, true), Error);  // without the prefix nothing matches
  std::filesystem::remove(path);
}

TEST_CASE("module: train/eval recurse; requires_grad toggles; to(f64)") {
  Toy t;
  CHECK(t.training());
  CHECK(t.bn->training());
  t.eval();
  CHECK_FALSE(t.bn->training());
  CHECK_FALSE((*t.list)[1].training());
  t.train();
  CHECK((*t.list)[1].training());
  t.list->set_requires_grad(false);
  CHECK(t.num_parameters(true) == 12 + 8);
  CHECK(t.named_parameters("", true).size() == 3);
  t.to(DType::F64);
  CHECK(t.w->dtype() == DType::F64);
  CHECK(t.bn->running_mean().dtype() == DType::F64);
  CHECK(t.bn->num_batches_tracked().dtype() == DType::I64);
  CHECK(t.w->requires_grad());
  CHECK_FALSE((*t.list)[0].w->requires_grad());
  Var x(Tensor::ones({2}, DType::F64), true);
  Var y = (*t.list)[0].forward(x);
  CHECK(y.data().to_vector<double>()[1] == 2.0);
}

TEST_CASE("module: BatchNorm2d train updates running stats and num_batches_tracked; eval uses them") {
  BatchNorm2d bn(3);
  Generator g(1);
  Var x(rand_normal({4, 3, 5, 5}, g, 2.0, 3.0), false);
  bn.forward(x);
  bn.forward(x);
  CHECK(bn.num_batches_tracked().to_vector<int64_t>()[0] == 2);
  auto rm = bn.running_mean().to_vector<float>();
  CHECK(rm[0] > 0.3f);  // 1 - 0.9^2 = 0.19 of a mean near 2
  bn.eval();
  Var y = bn.forward(x);
  CHECK(bn.num_batches_tracked().to_vector<int64_t>()[0] == 2);
  // eval: y = (x - rm) / sqrt(rv + eps) (weight 1, bias 0)
  auto xv = x.data().to_vector<float>();
  auto rv = bn.running_var().to_vector<float>();
  double want = (xv[0] - rm[0]) / std::sqrt(rv[0] + 1e-5);
  CHECK(y.data().to_vector<float>()[0] == doctest::Approx(want).epsilon(1e-5));
}

TEST_CASE("init: distributions, fans and gains") {
  Generator g(42);
  auto stats = [](const Tensor& t) {
    auto v = t.to_vector<double>();
    double m = 0, s = 0, mx = 0;
    for (double x : v) m += x, mx = std::max(mx, std::abs(x));
    m /= v.size();
    for (double x : v) s += (x - m) * (x - m);
    return std::array<double, 3>{m, std::sqrt(s / v.size()), mx};
  };
  CHECK(fan_in_out({64, 3, 7, 7}) == std::pair<int64_t, int64_t>{147, 3136});
  CHECK(fan_in_out({128, 4, 3, 3}) == std::pair<int64_t, int64_t>{36, 1152});  // grouped conv weight
  CHECK_THROWS_AS(fan_in_out({5}), Error);
  CHECK(calculate_gain(Nonlinearity::ReLU) == doctest::Approx(std::sqrt(2.0)));
  CHECK(calculate_gain(Nonlinearity::LeakyReLU, std::sqrt(5.0)) == doctest::Approx(std::sqrt(1.0 / 3.0)));

  Tensor w = Tensor::empty({256, 64, 3, 3});
  kaiming_normal_(w, g, 0, FanMode::FanOut, Nonlinearity::ReLU);
  auto s = stats(w);
  CHECK(std::abs(s[0]) < 0.002);
  CHECK(s[1] == doctest::Approx(std::sqrt(2.0 / (256 * 9))).epsilon(0.01));
  kaiming_uniform_(w, g, 0, FanMode::FanIn, Nonlinearity::ReLU);
  s = stats(w);
  double bound = std::sqrt(6.0 / (64 * 9));
  CHECK(s[2] <= bound);
  CHECK(s[2] > 0.99 * bound);
  CHECK(s[1] == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.01));
  xavier_uniform_(w, g);
  s = stats(w);
  bound = std::sqrt(6.0 / (64 * 9 + 256 * 9));
  CHECK(s[2] <= bound);
  CHECK(s[2] > 0.99 * bound);
  xavier_normal_(w, g, 2.0);
  CHECK(stats(w)[1] == doctest::Approx(2.0 * std::sqrt(2.0 / (64 * 9 + 256 * 9))).epsilon(0.01));
  normal_(w, g, 1.0, 0.01);
  s = stats(w);
  CHECK(s[0] == doctest::Approx(1.0).epsilon(1e-3));
  CHECK(s[1] == doctest::Approx(0.01).epsilon(0.01));
  constant_(w, -4.0);
  CHECK(stats(w)[0] == -4.0);
  Tensor b = Tensor::empty({1000}, DType::F64);
  Tensor w2 = Tensor::empty({1000, 50, 1, 1}, DType::F64);
  torch_default_init_(w2, &b, g);
  CHECK(stats(w2)[2] <= 1 / std::sqrt(50.0));
  CHECK(stats(b)[2] <= 1 / std::sqrt(50.0));
  CHECK(stats(b)[2] > 0.9 / std::sqrt(50.0));
  // -log(99) (mmcv's RetinaNet prior-prob bias, spec §6.1: -4.59512)
  CHECK(bias_init_with_prob(0.01) == doctest::Approx(-4.59512).epsilon(1e-5));
  // Same seed, same draws.
  Generator g1(7), g2(7);
  Tensor a1 = Tensor::empty({10, 2}), a2 = Tensor::empty({10, 2});
  kaiming_normal_(a1, g1);
  kaiming_normal_(a2, g2);
  CHECK(max_abs_diff(a1, a2) == 0);
}
