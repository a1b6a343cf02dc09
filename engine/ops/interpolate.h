// engine/ops/interpolate.h — spatial resize of NCHW tensors (torch.nn.functional.interpolate semantics).
//
//   interpolate_nearest(x, H', W'): torch mode='nearest' with an explicit output size:
//     src = min(floor(dst * (float)in / out), in - 1) (scale computed in float, as torch does; out == in
//     copies, out == 2*in uses dst >> 1). Backward scatters (sums) each output gradient into its source.
//   interpolate_bilinear(x, H', W', align_corners): torch mode='bilinear'.
//     align_corners=false: src = max(0, (dst + 0.5) * in/out - 0.5); true: src = dst * (in-1)/(out-1).
//     Backward: the transposed weights, accumulated per (n, c) plane (deterministic).
#pragma once
#include "engine/autograd.h"

namespace kdet {

namespace ops {
Tensor interpolate_nearest(const Tensor& x, int64_t out_h, int64_t out_w);
Tensor interpolate_bilinear(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners = false);
}  // namespace ops

Var interpolate_nearest(const Var& x, int64_t out_h, int64_t out_w);
Var interpolate_bilinear(const Var& x, int64_t out_h, int64_t out_w, bool align_corners = false);

}  // namespace kdet
