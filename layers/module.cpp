#include "layers/module.h"

#include <sstream>

#include "engine/safetensors.h"

namespace kdet {

namespace {
std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}
std::string tdesc(const Tensor& t) {
  std::ostringstream s;
  s << t.dtype() << t.shape();
  return s.str();
}
bool dtype_compatible(DType model, DType ckpt) {
  return model == ckpt || (is_floating(model) && is_floating(ckpt));
}
}  // namespace

std::string LoadReport::str() const {
  std::ostringstream s;
  for (auto& m : missing) s << "\n  missing key:    " << m;
  for (auto& u : unexpected) s << "\n  unexpected key: " << u;
  for (auto& m : mismatched) s << "\n  mismatched:     " << m;
  return s.str();
}

// --- registration ------------------------------------------------------------------------------

void Module::check_new_name(const std::string& name) const {
  KDET_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name(), ": bad member name '", name,
             "' (must be non-empty and contain no '.')");
  auto taken = [&](const auto& v) {
    for (auto& e : v)
      if (e.first == name) return true;
    return false;
  };
  KDET_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), type_name(), ": name '", name,
             "' registered twice");
}

Var& Module::register_parameter(const std::string& name, Tensor init, bool requires_grad) {
  check_new_name(name);
  KDET_CHECK(init.defined(), type_name(), ": parameter '", name, "' is undefined");
  KDET_CHECK(is_floating(init.dtype()), type_name(), ": parameter '", name, "' must be floating, got ",
             init.desc());
  params_.emplace_back(name, std::make_unique<Var>(std::move(init), requires_grad));
  if (!requires_grad) params_.back().second->set_requires_grad(false);  // a slot either way
  return *params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor init) {
  check_new_name(name);
  KDET_CHECK(init.defined(), type_name(), ": buffer '", name, "' is undefined");
  buffers_.emplace_back(name, std::make_unique<Tensor>(std::move(init)));
  return *buffers_.back().second;
}

void Module::add_child(const std::string& name, std::unique_ptr<Module> m) {
  check_new_name(name);
  KDET_CHECK(m != nullptr, type_name(), ": child '", name, "' is null");
  m->train(training_);
  children_.emplace_back(name, std::move(m));
}

// --- modes -------------------------------------------------------------------------------------

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

// --- traversal ---------------------------------------------------------------------------------

NamedParams Module::named_parameters(const std::string& prefix, bool trainable_only) const {
  NamedParams r;
  for (auto& np : named_parameter_ptrs(prefix))
    if (!trainable_only || np.var->requires_grad()) r.emplace_back(np.name, *np.var);
  return r;
}

std::vector<NamedParam> Module::named_parameter_ptrs(const std::string& prefix) const {
  std::vector<NamedParam> r;
  for (auto& [n, p] : params_) r.push_back({join(prefix, n), p.get()});
  for (auto& [n, c] : children_) {
    auto sub = c->named_parameter_ptrs(join(prefix, n));
    r.insert(r.end(), sub.begin(), sub.end());
  }
  return r;
}

std::vector<Var*> Module::parameters(bool trainable_only) const {
  std::vector<Var*> r;
  for (auto& np : named_parameter_ptrs())
    if (!trainable_only || np.var->requires_grad()) r.push_back(np.var);
  return r;
}

std::vector<NamedBuffer> Module::named_buffers(const std::string& prefix) const {
  std::vector<NamedBuffer> r;
  for (auto& [n, b] : buffers_) r.push_back({join(prefix, n), b.get()});
  for (auto& [n, c] : children_) {
    auto sub = c->named_buffers(join(prefix, n));
    r.insert(r.end(), sub.begin(), sub.end());
  }
  return r;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules(const std::string& prefix) const {
  std::vector<std::pair<std::string, Module*>> r;
  r.emplace_back(prefix, const_cast<Module*>(this));
  for (auto& [n, c] : children_) {
    auto sub = c->named_modules(join(prefix, n));
    r.insert(r.end(), sub.begin(), sub.end());
  }
  return r;
}

void Module::for_each_module(const std::function<void(const std::string&, Module&)>& f,
                             const std::string& prefix) {
  f(prefix, *this);
  for (auto& [n, c] : children_) c->for_each_module(f, join(prefix, n));
}

Module* Module::find_module(const std::string& path) const {
  if (path.empty()) return const_cast<Module*>(this);
  auto dot = path.find('.');
  std::string head = path.substr(0, dot);
  for (auto& [n, c] : children_)
    if (n == head) return dot == std::string::npos ? c.get() : c->find_module(path.substr(dot + 1));
  return nullptr;
}

Var* Module::find_parameter(const std::string& name) const {
  auto dot = name.rfind('.');
  Module* m = dot == std::string::npos ? const_cast<Module*>(this) : find_module(name.substr(0, dot));
  if (!m) return nullptr;
  std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  for (auto& [n, p] : m->params_)
    if (n == leaf) return p.get();
  return nullptr;
}

Tensor* Module::find_buffer(const std::string& name) const {
  auto dot = name.rfind('.');
  Module* m = dot == std::string::npos ? const_cast<Module*>(this) : find_module(name.substr(0, dot));
  if (!m) return nullptr;
  std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  for (auto& [n, b] : m->buffers_)
    if (n == leaf) return b.get();
  return nullptr;
}

// --- state dict --------------------------------------------------------------------------------

std::vector<std::string> Module::state_dict_keys(const std::string& prefix) const {
  std::vector<std::string> r;
  for (auto& [n, p] : params_) r.push_back(join(prefix, n));
  for (auto& [n, b] : buffers_) r.push_back(join(prefix, n));
  for (auto& [n, c] : children_) {
    auto sub = c->state_dict_keys(join(prefix, n));
    r.insert(r.end(), sub.begin(), sub.end());
  }
  return r;
}

TensorMap Module::state_dict(const std::string& prefix) const {
  TensorMap m;
  for (auto& np : named_parameter_ptrs(prefix)) m[np.name] = np.var->data();
  for (auto& nb : named_buffers(prefix)) m[nb.name] = *nb.tensor;
  return m;
}

LoadReport Module::load_state_dict(const TensorMap& sd, bool strict) {
  // Everything the model holds, by name.
  std::map<std::string, Tensor*> targets;
  std::vector<std::string> order;
  for (auto& np : named_parameter_ptrs()) {
    targets[np.name] = &np.var->data();
    order.push_back(np.name);
  }
  for (auto& nb : named_buffers()) {
    targets[nb.name] = nb.tensor;
    order.push_back(nb.name);
  }
  LoadReport rep;
  const std::string nbt = "num_batches_tracked";
  auto is_nbt = [&](const std::string& n) {
    return n.size() >= nbt.size() && n.compare(n.size() - nbt.size(), nbt.size(), nbt) == 0 &&
           (n.size() == nbt.size() || n[n.size() - nbt.size() - 1] == '.');
  };
  for (auto& name : order) {
    const Tensor& dst = *targets[name];
    auto it = sd.find(name);
    if (it == sd.end()) {
      if (is_nbt(name) && dst.dtype() == DType::I64 && dst.numel() == 1)
        rep.defaulted.push_back(name);
      else
        rep.missing.push_back(name + " " + tdesc(dst));
      continue;
    }
    const Tensor& src = it->second;
    if (!src.defined() || src.shape() != dst.shape() || !dtype_compatible(dst.dtype(), src.dtype()))
      rep.mismatched.push_back(name + ": checkpoint " + (src.defined() ? tdesc(src) : "undefined") +
                               " vs model " + tdesc(dst));
  }
  for (auto& [name, t] : sd)
    if (!targets.count(name)) rep.unexpected.push_back(name + " " + tdesc(t));

  const bool fail = strict ? !rep.ok() : !rep.mismatched.empty();
  if (fail) {
    KDET_FAIL("load_state_dict into ", type_name(), (strict ? " (strict)" : " (non-strict)"), ": ",
              rep.missing.size(), " missing, ", rep.unexpected.size(), " unexpected, ", rep.mismatched.size(),
              " mismatched key(s):", rep.str());
  }
  for (auto& name : rep.defaulted) targets[name]->fill_(0.0);
  for (auto& name : order) {
    auto it = sd.find(name);
    if (it == sd.end()) continue;
    Tensor* dst = targets[name];
    // Convert on the host first: device copies do not convert dtypes.
    const Tensor& src = it->second;
    dst->copy_(src.device() == dst->device() ? src : src.to(Device::cpu()).to(dst->dtype()).to(dst->device()));
  }
  return rep;
}

LoadReport Module::load(const std::string& path, bool strict, const std::string& prefix) {
  auto f = load_safetensors(path);
  if (prefix.empty()) return load_state_dict(f.tensors, strict);
  TensorMap sub;
  for (auto& [k, t] : f.tensors)
    if (k.compare(0, prefix.size(), prefix) == 0) sub[k.substr(prefix.size())] = t;
  return load_state_dict(sub, strict);
}

void Module::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  save_safetensors(path, state_dict(), metadata);
}

// --- parameters --------------------------------------------------------------------------------

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (auto* v : parameters(trainable_only)) n += v->numel();
  return n;
}

void Module::set_requires_grad(bool r) {
  for (auto* v : parameters()) v->set_requires_grad(r);
}

void Module::zero_grad() {
  for (auto* v : parameters()) v->zero_grad();
}

void Module::to(DType t) {
  KDET_CHECK(is_floating(t), type_name(), "::to: parameters must stay floating, asked for ", dtype_name(t));
  for (auto* v : parameters()) {
    bool rg = v->requires_grad();
    *v = Var(v->data().to(t).clone(), rg);
  }
  for (auto& nb : named_buffers())
    if (is_floating(nb.tensor->dtype())) *nb.tensor = nb.tensor->to(t).clone();
}

void Module::to(Device d) {
  for (auto* v : parameters()) {
    bool rg = v->requires_grad();
    *v = Var(v->data().to(d), rg);
  }
  for (auto& nb : named_buffers()) *nb.tensor = nb.tensor->to(d);
}

void Module::init_weights(Generator& g) {
  for (auto& [n, c] : children_) c->init_weights(g);
}

// --- Sequential --------------------------------------------------------------------------------

Var Sequential::forward(const Var& x) {
  Var y = x;
  for (auto* m : items_) y = m->forward(y);
  return y;
}

}  // namespace kdet
