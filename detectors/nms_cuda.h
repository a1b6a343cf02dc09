// detectors/nms_cuda.h — CUDA kernel of detectors/nms.cpp (plain C++ declaration).
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// boxes: f32 [n, 4] contiguous, already sorted by descending score. mask: i64 [n, ceil(n/64)] (bit patterns
// of uint64 words) with bit j of row i set when j > i and IoU(i, j) > thr, computed with nms.cpp's float
// formula (no FMA contraction), so the greedy scan over it keeps exactly the CPU's boxes.
void nms_mask(const Tensor& sorted_boxes, float thr, Tensor& mask);

}  // namespace kdet::cuda
