#include "detectors/assigner.h"

#include <algorithm>
#include <cmath>

#include "detectors/iou.h"

namespace kdet {

AssignResult MaxIoUAssigner::assign(const Tensor& priors, const Tensor& gt_boxes, const Tensor& gt_labels,
                                    const Tensor& gt_ignore) const {
  KDET_CHECK(priors.ndim() == 2 && gt_boxes.ndim() == 2, "MaxIoUAssigner::assign: priors ", priors.desc(),
             ", gt ", gt_boxes.desc());
  Tensor overlaps = bbox_overlaps(gt_boxes, priors, IouMode::IoU);  // [G, N]
  if (ignore_iof_thr > 0 && gt_ignore.defined() && gt_ignore.numel() > 0 && priors.numel() > 0 &&
      gt_boxes.size(0) > 0) {
    const int64_t G = overlaps.size(0), N = overlaps.size(1);
    std::vector<float> ign_max(N, -INFINITY);
    if (ignore_wrt_candidates) {
      Tensor io = bbox_overlaps(priors, gt_ignore, IouMode::IoF);  // [N, K]
      const float* p = io.data<float>();
      const int64_t K = io.size(1);
      for (int64_t i = 0; i < N; ++i)
        for (int64_t k = 0; k < K; ++k) ign_max[i] = std::max(ign_max[i], p[i * K + k]);
    } else {
      Tensor io = bbox_overlaps(gt_ignore, priors, IouMode::IoF);  // [K, N]
      const float* p = io.data<float>();
      const int64_t K = io.size(0);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < N; ++i) ign_max[i] = std::max(ign_max[i], p[k * N + i]);
    }
    float* po = overlaps.data<float>();
    for (int64_t i = 0; i < N; ++i)
      if (ign_max[i] > static_cast<float>(ignore_iof_thr))
        for (int64_t g = 0; g < G; ++g) po[g * N + i] = -1.f;
  }
  return assign_wrt_overlaps(overlaps, gt_labels);
}

AssignResult MaxIoUAssigner::assign_wrt_overlaps(const Tensor& ov_in, const Tensor& gt_labels) const {
  KDET_CHECK(ov_in.ndim() == 2, "MaxIoUAssigner: overlaps must be [G, N], got ", ov_in.desc());
  Tensor ov = ov_in.to(DType::F32).contiguous();
  const int64_t G = ov.size(0), N = ov.size(1);
  if (gt_labels.defined())
    KDET_CHECK(gt_labels.numel() == G, "MaxIoUAssigner: ", gt_labels.desc(), " labels for ", G, " gt boxes");
  AssignResult r;
  r.num_gts = G;
  r.gt_inds = Tensor::full({N}, -1, DType::I64);
  r.max_overlaps = Tensor::zeros({N});
  r.labels = Tensor::full({N}, -1, DType::I64);
  int64_t* gi = r.gt_inds.data<int64_t>();
  if (G == 0 || N == 0) {
    if (G == 0)
      for (int64_t i = 0; i < N; ++i) gi[i] = 0;
    return r;
  }
  const float* p = ov.data<float>();
  float* mo = r.max_overlaps.data<float>();
  std::vector<int64_t> argmax(N, 0);
  for (int64_t i = 0; i < N; ++i) {
    float m = p[i];
    int64_t a = 0;
    for (int64_t g = 1; g < G; ++g)
      if (p[g * N + i] > m) m = p[g * N + i], a = g;  // first index wins ties
    mo[i] = m;
    argmax[i] = a;
  }
  const float neg_lo = neg_iou_hi >= 0 ? static_cast<float>(neg_iou_lo) : 0.f;
  const float neg_hi = static_cast<float>(neg_iou_hi >= 0 ? neg_iou_hi : neg_iou_thr);
  const float pos_thr = static_cast<float>(pos_iou_thr);
  for (int64_t i = 0; i < N; ++i) {
    if (mo[i] >= neg_lo && mo[i] < neg_hi) gi[i] = 0;
    if (mo[i] >= pos_thr) gi[i] = argmax[i] + 1;
  }
  if (match_low_quality) {
    const float min_pos = static_cast<float>(min_pos_iou);
    for (int64_t g = 0; g < G; ++g) {
      const float* row = p + g * N;
      float gm = row[0];
      int64_t ga = 0;
      for (int64_t i = 1; i < N; ++i)
        if (row[i] > gm) gm = row[i], ga = i;
      if (gm >= min_pos) {
        if (gt_max_assign_all) {
          for (int64_t i = 0; i < N; ++i)
            if (row[i] == gm) gi[i] = g + 1;
        } else {
          gi[ga] = g + 1;
        }
      }
    }
  }
  if (gt_labels.defined()) {
    auto lab = gt_labels.to_vector<int64_t>();
    int64_t* pl = r.labels.data<int64_t>();
    for (int64_t i = 0; i < N; ++i)
      if (gi[i] > 0) pl[i] = lab[gi[i] - 1];
  }
  return r;
}

SamplingResult pseudo_sample(const AssignResult& r) {
  SamplingResult s;
  Tensor g = r.gt_inds.contiguous();
  const int64_t* p = g.data<int64_t>();
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (p[i] > 0) {
      s.pos_inds.push_back(i);
      s.pos_assigned_gt_inds.push_back(p[i] - 1);
    } else if (p[i] == 0) {
      s.neg_inds.push_back(i);
    }
  }
  return s;
}

}  // namespace kdet
