#include "engine/autograd.h"

#include <atomic>
#include <queue>
#include <unordered_map>

#include "engine/ops/elementwise.h"

namespace kdet {

namespace {
thread_local bool t_grad_enabled = true;
std::atomic<uint64_t> g_seq{0};

// Out-of-place accumulation: gradients are values and may alias each other.
void accumulate_into(Tensor& acc, const Tensor& g) {
  if (!acc.defined())
    acc = g;
  else
    acc = ops::add(acc, g);
}
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

void Grads::accumulate(size_t i, const Tensor& g) {
  if (!wants(i)) return;
  accumulate_into(g_[i], g);
}

Var::Var(Tensor t, bool requires_grad) : data_(std::move(t)) {
  if (requires_grad) set_requires_grad(true);
}

Var& Var::set_requires_grad(bool r) {
  KDET_CHECK(is_leaf(), "set_requires_grad: only leaves can change requires_grad (op ", op(), ")");
  if (r) KDET_CHECK(is_floating(data_.dtype()), "set_requires_grad: dtype ", data_.dtype(), " cannot have gradients");
  if (!slot_) slot_ = std::make_shared<GradSlot>();
  slot_->requires_grad = r;
  slot_->shape = data_.shape();
  slot_->dtype = data_.dtype();
  return *this;
}

Var& Var::retain_grad() {
  if (slot_) slot_->retain_grad = true;
  return *this;
}

const char* Var::op() const { return slot_ && slot_->grad_fn ? slot_->grad_fn->op : "leaf"; }

void Var::set_grad(const Tensor& g) {
  KDET_CHECK(slot_, "set_grad: Var does not require grad");
  if (g.defined())
    KDET_CHECK(g.shape() == data_.shape(), "set_grad: gradient ", g.desc(), " for value ", data_.desc());
  slot_->grad = g;
}

void Var::zero_grad() {
  if (slot_) slot_->grad = Tensor();
}

Var record(const char* op, Tensor out, const std::vector<const Var*>& inputs, BackwardFn fn) {
  Var v(std::move(out));
  if (!t_grad_enabled) return v;
  bool any = false;
  for (const Var* in : inputs) any = any || (in && in->requires_grad());
  if (!any) return v;
  auto node = std::make_shared<Node>();
  node->op = op;
  node->seq = g_seq.fetch_add(1, std::memory_order_relaxed);
  node->inputs.reserve(inputs.size());
  for (const Var* in : inputs) node->inputs.push_back(in && in->requires_grad() ? in->slot_ : nullptr);
  node->backward = std::move(fn);
  v.slot_ = std::make_shared<GradSlot>();
  v.slot_->requires_grad = true;
  v.slot_->grad_fn = std::move(node);
  v.slot_->shape = v.data_.shape();
  v.slot_->dtype = v.data_.dtype();
  return v;
}

Var record(const char* op, Tensor out, std::initializer_list<const Var*> inputs, BackwardFn fn) {
  return record(op, std::move(out), std::vector<const Var*>(inputs), std::move(fn));
}

void Var::backward(const Tensor& grad_out, bool retain_graph) const {
  KDET_CHECK(requires_grad(), "backward: value ", data_.desc(), " does not require grad");
  Tensor g0 = grad_out;
  if (!g0.defined()) {
    KDET_CHECK(data_.numel() == 1, "backward: grad_out omitted for non-scalar value ", data_.desc());
    g0 = Tensor::ones(data_.shape(), data_.dtype(), data_.device());
  }
  KDET_CHECK(g0.shape() == data_.shape(), "backward: grad_out ", g0.desc(), " for value ", data_.desc());
  if (!slot_->grad_fn) {  // a leaf: d(x)/dx
    accumulate_into(slot_->grad, g0);
    return;
  }
  if (slot_->retain_grad) accumulate_into(slot_->grad, g0);

  // 1. Reachable nodes and their in-degree (edges from other reachable nodes).
  std::unordered_map<Node*, int> indeg;
  std::vector<Node*> stack{slot_->grad_fn.get()};
  indeg[slot_->grad_fn.get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (auto& in : n->inputs) {
      if (!in || !in->grad_fn) continue;
      Node* m = in->grad_fn.get();
      auto it = indeg.find(m);
      if (it == indeg.end()) {
        indeg[m] = 1;
        stack.push_back(m);
      } else {
        it->second++;
      }
    }
  }

  // 2. Kahn's algorithm; the newest ready node runs first (deterministic order).
  auto later = [](Node* a, Node* b) { return a->seq < b->seq; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(later)> ready(later);
  std::unordered_map<Node*, Tensor> pending;
  std::vector<std::shared_ptr<Node>> keep_alive{slot_->grad_fn};  // nodes we release as we go
  pending[slot_->grad_fn.get()] = g0;
  ready.push(slot_->grad_fn.get());
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    Tensor gout = std::move(pending[n]);
    pending.erase(n);
    KDET_CHECK(n->backward, "backward: graph of op '", n->op,
               "' was already freed (call backward(..., retain_graph=true) to run it twice)");
    Grads grads(n->inputs);
    if (gout.defined()) n->backward(gout, grads);
    gout = Tensor();
    auto& gs = grads.take();
    for (size_t i = 0; i < n->inputs.size(); ++i) {
      auto& in = n->inputs[i];
      if (!in) continue;
      Tensor& g = gs[i];
      if (g.defined()) {
        KDET_CHECK(g.shape() == in->shape, "backward of ", n->op, ": gradient for input ", i, " has shape ",
                   g.shape(), " but the input has shape ", in->shape);
        KDET_CHECK(g.dtype() == in->dtype, "backward of ", n->op, ": gradient dtype ", g.dtype(),
                   " for input of dtype ", in->dtype);
      }
      if (in->grad_fn) {
        Node* m = in->grad_fn.get();
        if (g.defined()) accumulate_into(pending[m], g);
        if (in->retain_grad && g.defined()) accumulate_into(in->grad, g);
        if (--indeg[m] == 0) {
          if (!pending[m].defined()) pending.erase(m);
          keep_alive.push_back(in->grad_fn);
          ready.push(m);
        }
      } else if (g.defined()) {
        accumulate_into(in->grad, g);
      }
    }
    if (!retain_graph) {  // free captured tensors and edges now
      n->backward = nullptr;
      n->inputs.clear();
    }
  }
}

}  // namespace kdet
