// detectors/anchors.h — mmdet AnchorGenerator (specs/detectors.md 4.3), f32 CPU.
//
// Base anchors per level: for each ratio r (outer) and scale k (inner), w = base*(1/sqrt r)*scale_k,
// h = base*sqrt(r)*scale_k, centred at base*center_offset; index a = ratio_idx*S + k. Computed in f32
// in mmdet's order, so they are bit-identical to mmdet's (no rounding, unlike torchvision).
// Grid: anchor(y, x, a) = base_a + (x*s, y*s, x*s, y*s), flattened (y, x, a); levels low stride first.
#pragma once
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace kdet {

struct AnchorGeneratorConfig {
  std::vector<int64_t> strides{8, 16, 32, 64, 128};
  std::vector<double> ratios{0.5, 1.0, 2.0};
  std::vector<double> scales;        // explicit scales; when empty the octave scales are used
  double octave_base_scale = 4.0;
  int scales_per_octave = 3;
  std::vector<double> base_sizes;    // default: the strides
  bool scale_major = true;
  double center_offset = 0.0;

  static AnchorGeneratorConfig retinanet() { return {}; }
  static AnchorGeneratorConfig rpn() {
    AnchorGeneratorConfig c;
    c.strides = {4, 8, 16, 32, 64};
    c.scales = {8.0};
    return c;
  }
};

class AnchorGenerator {
 public:
  explicit AnchorGenerator(AnchorGeneratorConfig cfg = {});
  const AnchorGeneratorConfig& config() const { return cfg_; }
  int num_levels() const { return static_cast<int>(cfg_.strides.size()); }
  int64_t num_base_anchors() const { return num_base_; }  // A: anchors per location (same every level)
  int64_t stride(int level) const { return cfg_.strides.at(level); }
  const Tensor& base_anchors(int level) const { return base_.at(level); }  // f32 [A, 4]

  // f32 [H*W*A, 4] for one level.
  Tensor grid_anchors(int level, int64_t feat_h, int64_t feat_w) const;
  // One tensor per level for the given feature sizes {H, W}.
  std::vector<Tensor> grid_priors(const std::vector<std::pair<int64_t, int64_t>>& feat_sizes) const;
  // Bool [H*W*A]: anchors of cells inside [0, min(ceil(pad_h/s), H)) x [0, min(ceil(pad_w/s), W)).
  Tensor valid_flags(int level, int64_t feat_h, int64_t feat_w, int64_t pad_h, int64_t pad_w) const;
  // Indices into the concatenated anchors of all levels (`anchors` = concat(grid_priors(feat_sizes)))
  // of those valid for the image's pad shape (pad_h/pad_w <= 0: the whole feature map) and, when
  // allowed_border >= 0, inside the image (mmdet anchor_inside_flags: x1 >= -b, y1 >= -b,
  // x2 < img_w + b, y2 < img_h + b). Ascending.
  std::vector<int64_t> usable_indices(const std::vector<std::pair<int64_t, int64_t>>& feat_sizes,
                                      const Tensor& anchors, int64_t img_h, int64_t img_w, int64_t pad_h,
                                      int64_t pad_w, int64_t allowed_border) const;

 private:
  AnchorGeneratorConfig cfg_;
  std::vector<Tensor> base_;
  int64_t num_base_ = 0;
};

}  // namespace kdet
