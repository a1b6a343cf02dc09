// engine/optim.cpp — SGD, AdamW, clip_grad_norm, parameter groups. See optim.h for the semantics.
#include "engine/optim.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>

#include "engine/backend.h"
#include "engine/ops/cpu_map.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/ops/unary.h"

#if KDET_CUDA
#include "engine/cuda/optim_cuda.h"
#endif

namespace kdet {

namespace {

// OpenMP static loop over [0, n); single-threaded below the usual grain.
template <class F>
inline void par_for(int64_t n, F&& f) {
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) f(i);
}

// The gradient of `p` as a contiguous tensor of p's dtype/shape/device, or an undefined tensor.
// CUDA parameters are updated by engine/cuda/optim_cuda.h's kernels.
Tensor grad_for_step(const char* opt, const std::string& name, const Var& p) {
  Tensor g = p.grad();
  if (!g.defined()) return g;
  if (!p.device().is_cpu() && !(KDET_CUDA && p.device().is_cuda())) no_kernel(opt, p.device());
  KDET_CHECK(p.data().is_contiguous(), opt, ": parameter '", name, "' ", p.data().desc(),
             " is not contiguous (updates are in place)");
  KDET_CHECK(is_floating(p.dtype()), opt, ": parameter '", name, "' has dtype ", p.dtype());
  KDET_CHECK(g.dtype() == p.dtype() && g.shape() == p.shape() && g.device() == p.device(), opt,
             ": gradient ", g.desc(), " of parameter '", name, "' does not match its value ", p.data().desc());
  return g.contiguous();
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

// p -= lr * update, torch.optim.SGD order of operations (hyperparameters cast to T like torch's alpha).
template <class T, bool WD, bool BUF, bool FIRST, bool NESTEROV>
void sgd_kernel(T* __restrict pp, const T* __restrict pg, T* __restrict pb, int64_t n, const ParamGroup& grp) {
  const T wd = static_cast<T>(grp.weight_decay), m = static_cast<T>(grp.momentum);
  const T damp1 = static_cast<T>(1.0 - grp.dampening), neg_lr = static_cast<T>(-grp.lr);
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    T d = pg[i];
    if constexpr (WD) d = d + wd * pp[i];
    T u = d;
    if constexpr (BUF) {
      T b;
      if constexpr (FIRST) b = d;
      else b = pb[i] * m + damp1 * d;
      pb[i] = b;
      if constexpr (NESTEROV) u = d + m * b;
      else u = b;
    }
    pp[i] = pp[i] + neg_lr * u;
  }
}

// Not vectorised: GCC keeps a scalar sqrt call for errno (-fmath-errno); the loop is memory-bound.
template <class T, bool AMSGRAD>
void adamw_kernel(T* __restrict pp, const T* __restrict pg, T* __restrict m, T* __restrict v, T* __restrict vmax,
                  int64_t n, const ParamGroup& grp, double step_size, double bc2_sqrt) {
  const T decay = static_cast<T>(1.0 - grp.lr * grp.weight_decay);
  const T b1 = static_cast<T>(grp.beta1), b2 = static_cast<T>(grp.beta2);
  const T c1 = static_cast<T>(1.0 - grp.beta1), c2 = static_cast<T>(1.0 - grp.beta2);
  const T bc2s = static_cast<T>(bc2_sqrt), eps = static_cast<T>(grp.eps);
  const T neg_step = static_cast<T>(-step_size);
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const T gi = pg[i];
    const T pi = pp[i] * decay;
    const T mi = m[i] * b1 + c1 * gi;
    const T vi = v[i] * b2 + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    T vd = vi;
    if constexpr (AMSGRAD) {
      vd = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vd;
    }
    const T denom = std::sqrt(vd) / bc2s + eps;
    pp[i] = pi + (neg_step * mi) / denom;
  }
}

}  // namespace

// ---- Optimizer ------------------------------------------------------------------------------------
Optimizer::Optimizer(std::vector<ParamGroup> groups, const char* name) : groups_(std::move(groups)), name_(name) {
  KDET_CHECK(!groups_.empty(), name_, ": no parameter groups");
  std::set<std::string> names;
  std::set<const GradSlot*> slots;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    auto& g = groups_[gi];
    KDET_CHECK(g.lr >= 0, name_, ": group ", gi, " has negative lr ", g.lr);
    KDET_CHECK(g.weight_decay >= 0, name_, ": group ", gi, " has negative weight_decay ", g.weight_decay);
    if (g.initial_lr <= 0) g.initial_lr = g.lr;
    for (auto& [n, p] : g.params) {
      KDET_CHECK(p.defined(), name_, ": parameter '", n, "' is undefined");
      KDET_CHECK(p.requires_grad(), name_, ": parameter '", n, "' does not require grad");
      KDET_CHECK(names.insert(n).second, name_, ": parameter name '", n, "' appears twice");
      KDET_CHECK(slots.insert(p.slot().get()).second, name_, ": parameter '", n,
                 "' is the same Var as an earlier parameter");
    }
  }
}

Optimizer::~Optimizer() = default;

void Optimizer::zero_grad() {
  for (auto& g : groups_)
    for (auto& [n, p] : g.params) p.zero_grad();
}

void Optimizer::set_lr_scale(double scale) {
  for (auto& g : groups_) g.lr = g.initial_lr * scale;
}

void Optimizer::set_lr(double lr) {
  for (auto& g : groups_) g.lr = lr;
}

void Optimizer::set_lr(const std::vector<double>& lrs) {
  KDET_CHECK(lrs.size() == groups_.size(), name_, ".set_lr: ", lrs.size(), " lrs for ", groups_.size(), " groups");
  for (size_t i = 0; i < lrs.size(); ++i) groups_[i].lr = lrs[i];
}

std::vector<Var> Optimizer::params() const {
  std::vector<Var> v;
  for (auto& g : groups_)
    for (auto& np : g.params) v.push_back(np.second);
  return v;
}

NamedParams Optimizer::named_params() const {
  NamedParams v;
  for (auto& g : groups_) v.insert(v.end(), g.params.begin(), g.params.end());
  return v;
}

const Var* Optimizer::find_param(const std::string& name) const {
  for (auto& g : groups_)
    for (auto& [n, p] : g.params)
      if (n == name) return &p;
  return nullptr;
}

std::map<std::string, std::map<std::string, Tensor>> Optimizer::split_state(
    const std::map<std::string, Tensor>& state, const std::vector<std::string>& tensor_suffixes,
    const std::vector<std::string>& scalar_suffixes) const {
  std::map<std::string, std::map<std::string, Tensor>> out;
  std::vector<std::string> errors;
  for (auto& [key, t] : state) {
    size_t dot = key.rfind('.');
    std::string pname = dot == std::string::npos ? "" : key.substr(0, dot);
    std::string suffix = dot == std::string::npos ? key : key.substr(dot + 1);
    bool is_tensor = false, is_scalar = false;
    for (auto& s : tensor_suffixes) is_tensor = is_tensor || s == suffix;
    for (auto& s : scalar_suffixes) is_scalar = is_scalar || s == suffix;
    if (!is_tensor && !is_scalar) {
      errors.push_back("unexpected key '" + key + "' (" + name_ + " state keys end in ." +
                       join(tensor_suffixes, "/.") + (scalar_suffixes.empty() ? "" : "/.") +
                       join(scalar_suffixes, "/.") + ")");
      continue;
    }
    const Var* p = find_param(pname);
    if (!p) {
      errors.push_back("unexpected key '" + key + "': no parameter named '" + pname + "'");
      continue;
    }
    if (!t.defined()) {
      errors.push_back("key '" + key + "' holds an undefined tensor");
      continue;
    }
    if (is_tensor) {
      std::ostringstream e;
      if (t.shape() != p->shape())
        e << "shape mismatch for '" << key << "': checkpoint " << t.shape() << ", parameter " << p->shape();
      else if (t.dtype() != p->dtype())
        e << "dtype mismatch for '" << key << "': checkpoint " << t.dtype() << ", parameter " << p->dtype();
      if (!e.str().empty()) {
        errors.push_back(e.str());
        continue;
      }
      out[pname][suffix] = t.to(p->device()).clone();
    } else {
      if (t.numel() != 1) {
        std::ostringstream e;
        e << "'" << key << "' must hold one value, has shape " << t.shape();
        errors.push_back(e.str());
        continue;
      }
      out[pname][suffix] = t.to(Device::cpu()).clone();
    }
  }
  if (!errors.empty())
    KDET_FAIL(name_, ".load_state_dict: ", errors.size(), " problem(s):\n  ", join(errors, "\n  "));
  return out;
}

// ---- SGD ------------------------------------------------------------------------------------------
SGD::SGD(std::vector<ParamGroup> groups) : Optimizer(std::move(groups), "SGD") {
  for (auto& g : groups_) {
    KDET_CHECK(g.momentum >= 0, "SGD: negative momentum ", g.momentum);
    KDET_CHECK(!g.nesterov || (g.momentum > 0 && g.dampening == 0),
               "SGD: Nesterov momentum requires a momentum and zero dampening");
  }
}

static std::vector<ParamGroup> one_group(ParamGroup g, const NamedParams& params) {
  g.params = params;
  return {std::move(g)};
}

SGD::SGD(const NamedParams& params, double lr, double momentum, double weight_decay, bool nesterov,
         double dampening)
    : SGD(one_group(
          [&] {
            ParamGroup g;
            g.lr = lr, g.weight_decay = weight_decay, g.momentum = momentum, g.dampening = dampening;
            g.nesterov = nesterov;
            return g;
          }(),
          params)) {}

void SGD::step() {
  for (auto& grp : groups_) {
    for (auto& [name, p] : grp.params) {
      Tensor g = grad_for_step("SGD.step", name, p);
      if (!g.defined()) continue;
      const int64_t n = p.numel();
      Tensor* buf = nullptr;
      bool first = false;
      if (grp.momentum != 0) {
        auto it = momentum_.find(name);
        if (it == momentum_.end()) {
          it = momentum_.emplace(name, Tensor::empty(p.shape(), p.dtype(), p.device())).first;
          first = true;
        }
        buf = &it->second;
      }
#if KDET_CUDA
      if (p.device().is_cuda()) {
        cuda::sgd_step(p.data(), g, buf, grp.lr, grp.weight_decay, grp.momentum, grp.dampening, grp.nesterov, first);
        continue;
      }
#endif
      dispatch_float(p.dtype(), "SGD.step", [&](auto tag) {
        using T = decltype(tag);
        T* pb = buf ? buf->template data<T>() : nullptr;
        // Branches resolved at compile time so the loop vectorises.
        auto run = [&](auto wd_c, auto buf_c, auto first_c, auto nest_c) {
          sgd_kernel<T, decltype(wd_c)::value, decltype(buf_c)::value, decltype(first_c)::value,
                     decltype(nest_c)::value>(p.data().template data<T>(), g.template data<T>(), pb, n, grp);
        };
        using F = std::false_type;
        using Tr = std::true_type;
        const bool wd = grp.weight_decay != 0;
        if (!buf) {
          wd ? run(Tr{}, F{}, F{}, F{}) : run(F{}, F{}, F{}, F{});
        } else if (first) {
          if (grp.nesterov) wd ? run(Tr{}, Tr{}, Tr{}, Tr{}) : run(F{}, Tr{}, Tr{}, Tr{});
          else wd ? run(Tr{}, Tr{}, Tr{}, F{}) : run(F{}, Tr{}, Tr{}, F{});
        } else {
          if (grp.nesterov) wd ? run(Tr{}, Tr{}, F{}, Tr{}) : run(F{}, Tr{}, F{}, Tr{});
          else wd ? run(Tr{}, Tr{}, F{}, F{}) : run(F{}, Tr{}, F{}, F{});
        }
      });
    }
  }
}

std::map<std::string, Tensor> SGD::state_dict() const {
  std::map<std::string, Tensor> s;
  for (auto& [n, b] : momentum_) s[n + ".momentum"] = b.clone();
  return s;
}

void SGD::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto per = split_state(state, {"momentum"}, {});
  momentum_.clear();
  for (auto& [n, m] : per) momentum_[n] = m.at("momentum");
}

// ---- AdamW ----------------------------------------------------------------------------------------
AdamW::AdamW(std::vector<ParamGroup> groups) : Optimizer(std::move(groups), "AdamW") {
  for (auto& g : groups_) {
    KDET_CHECK(g.eps >= 0, "AdamW: negative eps ", g.eps);
    KDET_CHECK(g.beta1 >= 0 && g.beta1 < 1 && g.beta2 >= 0 && g.beta2 < 1, "AdamW: betas (", g.beta1, ", ",
               g.beta2, ") must be in [0, 1)");
  }
}

AdamW::AdamW(const NamedParams& params, double lr, double weight_decay, double beta1, double beta2, double eps,
             bool amsgrad)
    : AdamW(one_group(
          [&] {
            ParamGroup g;
            g.lr = lr, g.weight_decay = weight_decay, g.beta1 = beta1, g.beta2 = beta2, g.eps = eps;
            g.amsgrad = amsgrad;
            return g;
          }(),
          params)) {}

void AdamW::step() {
  for (auto& grp : groups_) {
    for (auto& [name, p] : grp.params) {
      Tensor g = grad_for_step("AdamW.step", name, p);
      if (!g.defined()) continue;
      auto it = state_.find(name);
      if (it == state_.end()) {
        State s;
        s.exp_avg = Tensor::zeros(p.shape(), p.dtype(), p.device());
        s.exp_avg_sq = Tensor::zeros(p.shape(), p.dtype(), p.device());
        it = state_.emplace(name, std::move(s)).first;
      }
      State& st = it->second;
      if (grp.amsgrad && !st.max_exp_avg_sq.defined())
        st.max_exp_avg_sq = Tensor::zeros(p.shape(), p.dtype(), p.device());
      st.step += 1;
      const double t = static_cast<double>(st.step);
      const double bc1 = 1.0 - std::pow(grp.beta1, t), bc2 = 1.0 - std::pow(grp.beta2, t);
      const double step_size = grp.lr / bc1, bc2_sqrt = std::sqrt(bc2);
      const int64_t n = p.numel();
#if KDET_CUDA
      if (p.device().is_cuda()) {
        cuda::adamw_step(p.data(), g, st.exp_avg, st.exp_avg_sq, grp.amsgrad ? &st.max_exp_avg_sq : nullptr, grp.lr,
                         grp.weight_decay, grp.beta1, grp.beta2, grp.eps, step_size, bc2_sqrt);
        continue;
      }
#endif
      dispatch_float(p.dtype(), "AdamW.step", [&](auto tag) {
        using T = decltype(tag);
        T* pp = p.data().template data<T>();
        const T* pg = g.template data<T>();
        T* m = st.exp_avg.template data<T>();
        T* v = st.exp_avg_sq.template data<T>();
        T* vmax = grp.amsgrad ? st.max_exp_avg_sq.template data<T>() : nullptr;
        if (grp.amsgrad)
          adamw_kernel<T, true>(pp, pg, m, v, vmax, n, grp, step_size, bc2_sqrt);
        else
          adamw_kernel<T, false>(pp, pg, m, v, vmax, n, grp, step_size, bc2_sqrt);
      });
    }
  }
}

std::map<std::string, Tensor> AdamW::state_dict() const {
  std::map<std::string, Tensor> s;
  for (auto& [n, st] : state_) {
    s[n + ".exp_avg"] = st.exp_avg.clone();
    s[n + ".exp_avg_sq"] = st.exp_avg_sq.clone();
    if (st.max_exp_avg_sq.defined()) s[n + ".max_exp_avg_sq"] = st.max_exp_avg_sq.clone();
    s[n + ".step"] = Tensor::scalar(static_cast<double>(st.step), DType::I64);
  }
  return s;
}

void AdamW::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto per = split_state(state, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, {"step"});
  std::vector<std::string> errors;
  std::map<std::string, State> fresh;
  for (auto& [n, m] : per) {
    for (const char* req : {"exp_avg", "exp_avg_sq", "step"})
      if (!m.count(req)) errors.push_back("missing '" + n + "." + req + "' (the other AdamW state of '" + n + "' is present)");
    bool amsgrad = false;
    for (auto& g : groups_)
      for (auto& np : g.params)
        if (np.first == n) amsgrad = g.amsgrad;
    if (amsgrad && !m.count("max_exp_avg_sq"))
      errors.push_back("missing '" + n + ".max_exp_avg_sq' (its group uses amsgrad)");
    if (!errors.empty()) continue;
    State s;
    s.exp_avg = m.at("exp_avg");
    s.exp_avg_sq = m.at("exp_avg_sq");
    if (m.count("max_exp_avg_sq")) s.max_exp_avg_sq = m.at("max_exp_avg_sq");
    double step = m.at("step").item();
    if (!(step >= 0) || step != std::floor(step)) {
      errors.push_back("'" + n + ".step' is not a non-negative integer");
      continue;
    }
    s.step = static_cast<int64_t>(step);
    fresh[n] = std::move(s);
  }
  if (!errors.empty())
    KDET_FAIL("AdamW.load_state_dict: ", errors.size(), " problem(s):\n  ", join(errors, "\n  "));
  state_ = std::move(fresh);
}

// ---- clip_grad_norm -------------------------------------------------------------------------------
namespace {

// sum |x|^p (p finite) or max |x| (p = inf), accumulated in double with per-thread partials summed in
// thread order (deterministic for a fixed thread count).
template <class T>
double abs_pow_sum(const T* x, int64_t n, double p) {
  const bool is_inf = std::isinf(p);
  const int max_t = n > cpu::kParallelGrain ? omp_get_max_threads() : 1;
  std::vector<double> part(static_cast<size_t>(max_t), 0.0);
#pragma omp parallel num_threads(max_t)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t b = n * t / nt, e = n * (t + 1) / nt;
    double s = 0;
    if (is_inf) {
      for (int64_t i = b; i < e; ++i) s = std::max(s, std::abs(static_cast<double>(x[i])));
    } else if (p == 2.0) {
#pragma omp simd reduction(+ : s)
      for (int64_t i = b; i < e; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    } else if (p == 1.0) {
#pragma omp simd reduction(+ : s)
      for (int64_t i = b; i < e; ++i) s += std::abs(static_cast<double>(x[i]));
    } else {
      for (int64_t i = b; i < e; ++i) s += std::pow(std::abs(static_cast<double>(x[i])), p);
    }
    part[static_cast<size_t>(t)] = s;
  }
  double s = 0;
  for (double v : part) s = is_inf ? std::max(s, v) : s + v;
  return s;
}

}  // namespace

double clip_grad_norm(const std::vector<Var>& params, double max_norm, double norm_type) {
  KDET_CHECK(norm_type > 0, "clip_grad_norm: norm_type must be positive, got ", norm_type);
  const bool is_inf = std::isinf(norm_type);
  std::vector<std::pair<Var, Tensor>> with_grad;
  for (auto& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!g.device().is_cpu() && !(KDET_CUDA && g.device().is_cuda())) no_kernel("clip_grad_norm", g.device());
    with_grad.emplace_back(p, g.contiguous());
  }
  if (with_grad.empty()) return 0.0;
  // torch: total = norm(stack([norm(g_i)])) — per-tensor norms first, then the norm of those.
  // Per-tensor sums: on the host directly; on a device the same sum in double through the deterministic
  // reductions, all fetched with one copy (not one sync per parameter).
  std::vector<double> sums(with_grad.size(), 0.0);
  std::vector<Tensor> dev_sums;
  std::vector<size_t> dev_at;
  for (size_t i = 0; i < with_grad.size(); ++i) {
    const Tensor& g = with_grad[i].second;
    if (!g.device().is_cpu()) {
      if (g.numel() == 0) continue;
      const Tensor a = ops::abs(g.to(DType::F64));
      dev_sums.push_back(is_inf ? ops::amax(a, {})
                                : ops::sum(norm_type == 2.0 ? ops::mul(a, a)
                                                            : norm_type == 1.0 ? a : ops::pow(a, norm_type)));
      dev_at.push_back(i);
    } else {
      dispatch_float(g.dtype(), "clip_grad_norm", [&](auto tag) {
        using T = decltype(tag);
        sums[i] = abs_pow_sum<T>(g.template data<T>(), g.numel(), norm_type);
      });
    }
  }
  const std::vector<double> dv = ops::scalar_values(dev_sums);
  for (size_t k = 0; k < dv.size(); ++k) sums[dev_at[k]] = dv[k];
  double total = 0;
  for (const double s : sums) {
    if (is_inf) {
      total = std::max(total, s);
    } else {
      double norm_i = norm_type == 2.0 ? std::sqrt(s) : norm_type == 1.0 ? s : std::pow(s, 1.0 / norm_type);
      total += norm_type == 2.0 ? norm_i * norm_i : norm_type == 1.0 ? norm_i : std::pow(norm_i, norm_type);
    }
  }
  if (!is_inf) total = norm_type == 2.0 ? std::sqrt(total) : norm_type == 1.0 ? total : std::pow(total, 1.0 / norm_type);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0) {
    for (auto& [p, g] : with_grad) {
      if (!g.device().is_cpu()) {
        Var pv = p;
        pv.set_grad(ops::mul_scalar(g, coef));
        continue;
      }
      Tensor out = Tensor::empty(g.shape(), g.dtype());
      dispatch_float(g.dtype(), "clip_grad_norm", [&](auto tag) {
        using T = decltype(tag);
        const T* pg = g.template data<T>();
        T* po = out.template data<T>();
        const T c = static_cast<T>(coef);
        par_for(g.numel(), [&](int64_t i) { po[i] = pg[i] * c; });
      });
      Var pv = p;
      pv.set_grad(out);
    }
  }
  return total;
}

// ---- parameter groups -----------------------------------------------------------------------------
ParamRule ParamRule::contains(const std::string& key, double lr_mult, double decay_mult) {
  return {[key](const std::string& n, const Var&) { return n.find(key) != std::string::npos; }, lr_mult,
          decay_mult, "contains '" + key + "'"};
}

ParamRule ParamRule::contains_any(const std::vector<std::string>& keys, double lr_mult, double decay_mult) {
  return {[keys](const std::string& n, const Var&) {
            for (auto& k : keys)
              if (n.find(k) != std::string::npos) return true;
            return false;
          },
          lr_mult, decay_mult, "contains any of '" + join(keys, "', '") + "'"};
}

ParamRule ParamRule::one_dim(double lr_mult, double decay_mult) {
  return {[](const std::string&, const Var& p) { return p.ndim() == 1; }, lr_mult, decay_mult, "1-D"};
}

ParamRule ParamRule::where(std::function<bool(const std::string&, const Var&)> pred, double lr_mult,
                           double decay_mult, std::string desc) {
  return {std::move(pred), lr_mult, decay_mult, std::move(desc)};
}

std::vector<ParamGroup> build_param_groups(const NamedParams& params, const ParamGroup& base,
                                           const std::vector<ParamRule>& rules) {
  std::vector<NamedParams> buckets(rules.size() + 1);  // [0] = default
  for (auto& np : params) {
    if (!np.second.requires_grad()) continue;
    size_t b = 0;
    for (size_t r = 0; r < rules.size(); ++r)
      if (rules[r].match(np.first, np.second)) {
        b = r + 1;
        break;
      }
    buckets[b].push_back(np);
  }
  std::vector<ParamGroup> groups;
  for (size_t b = 0; b < buckets.size(); ++b) {
    if (buckets[b].empty()) continue;
    ParamGroup g = base;
    g.params = std::move(buckets[b]);
    if (b > 0) {
      g.lr = base.lr * rules[b - 1].lr_mult;
      g.weight_decay = base.weight_decay * rules[b - 1].decay_mult;
    }
    g.initial_lr = 0;
    groups.push_back(std::move(g));
  }
  KDET_CHECK(!groups.empty(), "build_param_groups: no parameter requires grad (", params.size(), " given)");
  return groups;
}

}  // namespace kdet
