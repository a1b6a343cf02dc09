// tests/cuda/test_cuda_ops.cpp — the CUDA backend against the CPU kernels ([cuda] tests, issue 6).
//
// Every op runs on random inputs on the CPU (the reference) and on CUDA copies of the same inputs; the
// outputs and the gradients of Σ out ⊙ r (fixed random r) must agree within per-op f32 tolerances.
// Integer / bool / index results must agree exactly. Deterministic kernels are also run twice and must
// agree bit for bit. Without a GPU (cudaGetDeviceCount fails or finds none) each test reports
// "no CUDA device: skipped" and returns; in a build without the backend a single case says so.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/functional.h"
#include "engine/ops/masked_conv2d.h"
#include "engine/ops/roi_align.h"
#include "engine/ops/sep_filter2d.h"
#include "engine/optim.h"
#include "tests/gradcheck.h"

#if KDET_CUDA
#include "bench/random_batch.h"
#include "detectors/box_coder.h"
#include "detectors/iou.h"
#include "detectors/nms.h"
#include "detectors/retinanet.h"
#include "distill/loss_fitnet.h"
#include "distill/loss_mgd.h"
#include "engine/cuda/cuda_backend.h"
#include "tests/cuda/cuda_test_util.h"
#endif

using namespace kdet;
using namespace kdet::test;

#if !KDET_CUDA

TEST_CASE("[cuda] CUDA backend: not built") {
  MESSAGE(
      "this build has no CUDA backend (make CUDA=1, or `make test` on a machine with nvcc, cuDNN and cuBLAS "
      "builds it as the CUDA build check): [cuda] tests not compiled");
  CHECK_FALSE(cuda_built());
  CHECK(cuda_device_count() == 0);
}

#else

namespace {

// f32 random tensor in [lo, hi).
Tensor rndf(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator g(seed);
  return rand_uniform(s, g, lo, hi, DType::F32);
}

void check_equal(const Tensor& gpu, const Tensor& cpu, const std::string& what) {
  CHECK_MESSAGE(gpu.device() == kGpu, what << ": result on " << gpu.device());
  check_close(gpu, cpu, 0.0, 0.0, what);
}

struct Tol {
  double rtol = 1e-5, atol = 1e-6;    // forward
  double grtol = 1e-4, gatol = 1e-5;  // gradients
};

// Runs fn on CPU Vars and on CUDA copies of the same inputs; compares the outputs and the gradients of
// Σ out ⊙ r with respect to every floating input.
void compare_op(const std::string& what, const std::function<Var(const std::vector<Var>&)>& fn,
                const std::vector<Tensor>& inputs, Tol tol = {}, uint64_t seed = 7) {
  std::vector<Var> vc, vg;
  for (const Tensor& t : inputs) {
    const bool rg = is_floating(t.dtype());
    vc.emplace_back(t, rg);
    vg.emplace_back(t.to(kGpu), rg);
  }
  Var yc = fn(vc), yg = fn(vg);
  REQUIRE_MESSAGE(yg.device() == kGpu, what << ": output on " << yg.device());
  check_close(yg.data(), yc.data(), tol.rtol, tol.atol, what + " (forward)");
  if (!yc.requires_grad()) return;
  Generator g(seed);
  const Tensor r = rand_uniform(yc.shape(), g, -1.0, 1.0, yc.dtype());
  sum(yc * Var(r)).backward();
  sum(yg * Var(r.to(kGpu))).backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!vc[i].requires_grad() || !vc[i].grad().defined()) continue;
    REQUIRE_MESSAGE(vg[i].grad().defined(), what << ": no CUDA gradient for input " << i);
    CHECK_MESSAGE(vg[i].grad().device() == kGpu, what << ": gradient on " << vg[i].grad().device());
    check_close(vg[i].grad(), vc[i].grad(), tol.grtol, tol.gatol,
                what + " (gradient of input " + std::to_string(i) + ")");
  }
}

}  // namespace

TEST_CASE("[cuda] device query never aborts; CUDA tensors without a GPU throw a clear error") {
  const int n = cuda::device_count();
  CHECK(n >= 0);
  CHECK(cuda::gpu_available() == (n > 0));
  CHECK(cuda_device_count() == n);
  CHECK(cuda_built());
  CHECK_FALSE(cuda::device_status().empty());
  if (n == 0) {
    MESSAGE("no CUDA device (" << cuda::device_status() << "): checking the error path only");
    CHECK_THROWS_WITH_AS(Tensor::empty({2}, DType::F32, kGpu), doctest::Contains("no CUDA device"), Error);
    CHECK_THROWS_AS(Tensor::ones({3}).to(kGpu), Error);
    return;
  }
  CHECK_THROWS_WITH_AS(Tensor::empty({2}, DType::F32, Device::cuda(n)), doctest::Contains("does not exist"), Error);
}

TEST_CASE("[cuda] caching allocator: size classes, reuse, current/peak stats") {
  KDET_REQUIRE_GPU();
  cuda::synchronize();
  // Start from an empty cache: blocks of the 4096 B / 4 MiB classes left by earlier [cuda] cases would
  // serve a and b below, and the cached-bytes check after their release would then fail.
  cuda::release_cache();
  const AllocStats s0 = alloc_stats(kGpu);
  {
    Tensor a = Tensor::empty({1000}, DType::F32, kGpu);     // 4000 B -> one 4096 B class
    Tensor b = Tensor::empty({1 << 20}, DType::F32, kGpu);  // 4 MiB
    const AllocStats s1 = alloc_stats(kGpu);
    CHECK(s1.current_bytes - s0.current_bytes == 4096 + (4 << 20));
    CHECK(s1.peak_bytes >= s1.current_bytes);
    CHECK(s1.allocs - s0.allocs == 2);
  }
  const AllocStats s2 = alloc_stats(kGpu);
  CHECK(s2.current_bytes == s0.current_bytes);
  CHECK(s2.cached_bytes >= s0.cached_bytes + 4096 + (4 << 20));
  {
    Tensor c = Tensor::empty({1 << 20}, DType::F32, kGpu);  // same class: served from the cache
    const AllocStats s3 = alloc_stats(kGpu);
    CHECK(s3.cache_hits > s2.cache_hits);
  }
  alloc_reset_peak(kGpu);
  CHECK(alloc_stats(kGpu).peak_bytes == alloc_stats(kGpu).current_bytes);
  cuda::release_cache();
  CHECK(alloc_stats(kGpu).cached_bytes == 0);
}

TEST_CASE("[cuda] copies: to(Device) every dtype, strided copy_, fill_, dtype conversion, pinned upload") {
  KDET_REQUIRE_GPU();
  const Tensor f = rndf({3, 5, 7}, 1);
  CHECK(bitwise_equal(f.to(kGpu).to(Device::cpu()), f));
  const Tensor d = rnd({4, 3}, 2);
  CHECK(bitwise_equal(d.to(kGpu).to(Device::cpu()), d));
  const Tensor i = Tensor::arange(17);
  CHECK(bitwise_equal(i.to(kGpu).to(Device::cpu()), i));
  const Tensor u = Tensor::from_vector(std::vector<uint8_t>{0, 7, 255, 3}, {4});
  CHECK(bitwise_equal(u.to(kGpu).to(Device::cpu()), u));
  const Tensor bl = ops::gt_scalar(Tensor::arange(5), 2.0);
  CHECK(bitwise_equal(bl.to(kGpu).to(Device::cpu()), bl));
  // strided views: permute, slice with step, expand
  const Tensor g = f.to(kGpu);
  check_equal(g.permute({2, 0, 1}).contiguous(), f.permute({2, 0, 1}).contiguous(), "permute().contiguous()");
  check_equal(g.slice(2, 1, 7, 2).contiguous(), f.slice(2, 1, 7, 2).contiguous(), "slice step 2");
  check_equal(g.slice(0, 1, 2).expand({4, 1, 5, 7}).contiguous(), f.slice(0, 1, 2).expand({4, 1, 5, 7}).contiguous(),
              "expand");
  // copy_ into a strided destination with broadcasting and dtype conversion
  Tensor dst_c = Tensor::zeros({5, 7}, DType::F64), dst_g = Tensor::zeros({5, 7}, DType::F64, kGpu);
  dst_c.transpose(0, 1).copy_(f.select(0, 1).transpose(0, 1));
  dst_g.transpose(0, 1).copy_(g.select(0, 1).transpose(0, 1));
  check_equal(dst_g, dst_c, "copy_ transposed f32 -> f64");
  check_equal(g.to(DType::I64), f.to(DType::I64), "f32 -> i64");
  check_equal(g.to(DType::Bool), f.to(DType::Bool), "f32 -> bool");
  Tensor fill_c = Tensor::zeros({6, 4}), fill_g = Tensor::zeros({6, 4}, DType::F32, kGpu);
  fill_c.slice(1, 1, 3).fill_(2.5);
  fill_g.slice(1, 1, 3).fill_(2.5);
  check_equal(fill_g, fill_c, "fill_ on a slice");
  CHECK(Tensor::full({2, 2}, -3.0, DType::F32, kGpu).to_vector<float>() == std::vector<float>(4, -3.0f));
  // pinned staging buffer, reused for a second (larger) upload
  cuda::PinnedBuffer buf;
  const Tensor up1 = cuda::upload_async(f, kGpu, buf);
  const Tensor up2 = cuda::upload_async(d, kGpu, buf);
  CHECK(bitwise_equal(up1, f));
  CHECK(bitwise_equal(up2, d));
  CHECK(buf.size() >= d.nbytes());
}

TEST_CASE("[cuda] elementwise: broadcasting add/sub/mul/div (f32, f64, i64, u8), axpy_, sum_to") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tensor a = rndf({4, 1, 6}, 1), b = rndf({3, 1}, 2, 0.5, 2.0), c = rndf({4, 3, 6}, 3);
  compare_op("add", [](const V& v) { return v[0] + v[1]; }, {a, b});
  compare_op("sub", [](const V& v) { return v[0] - v[1]; }, {c, a});
  compare_op("mul", [](const V& v) { return v[0] * v[1]; }, {a, b});
  compare_op("div", [](const V& v) { return v[0] / v[1]; }, {c, b});
  compare_op("scalar ops", [](const V& v) { return (v[0] * 2.5 + 1.0) - v[0] / 3.0; }, {c});
  compare_op("f64 mul", [](const V& v) { return v[0] * v[1]; }, {rnd({5, 4}, 4), rnd({4}, 5)},
             {1e-14, 1e-14, 1e-13, 1e-13});
  const Tensor ia = Tensor::arange(12).view({3, 4}), ib = ops::add_scalar(Tensor::arange(4), 1.0);
  check_equal(ops::div(ia.to(kGpu), ib.to(kGpu)), ops::div(ia, ib), "i64 div");
  check_equal(ops::mul(ia.to(kGpu), ib.to(kGpu)), ops::mul(ia, ib), "i64 mul");
  const Tensor ua = ia.to(DType::U8), ub = ib.to(DType::U8);
  check_equal(ops::add(ua.to(kGpu), ub.to(kGpu)), ops::add(ua, ub), "u8 add");
  Tensor yc = rndf({1000}, 6), yg = yc.to(kGpu);
  const Tensor x = rndf({1000}, 7);
  ops::axpy_(yc, x, -0.3);
  ops::axpy_(yg, x.to(kGpu), -0.3);
  check_close(yg, yc, 1e-6, 1e-7, "axpy_");
  check_close(ops::sum_to(c.to(kGpu), {3, 1}), ops::sum_to(c, {3, 1}), 1e-5, 1e-5, "sum_to");
  check_close(ops::sum_to(c.to(kGpu), {6}), ops::sum_to(c, {6}), 1e-5, 1e-5, "sum_to leading dims");
}

TEST_CASE("[cuda] unary ops with their gradients, where, clamp") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tensor x = rndf({7, 33}, 11, -3.0, 3.0), pos = rndf({7, 33}, 12, 0.1, 4.0);
  compare_op("abs", [](const V& v) { return abs(v[0]); }, {x});
  compare_op("exp", [](const V& v) { return exp(v[0]); }, {x}, {2e-6, 1e-6, 2e-5, 1e-5});
  compare_op("log", [](const V& v) { return log(v[0]); }, {pos}, {2e-6, 1e-6, 2e-5, 1e-5});
  compare_op("sqrt", [](const V& v) { return sqrt(v[0]); }, {pos});
  compare_op("pow 2", [](const V& v) { return pow(v[0], 2.0); }, {x});
  compare_op("pow 1.7", [](const V& v) { return pow(v[0], 1.7); }, {pos}, {5e-6, 1e-6, 5e-5, 1e-5});
  compare_op("pow 0.5", [](const V& v) { return pow(v[0], 0.5); }, {pos});
  compare_op("clamp", [](const V& v) { return clamp(v[0], -1.0, 2.0); }, {x});
  compare_op("clamp_min", [](const V& v) { return clamp_min(v[0], 0.3); }, {x});
  compare_op("clamp_max", [](const V& v) { return clamp_max(v[0], -0.2); }, {x});
  compare_op("sigmoid", [](const V& v) { return sigmoid(v[0]); }, {rndf({5, 40}, 13, -30.0, 30.0)},
             {2e-6, 1e-7, 2e-5, 1e-6});
  compare_op("relu", [](const V& v) { return relu(v[0]); }, {x});
  compare_op("tanh", [](const V& v) { return tanh(v[0]); }, {x}, {2e-6, 1e-6, 2e-5, 1e-5});
  check_equal(ops::sign(x.to(kGpu)), ops::sign(x), "sign");
  const Tensor cond = ops::gt_scalar(rndf({7, 1}, 14), 0.0);
  compare_op("where", [&](const V& v) { return where(cond.to(v[0].device()), v[0], v[1]); }, {x, rndf({33}, 15)});
  compare_op("where scalar", [&](const V& v) { return where(cond.to(v[0].device()), v[0], -4.0); }, {x});
  const Tensor ai = Tensor::arange(33), bi = Tensor::full({7, 33}, -1.0, DType::I64);
  check_equal(ops::where(cond.to(kGpu), ai.to(kGpu), bi.to(kGpu)), ops::where(cond, ai, bi), "where i64");
}

TEST_CASE("[cuda] comparisons, logical ops, count_nonzero, argmax/argmin, nonzero, argsort, topk") {
  KDET_REQUIRE_GPU();
  const Tensor a = rndf({6, 9}, 21), b = rndf({9}, 22);
  const Tensor ag = a.to(kGpu), bg = b.to(kGpu);
  check_equal(ops::gt(ag, bg), ops::gt(a, b), "gt");
  check_equal(ops::ge(ag, bg), ops::ge(a, b), "ge");
  check_equal(ops::lt(ag, bg), ops::lt(a, b), "lt");
  check_equal(ops::le(ag, bg), ops::le(a, b), "le");
  check_equal(ops::eq(ag, ag), ops::eq(a, a), "eq");
  check_equal(ops::ne(ag, bg), ops::ne(a, b), "ne");
  check_equal(ops::gt_scalar(ag, 0.25), ops::gt_scalar(a, 0.25), "gt_scalar");
  check_equal(ops::eq_scalar(Tensor::arange(10).to(kGpu), 3.0), ops::eq_scalar(Tensor::arange(10), 3.0),
              "eq_scalar i64");
  const Tensor m1 = ops::gt_scalar(a, 0.0), m2 = ops::lt(a, b);
  check_equal(ops::logical_and(m1.to(kGpu), m2.to(kGpu)), ops::logical_and(m1, m2), "logical_and");
  check_equal(ops::logical_or(m1.to(kGpu), m2.to(kGpu)), ops::logical_or(m1, m2), "logical_or");
  check_equal(ops::logical_not(m1.to(kGpu)), ops::logical_not(m1), "logical_not");
  CHECK(ops::count_nonzero(m1.to(kGpu)) == ops::count_nonzero(m1));
  CHECK(ops::count_nonzero(ag.transpose(0, 1)) == ops::count_nonzero(a));
  CHECK(ops::any(m1.to(kGpu)) == ops::any(m1));
  CHECK(ops::all(m1.to(kGpu)) == ops::all(m1));
  check_equal(ops::argmax(ag, 1), ops::argmax(a, 1), "argmax axis 1");
  check_equal(ops::argmin(ag, 0, true), ops::argmin(a, 0, true), "argmin axis 0");
  const Tensor row = m1.select(0, 2);
  check_equal(ops::nonzero(row.to(kGpu)), ops::nonzero(row), "nonzero");
  const Tensor ties = Tensor::from_vector(std::vector<float>{3, 1, 3, 2, 1, 3, 0}, {7});
  check_equal(ops::argsort(ties.to(kGpu), true), ops::argsort(ties, true), "argsort (stable ties)");
  check_equal(ops::topk_indices(ties.to(kGpu), 4), ops::topk_indices(ties, 4), "topk_indices");
  CHECK_THROWS_WITH_AS(ops::gt(m1.to(kGpu), m1.to(kGpu)), doctest::Contains("ordering comparison of bool"), Error);
}

TEST_CASE("[cuda] reductions: sum/mean/amax/amin/max/min over axes, deterministic two-pass") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tensor x = rndf({3, 4, 5, 6}, 31);
  const Tol t{1e-6, 1e-6, 1e-6, 1e-6};
  compare_op(
      "sum all", [](const V& v) { return sum(v[0]); }, {x}, t);
  compare_op(
      "mean all", [](const V& v) { return mean(v[0]); }, {x}, t);
  compare_op(
      "sum (0, 2, 3)",
      [](const V& v) {
        return sum(v[0], {0, 2, 3});
      },
      {x}, t);
  compare_op(
      "sum (1) keepdim", [](const V& v) { return sum(v[0], {1}, true); }, {x}, t);
  compare_op(
      "mean (-1)", [](const V& v) { return mean(v[0], {-1}); }, {x}, t);
  compare_op(
      "sum of a permuted view",
      [](const V& v) {
        return sum(permute(v[0], {3, 1, 0, 2}), {0, 3});
      },
      {x}, t);
  compare_op(
      "amax (1, 3)",
      [](const V& v) {
        return amax(v[0], {1, 3});
      },
      {x}, t);
  compare_op(
      "amin all", [](const V& v) { return amin(v[0], {}); }, {x}, t);
  compare_op(
      "max axis 2", [](const V& v) { return max(v[0], 2); }, {x}, t);
  compare_op(
      "min axis 0 keepdim", [](const V& v) { return min(v[0], 0, true); }, {x}, t);
  // Long rows go through the two-pass kernels (more than one 8192-element chunk per row).
  const Tensor big = rndf({3, 50001}, 32);
  const Tensor sg1 = ops::sum(big.to(kGpu), {1}), sg2 = ops::sum(big.to(kGpu), {1});
  CHECK(bitwise_equal(sg1, sg2));
  check_close(sg1, ops::sum(big, {1}), 1e-6, 1e-5, "sum of long rows");
  check_close(ops::mean(big.to(kGpu)), ops::mean(big), 1e-6, 1e-7, "mean of 150003 elements");
  auto [vg, ig] = ops::max(big.to(kGpu), 1);
  auto [vc, ic] = ops::max(big, 1);
  check_equal(vg, vc, "max of long rows");
  check_equal(ig, ic, "argmax of long rows");
  CHECK(ops::sum_all(big.to(kGpu)) == doctest::Approx(ops::sum_all(big)).epsilon(1e-12));
  // NaN propagates and wins, ties go to the first index
  const Tensor nanx = Tensor::from_vector(std::vector<float>{1, 5, NAN, 5, 2, 2}, {2, 3});
  auto [nv, ni] = ops::max(nanx.to(kGpu), 1);
  auto [cv, ci] = ops::max(nanx, 1);
  check_equal(ni, ci, "max index with NaN and ties");
  CHECK(std::isnan(nv.to_vector<float>()[0]));
  CHECK(nv.to_vector<float>()[1] == cv.to_vector<float>()[1]);
  // an empty reduction sums to 0
  check_equal(ops::sum(Tensor::zeros({3, 0}).to(kGpu), {1}), ops::sum(Tensor::zeros({3, 0}), {1}), "empty sum");
}

TEST_CASE("[cuda] softmax / log_softmax / logsumexp with gradients") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tensor x = rndf({4, 7, 9}, 41, -5.0, 5.0);
  const Tol t{2e-6, 1e-7, 2e-5, 1e-6};
  compare_op(
      "softmax last", [](const V& v) { return softmax(v[0], -1); }, {x}, t);
  compare_op(
      "softmax middle", [](const V& v) { return softmax(v[0], 1); }, {x}, t);
  compare_op(
      "log_softmax last", [](const V& v) { return log_softmax(v[0], -1); }, {x}, t);
  compare_op(
      "log_softmax first", [](const V& v) { return log_softmax(v[0], 0); }, {x}, t);
  compare_op(
      "logsumexp", [](const V& v) { return logsumexp(v[0], 1, true); }, {x}, t);
  const Tensor inf = Tensor::from_vector(std::vector<float>{-INFINITY, 0, 1, -INFINITY, -INFINITY, -INFINITY}, {2, 3});
  const auto cg = ops::softmax(inf.to(kGpu), 1).to_vector<float>(), cc = ops::softmax(inf, 1).to_vector<float>();
  for (size_t i = 0; i < cc.size(); ++i)
    CHECK_MESSAGE((std::isnan(cc[i]) ? std::isnan(cg[i]) : std::abs(cg[i] - cc[i]) < 1e-6f),
                  "softmax with -inf at " << i);
}

TEST_CASE("[cuda] matmul / linear on cuBLAS (transposes, batches, bias)") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tol t{1e-5, 1e-5, 1e-5, 1e-5};
  compare_op(
      "matmul 2-D", [](const V& v) { return matmul(v[0], v[1]); }, {rndf({13, 29}, 51), rndf({29, 17}, 52)}, t);
  compare_op(
      "matmul batched", [](const V& v) { return matmul(v[0], v[1]); }, {rndf({3, 5, 8}, 53), rndf({3, 8, 6}, 54)}, t);
  compare_op(
      "linear", [](const V& v) { return linear(v[0], v[1], v[2]); },
      {rndf({2, 4, 10}, 55), rndf({7, 10}, 56), rndf({7}, 57)}, t);
  compare_op(
      "linear no bias", [](const V& v) { return linear(v[0], v[1], Var()); }, {rndf({6, 10}, 58), rndf({3, 10}, 59)},
      t);
  const Tensor a = rndf({9, 4}, 60), b = rndf({6, 9}, 61);
  check_close(ops::matmul_t(a.to(kGpu), true, b.to(kGpu), true), ops::matmul_t(a, true, b, true), 1e-5, 1e-5, "AᵀBᵀ");
  check_close(ops::matmul_t(rnd({5, 3}, 62).to(kGpu), false, rnd({4, 3}, 63).to(kGpu), true),
              ops::matmul_t(rnd({5, 3}, 62), false, rnd({4, 3}, 63), true), 1e-13, 1e-13, "f64 ABᵀ");
  check_equal(ops::matmul(Tensor::zeros({3, 0}).to(kGpu), Tensor::zeros({0, 2}).to(kGpu)), Tensor::zeros({3, 2}),
              "K = 0");
}

TEST_CASE("[cuda] conv2d on cuDNN: forward, backward-data, backward-filter, bias (stride, pad, dilation, groups)") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tol t{1e-4, 1e-4, 1e-4, 1e-4};
  struct Case {
    const char* name;
    Shape x, w;
    Conv2dArgs a;
    bool bias;
  };
  const Case cases[] = {
      {"3x3 pad 1", {2, 4, 11, 13}, {8, 4, 3, 3}, Conv2dArgs::make(1, 1), true},
      {"7x7 stride 2 pad 3", {1, 3, 20, 17}, {6, 3, 7, 7}, Conv2dArgs::make(2, 3), false},
      {"1x1", {2, 8, 5, 6}, {4, 8, 1, 1}, Conv2dArgs::make(1, 0), true},
      {"1x1 stride 2", {2, 8, 9, 7}, {4, 8, 1, 1}, Conv2dArgs::make(2, 0), false},
      {"dilation 2", {1, 4, 12, 12}, {5, 4, 3, 3}, Conv2dArgs::make(1, 2, 2), true},
      {"groups 2", {2, 6, 8, 9}, {4, 3, 3, 3}, Conv2dArgs::make(1, 1, 1, 2), true},
      {"depthwise", {1, 4, 7, 7}, {4, 1, 3, 3}, Conv2dArgs::make(2, 1, 1, 4), false},
  };
  uint64_t seed = 70;
  for (const Case& c : cases) {
    const Tensor x = rndf(c.x, seed++), w = rndf(c.w, seed++, -0.3, 0.3), b = rndf({c.w[0]}, seed++);
    const Conv2dArgs a = c.a;
    if (c.bias)
      compare_op(
          std::string("conv2d ") + c.name, [a](const V& v) { return conv2d(v[0], v[1], v[2], a); }, {x, w, b}, t);
    else
      compare_op(
          std::string("conv2d ") + c.name, [a](const V& v) { return conv2d(v[0], v[1], Var(), a); }, {x, w}, t);
  }
  // The algorithm cache and cuDNN benchmarking give the same (deterministic) results.
  const Tensor x = rndf({2, 16, 24, 24}, 90), w = rndf({16, 16, 3, 3}, 91, -0.2, 0.2);
  const Conv2dArgs a = Conv2dArgs::make(1, 1);
  const Tensor y1 = ops::conv2d(x.to(kGpu), w.to(kGpu), Tensor(), a);
  const Tensor y2 = ops::conv2d(x.to(kGpu), w.to(kGpu), Tensor(), a);
  CHECK(bitwise_equal(y1, y2));
  const Tensor gw1 = ops::conv2d_backward_weight(y1, x.to(kGpu), w.shape(), a);
  const Tensor gw2 = ops::conv2d_backward_weight(y1, x.to(kGpu), w.shape(), a);
  CHECK(bitwise_equal(gw1, gw2));
  cuda::set_conv_benchmark(true);  // the Find*AlgorithmEx path of all three passes
  const Tensor y3 = ops::conv2d(x.to(kGpu), w.to(kGpu), Tensor(), a);
  const Tensor gx3 = ops::conv2d_backward_input(y1, w.to(kGpu), x.shape(), a);
  const Tensor gw3 = ops::conv2d_backward_weight(y1, x.to(kGpu), w.shape(), a);
  cuda::set_conv_benchmark(false);
  check_close(y3, ops::conv2d(x, w, Tensor(), a), 1e-4, 1e-4, "conv2d with cuDNN benchmarking");
  const Tensor y1h = y1.to(Device::cpu());
  check_close(gx3, ops::conv2d_backward_input(y1h, w, x.shape(), a), 1e-4, 1e-4, "backward-data, benchmarking");
  check_close(gw3, ops::conv2d_backward_weight(y1h, x, w.shape(), a), 1e-4, 1e-3, "backward-filter, benchmarking");
  check_close(ops::conv2d_backward_bias(y1), ops::conv2d_backward_bias(y1.to(Device::cpu())), 1e-5, 1e-4,
              "conv2d_backward_bias");
  // Non-deterministic algorithms allowed (PyTorch's default): still the CPU's results, to tolerance.
  CHECK(cuda::deterministic());
  cuda::set_deterministic(false);
  for (const bool bench : {false, true}) {
    cuda::set_conv_benchmark(bench);
    const std::string how = bench ? "non-deterministic allowed, benchmarking" : "non-deterministic allowed";
    check_close(ops::conv2d(x.to(kGpu), w.to(kGpu), Tensor(), a), ops::conv2d(x, w, Tensor(), a), 1e-4, 1e-4,
                "conv2d, " + how);
    check_close(ops::conv2d_backward_input(y1, w.to(kGpu), x.shape(), a),
                ops::conv2d_backward_input(y1h, w, x.shape(), a), 1e-4, 1e-4, "backward-data, " + how);
    check_close(ops::conv2d_backward_weight(y1, x.to(kGpu), w.shape(), a),
                ops::conv2d_backward_weight(y1h, x, w.shape(), a), 1e-4, 1e-3, "backward-filter, " + how);
  }
  cuda::set_conv_benchmark(false);
  cuda::set_deterministic(true);
}

TEST_CASE("[cuda] batch_norm (train with running stats, eval), group_norm, layer_norm with gradients") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tol t{1e-5, 1e-5, 1e-4, 1e-5};
  const Tensor x = rndf({3, 5, 6, 7}, 101, -2.0, 3.0), w = rndf({5}, 102, 0.5, 1.5), b = rndf({5}, 103);
  Tensor rm_c = rndf({5}, 104), rv_c = rndf({5}, 105, 0.5, 2.0);
  Tensor rm_g = rm_c.to(kGpu), rv_g = rv_c.to(kGpu);
  compare_op(
      "batch_norm train",
      [&](const V& v) {
        const bool gpu = v[0].device().is_cuda();
        return batch_norm(v[0], v[1], v[2], gpu ? rm_g : rm_c, gpu ? rv_g : rv_c, true, 0.1, 1e-5);
      },
      {x, w, b}, t);
  check_close(rm_g, rm_c, 1e-6, 1e-6, "running_mean after the step");
  check_close(rv_g, rv_c, 1e-6, 1e-6, "running_var after the step");
  compare_op(
      "batch_norm eval",
      [&](const V& v) {
        const bool gpu = v[0].device().is_cuda();
        return batch_norm(v[0], v[1], v[2], gpu ? rm_g : rm_c, gpu ? rv_g : rv_c, false, 0.1, 1e-5);
      },
      {x, w, b}, t);
  Tensor none;
  compare_op(
      "batch_norm no affine, no running stats",
      [&](const V& v) { return batch_norm(v[0], Var(), Var(), none, none, true, 0.1, 1e-5); }, {x}, t);
  const Tensor xl = rndf({2, 5, 40, 40}, 106);  // planes longer than one thread's segment
  compare_op(
      "batch_norm large planes", [&](const V& v) { return batch_norm(v[0], v[1], v[2], none, none, true, 0.1, 1e-5); },
      {xl, w, b}, t);
  const Tensor xg = rndf({2, 8, 5, 6}, 107), wg = rndf({8}, 108, 0.5, 1.5), bg = rndf({8}, 109);
  compare_op(
      "group_norm 4 groups", [](const V& v) { return group_norm(v[0], 4, v[1], v[2], 1e-5); }, {xg, wg, bg}, t);
  compare_op(
      "group_norm 1 group, no affine", [](const V& v) { return group_norm(v[0], 1, Var(), Var(), 1e-5); }, {xg}, t);
  compare_op(
      "layer_norm", [](const V& v) { return layer_norm(v[0], {6}, v[1], v[2], 1e-5); },
      {rndf({3, 4, 6}, 110), rndf({6}, 111), rndf({6}, 112)}, t);
  compare_op(
      "layer_norm wide rows",
      [](const V& v) {
        return layer_norm(v[0], {2, 100}, Var(), Var(), 1e-5);
      },
      {rndf({3, 2, 100}, 113)}, t);
}

TEST_CASE("[cuda] max / avg pooling with gradients (padding, ceil_mode, count_include_pad)") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  // Distinct values: no ties inside a window, so the argmax is the same on both devices.
  Tensor x = rndf({2, 3, 11, 10}, 121);
  {
    auto v = x.to_vector<float>();
    for (size_t i = 0; i < v.size(); ++i) v[i] += 0.001f * static_cast<float>(i % 997);
    x = Tensor::from_vector(v, x.shape());
  }
  compare_op("max_pool 3/2/1", [](const V& v) { return max_pool2d(v[0], 3, 2, 1); }, {x});
  compare_op("max_pool 2/2/0 ceil", [](const V& v) { return max_pool2d(v[0], 2, 2, 0, true); }, {x});
  compare_op("max_pool 3/1/1 (overlapping)", [](const V& v) { return max_pool2d(v[0], 3, 1, 1); }, {x});
  compare_op("avg_pool 3/2/1", [](const V& v) { return avg_pool2d(v[0], 3, 2, 1); }, {x});
  compare_op("avg_pool 3/2/1 exclude pad", [](const V& v) { return avg_pool2d(v[0], 3, 2, 1, false); }, {x});
  compare_op("avg_pool 2/2/1 ceil", [](const V& v) { return avg_pool2d(v[0], 2, 2, 1, true, true); }, {x});
  auto [yg, ig] = ops::max_pool2d_with_indices(x.to(kGpu), 3, 2, 1);
  auto [yc, ic] = ops::max_pool2d_with_indices(x, 3, 2, 1);
  check_equal(ig, ic, "max_pool2d indices");
}

TEST_CASE("[cuda] interpolate nearest / bilinear with gradients (up, down, align_corners)") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tensor x = rndf({2, 3, 7, 9}, 131);
  const Tol t{1e-6, 1e-6, 1e-5, 1e-5};
  compare_op(
      "nearest x2", [](const V& v) { return interpolate_nearest(v[0], 14, 18); }, {x}, t);
  compare_op(
      "nearest odd", [](const V& v) { return interpolate_nearest(v[0], 10, 5); }, {x}, t);
  compare_op(
      "bilinear up", [](const V& v) { return interpolate_bilinear(v[0], 15, 20); }, {x}, t);
  compare_op(
      "bilinear down", [](const V& v) { return interpolate_bilinear(v[0], 4, 5); }, {x}, t);
  compare_op(
      "bilinear align_corners", [](const V& v) { return interpolate_bilinear(v[0], 13, 11, true); }, {x}, t);
  compare_op(
      "bilinear to 1x1", [](const V& v) { return interpolate_bilinear(v[0], 1, 1); }, {x}, t);
}

TEST_CASE("[cuda] shape ops: concat, stack, slice, select, permute, expand (and their gradients)") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tensor a = rndf({2, 3, 4}, 141), b = rndf({2, 5, 4}, 142);
  compare_op("concat", [](const V& v) { return concat({v[0], v[1]}, 1); }, {a, b});
  compare_op("stack", [](const V& v) { return stack({v[0], v[0] * 2.0}, 0); }, {a});
  compare_op("slice step", [](const V& v) { return slice(v[0], 1, 1, 5, 2); }, {b});
  compare_op("select", [](const V& v) { return select(v[0], 2, -1); }, {b});
  compare_op("permute + reshape", [](const V& v) { return reshape(permute(v[0], {2, 0, 1}), {4, -1}); }, {a});
  compare_op("expand", [](const V& v) { return expand(v[0], {3, 2, 3, 4}); }, {a});
  compare_op("transpose contiguous", [](const V& v) { return contiguous(transpose(v[0], 0, 2)); }, {a});
}

TEST_CASE("[cuda] index ops: index_select, index_add (unique and repeated), index_copy, gather, scatter_add") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tensor x = rndf({6, 5, 3}, 151);
  const Tensor idx = Tensor::from_vector(std::vector<int64_t>{4, 0, -1, 4, 2}, {5});  // repeats
  const Tensor uniq = Tensor::from_vector(std::vector<int64_t>{3, 0, 5}, {3});
  compare_op("index_select dim 0 (repeats: index_add backward)",
             [&](const V& v) { return index_select(v[0], 0, idx.to(v[0].device())); }, {x});
  const Tensor uniq1 = Tensor::from_vector(std::vector<int64_t>{3, 0, 4}, {3});  // dim 1 has 5 entries
  compare_op("index_select dim 1", [&](const V& v) { return index_select(v[0], 1, uniq1.to(v[0].device())); }, {x});
  compare_op("index_add unique", [&](const V& v) { return index_add(v[0], 0, uniq.to(v[0].device()), v[1]); },
             {x, rndf({3, 5, 3}, 152)});
  compare_op("index_add repeats", [&](const V& v) { return index_add(v[0], 0, idx.to(v[0].device()), v[1]); },
             {x, rndf({5, 5, 3}, 153)});
  const Tensor base_i = Tensor::arange(18).view({6, 3}), src_i = ops::mul_scalar(Tensor::arange(9).view({3, 3}), 10);
  check_equal(ops::index_copy(base_i.to(kGpu), 0, uniq.to(kGpu), src_i.to(kGpu)),
              ops::index_copy(base_i, 0, uniq, src_i), "index_copy i64");
  Generator g(154);
  const Tensor gidx = rand_uniform({6, 2, 3}, g, 0, 4.999, DType::F64).to(DType::I64);
  compare_op("gather dim 1", [&](const V& v) { return gather(v[0], 1, gidx.to(v[0].device())); }, {x});
  compare_op("gather of a permuted view",
             [&](const V& v) {
               return gather(permute(v[0], {1, 0, 2}), 1, gidx.permute({1, 0, 2}).contiguous().to(v[0].device()));
             },
             {x});
  compare_op("scatter_add dim 1 (repeats)",
             [&](const V& v) { return scatter_add(v[0], 1, gidx.to(v[0].device()), v[1]); }, {x, rndf({6, 2, 3}, 155)});
  compare_op("scatter_add dim 0",
             [&](const V& v) { return scatter_add(v[0], 0, gidx.slice(1, 0, 1).contiguous().to(v[0].device()), v[1]); },
             {rndf({5, 1, 3}, 156), rndf({6, 1, 3}, 157)});
  const Tensor mask = ops::gt_scalar(rndf({6}, 158), 0.0);
  compare_op("masked_select_rows", [&](const V& v) { return masked_select_rows(v[0], mask.to(v[0].device())); }, {x});
  CHECK_THROWS_WITH_AS(ops::index_select(x.to(kGpu), 0, Tensor::from_vector(std::vector<int64_t>{6}, {1}).to(kGpu)),
                       doctest::Contains("index 6 (at position 0) out of range"), Error);
  // Host indices for device inputs (checked on the host, then uploaded), as the detectors pass them.
  compare_op("index_select with a host index", [&](const V& v) { return index_select(v[0], 0, idx); }, {x});
  compare_op("gather with a host index", [&](const V& v) { return gather(v[0], 1, gidx); }, {x});
  check_equal(ops::index_copy(base_i.to(kGpu), 0, uniq, src_i.to(kGpu)), ops::index_copy(base_i, 0, uniq, src_i),
              "index_copy with a host index");
  CHECK_THROWS_WITH_AS(ops::index_select(x.to(kGpu), 0, Tensor::from_vector(std::vector<int64_t>{-7}, {1})),
                       doctest::Contains("index -7 (at position 0) out of range"), Error);
}

TEST_CASE("[cuda] fused detection losses: focal, smooth L1, L1, GIoU / IoU, CE, BCE with gradients") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tol t{2e-5, 2e-6, 2e-5, 2e-6};
  const Tensor logits = rndf({50, 7}, 161, -6.0, 6.0);
  Generator g(162);
  const Tensor onehot = ops::gt_scalar(rand_uniform({50, 7}, g), 0.8).to(DType::F32), soft = rndf({50, 7}, 163, 0, 1);
  compare_op(
      "focal gamma 2", [](const V& v) { return sigmoid_focal_loss(v[0], v[1].data(), 2.0, 0.25); }, {logits, onehot},
      t);
  compare_op(
      "focal gamma 1.5 soft targets", [](const V& v) { return sigmoid_focal_loss(v[0], v[1].data(), 1.5, 0.25); },
      {logits, soft}, t);
  compare_op(
      "focal no alpha", [](const V& v) { return sigmoid_focal_loss(v[0], v[1].data(), 2.0, -1.0); }, {logits, onehot},
      t);
  const Tensor p = rndf({40, 4}, 164, -2, 2), q = rndf({40, 4}, 165, -2, 2);
  compare_op(
      "smooth_l1 beta 0.5", [](const V& v) { return smooth_l1_loss(v[0], v[1].data(), 0.5); }, {p, q}, t);
  compare_op(
      "l1", [](const V& v) { return l1_loss(v[0], v[1].data()); }, {p, q}, t);
  compare_op(
      "bce with logits", [](const V& v) { return binary_cross_entropy_with_logits(v[0], v[1].data()); }, {logits, soft},
      t);
  compare_op(
      "bce", [](const V& v) { return binary_cross_entropy(v[0], v[1].data()); },
      {rndf({9, 5}, 166, 0.05, 0.95), rndf({9, 5}, 167, 0, 1)}, t);
  CHECK_THROWS_WITH_AS(binary_cross_entropy(Var(Tensor::full({3}, 1.5).to(kGpu)), Tensor::zeros({3}).to(kGpu)),
                       doctest::Contains("between 0 and 1"), Error);
  // boxes: x1 < x2, y1 < y2, partly overlapping
  auto boxes = [](uint64_t seed) {
    const Tensor xy = rndf({30, 2}, seed, 0, 50), wh = rndf({30, 2}, seed + 1, 5, 40);
    return ops::concat({xy, ops::add(xy, wh)}, 1);
  };
  const Tensor bp = boxes(168), bt = boxes(170);
  compare_op(
      "giou", [](const V& v) { return giou_loss(v[0], v[1].data()); }, {bp, bt}, t);
  compare_op(
      "iou log", [](const V& v) { return iou_loss(v[0], v[1].data(), IoULossMode::Log); }, {bp, bt}, t);
  compare_op(
      "iou square", [](const V& v) { return iou_loss(v[0], v[1].data(), IoULossMode::Square); }, {bp, bt}, t);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 6, -100, 3, 2, 2, -100, 5}, {8});
  compare_op(
      "cross_entropy with ignore_index", [](const V& v) { return cross_entropy(v[0], v[1].data(), -100); },
      {rndf({8, 7}, 172, -4, 4), labels}, t);
  CHECK_THROWS_WITH_AS(
      cross_entropy(Var(rndf({2, 3}, 173).to(kGpu)), Tensor::from_vector(std::vector<int64_t>{0, 3}, {2}).to(kGpu)),
      doctest::Contains("label 3 at row 1 out of range"), Error);
  // host labels for device logits (as the R-CNN head passes them): checked on the host, uploaded once
  compare_op(
      "cross_entropy with host labels", [&](const V& v) { return cross_entropy(v[0], labels, -100); },
      {rndf({8, 7}, 174, -4, 4)}, t);
}

TEST_CASE("[cuda] box coder, bbox_overlaps and NMS match the CPU exactly / closely") {
  KDET_REQUIRE_GPU();
  auto boxes = [](int64_t n, uint64_t seed) {
    const Tensor xy = rndf({n, 2}, seed, 0, 100), wh = rndf({n, 2}, seed + 1, 2, 60);
    return ops::concat({xy, ops::add(xy, wh)}, 1);
  };
  const Tensor a = boxes(37, 181), b = boxes(23, 183);
  for (IouMode m : {IouMode::IoU, IouMode::IoF, IouMode::GIoU})
    check_equal(bbox_overlaps(a.to(kGpu), b.to(kGpu), m), bbox_overlaps(a, b, m), "bbox_overlaps");
  DeltaXYWHBBoxCoder coder;
  coder.stds = {0.1, 0.1, 0.2, 0.2};
  coder.means = {0.01, -0.02, 0.0, 0.03};
  const Tensor pri = boxes(37, 185), gt = boxes(37, 187);
  const Tensor enc_g = coder.encode(pri.to(kGpu), gt.to(kGpu)), enc_c = coder.encode(pri, gt);
  check_close(enc_g, enc_c, 1e-5, 1e-5, "encode");
  const Tensor deltas = rndf({37, 8}, 189, -1.5, 1.5);
  check_close(coder.decode(pri.to(kGpu), deltas.to(kGpu), std::make_pair<int64_t, int64_t>(80, 120)),
              coder.decode(pri, deltas, std::make_pair<int64_t, int64_t>(80, 120)), 1e-5, 1e-4, "decode (clipped)");
  compare_op("decode_var", [&](const std::vector<Var>& v) { return coder.decode_var(pri.to(v[0].device()), v[0]); },
             {deltas.slice(1, 0, 4).contiguous()}, {1e-5, 1e-4, 1e-5, 1e-4});
  const Tensor nb = boxes(300, 191), ns = rndf({300}, 193);
  check_equal(nms(nb.to(kGpu), ns.to(kGpu), 0.5), nms(nb, ns, 0.5), "nms keep");
  check_equal(nms(nb.to(kGpu), ns.to(kGpu), 0.1), nms(nb, ns, 0.1), "nms keep (low threshold)");
}

TEST_CASE("[cuda] optimizers: SGD (momentum, nesterov, weight decay), AdamW (amsgrad), clip_grad_norm") {
  KDET_REQUIRE_GPU();
  auto run = [](Device d, int which) {
    Var w(rndf({20, 7}, 201).to(d), true), b(rndf({7}, 202).to(d), true);
    NamedParams params{{"w", w}, {"b", b}};
    std::unique_ptr<Optimizer> opt;
    if (which == 0) opt = std::make_unique<SGD>(params, 0.05, 0.9, 1e-3, false);
    if (which == 1) opt = std::make_unique<SGD>(params, 0.05, 0.9, 0.0, true);
    if (which >= 2) opt = std::make_unique<AdamW>(params, 1e-2, 1e-2, 0.9, 0.999, 1e-8, /*amsgrad=*/which == 3);
    const Tensor x = rndf({5, 20}, 203).to(d);
    for (int step = 0; step < 3; ++step) {
      opt->zero_grad();
      Var loss = sum(pow(matmul(Var(x), w) + b, 2.0));
      loss.backward();
      clip_grad_norm(opt->params(), 5.0);
      opt->step();
    }
    return std::make_pair(w.data().to(Device::cpu()), b.data().to(Device::cpu()));
  };
  for (int which = 0; which < 4; ++which) {
    auto [wg, bg] = run(kGpu, which);
    auto [wc, bc] = run(Device::cpu(), which);
    check_close(wg, wc, 1e-5, 1e-5, "weights after 3 optimizer steps");
    check_close(bg, bc, 1e-5, 1e-5, "biases after 3 optimizer steps");
  }
}

TEST_CASE("[cuda] KD ops: masked_conv2d (dense conv of x ⊙ m on the GPU) and sep_filter2d (depthwise cuDNN conv)") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tol t{1e-4, 1e-4, 1e-4, 1e-4};
  const Tensor x = rndf({2, 6, 9, 11}, 231), w = rndf({5, 6, 3, 3}, 232, -0.3, 0.3), b = rndf({5}, 233);
  const Tensor ms = ops::gt_scalar(rndf({2, 1, 9, 11}, 234, 0, 1), 0.65).to(DType::F32);
  const Tensor mc = ops::gt_scalar(rndf({2, 6, 1, 1}, 235, 0, 1), 0.5).to(DType::F32);
  const Conv2dArgs a = Conv2dArgs::make(1, 1);
  compare_op("masked_conv2d spatial mask",
             [&](const V& v) { return masked_conv2d(v[0], ms.to(v[0].device()), v[1], v[2], a); }, {x, w, b}, t);
  compare_op("masked_conv2d channel mask",
             [&](const V& v) { return masked_conv2d(v[0], mc.to(v[0].device()), v[1], Var(), a); }, {x, w}, t);
  const std::vector<double> g{0.1, 0.2, 0.4, 0.2, 0.1};
  compare_op("sep_filter2d", [&](const V& v) { return sep_filter2d(v[0], g); }, {x}, {1e-5, 1e-6, 1e-5, 1e-6});
}

TEST_CASE("[cuda] roi_align forward and backward (host-computed samples, deterministic scatter)") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const Tensor feat = rndf({2, 5, 12, 15}, 241);
  std::vector<float> r;
  Generator g(242);
  for (int k = 0; k < 7; ++k) {  // (batch, x1, y1, x2, y2) in image coordinates (scale 1/4), one past the border
    const float x1 = static_cast<float>(g.uniform(-8, 50)), y1 = static_cast<float>(g.uniform(-8, 40));
    r.insert(r.end(), {static_cast<float>(k % 2), x1, y1, x1 + static_cast<float>(g.uniform(2, 30)),
                       y1 + static_cast<float>(g.uniform(2, 25))});
  }
  const Tensor rois = Tensor::from_vector(r, {7, 5});
  for (int variant = 0; variant < 4; ++variant) {
    RoIAlignArgs a;
    a.out_h = 3, a.out_w = 4, a.spatial_scale = 0.25;
    a.sampling_ratio = variant == 1 ? 2 : 0;
    a.aligned = variant != 2;
    const bool host_rois = variant == 3;  // GPU features with host RoIs, as the detectors call it
    compare_op("roi_align variant " + std::to_string(variant),
               [&](const V& v) { return roi_align(v[0], host_rois ? rois : rois.to(v[0].device()), a); }, {feat},
               {1e-6, 1e-6, 1e-6, 1e-6});
  }
}

namespace {

// |a - b| <= rel * (|b| + max|b|) elementwise: a scale-aware tolerance for results of long f32 chains
// (a whole network), where CPU and GPU sum in different orders.
void check_close_scaled(const Tensor& a, const Tensor& b, double rel, const std::string& what) {
  double mx = 0;
  for (double v : b.to_vector<double>()) mx = std::max(mx, std::abs(v));
  check_close(a, b, rel, rel * mx + 1e-12, what);
}

// n random images (N(0,1)) of h x w with 3 random boxes each (labels < classes).
data::Batch random_det_batch(int n, int h, int w, int64_t classes, uint64_t seed) {
  Generator g(seed);
  return bench::random_detection_batch(n, h, w, h, w, classes, 3, g, 1.0 / 8, 0.5);
}

data::Batch on_device(data::Batch b, Device d) {
  b.images = b.images.to(d);
  return b;
}

void compare_params(Module& gpu, Module& cpu, double rel, const std::string& what, bool grads) {
  auto pg = gpu.named_parameters(), pc = cpu.named_parameters();
  REQUIRE(pg.size() == pc.size());
  int compared = 0;
  for (size_t i = 0; i < pc.size(); ++i) {
    REQUIRE(pg[i].first == pc[i].first);
    const Tensor a = grads ? pg[i].second.grad() : pg[i].second.data();
    const Tensor b = grads ? pc[i].second.grad() : pc[i].second.data();
    CHECK_MESSAGE(a.defined() == b.defined(), what << " " << pc[i].first);
    if (!a.defined() || !b.defined()) continue;
    CHECK(a.device() == kGpu);
    check_close_scaled(a, b, rel, what + " " + pc[i].first);
    ++compared;
  }
  CHECK(compared > 0);
}

}  // namespace

TEST_CASE("[cuda] RetinaNet training step: losses, every parameter gradient and the SGD update match the CPU") {
  KDET_REQUIRE_GPU();
  RetinaNetConfig cfg = RetinaNetConfig::small(18, 16, 32, 2, 5);
  cfg.backbone.frozen_stages = 1;  // a frozen stem and BN in eval mode next to trainable BN-free parts
  RetinaNet mc(cfg), mg(cfg);
  Generator g1(3), g2(3);
  mc.init_weights(g1);
  mg.init_weights(g2);
  mg.to(kGpu);
  mc.train();
  mg.train();
  const data::Batch bc = random_det_batch(2, 96, 128, 5, 11), bg = on_device(bc, kGpu);
  LossList lc = mc.loss(bc), lg = mg.loss(bg);
  REQUIRE(lc.size() == lg.size());
  for (size_t i = 0; i < lc.size(); ++i) {
    CHECK(lg[i].first == lc[i].first);
    CHECK(lg[i].second.device() == kGpu);
    CHECK_MESSAGE(lg[i].second.item() == doctest::Approx(lc[i].second.item()).epsilon(1e-4), lc[i].first);
  }
  SGD oc(mc.named_parameters("", true), 0.01, 0.9, 1e-4), og(mg.named_parameters("", true), 0.01, 0.9, 1e-4);
  total_loss(lc).backward();
  total_loss(lg).backward();
  compare_params(mg, mc, 2e-3, "RetinaNet gradient", true);
  oc.step();
  og.step();
  compare_params(mg, mc, 1e-4, "RetinaNet parameter after the SGD step", false);
  // BN in train mode (norm_eval off): batch statistics and running-stat updates on the device
  RetinaNetConfig cfg2 = RetinaNetConfig::small(18, 8, 16, 1, 3);
  cfg2.backbone.frozen_stages = -1;
  cfg2.backbone.norm_eval = false;
  RetinaNet tc(cfg2), tg(cfg2);
  Generator g3(5), g4(5);
  tc.init_weights(g3);
  tg.init_weights(g4);
  tg.to(kGpu);
  tc.train();
  tg.train();
  const data::Batch b2 = random_det_batch(2, 64, 64, 3, 12);
  Var tlc = total_loss(tc.loss(b2)), tlg = total_loss(tg.loss(on_device(b2, kGpu)));
  CHECK(tlg.item() == doctest::Approx(tlc.item()).epsilon(1e-4));
  tlc.backward();
  tlg.backward();
  compare_params(tg, tc, 2e-3, "RetinaNet (train-mode BN) gradient", true);
  auto bufc = tc.named_buffers(), bufg = tg.named_buffers();
  REQUIRE(bufc.size() == bufg.size());
  for (size_t i = 0; i < bufc.size(); ++i)
    if (is_floating(bufc[i].tensor->dtype()))
      check_close_scaled(*bufg[i].tensor, *bufc[i].tensor, 1e-4, "running stat " + bufc[i].name);
}

TEST_CASE("[cuda] KD step: teacher features, FitNet + MGD losses and the student's gradients match the CPU") {
  KDET_REQUIRE_GPU();
  RetinaNetConfig tcfg = RetinaNetConfig::small(18, 16, 32, 1, 4), scfg = RetinaNetConfig::small(18, 8, 16, 1, 4);
  RetinaNet tc(tcfg), tg(tcfg), sc(scfg), sg(scfg);
  Generator a(1), b(1), c(2), d(2);
  tc.init_weights(a);
  tg.init_weights(b);
  sc.init_weights(c);
  sg.init_weights(d);
  tg.to(kGpu);
  sg.to(kGpu);
  tc.eval();
  tg.eval();
  sc.train();
  sg.train();
  std::vector<std::pair<int64_t, int64_t>> ch;
  for (int64_t l = 0; l < scfg.neck.num_outs; ++l) ch.emplace_back(scfg.neck.out_channels, tcfg.neck.out_channels);
  kd::FitNetLoss fit_c(ch, kd::FitNetConfig{}), fit_g(ch, kd::FitNetConfig{});
  kd::MGDLoss mgd_c(ch, kd::MGDConfig{}), mgd_g(ch, kd::MGDConfig{});
  Generator e(7), f(7), h(8), k(8);
  fit_c.init_weights(e);
  fit_g.init_weights(f);
  mgd_c.init_weights(h);
  mgd_g.init_weights(k);
  fit_g.to(kGpu);
  mgd_g.to(kGpu);
  const data::Batch bc = random_det_batch(2, 64, 96, 4, 21), bg = on_device(bc, kGpu);
  auto step = [](RetinaNet& teacher, RetinaNet& student, kd::FitNetLoss& fit, kd::MGDLoss& mgd, const data::Batch& batch,
                 const std::vector<Tensor>& rand) {
    std::vector<Tensor> T;
    {
      NoGradGuard ng;
      for (const Var& v : teacher.extract_feat(Var(batch.images))) T.push_back(v.data());
    }
    DetectorTaps taps;
    LossList det = student.loss(batch, &taps);
    std::vector<Var> S = taps.neck;
    Var total = total_loss(det) + fit.forward(S, T).loss + mgd.forward(S, T, rand).loss;
    total.backward();
    return total.item();
  };
  std::vector<Tensor> rand_c, rand_g;
  {
    NoGradGuard ng;
    std::vector<Tensor> T;
    for (const Var& v : tc.extract_feat(Var(bc.images))) T.push_back(v.data());
    Generator rg(9);
    rand_c = kd::MGDLoss::draw_rand(T, rg);
    for (const Tensor& r : rand_c) rand_g.push_back(r.to(kGpu));
  }
  const double lc = step(tc, sc, fit_c, mgd_c, bc, rand_c), lg = step(tg, sg, fit_g, mgd_g, bg, rand_g);
  CHECK(lg == doctest::Approx(lc).epsilon(1e-4));
  compare_params(sg, sc, 2e-3, "student gradient", true);
  compare_params(fit_g, fit_c, 2e-3, "FitNet adapter gradient", true);
  compare_params(mgd_g, mgd_c, 2e-3, "MGD generator gradient", true);
}

#endif  // KDET_CUDA
