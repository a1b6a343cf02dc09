#include "distill/kd_common.h"

#include <cmath>

#include "engine/ops/compare.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/masked_conv2d.h"
#include "engine/ops/matmul.h"
#include "engine/ops/norm.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/softmax.h"
#include "engine/ops/unary.h"
#include "layers/init.h"

namespace kdet::kd {

void KdResult::accumulate(const std::string& name, const Var& v) {
  auto it = terms.find(name);
  if (it == terms.end())
    terms[name] = v;
  else
    it->second = it->second + v;
}

Var spatial_attention(const Var& f, double tau) {
  KDET_CHECK(f.ndim() == 4, "spatial_attention: expects [N, C, H, W], got ", f.data().desc());
  const int64_t N = f.size(0), H = f.size(2), W = f.size(3);
  Var g = mean(abs(f), {1});  // [N, H, W]
  Var p = softmax(reshape(g / tau, {N, H * W}), 1);
  return reshape(p * static_cast<double>(H * W), {N, H, W});
}

Var channel_attention(const Var& f, double tau) {
  KDET_CHECK(f.ndim() == 4, "channel_attention: expects [N, C, H, W], got ", f.data().desc());
  const int64_t C = f.size(1);
  Var g = mean(abs(f), {2, 3});  // [N, C]
  return softmax(g / tau, 1) * static_cast<double>(C);
}

Var safe_sqrt(const Var& q) {
  Tensor y = ops::sqrt(q.data());
  return record("kd_safe_sqrt", y, {&q}, [y](const Tensor& g, Grads& gr) {
    const Tensor pos = ops::gt_scalar(y, 0.0);
    const Tensor d = ops::div(g, ops::mul_scalar(ops::where(pos, y, 1.0), 2.0));
    gr.accumulate(0, ops::where(pos, d, 0.0));
  });
}

Var frobenius_distance(const Var& a, const Var& b) {
  Var d = a - b;
  return safe_sqrt(sum(d * d));
}

int64_t topk_count(double ratio, int64_t len) {
  KDET_CHECK(ratio >= 0.0 && ratio <= 1.0, "topk_count: ratio ", ratio, " outside [0, 1]");
  return static_cast<int64_t>(std::floor(ratio * static_cast<double>(len)));
}

Tensor topk_keep_mask(const Tensor& scores, int64_t k) {
  KDET_CHECK(scores.ndim() == 2, "topk_keep_mask: expects [N, L] scores, got ", scores.desc());
  const int64_t N = scores.size(0), L = scores.size(1);
  KDET_CHECK(k >= 0 && k <= L, "topk_keep_mask: k = ", k, " for rows of length ", L);
  const Tensor hs = scores.to(Device::cpu());  // the mask is built on the host (device scores are copied)
  Tensor keep = Tensor::ones({N, L}, DType::F64);
  double* pk = keep.data<double>();
  for (int64_t n = 0; n < N; ++n) {
    Tensor idx = ops::topk_indices(hs.select(0, n), k);  // descending, ties -> lower index first
    const int64_t* pi = idx.data<int64_t>();
    for (int64_t j = 0; j < k; ++j) pk[n * L + pi[j]] = 0.0;
  }
  return keep.to(scores.dtype()).to(scores.device());
}

void check_levels(const char* who, const std::vector<Var>& S, const std::vector<Tensor>& T, bool same_channels) {
  KDET_CHECK(!S.empty() && S.size() == T.size(), who, ": ", S.size(), " student levels vs ", T.size(),
             " teacher levels");
  for (size_t i = 0; i < S.size(); ++i) {
    const Shape& s = S[i].shape();
    const Shape& t = T[i].shape();
    KDET_CHECK(s.ndim() == 4 && t.ndim() == 4 && s[0] == t[0] && s[2] == t[2] && s[3] == t[3] &&
                   (!same_channels || s[1] == t[1]) && s[0] == S[0].shape()[0],
               who, ": level ", i, " student ", S[i].data().desc(), " and teacher ", T[i].desc(),
               " do not match (N, H, W", same_channels ? ", C" : "", " must agree)");
    KDET_CHECK(S[i].dtype() == T[i].dtype(), who, ": level ", i, " dtype mismatch ", S[i].data().desc(), " vs ",
               T[i].desc());
  }
}

// --- small modules ----------------------------------------------------------------------------

Linear::Linear(int64_t in, int64_t out, bool bias) {
  KDET_CHECK(in > 0 && out > 0, "Linear: bad sizes ", in, " -> ", out);
  w_ = &register_parameter("weight", Tensor::zeros({out, in}));
  if (bias) b_ = &register_parameter("bias", Tensor::zeros({out}));
}

Var Linear::forward(const Var& x) { return linear(x, *w_, b_ ? *b_ : Var()); }

void Linear::init_weights(Generator& g) { torch_default_init_(w_->data(), b_ ? &b_->data() : nullptr, g); }

LayerNorm::LayerNorm(const Shape& normalized_shape, double eps) : shape_(normalized_shape), eps_(eps) {
  w_ = &register_parameter("weight", Tensor::ones(normalized_shape));
  b_ = &register_parameter("bias", Tensor::zeros(normalized_shape));
}

Var LayerNorm::forward(const Var& x) { return layer_norm(x, shape_, *w_, *b_, eps_); }

void LayerNorm::init_weights(Generator&) {
  w_->data().fill_(1.0);
  b_->data().fill_(0.0);
}

Var ReLU::forward(const Var& x) { return relu(x); }

GeneratorBlock::GeneratorBlock(int64_t c) {
  emplace_back<Conv2d>(c, c, 3, 1, 1);
  emplace_back<ReLU>();
  emplace_back<Conv2d>(c, c, 3, 1, 1);
}

Var GeneratorBlock::forward_masked(const Var& x, const Tensor& m) {
  auto& c0 = static_cast<Conv2d&>((*this)[0]);
  const ConvSpec& sp = c0.spec();
  Var h = relu(masked_conv2d(x, m, c0.weight(), c0.bias(), Conv2dArgs::make(sp.stride, sp.padding, sp.dilation, sp.groups)));
  return (*this)[2].forward(h);
}

std::unique_ptr<Conv2d> make_align(int64_t cs, int64_t ct) { return std::make_unique<Conv2d>(cs, ct, 1, 1, 0); }

}  // namespace kdet::kd
