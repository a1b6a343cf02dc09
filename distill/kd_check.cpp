#include "distill/kd_check.h"

#include <cmath>
#include <functional>
#include <set>
#include <sstream>

#include "distill/loss_aid.h"
#include "distill/loss_amd.h"
#include "distill/loss_dmkd.h"
#include "distill/loss_fbkd.h"
#include "distill/loss_fgd.h"
#include "distill/loss_fitnet.h"
#include "distill/loss_logit_kd.h"
#include "distill/loss_mgd.h"
#include "distill/loss_ssim.h"

namespace kdet::kd {

KdTolerance kd_tolerance(const std::string& family, DType dtype) {
  const bool f32 = dtype == DType::F32;
  // f32: a floor of 1e-3·S_f, because structurally zero gradients (BN-fed W.bias, the min-max-fed
  // SSIM adapter bias) hold f32 rounding noise of ~1e-7 relative to the family's scale.
  if (family == "out") return f32 ? KdTolerance{1e-4, 1e-3} : KdTolerance{1e-9, 1e-9};
  if (family == "grad") return f32 ? KdTolerance{1e-3, 1e-3} : KdTolerance{1e-8, 1e-5};
  if (family == "mid") return f32 ? KdTolerance{1e-4, 1e-3} : KdTolerance{1e-9, 1e-9};
  KDET_FAIL("kd_tolerance: no tolerance for family '", family, "'");
}

bool KdCheckReport::ok() const {
  if (!errors.empty() || keys.empty()) return false;
  for (const auto& k : keys)
    if (!k.pass) return false;
  return true;
}

double KdCheckReport::worst_ratio() const {
  double w = 0;
  for (const auto& k : keys) w = std::max(w, k.rtol > 0 ? k.rel_err() / k.rtol : k.rel_err());
  return w;
}

namespace {

std::string family_of(const std::string& key) { return key.substr(0, key.find('.')); }

// Tracks which in.* / hp.* entries the method consumed; no defaults anywhere.
class Inputs {
 public:
  Inputs(const KdGolden& g, DType dtype) : g_(g), dtype_(dtype) {}
  // The input converted to the run's dtype.
  Tensor in(const std::string& name) { return in_f64(name).to(dtype_); }
  // The input as stored (f64): box coordinates and reference sizes stay in double (§1f.7).
  const Tensor& in_f64(const std::string& name) {
    const std::string key = "in." + name;
    KDET_CHECK(g_.has(key), "missing input '", key, "'");
    used_.insert(key);
    return g_.at(key);
  }
  DType dtype() const { return dtype_; }
  double hp(const std::string& name) {
    const std::string key = "hp." + name;
    KDET_CHECK(g_.has(key), "missing hyperparameter '", key, "' (the checker has no defaults)");
    used_.insert(key);
    return g_.at(key).item();
  }
  int64_t hp_int(const std::string& name) { return std::llround(hp(name)); }
  bool hp_bool(const std::string& name) {
    const double v = hp(name);
    KDET_CHECK(v == 0.0 || v == 1.0, "hyperparameter 'hp.", name, "' must be 0 or 1, is ", v);
    return v == 1.0;
  }
  int64_t hp_code(const std::string& name, int64_t n_codes) {
    const double v = hp(name);
    const int64_t c = std::llround(v);
    KDET_CHECK(c >= 0 && c < n_codes && static_cast<double>(c) == v, "hyperparameter 'hp.", name, "' = ", v,
               " is not a valid code (0..", n_codes - 1, ")");
    return c;
  }
  // Number of levels L from in.S.<i> (contiguous from 0) and the matching in.T.<i>.
  size_t levels() {
    size_t L = 0;
    while (g_.has("in.S." + std::to_string(L))) ++L;
    KDET_CHECK(L > 0, "no student features in.S.0");
    for (size_t i = 0; i < L; ++i) KDET_CHECK(g_.has("in.T." + std::to_string(i)), "missing in.T.", i);
    return L;
  }
  // Keys of family in/hp that nothing consumed.
  std::vector<std::string> unconsumed() const {
    std::vector<std::string> r;
    for (const auto& [k, t] : g_.tensors) {
      const std::string f = family_of(k);
      if ((f == "in" || f == "hp") && !used_.count(k)) r.push_back(k);
    }
    return r;
  }

 private:
  const KdGolden& g_;
  DType dtype_;
  std::set<std::string> used_;
};

struct Run {
  std::map<std::string, Tensor> produced;  // out.*, grad.*, mid.*
};

// Student features as gradient-requiring leaves; teacher features as constants.
struct Features {
  std::vector<Var> S;
  std::vector<Tensor> T;
  std::vector<std::pair<int64_t, int64_t>> channels;
};

Features read_features(Inputs& in) {
  Features f;
  const size_t L = in.levels();
  for (size_t i = 0; i < L; ++i) {
    const Tensor s = in.in("S." + std::to_string(i));
    const Tensor t = in.in("T." + std::to_string(i));
    KDET_CHECK(s.ndim() == 4 && t.ndim() == 4, "in.S.", i, " ", s.shape(), " and in.T.", i, " ", t.shape(),
               " must be [N, C, H, W]");
    f.S.emplace_back(s.clone(), true);
    f.T.push_back(t);
    f.channels.push_back({s.size(1), t.size(1)});
  }
  return f;
}

// Loads every param.* of the file into `m` (converted to f64 first); the key sets must match exactly.
void load_params(const KdGolden& g, Module& m, DType dtype) {
  m.to(dtype);
  std::set<std::string> file_keys;
  for (const auto& [k, t] : g.tensors)
    if (family_of(k) == "param") file_keys.insert(k.substr(6));
  std::vector<std::string> missing, unexpected, bad;
  std::set<std::string> model_keys;
  for (const auto& k : m.state_dict_keys()) {
    model_keys.insert(k);
    if (!file_keys.count(k)) missing.push_back(k);
  }
  for (const auto& k : file_keys)
    if (!model_keys.count(k)) unexpected.push_back(k);
  std::string msg;
  for (auto& k : missing) msg += "\n  engine parameter '" + k + "' has no param." + k + " in the file";
  for (auto& k : unexpected) msg += "\n  file key 'param." + k + "' matches no engine parameter or buffer";
  KDET_CHECK(msg.empty(), "param.* keys do not match the engine's ", m.type_name(), " structure:", msg);
  for (const auto& k : file_keys) {
    const Tensor& src = g.at("param." + k);
    if (Var* p = m.find_parameter(k)) {
      KDET_CHECK(p->shape() == src.shape(), "param.", k, ": file shape ", src.shape(), " vs engine ", p->shape());
      p->data().copy_(src);
    } else {
      Tensor* b = m.find_buffer(k);
      KDET_CHECK(b && b->shape() == src.shape(), "param.", k, ": file shape ", src.shape(), " vs engine buffer ",
                 b ? b->shape() : Shape{});
      b->copy_(src);
    }
  }
}

void collect(Run& run, const KdResult& r, const MidSink& mid) {
  run.produced["out.loss"] = r.loss.data();
  for (const auto& [k, v] : r.terms) run.produced["out." + k] = v.data();
  for (const auto& [k, t] : mid) run.produced["mid." + k] = t;
}

// Backpropagates out.loss once and records grad.S.<i> and grad.param.<every learnable parameter>.
void backprop(Run& run, const KdResult& r, const std::vector<Var>& S, const Module* m) {
  r.loss.backward();
  auto g_or_zero = [](const Var& v) { return v.grad().defined() ? v.grad() : Tensor::zeros(v.shape(), v.dtype()); };
  for (size_t i = 0; i < S.size(); ++i) run.produced["grad.S." + std::to_string(i)] = g_or_zero(S[i]);
  if (m)
    for (const auto& np : m->named_parameter_ptrs())
      if (np.var->requires_grad()) run.produced["grad.param." + np.name] = g_or_zero(*np.var);
}

Run run_method(const KdGolden& g, Inputs& in) {
  Run run;
  MidSink mid;
  const std::string& m = g.method;
  if (m == "fitnet") {
    FitNetConfig c;
    c.loss_weight = in.hp("loss_weight");
    c.reduction = static_cast<FitNetReduction>(in.hp_code("reduction", 3));
    Features f = read_features(in);
    FitNetLoss loss(f.channels, c);
    load_params(g, loss, in.dtype());
    KdResult r = loss.forward(f.S, f.T, &mid);
    collect(run, r, mid);
    backprop(run, r, f.S, &loss);
  } else if (m == "logit_kd_kl" || m == "logit_kd_bce") {
    Var s(in.in("s_logits").clone(), true);
    const Tensor t = in.in("t_logits");
    KdResult r;
    if (m == "logit_kd_kl") {
      LogitKLConfig c;
      c.T = in.hp("T");
      c.reduction = static_cast<KLReduction>(in.hp_code("reduction", 3));
      r = logit_kd_kl(s, t, c, &mid);
    } else {
      LogitBCEConfig c;
      c.T = in.hp("T");
      c.avg_factor = in.hp("avg_factor");
      r = logit_kd_bce(s, t, in.in("weights"), c, &mid);
    }
    collect(run, r, mid);
    r.loss.backward();
    run.produced["grad.s_logits"] = s.grad().defined() ? s.grad() : Tensor::zeros(s.shape(), s.dtype());
  } else if (m == "fgd") {
    FGDConfig c;
    c.temp = in.hp("temp");
    c.alpha_fgd = in.hp("alpha_fgd");
    c.beta_fgd = in.hp("beta_fgd");
    c.gamma_fgd = in.hp("gamma_fgd");
    c.lambda_fgd = in.hp("lambda_fgd");
    c.ln_eps = in.hp("ln_eps");
    Features f = read_features(in);
    const int64_t N = f.S[0].size(0);
    std::vector<Tensor> boxes;
    for (int64_t j = 0; j < N; ++j) boxes.push_back(in.in_f64("boxes." + std::to_string(j)));
    FGDLoss loss(f.channels, c);
    load_params(g, loss, in.dtype());
    KdResult r = loss.forward(f.S, f.T, boxes, in.in_f64("ref_hw"), &mid);
    collect(run, r, mid);
    backprop(run, r, f.S, &loss);
  } else if (m == "mgd") {
    MGDConfig c;
    c.alpha_mgd = in.hp("alpha_mgd");
    c.lambda_mgd = in.hp("lambda_mgd");
    Features f = read_features(in);
    std::vector<Tensor> rnd;
    for (size_t i = 0; i < f.S.size(); ++i) rnd.push_back(in.in("rand." + std::to_string(i)));
    MGDLoss loss(f.channels, c);
    load_params(g, loss, in.dtype());
    KdResult r = loss.forward(f.S, f.T, rnd, &mid);
    collect(run, r, mid);
    backprop(run, r, f.S, &loss);
  } else if (m == "amd") {
    AMDConfig c;
    c.alpha = in.hp("alpha");
    c.temp = in.hp("temp");
    c.mask_ratio = in.hp("mask_ratio");
    c.se_reduction = in.hp_int("se_reduction");
    c.mask_mode = static_cast<AMDMaskMode>(in.hp_code("mask_mode", 2));
    Features f = read_features(in);
    AMDLoss loss(f.channels, c);
    load_params(g, loss, in.dtype());
    KdResult r = loss.forward(f.S, f.T, &mid);
    collect(run, r, mid);
    backprop(run, r, f.S, &loss);
  } else if (m == "dmkd") {
    DMKDConfig c;
    c.alpha = in.hp("alpha");
    c.temp = in.hp("temp");
    c.spatial_ratio = in.hp("spatial_ratio");
    c.channel_ratio = in.hp("channel_ratio");
    Features f = read_features(in);
    DMKDLoss loss(f.channels, c);
    load_params(g, loss, in.dtype());
    KdResult r = loss.forward(f.S, f.T, &mid);
    collect(run, r, mid);
    backprop(run, r, f.S, &loss);
  } else if (m == "ssim_kd") {
    SSIMConfig c;
    c.loss_weight = in.hp("loss_weight");
    c.window_size = in.hp_int("window_size");
    c.sigma = in.hp("sigma");
    c.K1 = in.hp("K1");
    c.K2 = in.hp("K2");
    c.L = in.hp("L");
    c.minmax_eps = in.hp("minmax_eps");
    Features f = read_features(in);
    SSIMKDLoss loss(f.channels, c);
    load_params(g, loss, in.dtype());
    KdResult r = loss.forward(f.S, f.T, &mid);
    collect(run, r, mid);
    backprop(run, r, f.S, &loss);
  } else if (m == "fbkd" || m == "aid") {
    FBKDConfig c;
    c.temp_s = in.hp("temp_s");
    c.temp_c = in.hp("temp_c");
    c.s_ratio = in.hp("s_ratio");
    c.w_feat = in.hp("w_feat");
    c.w_channel = in.hp("w_channel");
    c.w_spatial = in.hp("w_spatial");
    c.w_nonlocal = in.hp("w_nonlocal");
    c.use_channel_mask = in.hp_bool("use_channel_mask");
    c.bn_eps = in.hp("bn_eps");
    Features f = read_features(in);
    for (size_t i = 0; i < f.S.size(); ++i) {
      KDET_CHECK(f.channels[i].first == f.channels[i].second, m, " requires C_s = C_t; level ", i, " has ",
                 f.channels[i].first, " vs ", f.channels[i].second);
      c.nonlocal.push_back({in.hp_int("level" + std::to_string(i) + ".nl_inter"),
                            in.hp_int("level" + std::to_string(i) + ".nl_pool")});
    }
    const int64_t C = f.channels[0].second;
    if (m == "fbkd") {
      FBKDLoss loss(C, c);
      load_params(g, loss, in.dtype());
      KdResult r = loss.forward(f.S, f.T, &mid);
      collect(run, r, mid);
      backprop(run, r, f.S, &loss);
    } else {
      AIDConfig ac{c, in.hp("beta")};
      AIDLoss loss(C, ac);
      load_params(g, loss, in.dtype());
      KdResult r = loss.forward(f.S, f.T, in.in("teacher_loss"), &mid);
      collect(run, r, mid);
      backprop(run, r, f.S, &loss);
    }
  } else {
    KDET_FAIL("unknown method '", m, "'");
  }
  return run;
}

std::string fmt_shape(const Tensor& t) {
  std::ostringstream s;
  s << t.shape();
  return s.str();
}

}  // namespace

KdCheckReport kd_check(const KdGolden& g, const KdCheckOptions& opts) {
  KdCheckReport rep;
  rep.path = g.path;
  rep.method = g.method;
  rep.case_name = g.case_name;
  Run run;
  KDET_CHECK(opts.dtype == DType::F64 || opts.dtype == DType::F32, "kd_check: dtype must be f64 or f32");
  Inputs in(g, opts.dtype);
  try {
    run = run_method(g, in);
  } catch (const std::exception& e) {
    rep.errors.push_back(std::string("engine: ") + e.what());
    return rep;
  }
  for (const auto& k : in.unconsumed())
    rep.errors.push_back("'" + k + "' is not consumed by the engine's " + g.method + " (unknown key)");
  // S_f per family, over the file's tensors.
  std::map<std::string, double> S_f;
  for (const auto& [k, t] : g.tensors) {
    const std::string f = family_of(k);
    if (f != "out" && f != "grad" && f != "mid") continue;
    double m = 0;
    for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
    S_f[f] = std::max(S_f[f], m);
  }
  for (const auto& [k, b] : g.tensors) {
    const std::string f = family_of(k);
    if (f != "out" && f != "grad" && f != "mid") continue;
    auto it = run.produced.find(k);
    if (it == run.produced.end()) {
      if (f == "mid")
        rep.skipped.push_back(k);
      else
        rep.errors.push_back("'" + k + "' is in the file but the engine produced no such " + f + " value");
      continue;
    }
    const KdTolerance tol = kd_tolerance(f, opts.dtype);
    KdKeyCheck kc;
    kc.key = k;
    kc.rtol = tol.rtol;
    const Tensor a = it->second.to(DType::F64);
    double bmax = 0;
    for (double v : b.to_vector<double>()) bmax = std::max(bmax, std::abs(v));
    kc.scale = std::max(bmax, tol.phi * S_f[f]);
    if (a.shape() != b.shape()) {
      kc.note = "shape " + fmt_shape(a) + " vs file " + fmt_shape(b);
      kc.max_abs_err = INFINITY;
    } else {
      const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
      bool finite = true;
      for (size_t i = 0; i < va.size(); ++i) {
        if (!std::isfinite(va[i])) finite = false;
        kc.max_abs_err = std::max(kc.max_abs_err, std::abs(va[i] - vb[i]));
      }
      if (!finite) {
        kc.note = "non-finite value";
        kc.max_abs_err = INFINITY;
      }
    }
    kc.pass = kc.note.empty() && kc.max_abs_err <= tol.rtol * kc.scale;
    rep.keys.push_back(kc);
  }
  for (const auto& [k, t] : run.produced) {
    const std::string f = family_of(k);
    if ((f == "out" || f == "grad") && !g.has(k))
      rep.errors.push_back("the engine produced '" + k + "' which the file lacks");
  }
  return rep;
}

KdCheckReport kd_check_file(const std::string& path, const KdCheckOptions& opts) {
  try {
    return kd_check(load_kdgold(path), opts);
  } catch (const std::exception& e) {
    KdCheckReport rep;
    rep.path = path;
    rep.errors.push_back(e.what());
    return rep;
  }
}

}  // namespace kdet::kd
