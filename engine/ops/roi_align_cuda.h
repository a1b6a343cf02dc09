// engine/ops/roi_align_cuda.h — CUDA kernels of engine/ops/roi_align.cpp (plain C++ declarations).
// roi_align.cpp computes every RoI's bilinear samples on the host with the CPU's own arithmetic and
// uploads them; these kernels only gather (forward) and scatter (backward) with those samples.
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// Samples: idx i64 [S, 4] (plane offsets of the 4 corners), w [S, 4] (their weights, feat's dtype).
// RoI k: roi i64 [K, 3] = (batch index, first sample, samples per bin), count [K] (divisor, feat's dtype);
// its bins' samples are consecutive, bin b's at first + b * per_bin.
struct RoISamples {
  Tensor idx, w, roi, count;
};

// out [K, C, PHW] (contiguous): one thread per output element, samples summed in the CPU's order.
void roi_align_forward(const Tensor& feat, const RoISamples& s, int64_t PHW, Tensor& out);
// gx [N, C, H, W] (zero-filled): one thread per (image, channel) plane adding the RoIs of its image in
// the order given by order[ranges[n] .. ranges[n+1]) (input order), like the CPU: no atomics.
void roi_align_backward(const Tensor& g, const RoISamples& s, const Tensor& order, const Tensor& ranges, int64_t PHW,
                        Tensor& gx);

}  // namespace kdet::cuda
