// detectors/box_coder.h — mmdet DeltaXYWHBBoxCoder (specs/detectors.md 4.2), f32 CPU.
//
//   encode(priors [N,4], gt [N,4]) -> deltas [N,4]: ((dx,dy,dw,dh) - means) / stds.
//   decode(priors [N,4], deltas [N,4C], max_shape) -> boxes [N,4C]: d*stds+means, dw/dh clamped to
//     ±|ln(wh_ratio_clip)| (both sides), optional clipping to x∈[0,W], y∈[0,H] (max_shape = {H, W}).
//   decode_var: the same decode as a differentiable op of the deltas (no clipping: used inside
//     losses with reg_decoded_bbox, where mmdet does not clip). Works in f32 and f64 (gradcheck).
#pragma once
#include <array>
#include <optional>
#include <utility>

#include "engine/autograd.h"

namespace kdet {

struct DeltaXYWHBBoxCoder {
  std::array<double, 4> means{0, 0, 0, 0};
  std::array<double, 4> stds{1, 1, 1, 1};
  double wh_ratio_clip = 16.0 / 1000.0;

  Tensor encode(const Tensor& priors, const Tensor& gt) const;
  // max_shape = {H, W} of img_shape; std::nullopt = no clipping.
  Tensor decode(const Tensor& priors, const Tensor& deltas,
                std::optional<std::pair<int64_t, int64_t>> max_shape = std::nullopt) const;
  Var decode_var(const Tensor& priors, const Var& deltas) const;
};

}  // namespace kdet
