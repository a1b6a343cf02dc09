// engine/ops/norm.h — batch, group and layer normalisation (fused CPU kernels, PyTorch semantics).
//
//   batch_norm(x[N, C, *], weight[C], bias[C], running_mean[C], running_var[C], training, momentum, eps)
//     training: normalises with the batch statistics (biased variance) and updates the running stats
//       in place exactly like torch: rm = (1-m)*rm + m*mean, rv = (1-m)*rv + m*var*n/(n-1)
//       (n = N * prod(*), must be > 1). Undefined running stats (track_running_stats=False): batch
//       statistics in both modes, nothing updated.
//     eval: y = (x - rm) / sqrt(rv + eps) * w + b (a "frozen BN" is eval mode with weight/bias not
//       requiring grad; the result is still differentiable w.r.t. x).
//   group_norm(x[N, C, *], G, weight[C], bias[C], eps): statistics per (sample, group of C/G channels).
//   layer_norm(x[..., *normalized_shape], normalized_shape, weight[normalized_shape], bias, eps).
// Undefined weight/bias Vars mean affine off (the bias may be undefined on its own).
// Statistics are accumulated in double for both f32 and f64 (deterministic, fixed order). Backward is
// analytic from the saved mean / inverse std (one reduction sweep, one elementwise sweep).
#pragma once
#include "engine/autograd.h"

namespace kdet {

Var batch_norm(const Var& x, const Var& weight, const Var& bias, Tensor& running_mean, Tensor& running_var,
               bool training, double momentum = 0.1, double eps = 1e-5);
Var group_norm(const Var& x, int64_t num_groups, const Var& weight, const Var& bias, double eps = 1e-5);
Var layer_norm(const Var& x, const Shape& normalized_shape, const Var& weight, const Var& bias, double eps = 1e-5);

}  // namespace kdet
