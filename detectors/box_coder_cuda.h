// detectors/box_coder_cuda.h — CUDA kernels of detectors/box_coder.cpp (plain C++ declarations).
// Same formulas as the CPU (DeltaXYWHBBoxCoder); priors / gt / deltas contiguous, outputs preallocated.
#pragma once
#include <array>

#include "engine/tensor.h"

namespace kdet::cuda {

// f32: priors [n, sp >= 4], gt [n, sg >= 4] -> out [n, 4].
void delta_encode(const Tensor& priors, const Tensor& gt, const std::array<double, 4>& means,
                  const std::array<double, 4>& stds, Tensor& out);
// f32: priors [n, sp], deltas [n, 4C] -> out [n, 4C]; clip to x in [0, W], y in [0, H] when `clip`.
void delta_decode(const Tensor& priors, const Tensor& deltas, const std::array<double, 4>& means,
                  const std::array<double, 4>& stds, double max_ratio, bool clip, float H, float W, Tensor& out);
// decode_var (f32/f64): priors [n, sp], deltas [n, 4] -> out [n, 4] and the local derivatives jac [n, 4].
void delta_decode_jac(const Tensor& priors, const Tensor& deltas, const std::array<double, 4>& means,
                      const std::array<double, 4>& stds, double max_ratio, Tensor& out, Tensor& jac);
// gradient of decode_var: gd [n, 4] from g [n, 4] and jac.
void delta_decode_backward(const Tensor& g, const Tensor& jac, Tensor& gd);

}  // namespace kdet::cuda
