// detectors/nms.h — NMS with mmcv / torchvision semantics (specs/detectors.md 4.7), f32 CPU.
//
//   nms: stable sort by score descending (ties: lower index first, as torchvision's CPU kernel), keep
//     a box and suppress later ones with IoU > thr (strict), IoU = inter / (areaA + areaB - inter).
//     Returns kept indices (i64) in descending-score order.
//   batched_nms: class-aware. Fewer than split_thr boxes: mmdet's coordinate trick (boxes shifted by
//     idx * (max_coordinate + 1), one nms); otherwise one nms per class (on the same shifted boxes, as
//     mmdet) and a stable re-sort by score. class_agnostic skips the shift.
//   multiclass_nms: mmdet's multiclass_nms for [N, C+1] score matrices (background column last).
#pragma once
#include "detectors/types.h"

namespace kdet {

Tensor nms(const Tensor& boxes, const Tensor& scores, double iou_thr);

struct BatchedNmsResult {
  Tensor keep;    // i64 [K] indices into the input, score-descending
  Tensor boxes;   // f32 [K, 4] (the original, unshifted boxes)
  Tensor scores;  // f32 [K]
};
BatchedNmsResult batched_nms(const Tensor& boxes, const Tensor& scores, const Tensor& idxs, double iou_thr,
                             bool class_agnostic = false, int64_t split_thr = 10000);

// bboxes [N, 4] (shared) or [N, 4*C]; scores [N, C+1]. Keeps pairs with score > score_thr, class-aware
// NMS, first max_num (-1 = all).
Detections multiclass_nms(const Tensor& bboxes, const Tensor& scores, double score_thr, double iou_thr,
                          int64_t max_num = -1);

}  // namespace kdet
