// engine/ops/index_ops_cuda.h — CUDA kernels of engine/ops/index_ops.cpp (plain C++ declarations).
// Index tensors are i64, contiguous, on the device, and already range-checked by index_ops.cpp
// (negative values count from the end). Accumulating kernels are deterministic without atomics.
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// x contiguous viewed as [O, N, I]; out [O, K, I] = x[o, idx[k], i]. Any dtype.
void index_select(const Tensor& x, const Tensor& idx, int64_t O, int64_t N, int64_t I, Tensor& out);
// out contiguous [O, N, I] (a copy of the base): out[o, idx[k], i] (+)= src[o, k, i], src contiguous
// [O, K, I]. unique: idx has no repeated position, so every (o, k, i) is one thread; otherwise one
// thread per (o, i) walks k in order (repeats are added / overwritten in index order, as the CPU).
void index_write(const Tensor& src, const Tensor& idx, int64_t O, int64_t N, int64_t I, bool add, bool unique,
                 Tensor& out);
// out (contiguous, idx's shape)[p] = x[p with coordinate dim replaced by idx[p]]; x any strides.
void gather(const Tensor& x, int dim, const Tensor& idx, Tensor& out);
// out contiguous (a copy of the base): out[p with dim replaced by idx[p]] += src[p] for p in idx's
// shape. One thread per fiber along dim (all other coordinates fixed) adding in index order: fibers
// never share an output element, so no atomics are needed and the order is the CPU's.
void scatter_add(const Tensor& src, int dim, const Tensor& idx, Tensor& out);

}  // namespace kdet::cuda
