// detectors/roi_extractor.h — mmdet SingleRoIExtractor (specs/detectors.md 7.4, 11): RoIAlign on the
// pyramid level chosen by the RoI's scale.
//
//   rois f32 [K, 5] = (batch index, x1, y1, x2, y2) in network-input pixels, all images concatenated.
//   Level: scale = sqrt((x2-x1)*(y2-y1)); lvl = floor(log2(scale / finest_scale + 1e-6)) clamped to
//   [0, L-1] (computed in the RoIs' dtype, f32 like mmdet): with finest_scale 56 and 4 levels,
//   scale < 112 -> P2, [112, 224) -> P3, [224, 448) -> P4, >= 448 -> P5.
//   Each RoI is pooled by RoIAlign(out_size x out_size, spatial_scale 1/stride_l, sampling_ratio,
//   aligned) from feats[lvl]; the result keeps the RoIs' order: [K, C, out, out]. Differentiable w.r.t.
//   the feature maps (RoIs carry no gradient). feats may hold more levels than featmap_strides (the
//   P6 of a two-stage FPN): only the first L are used, as mmdet's `x[:num_inputs]`.
// No parameters (mmdet's extractor has none in the state dict).
#pragma once
#include <vector>

#include "engine/autograd.h"
#include "engine/ops/roi_align.h"

namespace kdet {

struct RoIExtractorConfig {
  int64_t out_size = 7;
  int64_t sampling_ratio = 0;  // 0: adaptive (ceil(roi / out))
  bool aligned = true;
  std::vector<int64_t> featmap_strides{4, 8, 16, 32};
  double finest_scale = 56.0;
};

class SingleRoIExtractor {
 public:
  explicit SingleRoIExtractor(RoIExtractorConfig cfg = {});
  const RoIExtractorConfig& config() const { return cfg_; }
  int64_t num_inputs() const { return static_cast<int64_t>(cfg_.featmap_strides.size()); }

  // i64 [K]: the level (0-based into featmap_strides) of each RoI.
  Tensor map_roi_levels(const Tensor& rois) const;
  // feats: >= num_inputs maps [N, C, H_l, W_l] (same C); rois [K, 5] -> [K, C, out, out].
  Var forward(const std::vector<Var>& feats, const Tensor& rois) const;
  Var operator()(const std::vector<Var>& feats, const Tensor& rois) const { return forward(feats, rois); }

 private:
  RoIExtractorConfig cfg_;
};

}  // namespace kdet
