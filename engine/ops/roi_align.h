// engine/ops/roi_align.h — RoIAlign, mmcv semantics (mode 'avg'), == torchvision.ops.roi_align.
// specs/detectors.md 11.
//
//   feat [N, C, H, W] (f32/f64), rois [K, 5] = (batch_idx, x1, y1, x2, y2) in image coordinates (same
//   dtype) -> [K, C, out_h, out_w].
//   For a RoI: offset = aligned ? 0.5 : 0; start = x1*scale - offset, end = x2*scale - offset (same for y);
//   roi_w = end - start (forced >= 1 only when !aligned); bin = roi / out. Samples per bin:
//   grid = sampling_ratio > 0 ? sampling_ratio : ceil(roi / out) (may be 0 for degenerate RoIs);
//   count = max(grid_h * grid_w, 1). Sample y = start_h + ph*bin_h + (iy + 0.5)*bin_h/grid_h (x alike).
//   Bilinear: 0 if y < -1 or y > H or x < -1 or x > W; else y, x clamped to >= 0; y_low = int(y),
//   y_high = y_low + 1 unless y_low >= H-1 (then y_low = y_high = H-1, y = y_low); 4-corner weights.
//   Output = Σ samples / count. Backward distributes grad/count to the same corners.
//   rois live on the features' device or on the host: the sample geometry is computed on the host either way,
//   so host RoIs (as the detectors make them) save a CUDA run an upload and a download.
//
// CPU: forward parallel over RoIs; backward parallel over (image, channel) planes, each plane visiting
// its image's RoIs in input order — no atomics, bit-identical for any thread count.
#pragma once
#include "engine/autograd.h"

namespace kdet {

struct RoIAlignArgs {
  int64_t out_h = 7, out_w = 7;
  double spatial_scale = 1.0;
  int64_t sampling_ratio = 0;  // 0: adaptive ceil(roi / out)
  bool aligned = true;
};

namespace ops {
// feat [N,C,H,W] f32/f64, rois [K,5] (batch_idx, x1, y1, x2, y2) same dtype -> [K,C,out_h,out_w]
Tensor roi_align(const Tensor& feat, const Tensor& rois, const RoIAlignArgs& a);
// grad_out [K,C,out_h,out_w] -> d feat, shape feat_shape ([N,C,H,W]).
Tensor roi_align_backward(const Tensor& grad_out, const Tensor& rois, const Shape& feat_shape,
                          const RoIAlignArgs& a);
}  // namespace ops

// Differentiable w.r.t. feat (rois carry no gradient).
Var roi_align(const Var& feat, const Tensor& rois, const RoIAlignArgs& a);

}  // namespace kdet
