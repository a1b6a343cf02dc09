// engine/optim.h — optimizers (torch.optim semantics), parameter groups, gradient clipping.
//
//   ParamGroup base; base.lr = 0.02; base.weight_decay = 1e-4; base.momentum = 0.9;
//   auto groups = build_param_groups(model.named_parameters(), base, {ParamRule::contains(".bias", 1, 0)});
//   SGD opt(groups);
//   loss.backward(); clip_grad_norm(opt.params(), 35.0); opt.step(); opt.zero_grad();
//
// Rules:
//  * Updates happen in place on Var::data() (CPU, contiguous, f32 or f64); the loops are plain
//    OpenMP schedule(static) loops, so a step is bit-identical run to run for a fixed thread count.
//  * A parameter whose gradient is undefined is skipped (no state is created or advanced), as in torch.
//  * Gradients are values: clip_grad_norm replaces them with Var::set_grad, never scales in place.
//  * Optimizer state is keyed by parameter name (checkpoints, spec architecture.md §2.11):
//      SGD    "<param>.momentum"                                   (torch: momentum_buffer)
//      AdamW  "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.step" (i64 scalar),
//             "<param>.max_exp_avg_sq" (amsgrad only)
//    load_state_dict checks names, shapes and dtypes and throws one error listing every mismatch.
//  * Learning rates: ParamGroup::lr is the current lr, ParamGroup::initial_lr the one the group was
//    built with (what a schedule scales; see engine/lr_schedule.h and Optimizer::set_lr_scale).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"

namespace kdet {

using NamedParams = std::vector<std::pair<std::string, Var>>;

struct ParamGroup {
  NamedParams params;
  double lr = 0.01;
  double weight_decay = 0.0;
  // SGD
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  // AdamW
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  bool amsgrad = false;
  // Set by the optimizer's constructor to lr when left <= 0; schedules scale it.
  double initial_lr = 0.0;
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups, const char* name);
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual void step() = 0;
  // Drops every parameter's gradient (set-to-none semantics, like torch's set_to_none=True).
  void zero_grad();

  // group.lr = group.initial_lr * scale for every group.
  void set_lr_scale(double scale);
  // Same lr for every group.
  void set_lr(double lr);
  // Per-group lrs (size must equal the number of groups).
  void set_lr(const std::vector<double>& lrs);

  std::vector<ParamGroup>& groups() { return groups_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  std::vector<Var> params() const;  // every parameter, group order
  NamedParams named_params() const;

  virtual std::map<std::string, Tensor> state_dict() const = 0;  // deep copies
  virtual void load_state_dict(const std::map<std::string, Tensor>& state) = 0;

 protected:
  // Shared by the load_state_dict implementations: splits "<param>.<suffix>" keys, checks the
  // parameter exists, the suffix is one of `suffixes`, and shape (for non-scalar suffixes) matches;
  // returns per-parameter maps; throws listing every problem.
  std::map<std::string, std::map<std::string, Tensor>> split_state(
      const std::map<std::string, Tensor>& state, const std::vector<std::string>& tensor_suffixes,
      const std::vector<std::string>& scalar_suffixes) const;
  const Var* find_param(const std::string& name) const;

  std::vector<ParamGroup> groups_;
  const char* name_;
};

// torch.optim.SGD: d = g + wd*p; buf = d (first step) or momentum*buf + (1-dampening)*d;
// d = nesterov ? d + momentum*buf : buf; p -= lr*d. Per-group lr / momentum / dampening / wd / nesterov.
class SGD : public Optimizer {
 public:
  explicit SGD(std::vector<ParamGroup> groups);
  SGD(const NamedParams& params, double lr, double momentum = 0.0, double weight_decay = 0.0,
      bool nesterov = false, double dampening = 0.0);
  void step() override;
  std::map<std::string, Tensor> state_dict() const override;
  void load_state_dict(const std::map<std::string, Tensor>& state) override;

 private:
  std::map<std::string, Tensor> momentum_;  // param name -> buffer
};

// torch.optim.AdamW: p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
// denom = sqrt(amsgrad ? vmax : v) / sqrt(1 - b2^t) + eps; p -= lr/(1 - b1^t) * m/denom.
class AdamW : public Optimizer {
 public:
  explicit AdamW(std::vector<ParamGroup> groups);
  AdamW(const NamedParams& params, double lr = 1e-3, double weight_decay = 1e-2, double beta1 = 0.9,
        double beta2 = 0.999, double eps = 1e-8, bool amsgrad = false);
  void step() override;
  std::map<std::string, Tensor> state_dict() const override;
  void load_state_dict(const std::map<std::string, Tensor>& state) override;

 private:
  struct State {
    Tensor exp_avg, exp_avg_sq, max_exp_avg_sq;
    int64_t step = 0;
  };
  std::map<std::string, State> state_;
};

// torch.nn.utils.clip_grad_norm_: total = (sum_i ||g_i||_p^p)^(1/p) over the defined gradients
// (norm_type = +inf: max |g|); when max_norm/(total+1e-6) < 1 every gradient is replaced by
// g * (max_norm/(total+1e-6)). Returns the total norm (before clipping).
double clip_grad_norm(const std::vector<Var>& params, double max_norm, double norm_type = 2.0);

// ---- parameter groups by name (mmcv paramwise_cfg style, kept simple) ----------------------------
// The first rule that matches a parameter decides its lr_mult / decay_mult; unmatched parameters use
// 1 / 1. One group is made per rule that matched anything (after the default group), parameters in
// their original order.
struct ParamRule {
  std::function<bool(const std::string& name, const Var& p)> match;
  double lr_mult = 1.0;
  double decay_mult = 1.0;
  std::string desc;  // for messages

  // name contains `key` (mmcv custom_keys)
  static ParamRule contains(const std::string& key, double lr_mult, double decay_mult);
  // any of `keys` is a substring of the name (e.g. {".bn", ".gn", "norm", ".bias"})
  static ParamRule contains_any(const std::vector<std::string>& keys, double lr_mult, double decay_mult);
  // 1-D parameters (biases and norm affine weights: mmcv bias_decay_mult / norm_decay_mult)
  static ParamRule one_dim(double lr_mult, double decay_mult);
  static ParamRule where(std::function<bool(const std::string&, const Var&)> pred, double lr_mult,
                         double decay_mult, std::string desc = "predicate");
};

// `base` supplies lr / weight_decay / momentum / betas ...; its params field is ignored.
// Parameters that do not require grad are left out (frozen stages), like mmcv.
std::vector<ParamGroup> build_param_groups(const NamedParams& params, const ParamGroup& base,
                                           const std::vector<ParamRule>& rules = {});

}  // namespace kdet
