// detectors/postprocess.h — dense-head test-time post-processing (specs/detectors.md 6.4), f32 CPU.
//
// Per image: for each level, scores = sigmoid(logits) as an [H*W*A, C] matrix (rows in (y, x, a)
// order; channel a*C + c of the NCHW map); then
//   (a) mmdet >= 2.18 / 3.x (default): keep (prior, class) pairs with score > score_thr, the nms_pre
//       best (stable descending sort), decode their priors' deltas clipped to img_shape;
//   (b) legacy (mmdet <= 2.17, FGD's 2.11): keep the nms_pre priors with the highest max-class score
//       (no threshold), decode + clip, and threshold per (prior, class) inside multiclass_nms.
// Levels are concatenated, boxes divided by scale_factor when rescale, class-aware batched NMS
// (IoU nms_iou), first max_per_img kept.
#pragma once
#include <array>
#include <vector>

#include "detectors/box_coder.h"
#include "detectors/types.h"

namespace kdet {

struct DenseTestConfig {
  int64_t nms_pre = 1000;
  double score_thr = 0.05;
  double nms_iou = 0.5;
  int64_t max_per_img = 100;
  bool rescale = true;
  bool legacy = false;            // variant (b)
  bool drop_empty_boxes = false;  // mmdet 3.x: drop w <= 0 or h <= 0 after rescale, before NMS
};

// cls_logits[l]: [A*C, H, W] (one image), bbox_preds[l]: [A*4, H, W], priors[l]: [H*W*A, 4].
Detections dense_postprocess(const std::vector<Tensor>& cls_logits, const std::vector<Tensor>& bbox_preds,
                             const std::vector<Tensor>& priors, int64_t num_classes,
                             const DeltaXYWHBBoxCoder& coder, const ImageGeometry& geo,
                             const DenseTestConfig& cfg = {});

// The same selection / rescale / NMS for heads that decode their own boxes (RepPoints): boxes[l] f32
// [H*W*A, 4] per level, already decoded and clipped to img_shape, rows in dense_to_rows order.
Detections dense_postprocess_boxes(const std::vector<Tensor>& cls_logits, const std::vector<Tensor>& boxes,
                                   int64_t num_classes, const ImageGeometry& geo, const DenseTestConfig& cfg = {});

// Reorders an [A*K, H, W] map (one image, any device) to a host f32 [H*W*A, K] (the flattening used by targets
// and decoding).
Tensor dense_to_rows(const Tensor& map, int64_t k);

}  // namespace kdet
