// engine/autograd.h — reverse-mode autograd on a dynamic tape.
//
// A Var pairs a Tensor (its value) with a shared GradSlot (its gradient, and the Node that produced
// it). A Node holds edges to its inputs' *slots*, never their data: the backward closure captures
// exactly the tensors it needs, so an intermediate activation is freed as soon as nothing captured it.
//
// Rules (the llm.c convention, written down once):
//  * Gradients ACCUMULATE into leaf slots across backward() calls; Optimizer::zero_grad resets them.
//  * Gradients are values: never modify a Tensor returned by Var::grad() in place (the same buffer may
//    be shared by several leaves, e.g. both inputs of an add). Replace it with set_grad() instead.
//  * record() makes no Node when no input requires a gradient or a NoGradGuard is active (the teacher
//    runs under one), so inference builds no graph at all.
//  * backward() is iterative (Kahn's algorithm over the reachable nodes, ties broken by creation order,
//    so accumulation order — and thus every bit of the result — is deterministic). Each node's closure
//    and edges are released right after it runs unless retain_graph is set.
//  * A backward closure receives the output gradient and fills Grads; it runs on plain Tensors and never
//    records a graph (no double backward).
#pragma once
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kdet {

struct Node;

struct GradSlot {
  Tensor grad;                     // accumulated gradient (leaves, or retain_grad)
  std::shared_ptr<Node> grad_fn;   // producer; null for leaves
  bool requires_grad = false;
  bool retain_grad = false;        // keep .grad on a non-leaf too (debugging, tests)
  Shape shape;                     // of the value, to check gradient shapes
  DType dtype = DType::F32;
};

// Where a backward closure puts its input gradients.
class Grads {
 public:
  explicit Grads(const std::vector<std::shared_ptr<GradSlot>>& inputs) : in_(inputs), g_(inputs.size()) {}
  // True when input i needs a gradient (skip the work otherwise).
  bool wants(size_t i) const { return i < in_.size() && in_[i] != nullptr; }
  // Adds g to input i's gradient (no-op when !wants(i)).
  void accumulate(size_t i, const Tensor& g);
  std::vector<Tensor>& take() { return g_; }

 private:
  const std::vector<std::shared_ptr<GradSlot>>& in_;
  std::vector<Tensor> g_;
};

using BackwardFn = std::function<void(const Tensor& grad_out, Grads& grads)>;

struct Node {
  const char* op = "";                              // shown in errors and gradcheck reports
  std::vector<std::shared_ptr<GradSlot>> inputs;    // null where the input needs no gradient
  BackwardFn backward;
  uint64_t seq = 0;                                 // creation order
};

class Var {
 public:
  Var() = default;
  // A leaf. requires_grad=true makes it a parameter-like leaf that collects gradients.
  explicit Var(Tensor t, bool requires_grad = false);

  const Tensor& data() const { return data_; }
  Tensor& data() { return data_; }  // in-place updates by optimizers; never during a forward pass
  bool defined() const { return data_.defined(); }
  const Shape& shape() const { return data_.shape(); }
  int ndim() const { return data_.ndim(); }
  int64_t size(int d) const { return data_.size(d); }
  int64_t numel() const { return data_.numel(); }
  DType dtype() const { return data_.dtype(); }
  Device device() const { return data_.device(); }
  double item() const { return data_.item(); }

  bool requires_grad() const { return slot_ && slot_->requires_grad; }
  Var& set_requires_grad(bool r);
  Var& retain_grad();
  bool is_leaf() const { return !slot_ || !slot_->grad_fn; }
  const char* op() const;  // producing op, or "leaf"

  Tensor grad() const { return slot_ ? slot_->grad : Tensor(); }
  void set_grad(const Tensor& g);
  void zero_grad();  // drops the gradient (set-to-none semantics)

  Var detach() const { return Var(data_, false); }

  // Backpropagates from this Var. grad_out defaults to 1 for a one-element value.
  void backward(const Tensor& grad_out = Tensor(), bool retain_graph = false) const;

  const std::shared_ptr<GradSlot>& slot() const { return slot_; }

 private:
  friend Var record(const char*, Tensor, std::initializer_list<const Var*>, BackwardFn);
  friend Var record(const char*, Tensor, const std::vector<const Var*>&, BackwardFn);
  Tensor data_;
  std::shared_ptr<GradSlot> slot_;
};

// Wraps the output of a differentiable op. `inputs` may contain nullptr (optional inputs such as a
// missing bias); Grads index i refers to inputs[i].
Var record(const char* op, Tensor out, std::initializer_list<const Var*> inputs, BackwardFn fn);
Var record(const char* op, Tensor out, const std::vector<const Var*>& inputs, BackwardFn fn);

bool grad_enabled();

// Disables graph recording on this thread for its lifetime (RAII; nests).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace kdet
