// The fused / sparse kernels behind the KD losses' speed (issue 5): each one against the chain of plain
// engine ops it replaces (values and gradients, f64 and f32), plus float64 gradchecks.
#include <doctest/doctest.h>

#include <functional>

#include <omp.h>

#include "distill/kd_common.h"
#include "distill/loss_fbkd.h"
#include "distill/loss_ssim.h"
#include "engine/ops/conv2d.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/masked_conv2d.h"
#include "engine/ops/matmul.h"
#include "engine/ops/pool2d.h"
#include "engine/ops/reduce.h"
#include "engine/ops/sep_filter2d.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/unary.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

namespace {

// A 0/1 mask with roughly `keep` of the entries 1 (and whole rows zeroed where `zero_row` says).
Tensor binary_mask(const Shape& s, uint64_t seed, double keep, int64_t zero_row = -1) {
  Tensor r = rnd(s, seed, 0.0, 1.0);
  auto v = r.to_vector<double>();
  const int64_t row = s.numel() / s[0];
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = (static_cast<int64_t>(i) / row == zero_row) ? 0.0 : (v[i] < keep ? 1.0 : 0.0);
  return Tensor::from_vector(v, s);
}

// f(inputs) and the reference ref(inputs) agree in value and in the gradients of Σ y ⊙ r for every input.
void same_values_and_grads(const std::function<Var(const std::vector<Var>&)>& f,
                           const std::function<Var(const std::vector<Var>&)>& ref, const std::vector<Tensor>& in,
                           double rtol, double atol, const std::string& what) {
  std::vector<Var> a, b;
  for (const Tensor& t : in) {
    a.emplace_back(t.clone(), true);
    b.emplace_back(t.clone(), true);
  }
  Var ya = f(a), yb = ref(b);
  check_close(ya.data(), yb.data(), rtol, atol, what + " (value)");
  Generator g(5);
  const Tensor r = rand_normal(ya.shape(), g, 0.0, 1.0, ya.dtype());
  ya.backward(r);
  yb.backward(r);
  for (size_t i = 0; i < in.size(); ++i) {
    REQUIRE_MESSAGE(a[i].grad().defined() == b[i].grad().defined(), what << ": gradient " << i << " presence");
    if (a[i].grad().defined()) check_close(a[i].grad(), b[i].grad(), rtol, atol, what + " (grad " + std::to_string(i) + ")");
  }
}

Conv2dArgs args(int64_t kh_pad, int64_t kw_pad, int64_t stride = 1) {
  Conv2dArgs a;
  a.pad_h = kh_pad, a.pad_w = kw_pad, a.stride_h = a.stride_w = stride;
  return a;
}

}  // namespace

TEST_CASE("kd speed kernels: masked_conv2d == conv2d(x ⊙ m) (spatial and channel masks, f64 and f32, grads)") {
  struct Case {
    Shape x, w;
    Conv2dArgs a;
    bool channel;
    double keep;
    int64_t zero_row;
    bool bias;
    bool soft;  // non-binary mask values
  };
  const std::vector<Case> cases = {
      {{2, 5, 7, 6}, {4, 5, 3, 3}, args(1, 1), false, 0.4, -1, true, false},
      {{2, 5, 7, 6}, {4, 5, 3, 3}, args(1, 1), false, 0.4, 1, true, false},   // one image fully masked
      {{2, 3, 6, 5}, {4, 3, 3, 3}, args(0, 0), false, 0.5, -1, false, false}, // valid conv
      {{1, 3, 5, 8}, {2, 3, 1, 3}, args(0, 1), false, 0.6, -1, true, true},   // 1x3 kernel, soft mask
      {{2, 2, 6, 6}, {3, 2, 5, 5}, args(2, 2), false, 0.3, -1, true, false},  // 5x5
      {{2, 4, 5, 5}, {3, 4, 1, 1}, args(0, 0), false, 0.5, -1, true, false},  // 1x1
      {{1, 3, 24, 24}, {4, 3, 3, 3}, args(1, 1), false, 1.0, -1, true, false},  // > 1 chunk of kept pixels
      {{2, 3, 7, 7}, {4, 3, 3, 3}, args(1, 1, 2), false, 0.5, -1, true, false}, // stride 2: dense fallback
      {{2, 6, 5, 4}, {4, 6, 3, 3}, args(1, 1), true, 0.4, -1, true, false},
      {{2, 6, 5, 4}, {4, 6, 3, 3}, args(1, 1), true, 0.5, 0, false, true},     // channel, image 0 fully masked
      {{2, 6, 7, 7}, {4, 6, 3, 3}, args(1, 1, 2), true, 0.5, -1, true, false}, // channel mask, stride 2
  };
  int ci = 0;
  for (const Case& c : cases) {
    const std::string what = "case " + std::to_string(ci++);
    const Shape ms = c.channel ? Shape{c.x[0], c.x[1], 1, 1} : Shape{c.x[0], 1, c.x[2], c.x[3]};
    Tensor m = binary_mask(ms, 100 + ci, c.keep, c.zero_row);
    if (c.soft) m = ops::mul(m, rnd(ms, 200 + ci, 0.5, 1.5));
    std::vector<Tensor> in = {rnd(c.x, 300 + ci), rnd(c.w, 400 + ci, -0.5, 0.5)};
    if (c.bias) in.push_back(rnd({c.w[0]}, 500 + ci));
    for (DType dt : {DType::F64, DType::F32}) {
      std::vector<Tensor> ind;
      for (const Tensor& t : in) ind.push_back(t.to(dt));
      const Tensor md = m.to(dt);
      auto f = [&](const std::vector<Var>& v) { return masked_conv2d(v[0], md, v[1], c.bias ? v[2] : Var(), c.a); };
      auto ref = [&](const std::vector<Var>& v) { return conv2d(v[0] * Var(md), v[1], c.bias ? v[2] : Var(), c.a); };
      const bool f64 = dt == DType::F64;
      same_values_and_grads(f, ref, ind, f64 ? 1e-12 : 2e-5, f64 ? 1e-13 : 2e-5, what + (f64 ? " f64" : " f32"));
    }
    if (c.x.numel() < 400)
      CHECK(gradcheck([&](const std::vector<Var>& v) { return masked_conv2d(v[0], m, v[1], c.bias ? v[2] : Var(), c.a); },
                      in));
  }
  // the masked part of x gets an exact zero gradient; a wrong mask shape is an error naming both shapes
  Var x(rnd({1, 2, 4, 4}, 1), true);
  const Tensor m = binary_mask({1, 1, 4, 4}, 2, 0.5);
  Var y = sum(masked_conv2d(x, m, Var(rnd({3, 2, 3, 3}, 3)), Var(), args(1, 1)));
  y.backward();
  const auto gx = x.grad().to_vector<double>(), mv = m.to_vector<double>();
  for (size_t i = 0; i < gx.size(); ++i)
    if (mv[i % 16] == 0.0) CHECK(gx[i] == 0.0);
  CHECK_THROWS_WITH_AS(masked_conv2d(x, Tensor::ones({1, 2, 4, 1}, DType::F64), Var(rnd({3, 2, 3, 3}, 3)), Var(),
                                     args(1, 1)),
                       doctest::Contains("masked_conv2d: mask f64[1, 2, 4, 1]"), Error);
}

namespace {

// The SSIM map of kd_losses.md §5b as a chain of plain engine ops (the pre-fusion implementation).
Var ssim_map_reference(const Var& x, const Var& y, const std::vector<double>& g, double C1, double C2) {
  auto filt = [&](const Var& z) { return sep_filter2d(z, g); };
  Var mx = filt(x), my = filt(y);
  Var mx2 = mx * mx, my2 = my * my, mxy = mx * my;
  Var sxx = filt(x * x) - mx2, syy = filt(y * y) - my2, sxy = filt(x * y) - mxy;
  return ((mxy * 2.0 + C1) * (sxy * 2.0 + C2)) / ((mx2 + my2 + C1) * (sxx + syy + C2));
}

Var minmax_reference(const Var& x, double eps) {
  Var mn = amin(x, {2, 3}, true), mx = amax(x, {2, 3}, true);
  return (x - mn) / (mx - mn + eps);
}

}  // namespace

TEST_CASE("kd speed kernels: fused SSIM map / loss and min-max == the op chains (values, grads, f64/f32, gradcheck)") {
  const double C1 = 1e-4, C2 = 9e-4;
  for (auto [w, sigma] : {std::pair<int64_t, double>{11, 1.5}, {5, 1.0}}) {
    const std::vector<double> g = kd::gaussian_kernel_1d(w, sigma);
    for (const Shape& s : {Shape{2, 3, 9, 7}, Shape{1, 2, 2, 3}, Shape{1, 1, 16, 13}}) {
      const Tensor y = rnd(s, 7, 0.0, 1.0);
      for (DType dt : {DType::F64, DType::F32}) {
        const bool f64 = dt == DType::F64;
        const Tensor yd = y.to(dt);
        same_values_and_grads([&](const std::vector<Var>& v) { return kd::ssim_map(v[0], Var(yd), g, C1, C2); },
                              [&](const std::vector<Var>& v) { return ssim_map_reference(v[0], Var(yd), g, C1, C2); },
                              {rnd(s, 8, 0.0, 1.0).to(dt)}, f64 ? 1e-11 : 1e-3, f64 ? 1e-12 : 1e-4, "ssim_map");
        same_values_and_grads(
            [&](const std::vector<Var>& v) { return kd::ssim_loss(v[0], yd, g, C1, C2); },
            [&](const std::vector<Var>& v) { return mean(1.0 - ssim_map_reference(v[0], Var(yd), g, C1, C2)); },
            {rnd(s, 9, 0.0, 1.0).to(dt)}, f64 ? 1e-12 : 1e-5, f64 ? 1e-14 : 1e-6, "ssim_loss");
      }
      Tensor map;
      kd::ssim_loss(Var(rnd(s, 10, 0.0, 1.0)), y, g, C1, C2, &map);
      check_close(map, kd::ssim_map(Var(rnd(s, 10, 0.0, 1.0)), Var(y), g, C1, C2).data(), 0, 0, "ssim_loss map out");
    }
    CHECK(gradcheck([&](const std::vector<Var>& v) { return kd::ssim_map(v[0], Var(rnd({2, 2, 6, 5}, 11, 0, 1)), g, C1, C2); },
                    {rnd({2, 2, 6, 5}, 12, 0.0, 1.0)}));
    CHECK(gradcheck([&](const std::vector<Var>& v) { return kd::ssim_loss(v[0], rnd({2, 2, 6, 5}, 11, 0, 1), g, C1, C2); },
                    {rnd({2, 2, 6, 5}, 12, 0.0, 1.0)}));
  }
  CHECK_THROWS_AS(kd::ssim_map(Var(rnd({1, 1, 3, 3}, 1)), Var(rnd({1, 1, 3, 3}, 2), true), {0.25, 0.5, 0.25}, C1, C2),
                  Error);

  // min-max: distinct values, tied minima and maxima (gradient split evenly), a constant plane
  auto v = rnd({2, 3, 4, 5}, 13).to_vector<double>();
  for (int i = 0; i < 4; ++i) v[20 + 2 * i] = -2.0;           // plane 1: four tied minima
  for (int i = 0; i < 3; ++i) v[40 + 5 * i] = 3.0;            // plane 2: three tied maxima
  for (int i = 60; i < 80; ++i) v[i] = 0.25;                  // plane 3: constant
  const Tensor x = Tensor::from_vector(v, {2, 3, 4, 5});
  for (DType dt : {DType::F64, DType::F32}) {
    const bool f64 = dt == DType::F64;
    same_values_and_grads([](const std::vector<Var>& a) { return kd::minmax_normalize(a[0], 1e-12); },
                          [](const std::vector<Var>& a) { return minmax_reference(a[0], 1e-12); }, {x.to(dt)},
                          f64 ? 1e-13 : 1e-5, f64 ? 1e-13 : 1e-5, "minmax_normalize");
  }
  CHECK(gradcheck([](const std::vector<Var>& a) { return kd::minmax_normalize(a[0], 1e-3); }, {rnd({2, 2, 3, 4}, 14)}));
}

TEST_CASE("kd speed kernels: fused |f| means, attention maps and Σ w·(a − b)² == the op chains (f64/f32, gradcheck)") {
  for (DType dt : {DType::F64, DType::F32}) {
    const bool f64 = dt == DType::F64;
    const double rt = f64 ? 1e-13 : 1e-5, at = f64 ? 1e-14 : 1e-6;
    Tensor f = rnd({2, 11, 5, 6}, 21).to(dt);  // 11 channels: uneven channel blocks
    same_values_and_grads([](const std::vector<Var>& v) { return kd::abs_mean_channels(v[0]); },
                          [](const std::vector<Var>& v) { return mean(abs(v[0]), {1}); }, {f}, rt, at, "abs_mean_c");
    same_values_and_grads([](const std::vector<Var>& v) { return kd::abs_mean_spatial(v[0]); },
                          [](const std::vector<Var>& v) { return mean(abs(v[0]), {2, 3}); }, {f}, rt, at, "abs_mean_hw");
    // the one-pass pair equals the two ops bit for bit, and attention_maps equals the differentiable maps
    const auto [sp, ch] = kd::abs_means(f);
    check_close(sp, kd::abs_mean_channels(Var(f)).data(), 0, 0, "abs_means sp");
    check_close(ch, kd::abs_mean_spatial(Var(f)).data(), 0, 0, "abs_means ch");
    const auto [as, ac] = kd::attention_maps(f, 0.5, 0.7);
    check_close(as, kd::spatial_attention(Var(f), 0.5).data(), 0, 0, "attention_maps spatial");
    check_close(ac, kd::channel_attention(Var(f), 0.7).data(), 0, 0, "attention_maps channel");

    // signed means (GAP and channel mean) in one op, with the |·| means of the same pass
    for (int which = 0; which < 2; ++which)
      same_values_and_grads(
          [which](const std::vector<Var>& v) {
            auto [gap, chm] = kd::signed_means(v[0]);
            return which == 0 ? gap : chm;
          },
          [which](const std::vector<Var>& v) { return which == 0 ? mean(v[0], {2, 3}) : mean(v[0], {1}, true); }, {f},
          rt, at, "signed_means");
    std::pair<Tensor, Tensor> am;
    kd::signed_means(Var(f), &am);
    check_close(am.first, sp, 0, 0, "signed_means abs sp");
    check_close(am.second, ch, 0, 0, "signed_means abs ch");

    // Σ w·w2·(a − b)² for every weight layout, summed or per image, both inputs differentiable
    const Shape s{2, 3, 4, 5};
    const Tensor wf = rnd(s, 22, 0.1, 1.0).to(dt), wsp = rnd({2, 1, 4, 5}, 23, 0.1, 1.0).to(dt),
                 wch = rnd({2, 3, 1, 1}, 24, 0.1, 1.0).to(dt);
    const std::vector<std::pair<Tensor, Tensor>> weights = {{Tensor(), Tensor()}, {wf, Tensor()}, {wsp, Tensor()},
                                                            {wch, Tensor()},      {wsp, wch},      {wch, wf}};
    for (bool per_image : {false, true})
      for (const auto& [w1, w2] : weights) {
        auto ref = [&, w1 = w1, w2 = w2](const std::vector<Var>& v) {
          Var d = v[0] - v[1];
          Var e = d * d;
          if (w1.defined()) e = e * Var(w1);
          if (w2.defined()) e = e * Var(w2);
          return per_image ? sum(e, {1, 2, 3}) : sum(e);
        };
        same_values_and_grads([&, w1 = w1, w2 = w2](const std::vector<Var>& v) {
          return kd::sq_dist_sum(v[0], v[1], w1, per_image, w2);
        }, ref, {rnd(s, 25).to(dt), rnd(s, 26).to(dt)}, rt, at, "sq_dist_sum");
      }
    same_values_and_grads([](const std::vector<Var>& v) { return kd::sq_dist_sum(v[0], v[1], Tensor(), true); },
                          [](const std::vector<Var>& v) { return sum((v[0] - v[1]) * (v[0] - v[1]), {1}); },
                          {rnd({3, 7}, 27).to(dt), rnd({3, 7}, 28).to(dt)}, rt, at, "sq_dist_sum 2-D");
  }
  CHECK(gradcheck([](const std::vector<Var>& v) { return kd::abs_mean_channels(v[0]); }, {rnd({2, 3, 2, 3}, 31)}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return kd::abs_mean_spatial(v[0]); }, {rnd({2, 3, 2, 3}, 32)}));
  CHECK(gradcheck([](const std::vector<Var>& v) {
    auto [gap, chm] = kd::signed_means(v[0]);
    return sum(gap * gap) + sum(chm * chm * chm);
  }, {rnd({2, 3, 2, 3}, 37)}));
  CHECK(gradcheck([](const std::vector<Var>& v) {
    return kd::sq_dist_sum(v[0], v[1], rnd({2, 1, 2, 3}, 33, 0.1, 1.0), true, rnd({2, 3, 1, 1}, 34, 0.1, 1.0));
  }, {rnd({2, 3, 2, 3}, 35), rnd({2, 3, 2, 3}, 36)}));
  CHECK_THROWS_WITH_AS(kd::sq_dist_sum(Var(rnd({2, 3, 2, 3}, 1)), Var(rnd({2, 3, 2, 3}, 2)), rnd({2, 3, 2, 1}, 3)),
                       doctest::Contains("kd_sq_dist_sum: weight f64[2, 3, 2, 1]"), Error);
}

namespace {

// The non-local attention core as the chain of engine ops it replaces (1×1 convs, max-pools, matmuls).
Var nonlocal_reference(const std::vector<Var>& v, int64_t k) {
  const Var& x = v[0];
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), I = v[1].size(0);
  Var th = reshape(conv2d(x, v[1], v[2], Conv2dArgs{}), {N, I, H * W});
  Var ph = conv2d(x, v[3], v[4], Conv2dArgs{}), gx = conv2d(x, v[5], v[6], Conv2dArgs{});
  if (k > 1) {
    ph = max_pool2d(ph, k, k, 0);
    gx = max_pool2d(gx, k, k, 0);
  }
  const int64_t M = ph.size(2) * ph.size(3);
  Var f = matmul(transpose(th, 1, 2), reshape(ph, {N, I, M})) / static_cast<double>(M);
  Var y = matmul(f, transpose(reshape(gx, {N, I, M}), 1, 2));
  return reshape(transpose(y, 1, 2), {N, I, H, W});
}

}  // namespace

TEST_CASE("kd speed kernels: fused non-local attention == convs + max-pools + matmuls (f64/f32, gradcheck)") {
  struct Case {
    Shape x;
    int64_t I, k;
  };
  for (const Case& c : {Case{{2, 5, 8, 8}, 3, 4}, Case{{2, 4, 7, 5}, 2, 2}, Case{{1, 3, 4, 6}, 4, 1}, Case{{2, 3, 3, 3}, 2, 3}}) {
    const int64_t C = c.x[1];
    const std::vector<Tensor> in = {rnd(c.x, 41),         rnd({c.I, C, 1, 1}, 42), rnd({c.I}, 43),
                                    rnd({c.I, C, 1, 1}, 44), rnd({c.I}, 45),         rnd({c.I, C, 1, 1}, 46),
                                    rnd({c.I}, 47)};
    auto f = [&](const std::vector<Var>& v) { return kd::nonlocal_attention(v[0], v[1], v[2], v[3], v[4], v[5], v[6], c.k); };
    auto ref = [&](const std::vector<Var>& v) { return nonlocal_reference(v, c.k); };
    for (DType dt : {DType::F64, DType::F32}) {
      std::vector<Tensor> ind;
      for (const Tensor& t : in) ind.push_back(t.to(dt));
      const bool f64 = dt == DType::F64;
      same_values_and_grads(f, ref, ind, f64 ? 1e-12 : 1e-4, f64 ? 1e-13 : 1e-5, "nonlocal_attention");
    }
    CHECK(gradcheck(f, in));
  }
  // ties inside a pooling window: the gradient goes to the first maximum, as torch's max_pool2d
  const Tensor x = Tensor::ones({1, 1, 2, 2}, DType::F64);
  const std::vector<Tensor> in = {x, Tensor::ones({1, 1, 1, 1}, DType::F64), Tensor::zeros({1}, DType::F64),
                                  Tensor::ones({1, 1, 1, 1}, DType::F64), Tensor::zeros({1}, DType::F64),
                                  Tensor::ones({1, 1, 1, 1}, DType::F64), Tensor::zeros({1}, DType::F64)};
  same_values_and_grads([](const std::vector<Var>& v) { return kd::nonlocal_attention(v[0], v[1], v[2], v[3], v[4], v[5], v[6], 2); },
                        [](const std::vector<Var>& v) { return nonlocal_reference(v, 2); }, in, 1e-14, 1e-15,
                        "nonlocal_attention ties");
}

TEST_CASE("kd speed kernels: masked_conv2d and non-local attention give the same bits with 1 and 2 threads") {
  // values and all gradients of Σ y ⊙ r, f32, for a given thread count
  auto run = [](int threads, const std::function<Var(const std::vector<Var>&)>& f, const std::vector<Tensor>& in) {
    const int prev = omp_get_max_threads();
    omp_set_num_threads(threads);
    std::vector<Var> v;
    for (const Tensor& t : in) v.emplace_back(t.clone(), true);
    Var y = f(v);
    Generator g(3);
    y.backward(rand_normal(y.shape(), g, 0.0, 1.0, y.dtype()));
    std::vector<Tensor> out = {y.data()};
    for (auto& x : v) out.push_back(x.grad());
    omp_set_num_threads(prev);
    return out;
  };
  const Tensor m = binary_mask({3, 1, 20, 20}, 7, 0.35).to(DType::F32);
  const std::vector<Tensor> cin = {rnd({3, 8, 20, 20}, 1).to(DType::F32), rnd({16, 8, 3, 3}, 2).to(DType::F32),
                                   rnd({16}, 3).to(DType::F32)};
  auto conv = [&](const std::vector<Var>& v) { return masked_conv2d(v[0], m, v[1], v[2], args(1, 1)); };
  const int64_t C = 8, I = 4;
  const std::vector<Tensor> nin = {rnd({3, C, 16, 16}, 4).to(DType::F32), rnd({I, C, 1, 1}, 5).to(DType::F32),
                                   rnd({I}, 6).to(DType::F32),           rnd({I, C, 1, 1}, 7).to(DType::F32),
                                   rnd({I}, 8).to(DType::F32),           rnd({I, C, 1, 1}, 9).to(DType::F32),
                                   rnd({I}, 10).to(DType::F32)};
  auto nl = [](const std::vector<Var>& v) { return kd::nonlocal_attention(v[0], v[1], v[2], v[3], v[4], v[5], v[6], 4); };
  for (auto [f, in] : {std::pair{std::function<Var(const std::vector<Var>&)>(conv), cin},
                       std::pair{std::function<Var(const std::vector<Var>&)>(nl), nin}}) {
    const auto a = run(1, f, in), b = run(2, f, in);
    for (size_t i = 0; i < a.size(); ++i) check_close(a[i], b[i], 0, 0, "threads 1 vs 2, output " + std::to_string(i));
  }
}
