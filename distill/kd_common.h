// distill/kd_common.h — pieces shared by the KD losses (specs/kd_losses.md §0).
//
//   KdResult          what every KD loss returns: the differentiated total and its named components
//                     ("level<i>.<comp>" per level and "<comp>" summed over levels), as Vars.
//   MidSink           optional sink for named intermediates ("level0.s_aligned", ...): only filled when
//                     a non-null pointer is passed (golden-file checks, visualisation); costs nothing
//                     otherwise.
//   spatial_attention A^S(F;τ)[n,h,w] = H·W · softmax_{hw}( mean_c |F| / τ )          -> [N, H, W]
//   channel_attention A^C(F;τ)[n,c]   = C   · softmax_c ( mean_{hw} |F| / τ )         -> [N, C]
//                     Both differentiable (|·| backward uses sign, 0 at 0, like torch).
//   topk_keep_mask    [N, L] scores -> f64/f32 keep mask with the ⌊ρ·L⌋ largest of each row zeroed
//                     (ties: lower index first; kd_golden_format.md §3).
//   Linear, LayerNorm, ReLU   minimal parameter modules with PyTorch state-dict names
//                     (nn.Linear weight [out, in] / bias [out]; nn.LayerNorm weight/bias [normalized_shape]).
//   GeneratorBlock    nn.Sequential(Conv3×3(C→C, pad 1), ReLU, Conv3×3(C→C, pad 1)): keys 0.*, 2.*
//                     (MGD, AMD, DMKD); PyTorch default init.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "layers/conv.h"
#include "layers/module.h"

namespace kdet::kd {

using MidSink = std::map<std::string, Tensor>;

struct KdResult {
  Var loss;
  std::map<std::string, Var> terms;
  // Adds v to terms[name] (creating it), e.g. accumulating a per-level component into its total.
  void accumulate(const std::string& name, const Var& v);
};

inline std::string level_key(size_t i, const std::string& name) { return "level" + std::to_string(i) + "." + name; }

// Stores t (detached) under name when sink is non-null.
inline void put_mid(MidSink* sink, const std::string& name, const Tensor& t) {
  if (sink) (*sink)[name] = t;
}

Var spatial_attention(const Var& f, double tau);
Var channel_attention(const Var& f, double tau);

// --- fused kernels (one pass forward, one pass backward; f32/f64; planes in parallel, static schedule,
// partial sums combined in a fixed order, so results do not depend on the thread count) -----------
// CUDA (distill/kd_common_cuda.cu): the same ops with double sums in fixed block-tree / channel orders
// (bit-identical run to run; equal to the CPU's to rounding).
// mean_c |f| -> [N, H, W] and mean_{hw} |f| -> [N, C] of f [N, C, H, W], differentiable: backward
// sign(f)·g/n (0 at 0, like torch's abs). Ops "kd_abs_mean_c" / "kd_abs_mean_hw".
Var abs_mean_channels(const Var& f);
Var abs_mean_spatial(const Var& f);
// Both means of a constant f in one pass over f: {mean_c |f| [N, H, W], mean_{hw} |f| [N, C]} (the same
// values as the two ops above, bit for bit).
std::pair<Tensor, Tensor> abs_means(const Tensor& f);
// The signed means {mean_hw f [N, C], mean_c f [N, 1, H, W]} of f [N, C, H, W] in one pass (one op
// "kd_signed_means" whose two outputs are slices of one [N, C + H·W] result; backward in one pass:
// dx = g_c/(H·W) + g_p/C). With abs_out, the same pass also gives abs_means(f) (constants).
std::pair<Var, Var> signed_means(const Var& f, std::pair<Tensor, Tensor>* abs_out = nullptr);
// A^S(f;τ_s) [N, H, W] and A^C(f;τ_c) [N, C] of a constant f (one pass over f), = spatial_attention /
// channel_attention of f bit for bit.
std::pair<Tensor, Tensor> attention_maps(const Tensor& f, double tau_s, double tau_c);
// The same from precomputed abs_means(f).
std::pair<Tensor, Tensor> attention_from_abs_means(const std::pair<Tensor, Tensor>& abs_means, double tau_s,
                                                   double tau_c);
// Σ w·w2·(a − b)² over all elements (a 0-d result), or per image ([N] when per_image). a, b [N, ...] of
// one shape (either may be a constant); w, w2 undefined (all ones) or constants of a's shape, or for 4-D
// a of shape [N, 1, H, W] or [N, C, 1, 1] (so a spatial × channel weight needs no full-size product).
// Sums in double. Backward: da = 2·g·w·w2·(a − b) = −db. Op "kd_sq_dist_sum".
Var sq_dist_sum(const Var& a, const Var& b, const Tensor& w = Tensor(), bool per_image = false,
                const Tensor& w2 = Tensor());

// floor(ratio * len) computed as one double product (kd_golden_format.md §3).
int64_t topk_count(double ratio, int64_t len);
// scores [N, L]; returns keep [N, L] (dtype of scores): 0 at the k largest entries of each row, 1 elsewhere.
Tensor topk_keep_mask(const Tensor& scores, int64_t k);

// sqrt(q) for q >= 0 whose gradient is 0 (not inf/NaN) where q == 0: the "safe gradient at zero" of
// the un-squared L2 norms of FBKD/AID (kd_losses.md §6d; torch gives NaN for sum()**0.5 at 0, and 0 for
// torch.dist / norm backward at 0). Op name "kd_safe_sqrt".
Var safe_sqrt(const Var& q);
// ‖a − b‖_F over all elements, via safe_sqrt (torch.dist semantics, gradient 0 at 0).
Var frobenius_distance(const Var& a, const Var& b);

// Checks that every feature list has the same number of levels and N, and that S and T agree on H, W
// (and C when same_channels). Throws naming `who` and the offending level.
void check_levels(const char* who, const std::vector<Var>& S, const std::vector<Tensor>& T, bool same_channels);

class Linear : public UnaryModule {
 public:
  Linear(int64_t in, int64_t out, bool bias = true);
  const char* type_name() const override { return "Linear"; }
  Var forward(const Var& x) override;
  void init_weights(Generator& g) override;  // PyTorch default: U(±1/sqrt(in)) for weight and bias
  Var& weight() { return *w_; }
  Var& bias() { return *b_; }

 private:
  Var* w_ = nullptr;
  Var* b_ = nullptr;
};

class LayerNorm : public UnaryModule {
 public:
  explicit LayerNorm(const Shape& normalized_shape, double eps = 1e-5);
  const char* type_name() const override { return "LayerNorm"; }
  Var forward(const Var& x) override;
  void init_weights(Generator& g) override;  // weight 1, bias 0
  double eps() const { return eps_; }

 private:
  Shape shape_;
  double eps_;
  Var *w_, *b_;
};

// A container whose children/parameters are registered by its owner: the level<i> module of a KD loss.
class LevelModule : public Module {
 public:
  const char* type_name() const override { return "KdLevel"; }
  template <class M>
  M& add(const std::string& name, std::unique_ptr<M> m) {
    return register_module(name, std::move(m));
  }
  Var& add_parameter(const std::string& name, Tensor init) { return register_parameter(name, std::move(init)); }
};

class ReLU : public UnaryModule {
 public:
  const char* type_name() const override { return "ReLU"; }
  Var forward(const Var& x) override;
};

class GeneratorBlock : public Sequential {
 public:
  explicit GeneratorBlock(int64_t channels);
  const char* type_name() const override { return "GeneratorBlock"; }
  // forward(x ⊙ m) for a constant mask m [N, 1, H, W] or [N, C, 1, 1]: the first conv only touches the
  // unmasked part of x (engine/ops/masked_conv2d.h), so its cost is ∝ the kept fraction.
  Var forward_masked(const Var& x, const Tensor& m);
};

// A 1×1 Conv2d C_s -> C_t with bias (align / adapter conv).
std::unique_ptr<Conv2d> make_align(int64_t cs, int64_t ct);

}  // namespace kdet::kd
