// engine/ops/pool2d.cpp — max/avg pooling, forward and backward (CPU, f32/f64). Threads own whole
// N·C planes (static schedule), so the backward scatter needs no atomics and is deterministic.
#include "engine/ops/pool2d.h"

#include <cmath>
#include <limits>

#include "engine/backend.h"

#if KDET_CUDA
#include "engine/ops/pool2d_cuda.h"
#endif

namespace kdet {

namespace {

int64_t pooled_size(int64_t L, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  const int64_t num = L + 2 * p - k;
  int64_t o = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
  if (ceil_mode && (o - 1) * s >= L + p) --o;  // last window must start inside the input or left padding
  return o;
}

Shape pool_shape(const char* op, const Shape& x, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  KDET_CHECK(x.ndim() == 4, op, ": input must be 4-D [N, C, H, W], got ", x);
  KDET_CHECK(k >= 1 && s >= 1 && p >= 0, op, ": bad kernel ", k, " / stride ", s, " / padding ", p);
  KDET_CHECK(p <= k / 2, op, ": padding ", p, " must be at most half the kernel size ", k);
  KDET_CHECK(x[2] + 2 * p >= k && x[3] + 2 * p >= k, op, ": input ", x, " padded by ", p,
             " is smaller than the kernel ", k);
  return Shape{x[0], x[1], pooled_size(x[2], k, s, p, ceil_mode), pooled_size(x[3], k, s, p, ceil_mode)};
}

}  // namespace

namespace ops {

std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  Shape ys = pool_shape("max_pool2d", x.shape(), k, s, p, ceil_mode);
  if (!x.device().is_cpu()) {
#if KDET_CUDA
    if (x.device().is_cuda()) {
      Tensor y = Tensor::empty(ys, x.dtype(), x.device()), idx = Tensor::empty(ys, DType::I64, x.device());
      cuda::max_pool2d_forward(x.contiguous(), k, s, p, y, idx);
      return {y, idx};
    }
#endif
    no_kernel("max_pool2d", x.device());
  }
  Tensor y = Tensor::empty(ys, x.dtype()), idx = Tensor::empty(ys, DType::I64);
  const Tensor xc = x.contiguous();
  const int64_t H = x.size(2), W = x.size(3), Ho = ys[2], Wo = ys[3], planes = ys[0] * ys[1];
  dispatch_float(x.dtype(), "max_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* px = xc.data<T>();
    T* py = y.data<T>();
    int64_t* pi = idx.data<int64_t>();
#pragma omp parallel for schedule(static) if (planes * Ho * Wo * k * k > (1 << 15))
    for (int64_t pl = 0; pl < planes; ++pl) {
      const T* xp = px + pl * H * W;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const int64_t h0 = oh * s - p, h1 = std::min(h0 + k, H);
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const int64_t w0 = ow * s - p, w1 = std::min(w0 + k, W);
          T best = -std::numeric_limits<T>::infinity();
          int64_t bi = std::max<int64_t>(h0, 0) * W + std::max<int64_t>(w0, 0);
          for (int64_t h = std::max<int64_t>(h0, 0); h < h1; ++h)
            for (int64_t w = std::max<int64_t>(w0, 0); w < w1; ++w) {
              const T v = xp[h * W + w];
              if (v > best || std::isnan(v)) {
                best = v;
                bi = h * W + w;
                if (std::isnan(v)) goto done;
              }
            }
        done:
          py[(pl * Ho + oh) * Wo + ow] = best;
          pi[(pl * Ho + oh) * Wo + ow] = bi;
        }
      }
    }
  });
  return {y, idx};
}

Tensor max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Shape& xs, int64_t k, int64_t s, int64_t p) {
  KDET_CHECK(gy.shape() == indices.shape() && gy.ndim() == 4, "max_pool2d_backward: grad ", gy.desc(),
             " vs indices ", indices.desc());
  if (!gy.device().is_cpu()) {
#if KDET_CUDA
    if (gy.device().is_cuda()) {
      Tensor gx = Tensor::empty(xs, gy.dtype(), gy.device());  // every element written
      cuda::max_pool2d_backward(gy.contiguous(), indices.contiguous(), k, s, p, gx);
      return gx;
    }
#endif
    no_kernel("max_pool2d_backward", gy.device());
  }
  Tensor gx = Tensor::zeros(xs, gy.dtype());
  const Tensor gc = gy.contiguous(), ic = indices.contiguous();
  const int64_t HW = xs[2] * xs[3], P = gy.size(2) * gy.size(3), planes = gy.size(0) * gy.size(1);
  dispatch_float(gy.dtype(), "max_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gc.data<T>();
    const int64_t* pi = ic.data<int64_t>();
    T* px = gx.data<T>();
#pragma omp parallel for schedule(static) if (planes * P > (1 << 15))
    for (int64_t pl = 0; pl < planes; ++pl)
      for (int64_t i = 0; i < P; ++i) px[pl * HW + pi[pl * P + i]] += pg[pl * P + i];
  });
  return gx;
}

namespace {
// Calls f(out_index, h0, h1, w0, w1, divisor) for every output element of one plane.
template <class F>
void avg_windows(int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t k, int64_t s, int64_t p, bool cip, F f) {
  for (int64_t oh = 0; oh < Ho; ++oh) {
    int64_t h0 = oh * s - p, h1 = std::min(h0 + k, H + p);
    const int64_t ph = h1 - h0;
    h0 = std::max<int64_t>(h0, 0), h1 = std::min(h1, H);
    for (int64_t ow = 0; ow < Wo; ++ow) {
      int64_t w0 = ow * s - p, w1 = std::min(w0 + k, W + p);
      const int64_t pw = w1 - w0;
      w0 = std::max<int64_t>(w0, 0), w1 = std::min(w1, W);
      const int64_t div = cip ? ph * pw : (h1 - h0) * (w1 - w0);
      f(oh * Wo + ow, h0, h1, w0, w1, div);
    }
  }
}
}  // namespace

Tensor avg_pool2d(const Tensor& x, int64_t k, int64_t s, int64_t p, bool cip, bool ceil_mode) {
  Shape ys = pool_shape("avg_pool2d", x.shape(), k, s, p, ceil_mode);
  if (!x.device().is_cpu()) {
#if KDET_CUDA
    if (x.device().is_cuda()) {
      Tensor y = Tensor::empty(ys, x.dtype(), x.device());
      cuda::avg_pool2d_forward(x.contiguous(), k, s, p, cip, y);
      return y;
    }
#endif
    no_kernel("avg_pool2d", x.device());
  }
  Tensor y = Tensor::empty(ys, x.dtype());
  const Tensor xc = x.contiguous();
  const int64_t H = x.size(2), W = x.size(3), Ho = ys[2], Wo = ys[3], planes = ys[0] * ys[1];
  dispatch_float(x.dtype(), "avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* px = xc.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) if (planes * Ho * Wo * k * k > (1 << 15))
    for (int64_t pl = 0; pl < planes; ++pl) {
      const T* xp = px + pl * H * W;
      T* yp = py + pl * Ho * Wo;
      avg_windows(H, W, Ho, Wo, k, s, p, cip, [&](int64_t o, int64_t h0, int64_t h1, int64_t w0, int64_t w1, int64_t d) {
        T acc = 0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) acc += xp[h * W + w];
        yp[o] = d > 0 ? acc / T(d) : T(0);
      });
    }
  });
  return y;
}

Tensor avg_pool2d_backward(const Tensor& gy, const Shape& xs, int64_t k, int64_t s, int64_t p, bool cip,
                           bool ceil_mode) {
  Shape ys = pool_shape("avg_pool2d_backward", xs, k, s, p, ceil_mode);
  KDET_CHECK(gy.shape() == ys, "avg_pool2d_backward: grad ", gy.desc(), " does not match output ", ys);
  if (!gy.device().is_cpu()) {
#if KDET_CUDA
    if (gy.device().is_cuda()) {
      Tensor gx = Tensor::empty(xs, gy.dtype(), gy.device());
      cuda::avg_pool2d_backward(gy.contiguous(), k, s, p, cip, gx);
      return gx;
    }
#endif
    no_kernel("avg_pool2d_backward", gy.device());
  }
  Tensor gx = Tensor::zeros(xs, gy.dtype());
  const Tensor gc = gy.contiguous();
  const int64_t H = xs[2], W = xs[3], Ho = ys[2], Wo = ys[3], planes = ys[0] * ys[1];
  dispatch_float(gy.dtype(), "avg_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gc.data<T>();
    T* px = gx.data<T>();
#pragma omp parallel for schedule(static) if (planes * Ho * Wo * k * k > (1 << 15))
    for (int64_t pl = 0; pl < planes; ++pl) {
      T* xp = px + pl * H * W;
      const T* gp = pg + pl * Ho * Wo;
      avg_windows(H, W, Ho, Wo, k, s, p, cip, [&](int64_t o, int64_t h0, int64_t h1, int64_t w0, int64_t w1, int64_t d) {
        if (d <= 0) return;
        const T v = gp[o] / T(d);
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) xp[h * W + w] += v;
      });
    }
  });
  return gx;
}

}  // namespace ops

Var max_pool2d(const Var& x, int64_t kernel, int64_t stride, int64_t pad, bool ceil_mode) {
  auto [y, idx] = ops::max_pool2d_with_indices(x.data(), kernel, stride, pad, ceil_mode);
  return record("max_pool2d", y, {&x}, [idx = idx, xs = x.shape(), kernel, stride, pad](const Tensor& g, Grads& gr) {
    gr.accumulate(0, ops::max_pool2d_backward(g, idx, xs, kernel, stride, pad));
  });
}

Var avg_pool2d(const Var& x, int64_t kernel, int64_t stride, int64_t pad, bool count_include_pad, bool ceil_mode) {
  return record("avg_pool2d", ops::avg_pool2d(x.data(), kernel, stride, pad, count_include_pad, ceil_mode), {&x},
                [=, xs = x.shape()](const Tensor& g, Grads& gr) {
                  gr.accumulate(0, ops::avg_pool2d_backward(g, xs, kernel, stride, pad, count_include_pad, ceil_mode));
                });
}

}  // namespace kdet
