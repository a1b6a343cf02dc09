// KD losses: golden-file exactness (kdgold-1 files written by tests/ref/gen_kd_golden.py), the checker's
// ability to fail, the container validation, and float64 gradchecks of every loss (inputs and
// parameters).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sys/wait.h>
#include <sstream>

#include "distill/kd_check.h"
#include "distill/kd_golden.h"
#include "distill/loss_aid.h"
#include "distill/loss_amd.h"
#include "distill/loss_dmkd.h"
#include "distill/loss_fbkd.h"
#include "distill/loss_fgd.h"
#include "distill/loss_fitnet.h"
#include "distill/loss_logit_kd.h"
#include "distill/loss_mgd.h"
#include "distill/loss_ssim.h"
#include "engine/ops/conv2d.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/ops/softmax.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::kd;
using namespace kdet::test;

namespace {

// The reference case set of tests/ref/gen_kd_golden.py.
const std::vector<std::string> kCases = {
    "fgd_0",     "fgd_1",     "fgd_2",          "mgd_0",          "mgd_1",         "amd_0",         "amd_1",
    "amd_2",     "dmkd_0",    "dmkd_1",         "ssim_kd_0",      "ssim_kd_1",     "ssim_kd_2",     "fbkd_0",
    "fbkd_1",    "fbkd_2",    "aid_0",          "aid_1",          "fitnet_0",      "fitnet_1",      "fitnet_2",
    "logit_kd_kl_0", "logit_kd_kl_1", "logit_kd_kl_2", "logit_kd_bce_0", "logit_kd_bce_1"};

std::string golden_path(const std::string& name) { return fixture_dir() + "/kd_golden/" + name + ".safetensors"; }

// Loads a golden file through load_fixture (so a missing file is a loud skip, or a failure under
// KDET_REQUIRE_FIXTURES=1), then with the kdgold-1 reader.
std::optional<KdGolden> golden(const std::string& name) {
  if (!load_fixture("kd_golden/" + name)) return std::nullopt;
  return load_kdgold(golden_path(name));
}

std::string summary(const KdCheckReport& r) {
  std::ostringstream s;
  s << r.path << " (" << r.case_name << "):";
  for (const auto& k : r.keys)
    if (!k.pass) s << "\n  FAIL " << k.key << " rel err " << k.rel_err() << " " << k.note;
  for (const auto& e : r.errors) s << "\n  ERROR " << e;
  for (const auto& e : r.skipped) s << "\n  SKIP " << e;
  return s.str();
}

bool fails_on_key(const KdCheckReport& r, const std::string& key) {
  for (const auto& k : r.keys)
    if (k.key == key) return !k.pass;
  return false;
}

bool has_error(const KdCheckReport& r, const std::string& needle) {
  for (const auto& e : r.errors)
    if (e.find(needle) != std::string::npos) return true;
  return false;
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// A raw container with a hand-written header (for malformed-file tests).
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// Finite differences of a scalar loss w.r.t. the parameters of m (f64), against autograd: every
// parameter tensor, at most ~10 evenly spaced elements of each (first and last included).
void param_fd_check(Module& m, const std::function<Var()>& loss_fn, const char* what, double eps = 1e-6,
                    double rtol = 1e-5, double atol = 1e-8) {
  m.zero_grad();
  loss_fn().backward();
  for (const auto& np : m.named_parameter_ptrs()) {
    Tensor an = np.var->grad();
    if (!an.defined()) an = Tensor::zeros(np.var->shape(), DType::F64);
    const std::vector<double> a = an.to_vector<double>();
    double* p = np.var->data().data<double>();
    double worst = 0;
    int64_t worst_k = -1;
    double wn = 0, wa = 0;
    const int64_t n = np.var->numel(), step = std::max<int64_t>(1, (n - 1) / 9);
    for (int64_t k = 0; k < n; k = (k + step < n || k == n - 1) ? k + step : n - 1) {
      const double orig = p[k];
      double lp, lm;
      {
        NoGradGuard ng;
        p[k] = orig + eps;
        lp = loss_fn().item();
        p[k] = orig - eps;
        lm = loss_fn().item();
        p[k] = orig;
      }
      const double num = (lp - lm) / (2 * eps);
      const double excess = std::abs(num - a[k]) - (atol + rtol * std::abs(num));
      if (excess > worst) {
        worst = excess;
        worst_k = k;
        wn = num;
        wa = a[k];
      }
    }
    CHECK_MESSAGE(worst_k < 0, what << ": parameter " << np.name << " element " << worst_k << " numeric " << wn
                                    << " vs analytic " << wa);
  }
}

std::vector<Var> leaves(const std::vector<Tensor>& ts) {
  std::vector<Var> v;
  for (auto& t : ts) v.emplace_back(t, false);
  return v;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// golden files
// ------------------------------------------------------------------------------------------------

TEST_CASE("kd golden: every kdgold-1 reference file passes the checker with no skipped key") {
  std::set<std::string> seen;
  for (const auto& name : kCases) {
    if (!load_fixture("kd_golden/" + name)) continue;
    seen.insert(golden_path(name));
    const KdCheckReport r = kd_check_file(golden_path(name));
    CHECK_MESSAGE(r.ok(), summary(r));
    CHECK_MESSAGE(r.skipped.empty(), summary(r));
    CHECK(r.keys.size() >= 5);
  }
  // Any further golden file placed in the directory (other generators) is checked as well.
  const std::filesystem::path dir = fixture_dir() + "/kd_golden";
  if (std::filesystem::is_directory(dir))
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().extension() != ".safetensors" || seen.count(e.path().string())) continue;
      const KdCheckReport r = kd_check_file(e.path().string());
      CHECK_MESSAGE(r.ok(), summary(r));
    }
}

TEST_CASE("kd golden: float32 smoke run of every loss against the float64 golden files") {
  for (const auto& name : kCases) {
    if (!load_fixture("kd_golden/" + name)) continue;
    const KdCheckReport r = kd_check_file(golden_path(name), KdCheckOptions{DType::F32});
    CHECK_MESSAGE(r.ok(), "[f32] " << summary(r));
  }
}

TEST_CASE("kdet kd-check CLI: exit 0 on golden files, 1 on a perturbed or malformed file, 2 on usage") {
  const char* bin = std::getenv("KDET_BIN");
  if (!bin) {
    MESSAGE("KDET_BIN is not set (make test sets it): CLI exit-status test skipped");
    return;
  }
  auto g = golden("mgd_1");
  if (!g) return;
  const std::string dir = std::filesystem::temp_directory_path() / "kdet_kd_cli_test";
  std::filesystem::create_directories(dir);
  auto rc = [&](const std::string& args) {
    const int r = std::system((std::string(bin) + " kd-check " + args + " > " + dir + "/out.txt 2>&1").c_str());
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
  };
  CHECK(rc("-q " + golden_path("mgd_1") + " " + golden_path("fitnet_1")) == 0);
  KdGolden p = *g;
  p.tensors["out.loss"] = ops::mul_scalar(p.at("out.loss"), 1.0 + 1e-6);
  save_kdgold(dir + "/mgd_1.safetensors", p);
  CHECK(rc(golden_path("mgd_1") + " " + dir + "/mgd_1.safetensors") == 1);
  const std::string out = file_bytes(dir + "/out.txt");
  CHECK(out.find("FAIL out.loss") != std::string::npos);
  CHECK(out.find("max rel err") != std::string::npos);
  {
    std::ofstream f(dir + "/crd_0.safetensors", std::ios::binary);
    f << raw_file(R"({"__metadata__":{"format":"kdgold-1","method":"crd","case":"crd_0"}})", "");
  }
  CHECK(rc(dir + "/crd_0.safetensors") == 1);
  CHECK(file_bytes(dir + "/out.txt").find("unknown method 'crd'") != std::string::npos);
  CHECK(rc("") == 2);
  std::filesystem::remove_all(dir);
}

TEST_CASE("kd golden: the C++ writer reproduces the Python generator's bytes exactly") {
  for (const auto& name : kCases) {
    auto g = golden(name);
    if (!g) continue;
    CHECK_MESSAGE(encode_kdgold(g->method, g->case_name, g->tensors) == file_bytes(golden_path(name)), name);
  }
}

TEST_CASE("kd golden: the reference set covers what the format requires") {
  auto f0 = golden("fgd_0"), f1 = golden("fgd_1"), f2 = golden("fgd_2");
  auto s0 = golden("ssim_kd_0"), s2 = golden("ssim_kd_2");
  if (!f0 || !f1 || !f2 || !s0 || !s2) return;
  CHECK(f1->at("in.boxes.1").shape() == Shape{0, 4});                       // an image with no boxes
  CHECK(f0->at("in.S.0").size(1) != f0->at("in.T.0").size(1));             // C_s != C_t
  CHECK(f0->has("param.level0.align.weight"));
  CHECK_FALSE(f1->has("param.level0.align.weight"));
  CHECK(f2->at("out.level2.bg_loss").item() == 0.0);                       // a fully-foreground level
  CHECK(s0->at("in.S.2").size(2) < 11);                                    // level smaller than the window
  CHECK(s2->at("hp.window_size").item() == 7.0);
  CHECK(s2->at("in.S.1").size(2) == 2);
}

// ------------------------------------------------------------------------------------------------
// the checker can fail
// ------------------------------------------------------------------------------------------------

TEST_CASE("kd-check fails on perturbed golden values and hyperparameters") {
  auto g = golden("fgd_0");
  if (!g) return;
  REQUIRE(kd_check(*g).ok());
  auto perturbed = [&](const std::string& key, double rel, int64_t index = 0) {
    KdGolden p = *g;
    Tensor t = p.at(key).clone();
    double* d = t.data<double>();
    double m = 0;
    for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(d[i]));
    d[index] += rel * (m > 0 ? m : 1.0);
    p.tensors[key] = t;
    return kd_check(p);
  };
  CHECK(fails_on_key(perturbed("out.loss", 1e-6), "out.loss"));
  CHECK(fails_on_key(perturbed("out.level1.rela_loss", 1e-7), "out.level1.rela_loss"));
  CHECK(fails_on_key(perturbed("grad.S.0", 1e-6, 17), "grad.S.0"));
  CHECK(fails_on_key(perturbed("grad.param.level0.gc_t.channel_add.3.weight", 1e-6, 3),
                     "grad.param.level0.gc_t.channel_add.3.weight"));
  CHECK(fails_on_key(perturbed("mid.level0.mask_fg", 1e-6, 40), "mid.level0.mask_fg"));
  // Continuous hyperparameters changed by a relative 1e-6 must be detected (kd_golden_format.md §6).
  for (const char* hp : {"hp.temp", "hp.alpha_fgd", "hp.beta_fgd", "hp.gamma_fgd", "hp.lambda_fgd"}) {
    const KdCheckReport r = perturbed(hp, 1e-6);
    CHECK_MESSAGE(!r.ok(), hp);
  }
  // A perturbed input changes the results too.
  CHECK_FALSE(perturbed("in.T.1", 1e-6, 5).ok());
  // A valid report must have every key passing.
  const KdCheckReport ok = kd_check(*g);
  for (const auto& k : ok.keys) CHECK_MESSAGE(k.pass, k.key);
}

TEST_CASE("kd-check tolerance headroom: 1e-14 input noise passes, 1e-6 on any continuous hyperparameter fails") {
  // kd_golden_format.md §6: independent float64 implementations differ by rounding and must pass with
  // margin; every continuous hyperparameter must be resolved at a relative 1e-6. Discrete ratios,
  // integer codes and small stabilising constants (eps, K1) are exempt, as the format says.
  const std::set<std::string> exempt = {"hp.ln_eps", "hp.bn_eps", "hp.minmax_eps", "hp.K1",
                                        "hp.mask_ratio", "hp.spatial_ratio", "hp.channel_ratio", "hp.lambda_mgd",
                                        "hp.reduction", "hp.mask_mode", "hp.se_reduction", "hp.window_size",
                                        "hp.use_channel_mask"};
  for (const auto& name : kCases) {
    auto g = golden(name);
    if (!g) continue;
    KdGolden noisy = *g;
    for (auto& [k, t] : noisy.tensors)
      if (k.rfind("in.", 0) == 0 && k.rfind("in.boxes", 0) != 0 && k != "in.ref_hw" && k.rfind("in.rand", 0) != 0)
        t = ops::mul_scalar(t, 1.0 + 1e-14);
    const KdCheckReport rn = kd_check(noisy);
    CHECK_MESSAGE(rn.ok(), "1e-14 input noise: " << summary(rn));
    CHECK_MESSAGE(rn.worst_ratio() < 0.1, name << ": worst err/tol " << rn.worst_ratio() << " under 1e-14 noise");
    for (const auto& [k, t] : g->tensors) {
      if (k.rfind("hp.", 0) != 0 || exempt.count(k) || k.find(".nl_") != std::string::npos) continue;
      KdGolden p = *g;
      p.tensors[k] = Tensor::scalar(t.item() * (1.0 + 1e-6), DType::F64);
      CHECK_MESSAGE(!kd_check(p).ok(), name << ": " << k << " changed by 1e-6 is not detected");
    }
  }
}

TEST_CASE("kd-check fails on missing, extra and unconsumed keys") {
  auto g = golden("fgd_1");
  if (!g) return;
  auto without = [&](const std::string& key) {
    KdGolden p = *g;
    REQUIRE(p.tensors.erase(key) == 1);
    return kd_check(p);
  };
  auto with = [&](const std::string& key, Tensor t) {
    KdGolden p = *g;
    p.tensors[key] = t;
    return kd_check(p);
  };
  CHECK(has_error(without("hp.alpha_fgd"), "missing hyperparameter 'hp.alpha_fgd'"));
  CHECK(has_error(without("in.ref_hw"), "missing input 'in.ref_hw'"));
  CHECK(has_error(without("param.level0.gc_s.conv_mask.bias"), "gc_s.conv_mask.bias"));
  CHECK(has_error(without("out.fg_loss"), "out.fg_loss"));
  CHECK(has_error(without("grad.param.level0.gc_t.conv_mask.weight"), "gc_t.conv_mask.weight"));
  CHECK(has_error(with("hp.unknown_weight", Tensor::scalar(1.0, DType::F64)), "hp.unknown_weight"));
  CHECK(has_error(with("param.level0.align.weight", Tensor::zeros({8, 8, 1, 1}, DType::F64)), "align.weight"));
  CHECK(has_error(with("out.bogus_loss", Tensor::scalar(1.0, DType::F64)), "out.bogus_loss"));
  CHECK(has_error(with("hp.reduction", Tensor::scalar(0.0, DType::F64)), "hp.reduction"));
  // A mid.* key the engine cannot produce is listed as skipped (not silently ignored).
  const KdCheckReport r = with("mid.level0.something_new", Tensor::zeros({2}, DType::F64));
  CHECK(r.skipped == std::vector<std::string>{"mid.level0.something_new"});
  // Shape mismatch of a compared key.
  CHECK(fails_on_key(with("mid.level0.mask_fg", Tensor::zeros({3, 12, 8}, DType::F64)), "mid.level0.mask_fg"));
  // A bad enumeration code is an error, not a silent default.
  auto f = golden("fitnet_0");
  if (f) {
    KdGolden p = *f;
    p.tensors["hp.reduction"] = Tensor::scalar(3.0, DType::F64);
    CHECK(has_error(kd_check(p), "not a valid code"));
  }
}

TEST_CASE("kdgold-1 reader validates the container") {
  const std::string dir = std::filesystem::temp_directory_path() / "kdet_kd_golden_test";
  std::filesystem::create_directories(dir);
  std::map<std::string, Tensor> t;
  t["in.s_logits"] = rnd({2, 3}, 1);
  t["hp.T"] = Tensor::scalar(2.0, DType::F64);
  t["in.z"] = Tensor::zeros({0, 4}, DType::F64);  // zero-size tensors are legal
  const std::string good = encode_kdgold("logit_kd_kl", "logit_kd_kl_0", t);
  CHECK((good.size() - 8) % 8 == 0);
  {
    KdGolden g = parse_kdgold(good, "good");
    CHECK(g.method == "logit_kd_kl");
    CHECK(g.case_name == "logit_kd_kl_0");
    CHECK(max_abs_diff(g.at("in.s_logits"), t["in.s_logits"]) == 0.0);
    CHECK(g.at("in.z").shape() == Shape{0, 4});
  }
  auto throws = [](const std::string& bytes, const std::string& needle) {
    CHECK_THROWS_WITH_AS(parse_kdgold(bytes, "bad.safetensors"), doctest::Contains(needle.c_str()), Error);
  };
  throws(good.substr(0, good.size() - 8), "outside the data buffer");
  throws(good + std::string(1, '\0'), "trailing byte");
  throws(good.substr(0, 5), "need at least 8");
  {
    std::string big = good;
    const uint64_t n = 100000008ull;
    for (int i = 0; i < 8; ++i) big[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    throws(big, "exceeds the kdgold-1 limit");
  }
  {
    std::string past = good;
    past[0] = static_cast<char>(0xf8);
    past[1] = static_cast<char>(0xff);
    throws(past, "runs past the end");
  }
  const std::string md = R"("__metadata__":{"format":"kdgold-1","method":"fitnet","case":"fitnet_0"})";
  const std::string d16(16, '\0');
  throws(raw_file("{" + md + R"(,"in.a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
         "F64 only");
  throws(raw_file("{" + md + R"(,"in.a":{"dtype":"F64","shape":[1],"data_offsets":[8,16]}})", d16), "hole");
  throws(raw_file("{" + md + R"(,"in.a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},)" +
                      R"("in.b":{"dtype":"F64","shape":[1],"data_offsets":[8,16]}})",
                  d16),
         "overlaps");
  throws(raw_file("{" + md + R"(,"in.a":{"dtype":"F64","shape":[3],"data_offsets":[0,16]}})", d16), "needs 24");
  throws(raw_file("{" + md + R"(,"hp.a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", d16), "must be 0-d");
  throws(raw_file("{" + md + R"(,"foo.a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", d16), "family");
  throws(raw_file("{" + md + R"(,"in.a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]})", d16), "valid JSON");
  throws(raw_file("{" + md + R"(,"in.a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}x  )", d16), "non-space");
  throws(raw_file(R"({"in.a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", d16), "no __metadata__");
  throws(raw_file(R"({"__metadata__":{"format":"kdgold-2","method":"fitnet","case":"fitnet_0"}})", ""),
         "unknown format 'kdgold-2'");
  throws(raw_file(R"({"__metadata__":{"format":"kdgold-1","method":"crd","case":"crd_0"}})", ""),
         "unknown method 'crd'");
  throws(raw_file(R"({"__metadata__":{"format":"kdgold-1","method":"fgd","case":"mgd_0"}})", ""), "not of the form");
  throws(raw_file(R"({"__metadata__":{"format":"kdgold-1","method":"fgd","case":"fgd_0","x":"y"}})", ""),
         "unexpected __metadata__ key");
  // Trailing spaces after the JSON object are fine.
  CHECK_NOTHROW(parse_kdgold(raw_file("{" + md + R"(,"in.a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}   )",
                                      d16),
                             "ok"));
  // The file-level entry point reports instead of throwing.
  const std::string path = dir + "/broken.safetensors";
  {
    std::ofstream f(path, std::ios::binary);
    f << good.substr(0, good.size() - 3);
  }
  const KdCheckReport r = kd_check_file(path);
  CHECK_FALSE(r.ok());
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].find(path) != std::string::npos);
  CHECK_FALSE(kd_check_file(dir + "/does_not_exist.safetensors").ok());
  std::filesystem::remove_all(dir);
}

// ------------------------------------------------------------------------------------------------
// float64 gradchecks (student inputs through gradcheck.h; parameters by finite differences)
// ------------------------------------------------------------------------------------------------

TEST_CASE("gradcheck: kd safe_sqrt and frobenius_distance (zero gradient at zero)") {
  CHECK(gradcheck([](const std::vector<Var>& v) { return safe_sqrt(v[0]); }, {rnd({5}, 3, 0.2, 2.0)}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return frobenius_distance(v[0], v[1]); },
                  {rnd({2, 3}, 4), rnd({2, 3}, 5)}));
  Var a(Tensor::zeros({3}, DType::F64), true);
  Var l = frobenius_distance(a, Var(Tensor::zeros({3}, DType::F64)));
  l.backward();
  CHECK(l.item() == 0.0);
  for (double g : a.grad().to_vector<double>()) CHECK(g == 0.0);
}

TEST_CASE("gradcheck: fitnet and logit KD") {
  Generator g(11);
  FitNetLoss fit({{3, 4}, {3, 4}}, {0.7, FitNetReduction::SumOverBatch});
  fit.to(DType::F64);
  fit.init_weights(g);
  const std::vector<Tensor> T = {rnd({2, 4, 3, 4}, 21), rnd({2, 4, 2, 2}, 22)};
  for (auto red : {FitNetReduction::SumOverBatch, FitNetReduction::Mean, FitNetReduction::Sum}) {
    FitNetLoss f2({{3, 4}}, {0.5, red});
    f2.to(DType::F64);
    f2.init_weights(g);
    CHECK(gradcheck([&](const std::vector<Var>& v) { return f2.forward(v, {T[0]}).loss; }, {rnd({2, 3, 3, 4}, 23)}));
  }
  CHECK(gradcheck([&](const std::vector<Var>& v) { return fit.forward(v, T).loss; },
                  {rnd({2, 3, 3, 4}, 24), rnd({2, 3, 2, 2}, 25)}));
  const std::vector<Var> S = leaves({rnd({2, 3, 3, 4}, 24), rnd({2, 3, 2, 2}, 25)});
  param_fd_check(fit, [&] { return fit.forward(S, T).loss; }, "fitnet");

  const Tensor t = rnd({5, 4}, 31, -3, 3);
  for (auto red : {KLReduction::BatchMean, KLReduction::ClassMean, KLReduction::Sum})
    CHECK(gradcheck([&](const std::vector<Var>& v) { return logit_kd_kl(v[0], t, {2.0, red}).loss; },
                    {rnd({5, 4}, 32, -3, 3)}));
  const Tensor w = Tensor::from_vector(std::vector<double>{1.0, 0.0, 2.5, 1.0, 0.5});
  CHECK(gradcheck([&](const std::vector<Var>& v) { return logit_kd_bce(v[0], t, w, {1.5, 3.0}).loss; },
                  {rnd({5, 4}, 33, -3, 3)}));
  // ∂L/∂s = (T/R)(p_s − p_t) for batchmean.
  Var s(rnd({5, 4}, 34, -3, 3), true);
  logit_kd_kl(s, t, {2.0, KLReduction::BatchMean}).loss.backward();
  Tensor ps = ops::softmax(ops::mul_scalar(s.data(), 0.5), 1), pt = ops::softmax(ops::mul_scalar(t, 0.5), 1);
  check_close(s.grad(), ops::mul_scalar(ops::sub(ps, pt), 2.0 / 5.0), 1e-12, 1e-15, "logit KL closed-form gradient");
}

TEST_CASE("gradcheck: fgd (focal, attention, GcBlock relation terms)") {
  Generator g(5);
  FGDLoss loss({{3, 4}, {3, 4}}, FGDConfig{0.5, 1e-1, 5e-2, 5e-2, 1e-1, 1e-5});
  loss.to(DType::F64);
  loss.init_weights(g);
  // Perturb the zero-initialised last convs and LayerNorm affine so every parameter gets a gradient.
  for (auto& np : loss.named_parameter_ptrs())
    if (np.name.find("channel_add.3") != std::string::npos || np.name.find("channel_add.1") != std::string::npos)
      np.var->data().copy_(ops::add(np.var->data(), rnd(np.var->shape(), 77 + np.name.size(), -0.5, 0.5)));
  const std::vector<Tensor> T = {rnd({2, 4, 5, 6}, 41), rnd({2, 4, 3, 3}, 42)};
  const std::vector<Tensor> boxes = {Tensor::from_vector(std::vector<double>{3.1, 2.2, 20.5, 17.9, 30.2, 20.4, 48.0, 40.0},
                                                         Shape{2, 4}),
                                     Tensor::zeros({0, 4}, DType::F64)};
  const Tensor ref = Tensor::from_vector(std::vector<double>{40.0, 48.0, 36.0, 44.0}, Shape{2, 2});
  CHECK(gradcheck([&](const std::vector<Var>& v) { return loss.forward(v, T, boxes, ref).loss; },
                  {rnd({2, 3, 5, 6}, 43), rnd({2, 3, 3, 3}, 44)}));
  const std::vector<Var> S = leaves({rnd({2, 3, 5, 6}, 43), rnd({2, 3, 3, 3}, 44)});
  param_fd_check(loss, [&] { return loss.forward(S, T, boxes, ref).loss; }, "fgd");
}

TEST_CASE("fgd masks: rasterisation rules of kd_losses.md §1b.2-3") {
  // One box on a 4x6 grid of a 40x60 image: x 12..33 -> cols floor(1.2)=1 .. ceil(3.3)=4; y 5..21 ->
  // rows floor(0.5)=0 .. ceil(2.1)=3. Area 1/((3-0+1)(4-1+1)) = 1/16; a second, smaller box inside
  // wins where they overlap (max); a box touching the border gets the unclamped +1 extent.
  const std::vector<Tensor> boxes = {
      Tensor::from_vector(std::vector<double>{12, 5, 33, 21, 31, 11, 39, 19}, Shape{2, 4}),
      Tensor::from_vector(std::vector<double>{50, 30, 60, 40}, Shape{1, 4}), Tensor::zeros({0, 4}, DType::F64)};
  const Tensor ref = Tensor::from_vector(std::vector<double>{40, 60, 40, 60, 40, 60}, Shape{3, 2});
  auto [fg, bg] = fgd_masks(boxes, ref, 4, 6);
  auto f = fg.to_vector<double>();
  auto b = bg.to_vector<double>();
  CHECK(f[0 * 6 + 1] == doctest::Approx(1.0 / 16));
  CHECK(f[3 * 6 + 4] == doctest::Approx(1.0 / 16));
  CHECK(f[0 * 6 + 0] == 0.0);
  CHECK(f[0 * 6 + 5] == 0.0);
  // second box: cols floor(3.1)=3..ceil(3.9)=4, rows floor(1.1)=1..ceil(1.9)=2 -> area 1/4
  CHECK(f[1 * 6 + 3] == doctest::Approx(0.25));
  CHECK(f[2 * 6 + 4] == doctest::Approx(0.25));
  // image 1: x 50..60 -> cols 5..6 (clamped to 5), rows 3..4 (clamped to 3); area 1/((4-3+1)(6-5+1))
  CHECK(f[24 + 3 * 6 + 5] == doctest::Approx(0.25));
  CHECK(f[24 + 2 * 6 + 5] == 0.0);
  // backgrounds sum to 1 per image; the box-less image is uniform 1/(H*W)
  double s0 = 0, s2 = 0;
  for (int k = 0; k < 24; ++k) {
    s0 += b[k];
    s2 += b[48 + k];
    CHECK(b[48 + k] == doctest::Approx(1.0 / 24));
    if (f[k] > 0) CHECK(b[k] == 0.0);
  }
  CHECK(s0 == doctest::Approx(1.0));
  CHECK(s2 == doctest::Approx(1.0));
}

TEST_CASE("gradcheck: mgd, amd (both mask modes) and dmkd") {
  Generator g(9);
  const std::vector<Tensor> T = {rnd({2, 4, 4, 5}, 51), rnd({2, 4, 2, 3}, 52)};
  const std::vector<Tensor> Sin = {rnd({2, 3, 4, 5}, 53), rnd({2, 3, 2, 3}, 54)};
  {
    MGDLoss loss({{3, 4}, {3, 4}}, {0.1, 0.5});
    loss.to(DType::F64);
    loss.init_weights(g);
    Generator rg(3);
    const std::vector<Tensor> R = MGDLoss::draw_rand(T, rg);
    CHECK(gradcheck([&](const std::vector<Var>& v) { return loss.forward(v, T, R).loss; }, Sin));
    const auto S = leaves(Sin);
    param_fd_check(loss, [&] { return loss.forward(S, T, R).loss; }, "mgd");
    // the keep mask zeroes exactly where rand > 1 - lambda
    MidSink mid;
    loss.forward(S, T, R, &mid);
    auto k = mid["level0.keep"].to_vector<double>();
    auto r = R[0].to_vector<double>();
    for (size_t i = 0; i < k.size(); ++i) CHECK(k[i] == (r[i] > 0.5 ? 0.0 : 1.0));
  }
  for (auto mode : {AMDMaskMode::TopK, AMDMaskMode::Mean}) {
    AMDLoss loss({{3, 4}, {3, 4}}, AMDConfig{0.1, 0.5, 0.4, 2, mode});
    loss.to(DType::F64);
    loss.init_weights(g);
    CHECK(gradcheck([&](const std::vector<Var>& v) { return loss.forward(v, T).loss; }, Sin));
    const auto S = leaves(Sin);
    param_fd_check(loss, [&] { return loss.forward(S, T).loss; }, "amd");
    if (mode == AMDMaskMode::TopK) {
      MidSink mid;
      loss.forward(S, T, &mid);
      double zeros = 0;
      for (double v : mid["level0.keep"].to_vector<double>()) zeros += v == 0.0;
      CHECK(zeros == 2 * 8);  // floor(0.4 * 20) per image
    }
  }
  {
    DMKDLoss loss({{3, 4}, {3, 4}}, DMKDConfig{0.1, 0.5, 0.5, 0.5});
    loss.to(DType::F64);
    loss.init_weights(g);
    for (auto& np : loss.named_parameter_ptrs())
      if (np.name.find("fuse_logits") != std::string::npos)
        np.var->data().copy_(Tensor::from_vector(std::vector<double>{0.3, -0.4}));
    CHECK(gradcheck([&](const std::vector<Var>& v) { return loss.forward(v, T).loss; }, Sin));
    const auto S = leaves(Sin);
    param_fd_check(loss, [&] { return loss.forward(S, T).loss; }, "dmkd");
  }
}

TEST_CASE("gradcheck: ssim_kd (levels smaller than the window, C_s != C_t)") {
  Generator g(13);
  SSIMConfig cfg;
  cfg.loss_weight = 2.0;
  cfg.window_size = 5;
  cfg.sigma = 1.0;
  SSIMKDLoss loss({{3, 2}, {3, 2}}, cfg);
  loss.to(DType::F64);
  loss.init_weights(g);
  const std::vector<Tensor> T = {rnd({2, 2, 6, 7}, 61), rnd({2, 2, 2, 3}, 62)};
  const std::vector<Tensor> Sin = {rnd({2, 3, 6, 7}, 63), rnd({2, 3, 2, 3}, 64)};
  CHECK(gradcheck([&](const std::vector<Var>& v) { return loss.forward(v, T).loss; }, Sin));
  const auto S = leaves(Sin);
  param_fd_check(loss, [&] { return loss.forward(S, T).loss; }, "ssim_kd", 1e-6, 1e-5, 1e-8);
  // identical normalised inputs give SSIM = 1 everywhere
  const Tensor x = rnd({1, 2, 3, 4}, 65);
  Var m = ssim_map(Var(x), Var(x), gaussian_kernel_1d(11, 1.5), 1e-4, 9e-4);
  for (double v : m.data().to_vector<double>()) CHECK(v == doctest::Approx(1.0).epsilon(1e-12));
}

TEST_CASE("kd_gaussian_filter: separable filter == depthwise conv2d with the 2-D window; gradcheck") {
  for (auto [w, sigma] : {std::pair<int64_t, double>{11, 1.5}, {7, 1.0}, {3, 0.8}}) {
    const std::vector<double> g = gaussian_kernel_1d(w, sigma);
    double sum = 0;
    for (double v : g) sum += v;
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-15));
    for (const Shape& s : {Shape{2, 3, 9, 13}, Shape{1, 2, 2, 3}, Shape{1, 1, 12, 1}}) {
      const Tensor x = rnd(s, 90 + w);
      const Tensor win = gaussian_window(w, sigma).reshape({1, 1, w, w}).expand({s[1], 1, w, w}).contiguous();
      const Tensor ref = ops::conv2d(x, win, Tensor(), Conv2dArgs::make(1, w / 2, 1, s[1]));
      check_close(gaussian_filter(Var(x), g).data(), ref, 1e-13, 1e-15, "separable vs conv2d");
      // f32 path too
      check_close(gaussian_filter(Var(x.to(DType::F32)), g).data(), ref, 1e-5, 1e-6, "separable f32");
    }
    CHECK(gradcheck([&](const std::vector<Var>& v) { return gaussian_filter(v[0], g); }, {rnd({2, 2, 5, 6}, 99)}));
  }
  CHECK_THROWS_AS(gaussian_filter(Var(rnd({1, 1, 4, 4}, 1)), {0.2, 0.5, 0.3}), Error);  // not symmetric
}

TEST_CASE("gradcheck: fbkd and aid (masks from the teacher only, so they are constants)") {
  Generator g(17);
  FBKDConfig cfg;
  cfg.s_ratio = 0.0;  // with r = 0 the masks depend on T only, so finite differences see constant masks
  cfg.w_feat = 0.3;
  cfg.w_channel = 0.2;
  cfg.w_spatial = 0.2;
  cfg.w_nonlocal = 0.3;
  cfg.use_channel_mask = true;
  cfg.nonlocal = {{2, 2}, {2, 1}};
  const std::vector<Tensor> T = {rnd({2, 3, 5, 6}, 71), rnd({2, 3, 3, 2}, 72)};
  const std::vector<Tensor> Sin = {rnd({2, 3, 5, 6}, 73), rnd({2, 3, 3, 2}, 74)};
  // The BN-normalised non-local terms have a loss of O(10) with heavy cancellation: central differences
  // with eps = 1e-6 are dominated by round-off (measured: eps 1e-5 passes at rtol 1e-5, 1e-6 and 1e-7
  // drift by 3e-5 and 6e-5 relative), so these checks use eps = 1e-5.
  GradcheckOptions fd;
  fd.eps = 1e-5;
  auto perturb_bn = [&](Module& m) {
    for (auto& np : m.named_parameter_ptrs())
      if (np.name.find(".bn.") != std::string::npos)
        np.var->data().copy_(rnd(np.var->shape(), 80 + np.name.size(), 0.5, 1.5));
  };
  {
    FBKDLoss loss(3, cfg);
    loss.to(DType::F64);
    loss.init_weights(g);
    perturb_bn(loss);
    CHECK(gradcheck([&](const std::vector<Var>& v) { return loss.forward(v, T).loss; }, Sin, fd));
    const auto S = leaves(Sin);
    param_fd_check(loss, [&] { return loss.forward(S, T).loss; }, "fbkd", fd.eps, 1e-5, 1e-8);
  }
  {
    AIDLoss loss(3, AIDConfig{cfg, 0.25});
    loss.to(DType::F64);
    loss.init_weights(g);
    perturb_bn(loss);
    const Tensor lt = Tensor::from_vector(std::vector<double>{0.0, 3.0});
    CHECK(gradcheck([&](const std::vector<Var>& v) { return loss.forward(v, T, lt).loss; }, Sin, fd));
    const auto S = leaves(Sin);
    param_fd_check(loss, [&] { return loss.forward(S, T, lt).loss; }, "aid", fd.eps, 1e-5, 1e-8);
    // With one image, AID (w = 1 when L_T = 0) equals FBKD.
    FBKDLoss fb(3, cfg);
    fb.to(DType::F64);
    fb.load_state_dict(loss.state_dict());
    const std::vector<Tensor> T1 = {T[0].slice(0, 0, 1).contiguous(), T[1].slice(0, 0, 1).contiguous()};
    const auto S1 = leaves({Sin[0].slice(0, 0, 1).contiguous(), Sin[1].slice(0, 0, 1).contiguous()});
    const double a = loss.forward(S1, T1, Tensor::zeros({1}, DType::F64)).loss.item();
    const double b = fb.forward(S1, T1).loss.item();
    CHECK(a == doctest::Approx(b).epsilon(1e-12));
  }
}
