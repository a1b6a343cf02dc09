// detectors/iou_cuda.h — CUDA kernel of detectors/iou.cpp (plain C++ declaration).
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// a [N, sa >= 4], b [M, sb >= 4] contiguous f32 -> out f32 [N, M]; mode 0 iou, 1 iof, 2 giou. The float
// operations are iou.cpp's, in the same order and without fused multiply-adds, so the results are
// bit-identical to the CPU.
void bbox_overlaps(const Tensor& a, const Tensor& b, int mode, float eps, Tensor& out);

}  // namespace kdet::cuda
