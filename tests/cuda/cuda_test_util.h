// tests/cuda/cuda_test_util.h — helpers shared by the [cuda] test files (include only in a KDET_CUDA=1 build,
// i.e. under the test file's own `#if KDET_CUDA`).
//   KDET_REQUIRE_GPU()   at the top of a case: reports "no CUDA device: skipped (why)" and returns without a GPU
//   bitwise_equal(a, b)  same shape, dtype and bytes (either may live on the GPU)
//   check_vs_cpu(gpu, cpu, rel, what)  gpu on kGpu and |gpu − cpu| <= rel·(|cpu| + max|cpu|) elementwise
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "engine/cuda/cuda_backend.h"
#include "engine/tensor.h"
#include "tests/gradcheck.h"

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

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

// A GPU result against the CPU reference, tolerances scaled by the reference's largest magnitude (both or
// neither defined).
inline void check_vs_cpu(const Tensor& gpu, const Tensor& cpu, double rel, const std::string& what) {
  REQUIRE_MESSAGE(gpu.defined() == cpu.defined(), what << ": defined on one device only");
  if (!cpu.defined()) return;
  CHECK_MESSAGE(gpu.device() == kGpu, what << ": result on " << gpu.device());
  check_close(gpu, cpu, rel, rel * std::max(max_abs(cpu), 1e-30), what);
}

}  // namespace kdet::test

#define KDET_REQUIRE_GPU() \
  if (!::kdet::test::gpu_or_skip()) return
