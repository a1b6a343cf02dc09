// detectors/point_assigner.h — mmdet PointAssigner (RepPoints init stage, specs/detectors.md 9.4), f32 CPU.
//
// points [N, 3+] rows (x, y, stride, ...) (MlvlPointGenerator with_stride rows; only the valid points of
// one image). Point level = int(log2(stride)). For each gt box (w, h clamped >= 1e-6, centre c):
//   gt_lvl = trunc((log2(w/scale) + log2(h/scale)) / 2), clamped to [min, max] point level;
//   among the points of level gt_lvl, the pos_num nearest by || (p - c) / (w, h) ||_2 (ties: lower
//   index first) are assigned this gt when their distance is strictly smaller than the distance
//   recorded for the point so far (initially +inf; gts processed in order 0..G-1).
// Everything else is negative (gt_inds 0); nothing is ignored. Result as MaxIoUAssigner's:
// gt_inds 0 / k+1, labels (gt label or -1); max_overlaps holds the recorded distance (+inf for
// negatives), mmdet returns None there.
#pragma once
#include "detectors/assigner.h"

namespace kdet {

struct PointAssigner {
  double scale = 4.0;   // point_base_scale
  int64_t pos_num = 1;

  AssignResult assign(const Tensor& points, const Tensor& gt_boxes, const Tensor& gt_labels = Tensor()) const;
};

}  // namespace kdet
