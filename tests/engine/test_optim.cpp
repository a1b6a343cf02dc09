// Optimizers, clip_grad_norm, parameter groups and LR schedules against torch.optim / mmcv formulas
// (fixtures from tests/ref/gen_optim.py).
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <set>

#include "engine/lr_schedule.h"
#include "engine/optim.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

constexpr double kRtol = 1e-12, kAtol = 1e-14;

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

// Groups as described by the fixture ("hp.<g>", metadata "groups" = "ac|b"), parameters from init.*.
std::vector<ParamGroup> fixture_groups(const Fixture& f, std::map<std::string, Var>& vars) {
  std::vector<ParamGroup> groups;
  auto gs = split(f.metadata.at("groups"), '|');
  for (size_t gi = 0; gi < gs.size(); ++gi) {
    auto hp = f.at("hp." + std::to_string(gi)).to_vector<double>();
    ParamGroup g;
    g.lr = hp[0], g.momentum = hp[1], g.dampening = hp[2], g.weight_decay = hp[3], g.nesterov = hp[4] != 0;
    g.beta1 = hp[5], g.beta2 = hp[6], g.eps = hp[7], g.amsgrad = hp[8] != 0;
    for (const std::string& n : split(gs[gi], ',')) {
      vars[n] = Var(f.at("init." + n).clone(), true);
      g.params.emplace_back(n, vars[n]);
    }
    groups.push_back(std::move(g));
  }
  return groups;
}

std::unique_ptr<Optimizer> make_opt(const std::string& kind, std::vector<ParamGroup> groups) {
  if (kind == "sgd") return std::make_unique<SGD>(std::move(groups));
  return std::make_unique<AdamW>(std::move(groups));
}

void feed_grads(const Fixture& f, int k, std::map<std::string, Var>& vars) {
  for (auto& [n, v] : vars) {
    std::string key = "grad." + std::to_string(k) + "." + n;
    if (f.tensors.count(key))
      v.set_grad(f.at(key));
    else
      v.zero_grad();  // torch: grad None -> parameter skipped
  }
}

// Runs one optimizer fixture; after step `resume_at` a second optimizer is built from the first one's
// state_dict on copies of the parameters and must follow the same trajectory (checkpoint resume).
void run_optimizer_fixture(const std::string& name, int resume_at = 2) {
  auto f = load_fixture("optim_" + name);
  if (!f) return;
  INFO("fixture optim_" << name);
  const std::string kind = f->metadata.at("kind");
  std::map<std::string, Var> vars, vars2;
  auto opt = make_opt(kind, fixture_groups(*f, vars));
  std::unique_ptr<Optimizer> opt2;
  auto scale = f->at("lr_scale").to_vector<double>();
  for (int k = 0; k < static_cast<int>(scale.size()); ++k) {
    opt->set_lr_scale(scale[k]);
    feed_grads(*f, k, vars);
    opt->step();
    if (opt2) {
      opt2->set_lr_scale(scale[k]);
      feed_grads(*f, k, vars2);
      opt2->step();
    }
    for (auto& [n, v] : vars) {
      std::string key = "step." + std::to_string(k) + "." + n;
      check_close(v.data(), f->at(key), kRtol, kAtol, name + " " + key);
      if (opt2) CHECK_MESSAGE(max_abs_diff(vars2.at(n).data(), v.data()) == 0.0, name << " resumed " << key);
    }
    if (k == resume_at) {
      auto groups2 = fixture_groups(*f, vars2);
      for (auto& g : groups2)
        for (auto& [n, v] : g.params) v.data().copy_(vars.at(n).data());
      opt2 = make_opt(kind, std::move(groups2));
      opt2->load_state_dict(opt->state_dict());
    }
  }
  // Final optimizer state equals torch's, key for key.
  auto sd = opt->state_dict();
  std::set<std::string> want;
  for (auto& [key, t] : f->tensors)
    if (key.rfind("state.", 0) == 0) want.insert(key.substr(6));
  std::set<std::string> have;
  for (auto& [key, t] : sd) have.insert(key);
  CHECK(have == want);
  for (auto& key : want) {
    if (!sd.count(key)) continue;
    if (key.ends_with(".step"))
      CHECK_MESSAGE(sd.at(key).item() == f->at("state." + key).item(), key);
    else
      check_close(sd.at(key), f->at("state." + key), kRtol, kAtol, name + " state " + key);
  }
}

}  // namespace

TEST_CASE("optim: SGD matches torch.optim.SGD (plain, momentum+wd, nesterov, groups+skips+lr changes)") {
  run_optimizer_fixture("sgd_plain");
  run_optimizer_fixture("sgd_momentum_wd");
  run_optimizer_fixture("sgd_nesterov");
  run_optimizer_fixture("sgd_groups", 1);
}

TEST_CASE("optim: AdamW matches torch.optim.AdamW (plain, amsgrad + groups + skips)") {
  run_optimizer_fixture("adamw");
  run_optimizer_fixture("adamw_amsgrad_groups", 1);
}

TEST_CASE("optim: clip_grad_norm matches torch.nn.utils.clip_grad_norm_ (L2, L1, L3, inf, no clip)") {
  auto f = load_fixture("optim_clip");
  if (!f) return;
  struct Case {
    const char* name;
    double max_norm, p;
  };
  for (Case c : {Case{"l2", 1.0, 2.0}, Case{"l2_noclip", 1e3, 2.0}, Case{"inf", 0.5, INFINITY}, Case{"l1", 2.0, 1.0},
                 Case{"l3", 1.0, 3.0}}) {
    INFO(c.name);
    std::vector<Var> ps;
    std::vector<Tensor> originals;
    for (int i = 0; i < 3; ++i) {
      Tensor g0 = f->at("grad." + std::to_string(i));
      Var v(Tensor::zeros(g0.shape(), DType::F64), true);
      Tensor g = g0.clone();
      v.set_grad(g);
      originals.push_back(g.clone());
      ps.push_back(v);
      // keep the handle to check the old gradient buffer is not modified in place
      if (i == 0) originals.push_back(g);
    }
    double total = clip_grad_norm(ps, c.max_norm, c.p);
    CHECK(total == doctest::Approx(f->at(std::string(c.name) + ".total").item()).epsilon(1e-13));
    for (int i = 0; i < 3; ++i)
      check_close(ps[i].grad(), f->at(std::string(c.name) + ".grad." + std::to_string(i)), kRtol, kAtol,
                  std::string(c.name) + " grad " + std::to_string(i));
    CHECK(max_abs_diff(originals[1], originals[0]) == 0.0);  // gradients are values
  }
  Var none(Tensor::zeros({3}, DType::F64), true);
  CHECK(clip_grad_norm({none}, 1.0) == 0.0);
  CHECK_FALSE(none.grad().defined());
}

TEST_CASE("lr_schedule: mmcv step / cosine with linear, constant, exp, mmengine warmup match the reference") {
  auto f = load_fixture("lr_schedules");
  if (!f) return;
  std::map<std::string, LRSchedule> cfg;
  {
    LRSchedule s;  // 1x style: step by epoch, mmcv linear warmup
    s.base_lr = 0.02, s.steps = {8, 11}, s.iters_per_epoch = 100;
    cfg["step_1x"] = s;
  }
  {
    LRSchedule s;
    s.base_lr = 0.01, s.by_epoch = false, s.steps = {300, 700}, s.gamma = 0.5;
    s.warmup = LRWarmup::Constant, s.warmup_iters = 100, s.warmup_ratio = 0.1;
    cfg["step_iter"] = s;
  }
  {
    LRSchedule s;
    s.base_lr = 0.1, s.steps = {2, 4, 6}, s.iters_per_epoch = 10, s.min_lr = 1e-5, s.warmup = LRWarmup::None;
    cfg["step_floor"] = s;
  }
  {
    LRSchedule s;
    s.base_lr = 0.01, s.policy = LRPolicy::Cosine, s.iters_per_epoch = 50, s.max_epochs = 12, s.min_lr = 1e-5;
    s.warmup = LRWarmup::Exp, s.warmup_iters = 200, s.warmup_ratio = 0.01;
    cfg["cos_epoch"] = s;
  }
  {
    LRSchedule s;
    s.base_lr = 0.02, s.policy = LRPolicy::Cosine, s.by_epoch = false, s.max_iters = 1000, s.min_lr_ratio = 0.05;
    s.warmup = LRWarmup::LinearMmengine, s.warmup_iters = 300, s.warmup_ratio = 0.001;
    cfg["cos_iter"] = s;
  }
  for (auto& [name, s] : cfg) {
    auto its = f->at("iters." + name).to_vector<int64_t>();
    auto lrs = f->at("lr." + name).to_vector<double>();
    REQUIRE(its.size() == lrs.size());
    REQUIRE(its.size() >= 80);
    int bad = 0;
    for (size_t i = 0; i < its.size(); ++i) {
      double got = s.lr_at(its[i]);
      if (!(std::abs(got - lrs[i]) <= 1e-12 * std::abs(lrs[i]))) {
        if (++bad <= 5) FAIL_CHECK(name << " iter " << its[i] << ": " << got << " vs reference " << lrs[i]);
      }
    }
    CHECK_MESSAGE(bad == 0, name << ": " << bad << " mismatching iterations");
  }
  // apply() scales each group's initial lr; base_lr of the schedule is not used there.
  Var a(Tensor::zeros({2}, DType::F64), true), b(Tensor::zeros({2}, DType::F64), true);
  ParamGroup g1, g2;
  g1.lr = 0.02, g1.params = {{"a", a}};
  g2.lr = 0.002, g2.params = {{"b", b}};
  SGD opt({g1, g2});
  const LRSchedule& s = cfg["step_1x"];
  s.apply(opt, 250);
  CHECK(opt.groups()[0].lr == doctest::Approx(s.lr_at(250, 0.02)).epsilon(1e-15));
  CHECK(opt.groups()[1].lr == doctest::Approx(0.1 * s.lr_at(250)).epsilon(1e-13));
  s.apply(opt, 1150);
  CHECK(opt.groups()[1].lr == doctest::Approx(0.002 * 0.01).epsilon(1e-13));
  LRSchedule broken;
  broken.iters_per_epoch = 0;
  CHECK_THROWS_WITH_AS(broken.lr_at(0), doctest::Contains("iters_per_epoch"), Error);
}

TEST_CASE("optim: load_state_dict reports every mismatch; state_dict is a copy") {
  Var a(Tensor::ones({2, 3}, DType::F64), true), b(Tensor::ones({4}, DType::F64), true);
  SGD sgd({{"a", a}, {"b", b}}, 0.1, 0.9);
  a.set_grad(Tensor::ones({2, 3}, DType::F64));
  b.set_grad(Tensor::ones({4}, DType::F64));
  sgd.step();
  auto sd = sgd.state_dict();
  REQUIRE(sd.size() == 2);
  sd.at("a.momentum").fill_(5.0);  // a copy: the optimizer's buffer is untouched
  CHECK(sgd.state_dict().at("a.momentum").to_vector<double>()[0] == 1.0);

  std::map<std::string, Tensor> bad = {{"a.momentum", Tensor::zeros({3, 2}, DType::F64)},
                                       {"zzz.momentum", Tensor::zeros({4}, DType::F64)},
                                       {"b.exp_avg", Tensor::zeros({4}, DType::F64)},
                                       {"b.momentum", Tensor::zeros({4}, DType::F32)}};
  try {
    sgd.load_state_dict(bad);
    FAIL("load_state_dict accepted a bad state");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("4 problem(s)") != std::string::npos);
    CHECK(m.find("shape mismatch for 'a.momentum'") != std::string::npos);
    CHECK(m.find("[3, 2]") != std::string::npos);
    CHECK(m.find("no parameter named 'zzz'") != std::string::npos);
    CHECK(m.find("'b.exp_avg'") != std::string::npos);
    CHECK(m.find("dtype mismatch for 'b.momentum'") != std::string::npos);
  }
  // A failed load leaves the state as it was.
  CHECK(sgd.state_dict().at("a.momentum").to_vector<double>()[0] == 1.0);

  AdamW adam({{"a", a}, {"b", b}}, 1e-3, 0.0, 0.9, 0.999, 1e-8, /*amsgrad=*/true);
  std::map<std::string, Tensor> partial = {{"a.exp_avg", Tensor::zeros({2, 3}, DType::F64)},
                                           {"b.step", Tensor::scalar(2, DType::I64)}};
  try {
    adam.load_state_dict(partial);
    FAIL("AdamW accepted a partial state");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("missing 'a.exp_avg_sq'") != std::string::npos);
    CHECK(m.find("missing 'a.step'") != std::string::npos);
    CHECK(m.find("missing 'a.max_exp_avg_sq'") != std::string::npos);
    CHECK(m.find("missing 'b.exp_avg'") != std::string::npos);
  }
}

TEST_CASE("optim: construction and step errors name the parameter") {
  Var a(Tensor::ones({2}, DType::F64), true), frozen(Tensor::ones({2}, DType::F64), false);
  CHECK_THROWS_WITH_AS(SGD({{"a", a}, {"a2", a}}, 0.1), doctest::Contains("same Var"), Error);
  CHECK_THROWS_WITH_AS(SGD({{"a", a}, {"a", Var(Tensor::ones({1}), true)}}, 0.1), doctest::Contains("twice"), Error);
  CHECK_THROWS_WITH_AS(SGD({{"f", frozen}}, 0.1), doctest::Contains("'f' does not require grad"), Error);
  CHECK_THROWS_WITH_AS(SGD({{"a", a}}, 0.1, 0.0, 0.0, /*nesterov=*/true), doctest::Contains("Nesterov"), Error);
  Var c(Tensor::ones({2}, DType::F64), true);
  SGD sgd({{"c", c}}, 0.1);
  c.set_grad(Tensor::ones({2}, DType::F32));
  CHECK_THROWS_WITH_AS(sgd.step(), doctest::Contains("'c'"), Error);
  Var t(Tensor::ones({4, 4}, DType::F64).transpose(0, 1), true);
  SGD sgd2({{"t", t}}, 0.1);
  t.set_grad(Tensor::ones({4, 4}, DType::F64));
  CHECK_THROWS_WITH_AS(sgd2.step(), doctest::Contains("not contiguous"), Error);
}

TEST_CASE("optim: build_param_groups applies the first matching rule's lr/decay multipliers") {
  NamedParams ps = {{"backbone.conv1.weight", Var(Tensor::ones({2, 2, 1, 1}), true)},
                    {"backbone.bn1.weight", Var(Tensor::ones({2}), true)},
                    {"backbone.bn1.bias", Var(Tensor::ones({2}), true)},
                    {"neck.conv.weight", Var(Tensor::ones({2, 2, 3, 3}), true)},
                    {"neck.conv.bias", Var(Tensor::ones({2}), true)},
                    {"backbone.stem.weight", Var(Tensor::ones({2, 3, 7, 7}), false)}};  // frozen
  ParamGroup base;
  base.lr = 0.02, base.weight_decay = 1e-4, base.momentum = 0.9;
  auto groups = build_param_groups(ps, base, {ParamRule::contains(".bias", 2.0, 0.0), ParamRule::one_dim(1.0, 0.0),
                                              ParamRule::contains("neck", 0.1, 1.0)});
  REQUIRE(groups.size() == 4);
  auto names = [](const ParamGroup& g) {
    std::vector<std::string> v;
    for (auto& np : g.params) v.push_back(np.first);
    return v;
  };
  CHECK(names(groups[0]) == std::vector<std::string>{"backbone.conv1.weight"});
  CHECK(names(groups[1]) == std::vector<std::string>{"backbone.bn1.bias", "neck.conv.bias"});
  CHECK(names(groups[2]) == std::vector<std::string>{"backbone.bn1.weight"});
  CHECK(names(groups[3]) == std::vector<std::string>{"neck.conv.weight"});
  CHECK(groups[0].lr == 0.02);
  CHECK(groups[0].weight_decay == 1e-4);
  CHECK(groups[1].lr == 0.04);
  CHECK(groups[1].weight_decay == 0.0);
  CHECK(groups[2].weight_decay == 0.0);
  CHECK(groups[3].lr == doctest::Approx(0.002));
  CHECK(groups[3].momentum == 0.9);
  SGD opt(groups);
  CHECK(opt.params().size() == 5);
  opt.set_lr_scale(0.5);
  CHECK(opt.groups()[1].lr == 0.02);
  CHECK(opt.groups()[3].lr == doctest::Approx(0.001));
}

TEST_CASE("optim: f32 and multi-threaded (large) updates agree with an f64 scalar reference") {
  // 100k elements: above the parallel grain, so the OpenMP path runs; f32 vs a plain f64 loop.
  const int64_t n = 100000;
  Tensor p0 = rnd({n}, 11), g0 = rnd({n}, 12), g1 = rnd({n}, 13);
  for (DType dt : {DType::F64, DType::F32}) {
    INFO(dt);
    const double tol = dt == DType::F64 ? 1e-14 : 2e-6;
    Var ps(p0.to(dt).clone(), true), pa(p0.to(dt).clone(), true);
    SGD sgd({{"p", ps}}, 0.1, 0.9, 1e-2, /*nesterov=*/true);
    AdamW adam({{"p", pa}}, 1e-2, 1e-2, 0.9, 0.999, 1e-8, true);
    auto vp = p0.to_vector<double>();
    std::vector<double> sp = vp, buf(n), ap = vp, m(n, 0.0), v(n, 0.0), vmax(n, 0.0);
    int step = 0;
    for (const Tensor& g : {g0, g1}) {
      ++step;
      ps.set_grad(g.to(dt));
      pa.set_grad(g.to(dt));
      sgd.step();
      adam.step();
      auto vg = g.to_vector<double>();
      const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.999, step);
      for (int64_t i = 0; i < n; ++i) {
        double d = vg[i] + 1e-2 * sp[i];
        buf[i] = step == 1 ? d : 0.9 * buf[i] + d;
        sp[i] -= 0.1 * (d + 0.9 * buf[i]);
        ap[i] *= 1 - 1e-2 * 1e-2;
        m[i] = 0.9 * m[i] + 0.1 * vg[i];
        v[i] = 0.999 * v[i] + 0.001 * vg[i] * vg[i];
        vmax[i] = std::max(vmax[i], v[i]);
        ap[i] -= 1e-2 / bc1 * m[i] / (std::sqrt(vmax[i]) / std::sqrt(bc2) + 1e-8);
      }
    }
    check_close(ps.data(), Tensor::from_vector(sp), tol, tol, "SGD nesterov");
    check_close(pa.data(), Tensor::from_vector(ap), tol, tol, "AdamW amsgrad");
  }
  // clip on a large f32 gradient: norm from double accumulation
  Var big(Tensor::zeros({n}), true);
  big.set_grad(g0.to(DType::F32));
  double ref = 0;
  for (double x : g0.to(DType::F32).to_vector<double>()) ref += x * x;
  CHECK(clip_grad_norm({big}, 1.0) == doctest::Approx(std::sqrt(ref)).epsilon(1e-12));
  CHECK(std::sqrt([&] {
          double s = 0;
          for (double x : big.grad().to_vector<double>()) s += x * x;
          return s;
        }()) == doctest::Approx(1.0).epsilon(1e-5));
}
