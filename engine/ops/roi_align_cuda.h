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
// Backward as a gather, built on the host from the same samples: the contributions to pixel p of image n
// are entries off[n·HW + p] .. off[n·HW + p + 1] (i64 [N·HW + 1]), each (RoI roi[e], bin bin[e], corner
// weight w[e]) (i64, i64, feat's dtype [E]), listed in the order the CPU's scatter adds them (RoIs of the
// image in input order, bins, samples, corners), and count [K] the RoIs' divisors.
struct RoIBackwardMap {
  Tensor off, roi, bin, w, count;
};
// gx [N, C, H, W]: one thread per element summing g[roi, c, bin] · w / count over its entries in order, the
// CPU's sum bit for bit; no atomics.
void roi_align_backward(const Tensor& g, const RoIBackwardMap& m, int64_t PHW, Tensor& gx);

}  // namespace kdet::cuda
