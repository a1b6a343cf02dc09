// detectors/point_generator.h — mmdet MlvlPointGenerator(strides, offset) (specs/detectors.md 4.4), f32 CPU.
//
// The point of cell (row y, column x) of level l has image coordinates ((x + offset)*s_l, (y + offset)*s_l)
// (RepPoints: offset 0, i.e. the cell's top-left corner). Rows are flattened (y, x), levels low stride
// first, like AnchorGenerator with one prior per location. With with_stride the rows are
// (x, y, s_l, s_l): what PointAssigner consumes (mmdet grid_priors(..., with_stride=True)).
// Valid flags: cells inside [0, min(ceil(pad_h/s), H)) x [0, min(ceil(pad_w/s), W)).
#pragma once
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace kdet {

class MlvlPointGenerator {
 public:
  explicit MlvlPointGenerator(std::vector<int64_t> strides = {8, 16, 32, 64, 128}, double offset = 0.0);
  int num_levels() const { return static_cast<int>(strides_.size()); }
  int64_t stride(int level) const { return strides_.at(level); }
  const std::vector<int64_t>& strides() const { return strides_; }
  double offset() const { return offset_; }

  // f32 [H*W, 4] (x, y, s, s) with_stride, else [H*W, 2] (x, y), for one level.
  Tensor grid_points(int level, int64_t feat_h, int64_t feat_w, bool with_stride = true) const;
  // One tensor per level for the given feature sizes {H, W}.
  std::vector<Tensor> grid_priors(const std::vector<std::pair<int64_t, int64_t>>& feat_sizes,
                                  bool with_stride = true) const;
  // Bool [H*W].
  Tensor valid_flags(int level, int64_t feat_h, int64_t feat_w, int64_t pad_h, int64_t pad_w) const;

 private:
  std::vector<int64_t> strides_;
  double offset_;
};

}  // namespace kdet
