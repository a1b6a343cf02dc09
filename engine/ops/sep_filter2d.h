// engine/ops/sep_filter2d.h — depthwise 2-D filtering with a separable symmetric window, zero "same" padding.
//
//   y[n, c] = x[n, c] ∗ outer(g, g)      x [N, C, H, W], g of odd length w, symmetric (g[j] = g[w−1−j])
//   == conv2d(x, outer(g,g) per channel, pad ⌊w/2⌋, groups C) (torch.nn.functional.conv2d), computed as a
//   row pass then a column pass: O(w) per element instead of O(w²). Planes run in parallel (static
//   schedule, deterministic). Backward: the same filter applied to dy (the window is symmetric, so
//   correlation and convolution coincide). Used for the Gaussian windows of SSIM (kd_losses.md §5).
//   f32 and f64, CPU. Op name "sep_filter2d".
#pragma once
#include <vector>

#include "engine/autograd.h"

namespace kdet {

namespace ops {
Tensor sep_filter2d(const Tensor& x, const std::vector<double>& g);
}  // namespace ops

Var sep_filter2d(const Var& x, const std::vector<double>& g);

namespace cpu {
// Scratch elements sep_filter_plane needs for an H×W plane and a window of length w.
inline int64_t sep_filter_scratch(int64_t H, int64_t W, int64_t w) { return H * W + W + w; }
// out [H, W] = in [H, W] filtered (contiguous planes, in != out); g has w (odd) taps.
template <class T>
void sep_filter_plane(const T* in, T* out, int64_t H, int64_t W, const T* g, int64_t w, T* scratch);
}  // namespace cpu

}  // namespace kdet
