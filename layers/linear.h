// layers/linear.h — nn.Linear: weight [out, in] (torch layout), optional bias [out];
// y = x·weightᵀ + bias over the last dimension. Keys "weight", "bias" (mmdet fc_cls / fc_reg / shared_fcs).
#pragma once
#include "layers/module.h"

namespace kdet {

class Linear : public UnaryModule {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  const char* type_name() const override { return "Linear"; }
  Var forward(const Var& x) override;
  // PyTorch's nn.Linear.reset_parameters (kaiming_uniform a=sqrt 5; bias U(+-1/sqrt(in))).
  void init_weights(Generator& g) override;
  Var& weight() { return *w_; }
  bool has_bias() const { return b_ != nullptr; }
  Var& bias();
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 private:
  int64_t in_, out_;
  Var* w_ = nullptr;
  Var* b_ = nullptr;
};

}  // namespace kdet
