#include <doctest/doctest.h>

#include <cstdio>
#include <sstream>

#include "engine/ops/conv2d.h"
#include "engine/ops/conv2d_winograd.h"
#include "engine/ops/elementwise.h"
#include "engine/random.h"
#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

Conv2dArgs args(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t g) {
  Conv2dArgs a;
  a.stride_h = sh, a.stride_w = sw, a.pad_h = ph, a.pad_w = pw, a.dilation_h = dh, a.dilation_w = dw, a.groups = g;
  return a;
}

// Direct 7-loop conv in double (the definition), for checking the GEMM path.
Tensor conv_naive(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dArgs& a) {
  Shape ys = ops::conv2d_output_shape(x.shape(), w.shape(), a);
  auto xv = x.to_vector<double>(), wv = w.to_vector<double>();
  std::vector<double> bv = b.defined() ? b.to_vector<double>() : std::vector<double>(ys[1], 0.0);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = w.size(0), Cg = w.size(1),
                KH = w.size(2), KW = w.size(3), Ho = ys[2], Wo = ys[3], Og = O / a.groups;
  std::vector<double> y(ys.numel());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double acc = bv[o];
          const int64_t g = o / Og;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t ih = oh * a.stride_h - a.pad_h + kh * a.dilation_h;
                const int64_t iw = ow * a.stride_w - a.pad_w + kw * a.dilation_w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += xv[((n * C + g * Cg + c) * H + ih) * W + iw] * wv[((o * Cg + c) * KH + kh) * KW + kw];
              }
          y[((n * O + o) * Ho + oh) * Wo + ow] = acc;
        }
  return Tensor::from_vector(y, ys);
}

Var conv_fn(const std::vector<Var>& v, const Conv2dArgs& a, bool bias) {
  return conv2d(v[0], v[1], bias ? v[2] : Var(), a);
}

}  // namespace

TEST_CASE("conv2d: gradcheck f64 (stride, padding, dilation, groups, bias / no bias)") {
  struct C {
    int64_t n, c, h, w, o, kh, kw;
    Conv2dArgs a;
    bool bias;
  };
  const std::vector<C> cases = {
      {2, 3, 5, 6, 4, 3, 3, args(1, 1, 1, 1, 1, 1, 1), true},
      {1, 4, 6, 5, 6, 3, 3, args(2, 2, 1, 1, 1, 1, 2), false},
      {1, 2, 7, 7, 3, 3, 3, args(1, 1, 2, 2, 2, 2, 1), true},
      {2, 4, 4, 5, 4, 3, 3, args(1, 1, 1, 1, 1, 1, 4), true},   // depthwise
      {2, 3, 4, 3, 5, 1, 1, args(1, 1, 0, 0, 1, 1, 1), false},  // 1x1 direct path
      {1, 4, 7, 8, 4, 2, 3, args(2, 1, 1, 0, 1, 2, 2), true},   // asymmetric
      {1, 2, 9, 9, 3, 5, 5, args(2, 2, 2, 2, 1, 1, 1), false},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const C& k = cases[i];
    CAPTURE(i);
    std::vector<Tensor> in = {rnd({k.n, k.c, k.h, k.w}, 10 + i), rnd({k.o, k.c / k.a.groups, k.kh, k.kw}, 20 + i)};
    if (k.bias) in.push_back(rnd({k.o}, 30 + i));
    CHECK(gradcheck([&](const std::vector<Var>& v) { return conv_fn(v, k.a, k.bias); }, in));
  }
}

TEST_CASE("conv2d: f32 GEMM path matches the direct definition and the f64 path") {
  // Sizes large enough for several micro-kernel panels, threads and K blocks (K = 64*9 = 576 > KC).
  struct C {
    int64_t n, c, h, w, o, k;
    Conv2dArgs a;
  };
  const std::vector<C> cases = {
      {1, 64, 30, 31, 70, 3, args(1, 1, 1, 1, 1, 1, 1)},  // 930 px: two im2col chunks
      {1, 48, 12, 12, 96, 3, args(2, 2, 1, 1, 1, 1, 4)},
      {2, 40, 9, 10, 33, 1, args(1, 1, 0, 0, 1, 1, 1)},
      {1, 3, 37, 75, 64, 7, args(2, 2, 3, 3, 1, 1, 1)},  // Wo = 38: vectorised stride-2 im2col
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const C& k = cases[i];
    CAPTURE(i);
    Generator g(100 + i);
    Tensor x64 = rand_normal({k.n, k.c, k.h, k.w}, g, 0, 1, DType::F64);
    Tensor w64 = rand_normal({k.o, k.c / k.a.groups, k.k, k.k}, g, 0, 0.1, DType::F64);
    Tensor b64 = rand_normal({k.o}, g, 0, 1, DType::F64);
    Tensor ref = conv_naive(x64, w64, b64, k.a);
    Tensor y64 = ops::conv2d(x64, w64, b64, k.a);
    check_close(y64, ref, 1e-12, 1e-12, "conv2d f64 vs direct");
    Tensor x = x64.to(DType::F32), w = w64.to(DType::F32), b = b64.to(DType::F32);
    Tensor y = ops::conv2d(x, w, b, k.a);
    CHECK(y.dtype() == DType::F32);
    check_close(y, ref, 1e-4, 1e-4, "conv2d f32 vs direct");
    // Backward f32 vs f64.
    Tensor gy64 = rand_normal(y.shape(), g, 0, 1, DType::F64), gy = gy64.to(DType::F32);
    check_close(ops::conv2d_backward_input(gy, w, x.shape(), k.a),
                ops::conv2d_backward_input(gy64, w64, x64.shape(), k.a), 1e-4, 1e-4, "backward_input f32 vs f64");
    check_close(ops::conv2d_backward_weight(gy, x, w.shape(), k.a),
                ops::conv2d_backward_weight(gy64, x64, w64.shape(), k.a), 1e-4, 2e-3, "backward_weight f32 vs f64");
    check_close(ops::conv2d_backward_bias(gy), ops::conv2d_backward_bias(gy64), 1e-5, 1e-3, "backward_bias");
  }
}

TEST_CASE("conv2d: PyTorch parity (f32 and f64, groups, dilation, strides)") {
  for (int i = 0; i < 20; ++i) {
    // Second pass: tiny im2col chunks (pixel ranges that start and end mid-row) through the same cases.
    CAPTURE(i);
    cpu::set_conv2d_chunk_bytes(i < 10 ? 0 : 3000);
    struct Restore {
      ~Restore() { cpu::set_conv2d_chunk_bytes(0); }
    } restore;
    auto f = load_fixture("conv2d_" + std::to_string(i % 10));
    if (!f) return;
    int64_t v[7];
    char comma;
    std::istringstream s(f->metadata.at("args"));
    s >> v[0];
    for (int j = 1; j < 7; ++j) s >> comma >> v[j];
    const Conv2dArgs a = args(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    const bool bias = f->metadata.at("bias") == "1";
    for (DType dt : {DType::F32, DType::F64}) {
      CAPTURE(dtype_name(dt));
      const double tol = dt == DType::F32 ? 2e-5 : 1e-10;
      Var x(f->at("x").to(dt), true), w(f->at("w").to(dt), true);
      Var b = bias ? Var(f->at("b").to(dt), true) : Var();
      Var y = conv2d(x, w, b, a);
      CHECK(y.dtype() == dt);
      check_close(y.data(), f->at("y"), tol, tol, "conv2d y");
      y.backward(f->at("r").to(dt));
      check_close(x.grad(), f->at("gx"), tol, tol, "conv2d grad x");
      check_close(w.grad(), f->at("gw"), tol, 10 * tol, "conv2d grad w");
      if (bias) check_close(b.grad(), f->at("gb"), tol, 10 * tol, "conv2d grad b");
    }
  }
}

TEST_CASE("conv2d: errors name the op and the shapes") {
  Tensor x = Tensor::zeros({2, 4, 8, 8}), w = Tensor::zeros({8, 3, 3, 3});
  CHECK_THROWS_WITH_AS(ops::conv2d(x, w, Tensor(), Conv2dArgs{}),
                       doctest::Contains("conv2d: weight [8, 3, 3, 3] with groups=1 expects 3 input channels"), Error);
  CHECK_THROWS_WITH_AS(ops::conv2d(x, Tensor::zeros({6, 2, 3, 3}), Tensor(), Conv2dArgs::make(1, 0, 1, 4)),
                       doctest::Contains("not divisible by groups=4"), Error);
  CHECK_THROWS_WITH_AS(ops::conv2d(Tensor::zeros({1, 3, 2, 2}), w, Tensor(), Conv2dArgs{}),
                       doctest::Contains("smaller than the dilated kernel"), Error);
  CHECK_THROWS_AS(ops::conv2d(x, Tensor::zeros({8, 4, 3, 3}, DType::F64), Tensor(), Conv2dArgs{}), Error);
}

TEST_CASE("conv2d: bit-identical across runs") {
  Generator g(7);
  Tensor x = rand_normal({2, 32, 17, 19}, g), w = rand_normal({48, 32, 3, 3}, g, 0, 0.1);
  Tensor gy = rand_normal({2, 48, 17, 19}, g);
  const Conv2dArgs a = Conv2dArgs::make(1, 1);
  auto y1 = ops::conv2d(x, w, Tensor(), a).to_vector<float>(), y2 = ops::conv2d(x, w, Tensor(), a).to_vector<float>();
  CHECK(y1 == y2);
  auto g1 = ops::conv2d_backward_weight(gy, x, w.shape(), a).to_vector<float>();
  auto g2 = ops::conv2d_backward_weight(gy, x, w.shape(), a).to_vector<float>();
  CHECK(g1 == g2);
}

namespace {
struct WinogradMode {  // forces the Winograd path for the test's lifetime (any channel count)
  explicit WinogradMode(int m) { cpu::set_conv2d_winograd(m); }
  ~WinogradMode() { cpu::set_conv2d_winograd(0); }
};
}  // namespace

TEST_CASE("conv2d: Winograd F(2x2,3x3) f32 path matches the f64 path (forward, input and weight gradients)") {
  struct C {
    int64_t n, c, h, w, o;
    bool bias;
  };
  // Odd sizes (partial 2×2 tiles), 1×1 and 2×3 maps, K > 256 (two GEMM K blocks), several row chunks
  // (33×130), the whole-batch path (few tiles) and the row-chunk path (many tiles).
  const std::vector<C> cases = {{1, 3, 7, 5, 4, true},   {3, 4, 1, 1, 2, true},    {1, 2, 2, 3, 3, false},
                                {2, 70, 16, 16, 65, false}, {1, 8, 33, 130, 9, true}, {2, 300, 6, 7, 20, false},
                                {2, 64, 32, 40, 64, true}};
  for (int mode : {1, 0}) {  // forced, then automatic (the last case: 64 channels, 2560 pixels)
    WinogradMode wm(mode);
    for (size_t i = 0; i < cases.size(); ++i) {
      const C& k = cases[i];
      if (mode == 0 && i + 1 != cases.size()) continue;
      CAPTURE(mode);
      CAPTURE(i);
      Generator g(300 + i);
      Tensor x64 = rand_normal({k.n, k.c, k.h, k.w}, g, 0, 1, DType::F64);
      Tensor w64 = rand_normal({k.o, k.c, 3, 3}, g, 0, 0.1, DType::F64);
      Tensor b64 = k.bias ? rand_normal({k.o}, g, 0, 1, DType::F64) : Tensor();
      const Conv2dArgs a = Conv2dArgs::make(1, 1);
      Tensor x = x64.to(DType::F32), w = w64.to(DType::F32), b = k.bias ? b64.to(DType::F32) : Tensor();
      Tensor y64 = ops::conv2d(x64, w64, b64, a);
      if (i < 3) check_close(y64, conv_naive(x64, w64, b64, a), 1e-12, 1e-12, "conv2d f64 vs direct");
      check_close(ops::conv2d(x, w, b, a), y64, 1e-4, 1e-4, "winograd forward vs f64");
      Tensor gy64 = rand_normal(y64.shape(), g, 0, 1, DType::F64), gy = gy64.to(DType::F32);
      check_close(ops::conv2d_backward_input(gy, w, x.shape(), a),
                  ops::conv2d_backward_input(gy64, w64, x64.shape(), a), 1e-4, 1e-4, "winograd backward_input");
      check_close(ops::conv2d_backward_weight(gy, x, w.shape(), a),
                  ops::conv2d_backward_weight(gy64, x64, w64.shape(), a), 1e-4, 2e-3, "winograd backward_weight");
    }
  }
}

TEST_CASE("conv2d: Winograd path is bit-identical across runs") {
  WinogradMode wm(1);
  Generator g(8);
  Tensor x = rand_normal({2, 24, 21, 18}, g), w = rand_normal({40, 24, 3, 3}, g, 0, 0.1);
  Tensor gy = rand_normal({2, 40, 21, 18}, g);
  const Conv2dArgs a = Conv2dArgs::make(1, 1);
  CHECK(ops::conv2d(x, w, Tensor(), a).to_vector<float>() == ops::conv2d(x, w, Tensor(), a).to_vector<float>());
  CHECK(ops::conv2d_backward_input(gy, w, x.shape(), a).to_vector<float>() ==
        ops::conv2d_backward_input(gy, w, x.shape(), a).to_vector<float>());
  CHECK(ops::conv2d_backward_weight(gy, x, w.shape(), a).to_vector<float>() ==
        ops::conv2d_backward_weight(gy, x, w.shape(), a).to_vector<float>());
}
