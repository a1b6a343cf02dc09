// tests/cuda/cuda_test_util.h — helpers shared by the [cuda] test files (include only in a KDET_CUDA=1 build,
// i.e. under the test file's own `#if KDET_CUDA`).
//   KDET_REQUIRE_GPU()   at the top of a case: reports "no CUDA device: skipped (why)" and returns without a GPU
//   bitwise_equal(a, b)  same shape, dtype and bytes (either may live on the GPU)
#pragma once
#include <doctest/doctest.h>

#include <cstring>

#include "engine/cuda/cuda_backend.h"
#include "engine/tensor.h"

namespace kdet::test {

inline const Device kGpu = Device::cuda(0);

// Reports the skip and returns false when no GPU is usable.
inline bool gpu_or_skip() {
  if (cuda::gpu_available()) return true;
  MESSAGE("no CUDA device: skipped (" << cuda::device_status() << ")");
  return false;
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ha = a.to(Device::cpu()).contiguous(), hb = b.to(Device::cpu()).contiguous();
  return std::memcmp(ha.raw_data(), hb.raw_data(), ha.nbytes()) == 0;
}

}  // namespace kdet::test

#define KDET_REQUIRE_GPU() \
  if (!::kdet::test::gpu_or_skip()) return
