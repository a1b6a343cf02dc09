#include "detectors/anchors.h"

#include <cmath>

namespace kdet {

AnchorGenerator::AnchorGenerator(AnchorGeneratorConfig cfg) : cfg_(std::move(cfg)) {
  KDET_CHECK(!cfg_.strides.empty() && !cfg_.ratios.empty(), "AnchorGenerator: needs strides and ratios");
  if (cfg_.base_sizes.empty())
    for (auto s : cfg_.strides) cfg_.base_sizes.push_back(static_cast<double>(s));
  KDET_CHECK(cfg_.base_sizes.size() == cfg_.strides.size(), "AnchorGenerator: ", cfg_.base_sizes.size(),
             " base sizes for ", cfg_.strides.size(), " strides");
  // Scales: mmdet computes octave scales in float64 numpy, then stores them as float32.
  std::vector<float> scales;
  if (!cfg_.scales.empty()) {
    for (double s : cfg_.scales) scales.push_back(static_cast<float>(s));
  } else {
    KDET_CHECK(cfg_.scales_per_octave > 0, "AnchorGenerator: scales_per_octave must be > 0");
    for (int k = 0; k < cfg_.scales_per_octave; ++k)
      scales.push_back(static_cast<float>(std::pow(2.0, static_cast<double>(k) / cfg_.scales_per_octave) *
                                          cfg_.octave_base_scale));
  }
  const int64_t R = static_cast<int64_t>(cfg_.ratios.size()), S = static_cast<int64_t>(scales.size());
  num_base_ = R * S;
  for (size_t l = 0; l < cfg_.strides.size(); ++l) {
    const float w = static_cast<float>(cfg_.base_sizes[l]), h = w;
    const float xc = static_cast<float>(cfg_.center_offset) * w, yc = static_cast<float>(cfg_.center_offset) * h;
    Tensor b = Tensor::empty({num_base_, 4});
    float* pb = b.data<float>();
    for (int64_t r = 0; r < R; ++r) {
      const float hr = std::sqrt(static_cast<float>(cfg_.ratios[r]));
      const float wr = 1.0f / hr;
      for (int64_t k = 0; k < S; ++k) {
        // scale_major: ws = (w * w_ratios[:, None] * scales[None, :]).view(-1); index r*S + k.
        // not scale_major: ws = (w * scales[:, None] * w_ratios[None, :]).view(-1); index k*R + r.
        float ws, hs;
        int64_t a;
        if (cfg_.scale_major) {
          ws = w * wr * scales[k];
          hs = h * hr * scales[k];
          a = r * S + k;
        } else {
          ws = w * scales[k] * wr;
          hs = h * scales[k] * hr;
          a = k * R + r;
        }
        pb[a * 4 + 0] = xc - 0.5f * ws;
        pb[a * 4 + 1] = yc - 0.5f * hs;
        pb[a * 4 + 2] = xc + 0.5f * ws;
        pb[a * 4 + 3] = yc + 0.5f * hs;
      }
    }
    base_.push_back(b);
  }
}

Tensor AnchorGenerator::grid_anchors(int level, int64_t feat_h, int64_t feat_w) const {
  KDET_CHECK(level >= 0 && level < num_levels(), "AnchorGenerator::grid_anchors: level ", level, " of ",
             num_levels());
  KDET_CHECK(feat_h >= 0 && feat_w >= 0, "AnchorGenerator::grid_anchors: bad feature size ", feat_h, "x", feat_w);
  const int64_t A = num_base_;
  Tensor out = Tensor::empty({feat_h * feat_w * A, 4});
  const float* pb = base_[level].data<float>();
  float* po = out.data<float>();
  const float s = static_cast<float>(cfg_.strides[level]);
  for (int64_t y = 0; y < feat_h; ++y) {
    const float sy = static_cast<float>(y) * s;
    for (int64_t x = 0; x < feat_w; ++x) {
      const float sx = static_cast<float>(x) * s;
      float* o = po + (y * feat_w + x) * A * 4;
      for (int64_t a = 0; a < A; ++a) {
        o[a * 4 + 0] = pb[a * 4 + 0] + sx;
        o[a * 4 + 1] = pb[a * 4 + 1] + sy;
        o[a * 4 + 2] = pb[a * 4 + 2] + sx;
        o[a * 4 + 3] = pb[a * 4 + 3] + sy;
      }
    }
  }
  return out;
}

std::vector<Tensor> AnchorGenerator::grid_priors(const std::vector<std::pair<int64_t, int64_t>>& sizes) const {
  KDET_CHECK(static_cast<int>(sizes.size()) == num_levels(), "AnchorGenerator::grid_priors: ", sizes.size(),
             " feature sizes for ", num_levels(), " levels");
  std::vector<Tensor> out;
  for (int l = 0; l < num_levels(); ++l) out.push_back(grid_anchors(l, sizes[l].first, sizes[l].second));
  return out;
}

Tensor AnchorGenerator::valid_flags(int level, int64_t feat_h, int64_t feat_w, int64_t pad_h, int64_t pad_w) const {
  KDET_CHECK(level >= 0 && level < num_levels(), "AnchorGenerator::valid_flags: level ", level);
  const int64_t s = cfg_.strides[level];
  const int64_t vh = std::min((pad_h + s - 1) / s, feat_h), vw = std::min((pad_w + s - 1) / s, feat_w);
  const int64_t A = num_base_;
  Tensor out = Tensor::empty({feat_h * feat_w * A}, DType::Bool);
  bool* po = out.data<bool>();
  for (int64_t y = 0; y < feat_h; ++y)
    for (int64_t x = 0; x < feat_w; ++x)
      for (int64_t a = 0; a < A; ++a) po[(y * feat_w + x) * A + a] = y < vh && x < vw;
  return out;
}

std::vector<int64_t> AnchorGenerator::usable_indices(const std::vector<std::pair<int64_t, int64_t>>& sizes,
                                                     const Tensor& anchors, int64_t img_h, int64_t img_w,
                                                     int64_t pad_h, int64_t pad_w, int64_t allowed_border) const {
  KDET_CHECK(static_cast<int>(sizes.size()) == num_levels(), "AnchorGenerator::usable_indices: ", sizes.size(),
             " feature sizes for ", num_levels(), " levels");
  const Tensor ac = anchors.to(DType::F32).contiguous();
  const float* pa = ac.data<float>();
  std::vector<int64_t> inside;
  int64_t base = 0;
  for (int l = 0; l < num_levels(); ++l) {
    const auto [fh, fw] = sizes[l];
    const int64_t s = stride(l);
    Tensor v = valid_flags(l, fh, fw, pad_h > 0 ? pad_h : fh * s, pad_w > 0 ? pad_w : fw * s);
    const bool* pv = v.data<bool>();
    KDET_CHECK(base + v.numel() <= ac.size(0), "AnchorGenerator::usable_indices: ", ac.desc(),
               " anchors for feature sizes of more");
    for (int64_t i = 0; i < v.numel(); ++i) {
      if (!pv[i]) continue;
      const int64_t m = base + i;
      if (allowed_border >= 0) {
        const float b = static_cast<float>(allowed_border);
        const float* a = pa + m * 4;
        if (!(a[0] >= -b && a[1] >= -b && a[2] < static_cast<float>(img_w) + b && a[3] < static_cast<float>(img_h) + b))
          continue;
      }
      inside.push_back(m);
    }
    base += v.numel();
  }
  return inside;
}

}  // namespace kdet
