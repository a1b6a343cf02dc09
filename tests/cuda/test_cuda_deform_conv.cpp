// tests/cuda/test_cuda_deform_conv.cpp — deformable convolution v1 / v2 on CUDA (engine/ops/deform_conv_cuda.cu)
// against the CPU kernels ([cuda] tests, issue 10).
//
// Every case runs the forward and every gradient (input, offset, mask, weight, bias) on the CPU (the reference)
// and on CUDA copies of the same inputs, f32 and f64, v1 and v2, with groups, deform groups, stride, padding,
// dilation and non-square kernels; offsets N(0, 2²) px so that many samples fall partly or wholly outside the
// map. Tolerances are relative to the largest reference magnitude of each tensor (f32 1e-4 forward, 2e-4
// gradients; f64 1e-10). The CUDA kernels are deterministic (sorted col2im, no atomics): repeated runs must be
// bit-identical. Without a GPU each case reports "no CUDA device: skipped (...)" and returns; in a build without
// the backend this file has no cases (tests/cuda/test_cuda_ops.cpp reports that once).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/ops/conv2d.h"
#include "engine/ops/deform_conv.h"
#include "engine/functional.h"
#include "engine/random.h"
#include "tests/gradcheck.h"

#if KDET_CUDA
#include "engine/cuda/cuda_backend.h"
#include "engine/ops/deform_conv_cuda.h"
#include "tests/cuda/cuda_test_util.h"

using namespace kdet;
using namespace kdet::test;

namespace {

struct Case {
  const char* name;
  Shape x, w;
  DeformConvArgs a;
  bool mask, bias;
};

DeformConvArgs args(std::array<int64_t, 2> s, std::array<int64_t, 2> p, std::array<int64_t, 2> d, int64_t groups,
                    int64_t dg) {
  DeformConvArgs a;
  a.stride = s, a.padding = p, a.dilation = d, a.groups = groups, a.deform_groups = dg;
  return a;
}

const Case kCases[] = {
    {"v1 3x3 pad 1", {2, 4, 9, 11}, {6, 4, 3, 3}, DeformConvArgs::make(1, 1), false, true},
    {"v2 3x3 pad 1", {2, 4, 9, 11}, {6, 4, 3, 3}, DeformConvArgs::make(1, 1), true, true},
    {"v1 groups 2, deform groups 2", {2, 6, 8, 7}, {4, 3, 3, 3}, args({1, 1}, {1, 1}, {1, 1}, 2, 2), false, false},
    {"v2 groups 3, deform groups 2, stride 2", {1, 6, 10, 9}, {9, 2, 3, 3}, args({2, 2}, {1, 1}, {1, 1}, 3, 2), true,
     true},
    {"v2 deform groups 4, dilation 2", {2, 4, 9, 9}, {5, 4, 3, 3}, args({1, 1}, {2, 2}, {2, 2}, 1, 4), true, false},
    {"v1 2x3 kernel, stride 2x1, pad 0x1", {1, 3, 8, 10}, {4, 3, 2, 3}, args({2, 1}, {0, 1}, {1, 1}, 1, 1), false,
     true},
    {"v2 1x1 kernel, depthwise", {2, 4, 5, 6}, {4, 1, 1, 1}, args({1, 1}, {0, 0}, {1, 1}, 4, 4), true, true},
    {"v2 input smaller than the kernel", {1, 2, 2, 3}, {3, 2, 3, 3}, DeformConvArgs::make(1, 1), true, false},
};

struct Inputs {
  Tensor x, off, mask, w, b, gy;
};

// Output size of a case (without the offset check).
std::array<int64_t, 2> out_hw(const Case& c) {
  const int64_t eh = c.a.dilation[0] * (c.w[2] - 1) + 1, ew = c.a.dilation[1] * (c.w[3] - 1) + 1;
  return {(c.x[2] + 2 * c.a.padding[0] - eh) / c.a.stride[0] + 1, (c.x[3] + 2 * c.a.padding[1] - ew) / c.a.stride[1] + 1};
}

Inputs inputs(const Case& c, DType dt, uint64_t seed) {
  Generator g(seed);
  const auto [ho, wo] = out_hw(c);
  const int64_t kk = c.w[2] * c.w[3], dg = c.a.deform_groups, n = c.x[0];
  Inputs in;
  in.x = rand_normal(c.x, g, 0, 1, dt);
  in.w = rand_normal(c.w, g, 0, 0.3, dt);
  in.off = rand_normal({n, 2 * dg * kk, ho, wo}, g, 0, 2, dt);
  if (c.mask) in.mask = rand_uniform({n, dg * kk, ho, wo}, g, 0, 1, dt);
  if (c.bias) in.b = rand_normal({c.w[0]}, g, 0, 1, dt);
  in.gy = rand_normal({n, c.w[0], ho, wo}, g, 0, 1, dt);
  return in;
}

Tensor gpu(const Tensor& t) { return t.defined() ? t.to(kGpu) : Tensor(); }

}  // namespace

TEST_CASE("[cuda] deform_conv2d forward and every gradient match the CPU (f32, f64; v1, v2; groups, deform groups)") {
  KDET_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType dt : {DType::F32, DType::F64}) {
    const double rf = dt == DType::F32 ? 1e-4 : 1e-10, rg = dt == DType::F32 ? 2e-4 : 1e-10;
    for (const Case& c : kCases) {
      const std::string what = std::string(c.name) + (dt == DType::F32 ? " f32" : " f64");
      const Inputs in = inputs(c, dt, seed++);
      const Tensor yc = ops::deform_conv2d(in.x, in.off, in.mask, in.w, in.b, c.a);
      const Tensor yg = ops::deform_conv2d(gpu(in.x), gpu(in.off), gpu(in.mask), gpu(in.w), gpu(in.b), c.a);
      check_vs_cpu(yg, yc, rf, what + ": forward");
      const auto dc = ops::deform_conv2d_backward(in.gy, in.x, in.off, in.mask, in.w, c.bias, c.a);
      const auto dgpu =
          ops::deform_conv2d_backward(gpu(in.gy), gpu(in.x), gpu(in.off), gpu(in.mask), gpu(in.w), c.bias, c.a);
      const char* names[5] = {"d input", "d offset", "d mask", "d weight", "d bias"};
      for (int i = 0; i < 5; ++i) check_vs_cpu(dgpu[i], dc[i], rg, what + ": " + names[i]);
      // Subsets of the gradients give the same values (the CUDA path skips the unneeded work).
      DeformConvNeeds only_x{true, false, false, false, false}, only_off{false, true, true, false, false};
      const auto gx = ops::deform_conv2d_backward(gpu(in.gy), gpu(in.x), gpu(in.off), gpu(in.mask), gpu(in.w),
                                                  c.bias, c.a, only_x);
      CHECK_FALSE(gx[1].defined());
      CHECK_FALSE(gx[3].defined());
      CHECK_MESSAGE(bitwise_equal(gx[0], dgpu[0]), what << ": d input alone differs from d input with the rest");
      const auto go = ops::deform_conv2d_backward(gpu(in.gy), gpu(in.x), gpu(in.off), gpu(in.mask), gpu(in.w),
                                                  c.bias, c.a, only_off);
      CHECK_FALSE(go[0].defined());
      CHECK_MESSAGE(bitwise_equal(go[1], dgpu[1]), what << ": d offset alone differs");
      if (c.mask) CHECK_MESSAGE(bitwise_equal(go[2], dgpu[2]), what << ": d mask alone differs");
    }
  }
}

TEST_CASE("[cuda] deform_conv2d: the differentiable op on CUDA Vars matches the CPU (all five gradients)") {
  KDET_REQUIRE_GPU();
  const Case& c = kCases[3];  // v2, groups 3, deform groups 2, stride 2, bias
  const Inputs in = inputs(c, DType::F32, 7);
  std::vector<Tensor> ts = {in.x, in.off, in.mask, in.w, in.b};
  std::vector<Var> vc, vg;
  for (const Tensor& t : ts) vc.emplace_back(t, true), vg.emplace_back(t.to(kGpu), true);
  Var yc = deform_conv2d(vc[0], vc[1], vc[2], vc[3], vc[4], c.a);
  Var yg = deform_conv2d(vg[0], vg[1], vg[2], vg[3], vg[4], c.a);
  REQUIRE(yg.device() == kGpu);
  check_vs_cpu(yg.data(), yc.data(), 1e-4, "Var forward");
  sum(yc * Var(in.gy)).backward();
  sum(yg * Var(in.gy.to(kGpu))).backward();
  for (size_t i = 0; i < ts.size(); ++i) {
    REQUIRE_MESSAGE(vg[i].grad().defined(), "no CUDA gradient for input " << i);
    check_vs_cpu(vg[i].grad(), vc[i].grad(), 2e-4, "Var gradient of input " + std::to_string(i));
  }
}

TEST_CASE("[cuda] deform_conv2d: bit-identical across runs and across image chunkings") {
  KDET_REQUIRE_GPU();
  // Large enough for many contributions per input pixel (offsets pile samples onto the same pixels).
  const Case c{"v2 dg 2", {4, 16, 20, 20}, {16, 16, 3, 3}, args({1, 1}, {1, 1}, {1, 1}, 1, 2), true, true};
  const Inputs in = inputs(c, DType::F32, 11);
  const Tensor x = gpu(in.x), off = gpu(in.off), m = gpu(in.mask), w = gpu(in.w), b = gpu(in.b), gy = gpu(in.gy);
  const Tensor y1 = ops::deform_conv2d(x, off, m, w, b, c.a), y2 = ops::deform_conv2d(x, off, m, w, b, c.a);
  CHECK(bitwise_equal(y1, y2));
  const auto d1 = ops::deform_conv2d_backward(gy, x, off, m, w, true, c.a);
  const auto d2 = ops::deform_conv2d_backward(gy, x, off, m, w, true, c.a);
  for (int i = 0; i < 5; ++i) CHECK_MESSAGE(bitwise_equal(d1[i], d2[i]), "gradient " << i << " differs run to run");
  // One image per chunk (tiny working-memory budget): forward, d input, d offset and d mask do not depend on
  // the chunking; d weight sums the same per-image products in the same order (GEMM batch sizes differ, so
  // compare with a tolerance).
  cuda::set_deform_conv2d_chunk_bytes(1);
  const Tensor y3 = ops::deform_conv2d(x, off, m, w, b, c.a);
  const auto d3 = ops::deform_conv2d_backward(gy, x, off, m, w, true, c.a);
  cuda::set_deform_conv2d_chunk_bytes(0);
  CHECK(bitwise_equal(y3, y1));
  for (int i = 0; i < 3; ++i) CHECK_MESSAGE(bitwise_equal(d3[i], d1[i]), "gradient " << i << " depends on chunking");
  check_vs_cpu(d3[3], d1[3].to(Device::cpu()), 1e-5, "d weight, one image per chunk");
  // And the CPU agrees.
  const auto dc = ops::deform_conv2d_backward(in.gy, in.x, in.off, in.mask, in.w, true, c.a);
  for (int i = 0; i < 5; ++i) check_vs_cpu(d1[i], dc[i], 2e-4, "gradient " + std::to_string(i) + " vs CPU");
  check_vs_cpu(y1, ops::deform_conv2d(in.x, in.off, in.mask, in.w, in.b, c.a), 1e-4, "forward vs CPU");
}

TEST_CASE("[cuda] deform_conv2d: zero offsets and unit mask equal conv2d; NaN offsets propagate like the CPU") {
  KDET_REQUIRE_GPU();
  Generator g(5);
  const Tensor x = rand_normal({2, 3, 7, 8}, g), w = rand_normal({4, 3, 3, 3}, g, 0, 0.3), b = rand_normal({4}, g);
  const Tensor off = Tensor::zeros({2, 18, 4, 4}), mask = Tensor::ones({2, 9, 4, 4});
  const DeformConvArgs a = DeformConvArgs::make(2, 1);
  const Tensor yd = ops::deform_conv2d(gpu(x), gpu(off), gpu(mask), gpu(w), gpu(b), a);
  const Tensor yc = ops::conv2d(gpu(x), gpu(w), gpu(b), Conv2dArgs::make(2, 1));
  check_vs_cpu(yd, yc.to(Device::cpu()), 1e-5, "zero-offset DCNv2 vs cuDNN conv2d");

  auto ov = Tensor::zeros({1, 18, 5, 5}).to_vector<float>();
  ov[4 * 25 + 7] = std::nanf("");  // tap 2, y offset, output pixel (1, 2)
  const Tensor offn = Tensor::from_vector(ov, {1, 18, 5, 5});
  const Tensor x1 = rand_normal({1, 2, 5, 5}, g), w1 = rand_normal({3, 2, 3, 3}, g);
  const auto y = ops::deform_conv2d(gpu(x1), gpu(offn), Tensor(), gpu(w1), Tensor(), DeformConvArgs::make(1, 1))
                     .to_vector<float>();
  const auto ycpu = ops::deform_conv2d(x1, offn, Tensor(), w1, Tensor(), DeformConvArgs::make(1, 1)).to_vector<float>();
  for (size_t i = 0; i < y.size(); ++i) CHECK(std::isnan(y[i]) == std::isnan(ycpu[i]));
  CHECK(std::isnan(y[7]));
  const auto d = ops::deform_conv2d_backward(gpu(Tensor::ones({1, 3, 5, 5})), gpu(x1), gpu(offn), Tensor(), gpu(w1),
                                             false, DeformConvArgs::make(1, 1));
  const auto dcpu = ops::deform_conv2d_backward(Tensor::ones({1, 3, 5, 5}), x1, offn, Tensor(), w1, false,
                                                DeformConvArgs::make(1, 1));
  for (int i : {0, 1, 3}) {
    const auto vg = d[i].to_vector<float>(), vc = dcpu[i].to_vector<float>();
    REQUIRE(vg.size() == vc.size());
    int64_t mism = 0, nans = 0;
    for (size_t j = 0; j < vg.size(); ++j) mism += std::isnan(vg[j]) != std::isnan(vc[j]), nans += std::isnan(vc[j]);
    CHECK_MESSAGE(mism == 0, "gradient " << i << ": NaN pattern differs from the CPU in " << mism << " elements");
    CHECK(nans > 0);
  }
}

TEST_CASE("[cuda] deform_conv2d: an empty batch gives empty outputs and zero weight gradient") {
  KDET_REQUIRE_GPU();
  const DeformConvArgs a = DeformConvArgs::make(1, 1);
  const Tensor x = Tensor::zeros({0, 2, 5, 5}, DType::F32, kGpu), off = Tensor::zeros({0, 18, 5, 5}, DType::F32, kGpu);
  const Tensor w = Tensor::ones({3, 2, 3, 3}, DType::F32, kGpu);
  const Tensor y = ops::deform_conv2d(x, off, Tensor(), w, Tensor(), a);
  CHECK(y.shape() == Shape{0, 3, 5, 5});
  const auto d = ops::deform_conv2d_backward(Tensor::zeros({0, 3, 5, 5}, DType::F32, kGpu), x, off, Tensor(), w,
                                             false, a);
  CHECK(d[0].shape() == x.shape());
  CHECK(d[1].shape() == off.shape());
  CHECK(max_abs(d[3]) == 0.0);
  CHECK(d[3].shape() == w.shape());
}

#endif  // KDET_CUDA
