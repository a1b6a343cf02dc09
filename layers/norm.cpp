#include "layers/norm.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/norm.h"

namespace kdet {

const char* NormCfg::abbr() const {
  switch (type) {
    case BN: return "bn";
    case GN: return "gn";
    case None: break;
  }
  return "none";
}

BatchNorm2d::BatchNorm2d(int64_t num_features, double eps, double momentum, bool requires_grad)
    : c_(num_features), eps_(eps), momentum_(momentum) {
  KDET_CHECK(num_features > 0, "BatchNorm2d: num_features ", num_features, " must be positive");
  w_ = &register_parameter("weight", Tensor::ones({c_}), requires_grad);
  b_ = &register_parameter("bias", Tensor::zeros({c_}), requires_grad);
  rm_ = &register_buffer("running_mean", Tensor::zeros({c_}));
  rv_ = &register_buffer("running_var", Tensor::ones({c_}));
  nbt_ = &register_buffer("num_batches_tracked", Tensor::zeros({}, DType::I64));
}

void BatchNorm2d::reset_running_stats() {
  rm_->fill_(0.0);
  rv_->fill_(1.0);
  nbt_->fill_(0.0);
}

void BatchNorm2d::init_weights(Generator&) {
  w_->data().fill_(1.0);
  b_->data().fill_(0.0);
}

Var BatchNorm2d::forward(const Var& x) {
  KDET_CHECK(x.ndim() == 4 && x.size(1) == c_, "BatchNorm2d(", c_, "): expected input [N, ", c_,
             ", H, W], got ", x.data().desc());
  if (training()) {
    // num_batches_tracked (an i64 scalar) counts where it lives: no host round trip (a GPU sync per layer).
    nbt_->copy_(ops::add_scalar(*nbt_, 1.0));
  }
  return batch_norm(x, *w_, *b_, *rm_, *rv_, training(), momentum_, eps_);
}

GroupNorm::GroupNorm(int64_t num_groups, int64_t num_channels, double eps, bool requires_grad)
    : groups_(num_groups), c_(num_channels), eps_(eps) {
  KDET_CHECK(num_groups > 0 && num_channels % num_groups == 0, "GroupNorm: ", num_channels,
             " channels are not divisible into ", num_groups, " groups");
  w_ = &register_parameter("weight", Tensor::ones({c_}), requires_grad);
  b_ = &register_parameter("bias", Tensor::zeros({c_}), requires_grad);
}

void GroupNorm::init_weights(Generator&) {
  w_->data().fill_(1.0);
  b_->data().fill_(0.0);
}

Var GroupNorm::forward(const Var& x) {
  KDET_CHECK(x.ndim() >= 2 && x.size(1) == c_, "GroupNorm(", groups_, ", ", c_, "): expected input [N, ", c_,
             ", ...], got ", x.data().desc());
  return group_norm(x, groups_, *w_, *b_, eps_);
}

std::unique_ptr<UnaryModule> make_norm(const NormCfg& cfg, int64_t channels) {
  switch (cfg.type) {
    case NormCfg::BN: return std::make_unique<BatchNorm2d>(channels, cfg.eps, cfg.momentum, cfg.requires_grad);
    case NormCfg::GN: return std::make_unique<GroupNorm>(cfg.num_groups, channels, cfg.eps, cfg.requires_grad);
    case NormCfg::None: break;
  }
  KDET_FAIL("make_norm: norm type None has no layer");
}

}  // namespace kdet
