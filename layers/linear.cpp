#include "layers/linear.h"

#include "engine/ops/matmul.h"
#include "layers/init.h"

namespace kdet {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias) : in_(in_features), out_(out_features) {
  KDET_CHECK(in_features > 0 && out_features > 0, "Linear: bad features ", in_features, " -> ", out_features);
  w_ = &register_parameter("weight", Tensor::zeros({out_, in_}));
  if (bias) b_ = &register_parameter("bias", Tensor::zeros({out_}));
}

Var& Linear::bias() {
  KDET_CHECK(b_, "Linear: this layer has no bias");
  return *b_;
}

Var Linear::forward(const Var& x) {
  KDET_CHECK(x.ndim() >= 1 && x.size(-1) == in_, "Linear(", in_, " -> ", out_, "): input ", x.data().desc(),
             " does not end in ", in_, " features");
  return linear(x, *w_, b_ ? *b_ : Var());
}

void Linear::init_weights(Generator& g) { torch_default_init_(w_->data(), b_ ? &b_->data() : nullptr, g); }

}  // namespace kdet
