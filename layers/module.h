// layers/module.h — the Module base: named parameters, buffers and children.
//
// Names are MMDetection's state-dict keys, assembled from the registration names of children the
// way PyTorch's nn.Module does: a ResNet registered as "backbone" with a child "layer1" holding a
// ModuleList entry "0" with a Conv2d "conv1" gives `backbone.layer1.0.conv1.weight`.
//
//  * Parameters are leaf Vars (requires_grad by default), owned by the module that registered them
//    and never reallocated (the Var* handed out stays valid for the module's life). Loading a state
//    dict copies values INTO the existing tensors, so optimizers holding the Vars (or copies of them:
//    a Var copy shares value storage and gradient slot) keep working. Only to(DType)/to(Device)
//    replace the Vars: convert before building an optimizer.
//  * Buffers are plain Tensors (BatchNorm running_mean / running_var / num_batches_tracked (i64)).
//  * Children are owned through unique_ptr and kept in registration order. named_parameters() lists
//    own parameters then each child's; state_dict_keys() is PyTorch's state_dict order (per module:
//    own parameters, own buffers, then children).
//  * train(bool) is virtual and recursive; composites override it to re-apply frozen stages and
//    norm_eval exactly like mmdet's ResNet.train().
//  * Modules are neither copyable nor movable (children hold pointers to their parameters).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/optim.h"
#include "engine/random.h"

namespace kdet {

using TensorMap = std::map<std::string, Tensor>;

struct NamedParam {
  std::string name;
  Var* var;
};
struct NamedBuffer {
  std::string name;
  Tensor* tensor;
};

// What load_state_dict found. Strict loading throws unless all three lists are empty; non-strict
// loading throws on `mismatched` only and returns the rest.
struct LoadReport {
  std::vector<std::string> missing;     // "name f32[64]" : in the model, not in the checkpoint
  std::vector<std::string> unexpected;  // "name f32[64]" : in the checkpoint, not in the model
  std::vector<std::string> mismatched;  // "name: checkpoint f32[3] vs model f32[64]"
  // BatchNorm `num_batches_tracked` buffers absent from the checkpoint (torchvision's ImageNet files
  // predate them): set to 0 and not counted as missing, as PyTorch's BatchNorm loader does.
  std::vector<std::string> defaulted;
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string str() const;  // one line per problem
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Class name shown in errors ("ResNet", "ConvModule"...).
  virtual const char* type_name() const { return "Module"; }

  // --- modes ---------------------------------------------------------------------------------
  // Sets training mode on this module and (through train()) on every child. Overrides must call
  // Module::train(on) first.
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  // --- traversal (registration order; names are dotted paths relative to this module) ---------
  // (name, Var) pairs: the Vars share value and gradient slot with the module's own (what
  // engine/optim.h's build_param_groups takes). trainable_only: requires_grad ones only.
  NamedParams named_parameters(const std::string& prefix = "", bool trainable_only = false) const;
  // The module's own Var objects (stable addresses).
  std::vector<NamedParam> named_parameter_ptrs(const std::string& prefix = "") const;
  std::vector<Var*> parameters(bool trainable_only = false) const;
  std::vector<NamedBuffer> named_buffers(const std::string& prefix = "") const;
  // This module (name = prefix) and every descendant, depth first, parents before children.
  std::vector<std::pair<std::string, Module*>> named_modules(const std::string& prefix = "") const;
  const std::vector<std::pair<std::string, std::unique_ptr<Module>>>& children() const { return children_; }
  // Calls f(name, module) for this module and every descendant (same order as named_modules).
  void for_each_module(const std::function<void(const std::string&, Module&)>& f, const std::string& prefix = "");
  // Every descendant (and self) that is a T.
  template <class T>
  std::vector<T*> modules_of_type() {
    std::vector<T*> r;
    for_each_module([&](const std::string&, Module& m) {
      if (auto* t = dynamic_cast<T*>(&m)) r.push_back(t);
    });
    return r;
  }

  // Lookup by dotted path; nullptr when absent.
  Module* find_module(const std::string& path) const;
  Var* find_parameter(const std::string& name) const;
  Tensor* find_buffer(const std::string& name) const;

  // --- state dict --------------------------------------------------------------------------------
  // Parameters (their data) and buffers under their full names. Tensors share storage with the
  // model: clone() them to snapshot.
  TensorMap state_dict(const std::string& prefix = "") const;
  // The same names in PyTorch's order (per module: own parameters, own buffers, then children).
  std::vector<std::string> state_dict_keys(const std::string& prefix = "") const;
  // Copies values into the model's tensors (dtype converted between f32/f64; other dtypes must
  // match). Nothing is modified when the load fails. The error lists EVERY missing, unexpected and
  // mis-shaped key with shapes.
  LoadReport load_state_dict(const TensorMap& sd, bool strict = true);
  // safetensors file -> load_state_dict. With a non-empty `prefix` (e.g. "backbone."), only keys
  // starting with it are used, with the prefix stripped (load a backbone from a detector file).
  LoadReport load(const std::string& path, bool strict = true, const std::string& prefix = "");
  void save(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const;

  // --- parameters ------------------------------------------------------------------------------
  int64_t num_parameters(bool trainable_only = false) const;
  // requires_grad of every parameter of this subtree (frozen stages, frozen norms).
  void set_requires_grad(bool r);
  void zero_grad();
  // Converts every parameter and floating buffer (i64 buffers stay i64). Parameters become fresh
  // leaves (gradients dropped) with the same requires_grad. For f64 gradchecks of whole modules.
  void to(DType t);
  void to(Device d);

  // Re-initialises the parameters of this subtree with explicit randomness (mmdet's defaults for
  // the module; see the overrides). The default calls init_weights on each child in order.
  virtual void init_weights(Generator& g);

 protected:
  Var& register_parameter(const std::string& name, Tensor init, bool requires_grad = true);
  Tensor& register_buffer(const std::string& name, Tensor init);
  template <class M>
  M& register_module(const std::string& name, std::unique_ptr<M> m) {
    M& ref = *m;
    add_child(name, std::unique_ptr<Module>(std::move(m)));
    return ref;
  }

 private:
  void add_child(const std::string& name, std::unique_ptr<Module> m);
  void check_new_name(const std::string& name) const;
  bool training_ = true;
  std::vector<std::pair<std::string, std::unique_ptr<Var>>> params_;
  std::vector<std::pair<std::string, std::unique_ptr<Tensor>>> buffers_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

// A module with one input and one output; can be chained in a Sequential.
class UnaryModule : public Module {
 public:
  virtual Var forward(const Var& x) = 0;
  Var operator()(const Var& x) { return forward(x); }
};

// Children named "0", "1", ... (nn.ModuleList). Typed access by index.
template <class M>
class ModuleList : public Module {
 public:
  const char* type_name() const override { return "ModuleList"; }
  M& push_back(std::unique_ptr<M> m) {
    M& r = register_module(std::to_string(items_.size()), std::move(m));
    items_.push_back(&r);
    return r;
  }
  template <class T, class... A>
  T& emplace_back(A&&... a) {
    auto p = std::make_unique<T>(std::forward<A>(a)...);
    T& r = *p;
    push_back(std::move(p));
    return r;
  }
  M& operator[](size_t i) const { return *items_.at(i); }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<M*> items_;
};

// nn.Sequential: children "0", "1", ... applied in order.
class Sequential : public UnaryModule {
 public:
  const char* type_name() const override { return "Sequential"; }
  UnaryModule& push_back(std::unique_ptr<UnaryModule> m) { return list_push(std::move(m)); }
  template <class T, class... A>
  T& emplace_back(A&&... a) {
    auto p = std::make_unique<T>(std::forward<A>(a)...);
    T& r = *p;
    list_push(std::move(p));
    return r;
  }
  UnaryModule& operator[](size_t i) const { return *items_.at(i); }
  size_t size() const { return items_.size(); }
  Var forward(const Var& x) override;

 private:
  UnaryModule& list_push(std::unique_ptr<UnaryModule> m) {
    UnaryModule& r = register_module(std::to_string(items_.size()), std::move(m));
    items_.push_back(&r);
    return r;
  }
  std::vector<UnaryModule*> items_;
};

}  // namespace kdet
