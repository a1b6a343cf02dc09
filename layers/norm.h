// layers/norm.h — normalisation modules (PyTorch / mmcv semantics and key names).
//
//   BatchNorm2d: parameters weight[C], bias[C]; buffers running_mean[C] (0), running_var[C] (1),
//     num_batches_tracked (i64 scalar, shape []). training() -> batch statistics, running stats updated
//     with `momentum` and num_batches_tracked += 1; eval -> fixed affine from the running stats.
//   "Frozen BN" in mmdet terms = norm_cfg requires_grad=False (weight/bias not trained) + norm_eval
//     (the module kept in eval mode by its owner, e.g. ResNet::train). There is no separate class:
//     NormCfg{requires_grad=false} + eval() gives exactly that.
//   GroupNorm: weight[C], bias[C]; no buffers.
#pragma once
#include "layers/module.h"

namespace kdet {

// mmcv norm_cfg. type None = no norm layer.
struct NormCfg {
  enum Type { None, BN, GN } type = None;
  bool requires_grad = true;  // affine parameters trained?
  int64_t num_groups = 32;    // GN only
  double eps = 1e-5;
  double momentum = 0.1;      // BN only
  static NormCfg bn(bool requires_grad = true) { return {BN, requires_grad}; }
  static NormCfg gn(int64_t groups = 32, bool requires_grad = true) { return {GN, requires_grad, groups}; }
  static NormCfg none() { return {}; }
  // mmcv abbreviation used as the module name: "bn" / "gn".
  const char* abbr() const;
};

class BatchNorm2d : public UnaryModule {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool requires_grad = true);
  const char* type_name() const override { return "BatchNorm2d"; }
  Var forward(const Var& x) override;
  void init_weights(Generator& g) override;  // weight 1, bias 0 (mmcv constant_init(m, 1))
  void reset_running_stats();
  int64_t num_features() const { return c_; }
  Var& weight() { return *w_; }
  Var& bias() { return *b_; }
  Tensor& running_mean() { return *rm_; }
  Tensor& running_var() { return *rv_; }
  Tensor& num_batches_tracked() { return *nbt_; }
  double eps() const { return eps_; }

 private:
  int64_t c_;
  double eps_, momentum_;
  Var *w_, *b_;
  Tensor *rm_, *rv_, *nbt_;
};

class GroupNorm : public UnaryModule {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5, bool requires_grad = true);
  const char* type_name() const override { return "GroupNorm"; }
  Var forward(const Var& x) override;
  void init_weights(Generator& g) override;  // weight 1, bias 0
  Var& weight() { return *w_; }
  Var& bias() { return *b_; }

 private:
  int64_t groups_, c_;
  double eps_;
  Var *w_, *b_;
};

// build_norm_layer: a BatchNorm2d or GroupNorm for `channels` per cfg (cfg.type must not be None).
std::unique_ptr<UnaryModule> make_norm(const NormCfg& cfg, int64_t channels);

}  // namespace kdet
