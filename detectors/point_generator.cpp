#include "detectors/point_generator.h"

#include <algorithm>

#include "engine/check.h"

namespace kdet {

MlvlPointGenerator::MlvlPointGenerator(std::vector<int64_t> strides, double offset)
    : strides_(std::move(strides)), offset_(offset) {
  KDET_CHECK(!strides_.empty(), "MlvlPointGenerator: no strides");
  for (int64_t s : strides_) KDET_CHECK(s > 0, "MlvlPointGenerator: stride ", s, " must be positive");
}

Tensor MlvlPointGenerator::grid_points(int level, int64_t feat_h, int64_t feat_w, bool with_stride) const {
  KDET_CHECK(level >= 0 && level < num_levels(), "MlvlPointGenerator::grid_points: level ", level, " of ",
             num_levels());
  KDET_CHECK(feat_h >= 0 && feat_w >= 0, "MlvlPointGenerator::grid_points: feature size ", feat_h, "x", feat_w);
  const int64_t s = strides_[level], k = with_stride ? 4 : 2;
  Tensor out = Tensor::empty({feat_h * feat_w, k});
  float* p = out.data<float>();
  const float sf = static_cast<float>(s), off = static_cast<float>(offset_);
  // mmdet: (arange(0, W) + offset) * stride in f32
  for (int64_t y = 0; y < feat_h; ++y)
    for (int64_t x = 0; x < feat_w; ++x) {
      float* r = p + (y * feat_w + x) * k;
      r[0] = (static_cast<float>(x) + off) * sf;
      r[1] = (static_cast<float>(y) + off) * sf;
      if (with_stride) r[2] = r[3] = sf;
    }
  return out;
}

std::vector<Tensor> MlvlPointGenerator::grid_priors(const std::vector<std::pair<int64_t, int64_t>>& feat_sizes,
                                                    bool with_stride) const {
  KDET_CHECK(static_cast<int>(feat_sizes.size()) == num_levels(), "MlvlPointGenerator::grid_priors: ",
             feat_sizes.size(), " feature sizes for ", num_levels(), " strides");
  std::vector<Tensor> out;
  for (int l = 0; l < num_levels(); ++l)
    out.push_back(grid_points(l, feat_sizes[l].first, feat_sizes[l].second, with_stride));
  return out;
}

Tensor MlvlPointGenerator::valid_flags(int level, int64_t feat_h, int64_t feat_w, int64_t pad_h, int64_t pad_w) const {
  KDET_CHECK(level >= 0 && level < num_levels(), "MlvlPointGenerator::valid_flags: level ", level);
  const int64_t s = strides_[level];
  const int64_t vh = std::min((pad_h + s - 1) / s, feat_h), vw = std::min((pad_w + s - 1) / s, feat_w);
  Tensor out = Tensor::empty({feat_h * feat_w}, DType::Bool);
  bool* po = out.data<bool>();
  for (int64_t y = 0; y < feat_h; ++y)
    for (int64_t x = 0; x < feat_w; ++x) po[y * feat_w + x] = y < vh && x < vw;
  return out;
}

}  // namespace kdet
