// detectors/types.h — values exchanged between detectors, trainers and distillers.
//
//   Detections: final boxes of one image, (x1, y1, x2, y2) f32 pixels, sorted by score descending.
//   LossList:   named scalar losses in mmdet's log order and names ("loss_cls", "loss_bbox", ...).
//               The total training loss is their sum (total_loss).
#pragma once
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"

namespace kdet {

struct Detections {
  Tensor boxes;   // f32 [K, 4] in the requested frame (original image when rescaled)
  Tensor scores;  // f32 [K]
  Tensor labels;  // i64 [K], 0..num_classes-1
  int64_t size() const { return boxes.defined() ? boxes.size(0) : 0; }
  static Detections empty() {
    return {Tensor::zeros({0, 4}), Tensor::zeros({0}), Tensor::zeros({0}, DType::I64)};
  }
};

// Per-image geometry the heads need (mmdet img_meta): img_shape (resized, unpadded), pad_shape (padded
// to the size divisor; 0 = the whole batch tensor) and scale_factor (w, h, w, h).
struct ImageGeometry {
  int64_t img_h = 0, img_w = 0;
  std::array<double, 4> scale_factor{1, 1, 1, 1};
  int64_t pad_h = 0, pad_w = 0;
};

// Ground truth of one image in network-input coordinates.
struct GtInstances {
  Tensor boxes;   // f32 [G, 4]
  Tensor labels;  // i64 [G], 0..C-1
  Tensor ignore;  // f32 [K, 4] ignore regions (crowd); may be undefined / empty
  int64_t size() const { return boxes.defined() ? boxes.size(0) : 0; }
};

using LossList = std::vector<std::pair<std::string, Var>>;

// Sum of all losses (a Var with graph); throws on an empty list.
inline Var total_loss(const LossList& l) {
  KDET_CHECK(!l.empty(), "total_loss: empty loss list");
  Var t = l[0].second;
  for (size_t i = 1; i < l.size(); ++i) t = t + l[i].second;
  return t;
}

// Looks a loss up by its log name; throws naming the available ones when missing.
inline const Var& find_loss(const LossList& l, const std::string& name) {
  std::string have;
  for (auto& [n, v] : l) {
    if (n == name) return v;
    have += (have.empty() ? "" : ", ") + n;
  }
  KDET_FAIL("find_loss: no loss named '", name, "' (have: ", have, ")");
}

}  // namespace kdet
