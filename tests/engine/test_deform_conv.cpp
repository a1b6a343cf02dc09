// Deformable convolution v1/v2 (engine/ops/deform_conv.h): f64 gradchecks away from the bilinear kinks,
// the direct definition, conv2d equivalence at zero offsets, torchvision parity (tests/ref/gen_deform_conv.py),
// chunk edges, determinism and errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include <omp.h>

#include "engine/ops/conv2d.h"
#include "engine/ops/deform_conv.h"
#include "engine/random.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

DeformConvArgs dargs(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups,
                     int64_t dg) {
  DeformConvArgs a;
  a.stride = {sh, sw}, a.padding = {ph, pw}, a.dilation = {dh, dw}, a.groups = groups, a.deform_groups = dg;
  return a;
}

struct Case {
  int64_t n, c, h, w, o, kh, kw;
  DeformConvArgs a;
  bool mask, bias;
  double offset_range;  // offsets = integer in [-range, range] + fraction in [0.2, 0.8]
};

Shape out_hw(const Case& k) {
  const int64_t ho = (k.h + 2 * k.a.padding[0] - k.a.dilation[0] * (k.kh - 1) - 1) / k.a.stride[0] + 1;
  const int64_t wo = (k.w + 2 * k.a.padding[1] - k.a.dilation[1] * (k.kw - 1) - 1) / k.a.stride[1] + 1;
  return {ho, wo};
}

// Offsets whose fractional part is in [0.2, 0.8]: every sample point is at least 0.2 from an integer, i.e.
// from the bilinear kinks and from the borders h = -1, h = H (likewise w).
Tensor kinkless_offsets(const Shape& s, uint64_t seed, double range) {
  Generator g(seed);
  Tensor ip = rand_uniform(s, g, -range, range, DType::F64), fp = rand_uniform(s, g, 0.2, 0.8, DType::F64);
  auto a = ip.to_vector<double>(), b = fp.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::round(a[i]) + b[i];
  return Tensor::from_vector(a, s);
}

// The definition (spec detectors.md 10), in double: for checking the im2col + GEMM path.
Tensor deform_naive(const Tensor& x, const Tensor& off, const Tensor& mask, const Tensor& w, const Tensor& b,
                    const DeformConvArgs& a) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = w.size(0), Cg = w.size(1),
                KH = w.size(2), KW = w.size(3), KK = KH * KW, Ho = off.size(2), Wo = off.size(3);
  const int64_t Og = O / a.groups, Cd = C / a.deform_groups;
  auto xv = x.to_vector<double>(), ov = off.to_vector<double>(), wv = w.to_vector<double>();
  std::vector<double> mv = mask.defined() ? mask.to_vector<double>() : std::vector<double>();
  std::vector<double> bv = b.defined() ? b.to_vector<double>() : std::vector<double>(O, 0.0);
  auto X = [&](int64_t n, int64_t c, int64_t r, int64_t q) {
    return (r >= 0 && r < H && q >= 0 && q < W) ? xv[((n * C + c) * H + r) * W + q] : 0.0;
  };
  std::vector<double> y(N * O * Ho * Wo);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t ho = 0; ho < Ho; ++ho)
        for (int64_t wo = 0; wo < Wo; ++wo) {
          double acc = bv[o];
          for (int64_t cl = 0; cl < Cg; ++cl) {
            const int64_t c = (o / Og) * Cg + cl, d = c / Cd;
            for (int64_t k = 0; k < KK; ++k) {
              const int64_t i = k / KW, j = k % KW;
              const int64_t oc = ((n * 2 * a.deform_groups + 2 * d) * KK + 2 * k) * Ho;
              const double h = ho * a.stride[0] - a.padding[0] + i * a.dilation[0] + ov[(oc + ho) * Wo + wo];
              const double ww = wo * a.stride[1] - a.padding[1] + j * a.dilation[1] + ov[(oc + Ho + ho) * Wo + wo];
              double v = 0;
              if (h > -1 && h < H && ww > -1 && ww < W) {
                const int64_t h0 = int64_t(std::floor(h)), w0 = int64_t(std::floor(ww));
                const double lh = h - h0, lw = ww - w0;
                v = (1 - lh) * (1 - lw) * X(n, c, h0, w0) + (1 - lh) * lw * X(n, c, h0, w0 + 1) +
                    lh * (1 - lw) * X(n, c, h0 + 1, w0) + lh * lw * X(n, c, h0 + 1, w0 + 1);
              }
              if (mask.defined()) v *= mv[(((n * a.deform_groups + d) * KK + k) * Ho + ho) * Wo + wo];
              acc += wv[(o * Cg + cl) * KK + k] * v;
            }
          }
          y[((n * O + o) * Ho + ho) * Wo + wo] = acc;
        }
  return Tensor::from_vector(y, {N, O, Ho, Wo});
}

}  // namespace

TEST_CASE("deform_conv2d: gradcheck f64 for x, offset, mask, w, b (v1 and v2)") {
  const std::vector<Case> cases = {
      {2, 3, 5, 4, 4, 3, 3, dargs(1, 1, 1, 1, 1, 1, 1, 1), false, true, 1},   // v1 + bias
      {1, 2, 6, 5, 3, 3, 3, dargs(2, 2, 1, 1, 1, 1, 1, 1), true, false, 1},   // v2, stride 2
      {1, 2, 6, 6, 2, 3, 3, dargs(1, 1, 2, 2, 2, 2, 1, 1), true, true, 2},    // dilation 2
      {1, 4, 4, 5, 4, 3, 3, dargs(1, 1, 1, 1, 1, 1, 2, 2), true, true, 1},    // groups 2, deform_groups 2
      {1, 2, 2, 1, 3, 3, 3, dargs(1, 1, 1, 1, 1, 1, 1, 1), true, true, 1},    // input smaller than the kernel
      {1, 2, 4, 4, 2, 3, 3, dargs(1, 1, 1, 1, 1, 1, 1, 1), false, false, 4},  // many samples outside the map
      {1, 3, 5, 6, 3, 2, 3, dargs(1, 2, 0, 1, 2, 1, 3, 1), true, false, 1},   // asymmetric kernel and args
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& k = cases[i];
    CAPTURE(i);
    const Shape hw = out_hw(k);
    const int64_t kk = k.kh * k.kw, dg = k.a.deform_groups;
    std::vector<Tensor> in = {rnd({k.n, k.c, k.h, k.w}, 10 + i),
                              kinkless_offsets({k.n, 2 * dg * kk, hw[0], hw[1]}, 20 + i, k.offset_range),
                              rnd({k.n, dg * kk, hw[0], hw[1]}, 30 + i, 0.1, 1.0),
                              rnd({k.o, k.c / k.a.groups, k.kh, k.kw}, 40 + i), rnd({k.o}, 50 + i)};
    CHECK(gradcheck(
        [&](const std::vector<Var>& v) {
          return deform_conv2d(v[0], v[1], k.mask ? v[2] : Var(), v[3], k.bias ? v[4] : Var(), k.a);
        },
        in, {}, {true, true, k.mask, true, k.bias}));
  }
}

TEST_CASE("deform_conv2d: f32 and f64 match the direct definition, chunk edges included") {
  const std::vector<Case> cases = {
      {1, 64, 17, 19, 40, 3, 3, dargs(1, 1, 1, 1, 1, 1, 1, 1), true, true, 3},   // K = 576 > GEMM K block
      {2, 32, 12, 11, 48, 3, 3, dargs(2, 2, 1, 1, 1, 1, 4, 2), false, false, 2},  // ResNeXt-like grouped
      {3, 16, 9, 8, 8, 3, 3, dargs(1, 1, 2, 2, 2, 2, 1, 4), true, false, 5},      // N = 3: uneven thread split
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& k = cases[i];
    CAPTURE(i);
    const Shape hw = out_hw(k);
    const int64_t kk = k.kh * k.kw, dg = k.a.deform_groups;
    Generator g(300 + i);
    Tensor x = rand_normal({k.n, k.c, k.h, k.w}, g, 0, 1, DType::F64);
    Tensor off = rand_normal({k.n, 2 * dg * kk, hw[0], hw[1]}, g, 0, k.offset_range, DType::F64);
    Tensor m = k.mask ? rand_uniform({k.n, dg * kk, hw[0], hw[1]}, g, 0, 1, DType::F64) : Tensor();
    Tensor w = rand_normal({k.o, k.c / k.a.groups, k.kh, k.kw}, g, 0, 0.1, DType::F64);
    Tensor b = k.bias ? rand_normal({k.o}, g, 0, 1, DType::F64) : Tensor();
    const Tensor ref = deform_naive(x, off, m, w, b, k.a);
    auto f32 = [](const Tensor& t) { return t.defined() ? t.to(DType::F32) : Tensor(); };
    for (int64_t bytes : {int64_t(0), int64_t(5000)}) {  // default chunks, then chunks that end mid-row
      CAPTURE(bytes);
      cpu::set_deform_conv2d_chunk_bytes(bytes);
      check_close(ops::deform_conv2d(x, off, m, w, b, k.a), ref, 1e-12, 1e-12, "f64 vs definition");
      check_close(ops::deform_conv2d(f32(x), f32(off), f32(m), f32(w), f32(b), k.a), ref, 1e-4, 1e-4,
                  "f32 vs definition");
      // Backward: f32 against f64 (the f64 path is checked against torch and by finite differences).
      Tensor gy = rand_normal(ref.shape(), g, 0, 1, DType::F64);
      auto d64 = ops::deform_conv2d_backward(gy, x, off, m, w, k.bias, k.a);
      auto d32 = ops::deform_conv2d_backward(f32(gy), f32(x), f32(off), f32(m), f32(w), k.bias, k.a);
      const char* names[5] = {"gx", "goffset", "gmask", "gw", "gb"};
      for (int j = 0; j < 5; ++j) {
        CAPTURE(names[j]);
        REQUIRE(d64[j].defined() == (j == 2 ? k.mask : j == 4 ? k.bias : true));
        if (d64[j].defined()) check_close(d32[j], d64[j], 1e-3, 2e-3, "f32 vs f64 gradient");
      }
    }
    cpu::set_deform_conv2d_chunk_bytes(0);
  }
}

TEST_CASE("deform_conv2d: zero offsets and unit mask equal conv2d") {
  Generator g(5);
  for (auto [a, groups] : {std::pair{dargs(1, 1, 1, 1, 1, 1, 1, 1), 1}, std::pair{dargs(2, 2, 2, 2, 2, 2, 2, 2), 2}}) {
    Tensor x = rand_normal({2, 8, 13, 12}, g), w = rand_normal({6, 8 / groups, 3, 3}, g, 0, 0.2);
    Tensor b = rand_normal({6}, g);
    const Shape ys = ops::conv2d_output_shape(x.shape(), w.shape(), Conv2dArgs::make(a.stride[0], a.padding[0],
                                                                                       a.dilation[0], groups));
    Tensor off = Tensor::zeros({2, 2 * a.deform_groups * 9, ys[2], ys[3]});
    Tensor ones = Tensor::ones({2, a.deform_groups * 9, ys[2], ys[3]});
    Tensor ref = ops::conv2d(x, w, b, Conv2dArgs::make(a.stride[0], a.padding[0], a.dilation[0], groups));
    check_close(ops::deform_conv2d(x, off, Tensor(), w, b, a), ref, 1e-5, 1e-5, "v1 vs conv2d");
    check_close(ops::deform_conv2d(x, off, ones, w, b, a), ref, 1e-5, 1e-5, "v2 vs conv2d");
  }
}

TEST_CASE("deform_conv2d: torchvision parity, forward and backward (v1, v2, stride, dilation, groups)") {
  for (int i = 0; i < 22; ++i) {
    // Second pass: tiny chunks through the same cases.
    CAPTURE(i);
    cpu::set_deform_conv2d_chunk_bytes(i < 11 ? 0 : 3000);
    struct Restore {
      ~Restore() { cpu::set_deform_conv2d_chunk_bytes(0); }
    } restore;
    auto f = load_fixture("deform_conv2d_" + std::to_string(i % 11));
    if (!f) return;
    int64_t v[8];
    char comma;
    std::istringstream s(f->metadata.at("args"));
    s >> v[0];
    for (int j = 1; j < 8; ++j) s >> comma >> v[j];
    const DeformConvArgs a = dargs(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
    const bool has_mask = f->metadata.at("mask") == "1", bias = f->metadata.at("bias") == "1";
    for (DType dt : {DType::F32, DType::F64}) {
      CAPTURE(dtype_name(dt));
      const double tol = dt == DType::F32 ? 5e-5 : 1e-10;
      Var x(f->at("x").to(dt), true), off(f->at("offset").to(dt), true), w(f->at("w").to(dt), true);
      Var m = has_mask ? Var(f->at("mask").to(dt), true) : Var();
      Var b = bias ? Var(f->at("b").to(dt), true) : Var();
      Var y = deform_conv2d(x, off, m, w, b, a);
      CHECK(y.dtype() == dt);
      check_close(y.data(), f->at("y"), tol, tol, "deform_conv2d y");
      y.backward(f->at("r").to(dt));
      check_close(x.grad(), f->at("gx"), tol, tol, "grad x");
      check_close(off.grad(), f->at("goffset"), tol, 4 * tol, "grad offset");
      if (has_mask) check_close(m.grad(), f->at("gmask"), tol, 4 * tol, "grad mask");
      check_close(w.grad(), f->at("gw"), tol, 10 * tol, "grad w");
      if (bias) check_close(b.grad(), f->at("gb"), tol, 10 * tol, "grad b");
    }
  }
}

TEST_CASE("deform_conv2d: bit-identical across runs; thread counts agree") {
  Generator g(11);
  Tensor x = rand_normal({2, 24, 15, 14}, g), w = rand_normal({32, 24, 3, 3}, g, 0, 0.1);
  Tensor off = rand_normal({2, 18, 15, 14}, g, 0, 2), m = rand_uniform({2, 9, 15, 14}, g, 0, 1);
  Tensor gy = rand_normal({2, 32, 15, 14}, g);
  const DeformConvArgs a = DeformConvArgs::make(1, 1);
  auto run = [&] {
    std::vector<std::vector<float>> r{ops::deform_conv2d(x, off, m, w, Tensor(), a).to_vector<float>()};
    for (auto& t : ops::deform_conv2d_backward(gy, x, off, m, w, false, a))
      if (t.defined()) r.push_back(t.to_vector<float>());
    return r;
  };
  const auto r1 = run(), r2 = run();
  CHECK(r1 == r2);
  const int nth = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto r3 = run();
  omp_set_num_threads(nth);
  REQUIRE(r3.size() == 5);  // y, gx, goffset, gmask, gw
  // y, gx, goffset and gmask do not depend on the thread count (same per-element order, thread-count-independent
  // GEMM); the weight gradient sums per-thread partials, so only agrees to rounding.
  for (size_t i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(r3[i] == r1[i]);
  }
  const Shape s{int64_t(r1[4].size())};
  check_close(Tensor::from_vector(r3[4], s), Tensor::from_vector(r1[4], s), 1e-4, 1e-4, "gw: 1 thread vs default");
}

TEST_CASE("deform_conv2d: a NaN offset gives a NaN output and gradients (not a silent 'outside' zero)") {
  Generator g(2);
  Tensor x = rand_normal({1, 2, 5, 5}, g), w = rand_normal({3, 2, 3, 3}, g);
  auto ov = Tensor::zeros({1, 18, 5, 5}).to_vector<float>();
  ov[4 * 25 + 7] = std::nanf("");  // tap 2, y offset, output pixel (1, 2)
  Tensor off = Tensor::from_vector(ov, {1, 18, 5, 5});
  auto y = ops::deform_conv2d(x, off, Tensor(), w, Tensor(), DeformConvArgs::make(1, 1)).to_vector<float>();
  for (int o = 0; o < 3; ++o) {
    CHECK(std::isnan(y[o * 25 + 7]));
    CHECK(std::isfinite(y[o * 25 + 6]));
  }
  auto d = ops::deform_conv2d_backward(Tensor::ones({1, 3, 5, 5}), x, off, Tensor(), w, false,
                                       DeformConvArgs::make(1, 1));
  auto gw = d[3].to_vector<float>();
  CHECK(std::any_of(gw.begin(), gw.end(), [](float v) { return std::isnan(v); }));
}

TEST_CASE("deform_conv2d: errors name the op and the shapes") {
  Tensor x = Tensor::zeros({2, 4, 8, 8}), w = Tensor::zeros({6, 4, 3, 3});
  const DeformConvArgs a = DeformConvArgs::make(1, 1);
  CHECK_THROWS_WITH_AS(ops::deform_conv2d(x, Tensor::zeros({2, 9, 8, 8}), Tensor(), w, Tensor(), a),
                       doctest::Contains("deform_conv2d: offset [2, 9, 8, 8] must be [2, 18, 8, 8]"), Error);
  CHECK_THROWS_WITH_AS(
      ops::deform_conv2d(x, Tensor::zeros({2, 18, 8, 8}), Tensor::zeros({2, 18, 8, 8}), w, Tensor(), a),
      doctest::Contains("deform_conv2d: mask [2, 18, 8, 8] must be [2, 9, 8, 8]"), Error);
  CHECK_THROWS_WITH_AS(ops::deform_conv2d(x, Tensor::zeros({2, 36, 8, 8}), Tensor(), w, Tensor(),
                                          DeformConvArgs::make(1, 1, 1, 1, 3)),
                       doctest::Contains("not divisible by deform_groups=3"), Error);
  CHECK_THROWS_WITH_AS(ops::deform_conv2d(Tensor::zeros({1, 4, 2, 2}), Tensor::zeros({1, 18, 1, 1}), Tensor(), w,
                                          Tensor(), DeformConvArgs{}),
                       doctest::Contains("smaller than the dilated kernel"), Error);
  CHECK_THROWS_AS(ops::deform_conv2d(x, Tensor::zeros({2, 18, 8, 8}, DType::F64), Tensor(), w, Tensor(), a), Error);
}
