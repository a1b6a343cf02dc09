// engine/cuda/launch.cuh — kernel helpers shared by the backend's .cu files.
//
//   KDET_GRID_STRIDE(i, n)    grid-stride loop over [0, n) with 64-bit indices (every kernel uses it, so
//                             any grid size is correct; grid_for() only picks a sensible one).
//   OffsetCalc<K>             element offsets of K strided operands from a linear index over a shape
//                             (dims merged first with engine/tensor_iter.h's coalesce; at most kMaxDims).
//   block_sum / BlockReduce   fixed-shape tree reductions in shared memory: deterministic for a given
//                             block size (kThreads), independent of the GPU and of timing.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>

#include "engine/cuda/context.h"
#include "engine/tensor.h"

namespace kdet::cuda {

constexpr int kThreads = 256;  // block size of every elementwise / reduction kernel (a power of two)
constexpr int kMaxDims = 8;    // dims left after merging contiguous runs

#define KDET_GRID_STRIDE(i, n)                                                  \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; \
       i < static_cast<int64_t>(n); i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Blocks for n elements at kThreads per block (at least 1, capped: the loops are grid-stride).
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(b, 1, int64_t(1) << 20));
}

template <int K>
struct OffsetCalc {
  int nd = 1;
  int64_t size[kMaxDims];
  int64_t stride[K][kMaxDims];

  __device__ void get(int64_t lin, int64_t* off) const {
#pragma unroll
    for (int k = 0; k < K; ++k) off[k] = 0;
    for (int d = nd - 1; d >= 0; --d) {
      const int64_t c = lin % size[d];
      lin /= size[d];
#pragma unroll
      for (int k = 0; k < K; ++k) off[k] += c * stride[k][d];
    }
  }
};

// Host: the offset calculator of K operands with element strides *strides[k] over `shape`.
template <int K>
OffsetCalc<K> make_offset_calc(const Shape& shape, const std::array<const Shape*, K>& strides, const char* op) {
  auto L = detail::coalesce<K>(shape, strides);
  KDET_CHECK(static_cast<int>(L.shape.size()) <= kMaxDims, op, " (cuda): iteration over ", shape, " has ",
             L.shape.size(), " non-mergeable dims, more than the ", kMaxDims, " supported");
  OffsetCalc<K> c;
  c.nd = static_cast<int>(L.shape.size());
  for (int d = 0; d < kMaxDims; ++d) {
    c.size[d] = d < c.nd ? L.shape[d] : 1;
    for (int k = 0; k < K; ++k) c.stride[k][d] = d < c.nd ? L.strides[k][d] : 0;
  }
  return c;
}

// Strides of t broadcast to `shape` (0 on broadcast dims and on leading dims t lacks).
inline Shape broadcast_strides_to(const Tensor& t, const Shape& shape) {
  Shape st(shape.size(), 0);
  const int lead = shape.ndim() - t.ndim();
  for (int i = 0; i < t.ndim(); ++i)
    st[lead + i] = (t.shape()[i] == 1 && shape[lead + i] != 1) ? 0 : t.strides()[i];
  return st;
}

// Sum of v over the block (blockDim.x == kThreads), identical on every thread; sh holds kThreads
// doubles. Fixed tree order, so the result depends only on the inputs.
__device__ inline double block_sum(double v, double* sh) {
  const int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

// Ceil division for non-negative a and positive b.
__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace kdet::cuda
