// detectors/assigner.h — mmdet MaxIoUAssigner (specs/detectors.md 4.5) and PseudoSampler, f32 CPU.
//
//   gt_inds[i]: -1 ignore, 0 negative, k>0 positive of gt k-1.   labels[i]: gt label or -1.
//   Thresholds: negative if 0 <= max_iou < neg_iou_thr (or neg_lo <= max_iou < neg_hi), positive if
//   max_iou >= pos_iou_thr; low-quality matching (gt_max_assign_all) assigns every prior tied at a
//   gt's best IoU to that gt (later gts overwrite earlier), if that IoU >= min_pos_iou.
//   Ignore regions: priors whose IoF with any ignore box > ignore_iof_thr (when > 0) get overlaps -1.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace kdet {

struct AssignResult {
  int64_t num_gts = 0;
  Tensor gt_inds;       // i64 [N]
  Tensor max_overlaps;  // f32 [N]
  Tensor labels;        // i64 [N] (-1 where not positive)
};

struct MaxIoUAssigner {
  double pos_iou_thr = 0.5;
  double neg_iou_thr = 0.4;       // used when neg_iou_hi < 0
  double neg_iou_lo = 0.0, neg_iou_hi = -1.0;  // tuple form (lo, hi) when neg_iou_hi >= 0
  double min_pos_iou = 0.0;
  bool gt_max_assign_all = true;
  double ignore_iof_thr = -1.0;
  bool ignore_wrt_candidates = true;
  bool match_low_quality = true;

  static MaxIoUAssigner retinanet() { return {}; }
  static MaxIoUAssigner rpn() {
    MaxIoUAssigner a;
    a.pos_iou_thr = 0.7, a.neg_iou_thr = 0.3, a.min_pos_iou = 0.3;
    return a;
  }

  // priors f32 [N,4]; gt_boxes [G,4]; gt_labels i64 [G] (or undefined); gt_ignore [K,4] (or undefined).
  AssignResult assign(const Tensor& priors, const Tensor& gt_boxes, const Tensor& gt_labels = Tensor(),
                      const Tensor& gt_ignore = Tensor()) const;
  // The same from a precomputed overlap matrix [G, N].
  AssignResult assign_wrt_overlaps(const Tensor& overlaps, const Tensor& gt_labels = Tensor()) const;
};

// PseudoSampler: positives = gt_inds > 0, negatives = gt_inds == 0 (indices into the priors, ascending).
struct SamplingResult {
  std::vector<int64_t> pos_inds, neg_inds, pos_assigned_gt_inds;  // gt index 0-based per positive
};
SamplingResult pseudo_sample(const AssignResult& r);

}  // namespace kdet
