// detectors/iou.h — mmdet bbox_overlaps (specs/detectors.md 4.1), f32 CPU.
//
//   bbox_overlaps(a [N,4+], b [M,4+], mode) -> f32 [N, M]
//   mode "iou": overlap / max(area_a + area_b - overlap, eps); "iof": overlap / max(area_a, eps);
//   "giou": IoU - (enclose - union) / max(enclose, eps). Only the first 4 columns are used.
//   Arithmetic follows mmdet's order of float32 operations, so results are bit-identical to it.
#pragma once
#include <string>

#include "engine/tensor.h"

namespace kdet {

enum class IouMode { IoU, IoF, GIoU };
IouMode iou_mode(const std::string& s);  // "iou" | "iof" | "giou"

Tensor bbox_overlaps(const Tensor& a, const Tensor& b, IouMode mode = IouMode::IoU, double eps = 1e-6);

}  // namespace kdet
