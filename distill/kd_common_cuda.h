// distill/kd_common_cuda.h — CUDA kernels of the fused KD ops of distill/kd_common.cpp (plain C++ declarations;
// implemented in distill/kd_common_cuda.cu, compiled only with the CUDA backend). Operands on one CUDA device,
// shapes already checked by kd_common.cpp; outputs preallocated. Sums are in double, in a fixed order (block
// tree reductions of a fixed shape, channel loops in channel order), so results are bit-identical run to run;
// they agree with the CPU's (which sums in other fixed orders) to rounding.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace kdet::kd {

// Σ w·w2·(a − b)² geometry (kd_sq_dist_sum): a, b and the weights viewed as [N, C, L]; weight k's element of
// (n, c, p) is at n·wn[k] + c·wc[k] + p·wp[k]; nw weights (0, 1 or 2). Shared by the CPU and CUDA kernels.
struct SqGeom {
  int64_t N, C, L, wn[2] = {0, 0}, wc[2] = {0, 0}, wp[2] = {0, 0};
  int nw = 0;
};

}  // namespace kdet::kd

namespace kdet::cuda {

// Plane means of f contiguous [N, C, HW], each written where its pointer tensor is defined:
//   asp [N, HW] = mean_c |f|,  ach [N, C] = mean_hw |f|,  ssp [N, HW] = mean_c f,  sch [N, C] = mean_hw f.
// Outputs are 2-D views [N, X] with unit element stride (any row stride: slices of a packed tensor).
void kd_plane_stats(const Tensor& f, Tensor& asp, Tensor& ach, Tensor& ssp, Tensor& sch);
// dx [N, C, HW] = sign(f)·g/n: g [N, HW] broadcast over channels (over_c, n = C) or [N, C] over the plane (n = HW).
void kd_abs_mean_backward(const Tensor& f, const Tensor& g, bool over_c, Tensor& dx);
// dx [N, C, HW] = g[n, c]/HW + g[n, C + p]/C from the packed gradient g [N, C + HW] of kd_signed_means.
void kd_signed_means_backward(const Tensor& g, Tensor& dx);
// sums f64 [N + 1]: Σ w·w2·(a − b)² per image (n < N), then their sum in image order (element N).
// w[k] undefined for k >= g.nw.
void kd_sq_dist(const Tensor& a, const Tensor& b, const Tensor& w0, const Tensor& w1, const kd::SqGeom& g,
                Tensor& sums);
// da = 2·gs[n]·w·w2·(a − b), db = −da (each where defined); gs f64 [N] on the device.
void kd_sq_dist_backward(const Tensor& a, const Tensor& b, const Tensor& w0, const Tensor& w1, const kd::SqGeom& g,
                         const Tensor& gs, Tensor& da, Tensor& db);

}  // namespace kdet::cuda
