// engine/ops/losses.h — fused element-wise detection losses (no reduction: callers apply label
// weights, avg_factor and the sum). Targets are plain Tensors (no gradient) of the prediction's dtype,
// except cross_entropy's labels (i64). Every op has an analytic fused backward.
//
//   sigmoid_focal_loss(x, t, gamma, alpha)  torchvision.ops.sigmoid_focal_loss(reduction='none') ==
//       mmdet py_sigmoid_focal_loss: p = sigmoid(x), ce = BCE-with-logits(x, t),
//       p_t = p*t + (1-p)*(1-t), loss = alpha_t * ce * (1 - p_t)^gamma, alpha_t = alpha*t + (1-alpha)*(1-t)
//       (alpha < 0: no alpha weighting). t may be soft (in [0, 1]).
//   smooth_l1_loss(pred, t, beta)  d = |pred - t|: 0.5*d^2/beta if d < beta else d - 0.5*beta; beta 0 -> L1.
//   l1_loss(pred, t)               |pred - t| (gradient sign(pred - t), 0 at 0 like torch).
//   giou_loss(pred[N,4], t[N,4], eps) -> [N]: 1 - GIoU, mmdet bbox_overlaps(mode='giou', is_aligned)
//       semantics: union and enclose area clamped below at eps (GIoULoss class default eps = 1e-6).
//   iou_loss(pred[N,4], t[N,4], mode, eps) -> [N]: mmdet iou_loss: iou = clamp(IoU, min=eps) (union
//       clamped at 1e-6 as in bbox_overlaps); Linear 1-iou, Square 1-iou^2, Log -log(iou) (IoULoss default).
//   cross_entropy(logits[N,C], labels i64[N], ignore_index) -> [N]: -log_softmax[label], 0 where ignored.
//   binary_cross_entropy_with_logits(x, t): max(x,0) - x*t + log1p(exp(-|x|)).
//   binary_cross_entropy(p, t): -(t*max(log p, -100) + (1-t)*max(log(1-p), -100)); gradient as torch:
//       (p - t) / max(p*(1-p), 1e-12).
#pragma once
#include "engine/autograd.h"

namespace kdet {

Var sigmoid_focal_loss(const Var& logits, const Tensor& target, double gamma = 2.0, double alpha = 0.25);
Var smooth_l1_loss(const Var& pred, const Tensor& target, double beta = 1.0);
Var l1_loss(const Var& pred, const Tensor& target);
Var giou_loss(const Var& pred, const Tensor& target, double eps = 1e-6);
enum class IoULossMode { Linear, Square, Log };
Var iou_loss(const Var& pred, const Tensor& target, IoULossMode mode = IoULossMode::Log, double eps = 1e-6);
Var cross_entropy(const Var& logits, const Tensor& labels, int64_t ignore_index = -100);
Var binary_cross_entropy_with_logits(const Var& logits, const Tensor& target);
Var binary_cross_entropy(const Var& prob, const Tensor& target);

}  // namespace kdet
