#include "engine/ops/softmax.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "engine/backend.h"
#include "engine/ops/cpu_map.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/unary.h"

#if KDET_CUDA
#include "engine/ops/softmax_cuda.h"
#endif

namespace kdet {

namespace {

constexpr int64_t kBlock = 256;

struct Layout {
  int ax;
  int64_t O = 1, R = 1, I = 1;
};

Layout layout(const char* op, const Tensor& x, int axis) {
  KDET_CHECK(x.defined(), op, ": undefined tensor");
  KDET_CHECK(is_floating(x.dtype()), op, ": expects an f32 or f64 tensor, got ", x.desc());
  KDET_CHECK(x.ndim() > 0, op, ": needs at least one dimension, got ", x.desc());
  if (!x.device().is_cpu() && !(KDET_CUDA && x.device().is_cuda())) no_kernel(op, x.device());
  Layout L;
  L.ax = normalize_axis(axis, x.ndim(), op);
  L.R = x.shape()[L.ax];
  for (int d = 0; d < L.ax; ++d) L.O *= x.shape()[d];
  for (int d = L.ax + 1; d < x.ndim(); ++d) L.I *= x.shape()[d];
  return L;
}

enum class Mode { Softmax, LogSoftmax, LogSumExp };

// Runs body(o, i0, n) over [O, I-block] tasks in parallel (static schedule).
template <class F>
void for_blocks(const Layout& L, F body) {
  const int64_t bs = std::min<int64_t>(std::max<int64_t>(L.I, 1), kBlock);
  const int64_t nb = (L.I + bs - 1) / bs;
  const int64_t tasks = L.O * nb;
#pragma omp parallel for schedule(static) if (L.O * L.R * L.I > cpu::kParallelGrain && tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t o = t / nb, i0 = (t % nb) * bs;
    body(o, i0, std::min(L.I, i0 + bs) - i0);
  }
}

// Contiguous rows (softmax over the last axis): vectorised passes over each row.
template <class T>
void forward_rows(Mode mode, const Layout& L, const T* px, T* py) {
  const int64_t R = L.R;
#pragma omp parallel for schedule(static) if (L.O * R > cpu::kParallelGrain && L.O > 1)
  for (int64_t o = 0; o < L.O; ++o) {
    const T* x = px + o * R;
    T m = -std::numeric_limits<T>::infinity();
    int64_t nan = 0;
#pragma omp simd reduction(max : m) reduction(+ : nan)
    for (int64_t r = 0; r < R; ++r) {
      m = x[r] > m ? x[r] : m;
      nan += x[r] != x[r];
    }
    if (nan) m = std::numeric_limits<T>::quiet_NaN();
    if (std::isinf(m)) m = T(0);
    double s = 0;
    if (mode == Mode::Softmax) {
      T* y = py + o * R;
#pragma omp simd reduction(+ : s)
      for (int64_t r = 0; r < R; ++r) {
        const T e = cpu::exp_f32(x[r] - m);
        y[r] = e;
        s += e;
      }
      const T inv = static_cast<T>(1.0 / s);
#pragma omp simd
      for (int64_t r = 0; r < R; ++r) y[r] *= inv;
      continue;
    }
#pragma omp simd reduction(+ : s)
    for (int64_t r = 0; r < R; ++r) s += cpu::exp_f32(x[r] - m);
    if (mode == Mode::LogSumExp) {
      py[o] = static_cast<T>(m + std::log(s));
      continue;
    }
    const T ls = static_cast<T>(std::log(s));
    T* y = py + o * R;
#pragma omp simd
    for (int64_t r = 0; r < R; ++r) y[r] = (x[r] - m) - ls;
  }
}

template <class T>
void forward_kernel(Mode mode, const Layout& L, const T* px, T* py) {
  if (L.I == 1) {
    forward_rows<T>(mode, L, px, py);
    return;
  }
  for_blocks(L, [&](int64_t o, int64_t i0, int64_t n) {
    std::array<T, kBlock> m;
    std::array<double, kBlock> s;
    const T* x0 = px + o * L.R * L.I + i0;
    for (int64_t i = 0; i < n; ++i) {
      m[i] = -std::numeric_limits<T>::infinity();
      s[i] = 0.0;
    }
    for (int64_t r = 0; r < L.R; ++r) {
      const T* q = x0 + r * L.I;
      for (int64_t i = 0; i < n; ++i) m[i] = (q[i] > m[i] || std::isnan(q[i])) ? q[i] : m[i];
    }
    for (int64_t i = 0; i < n; ++i)
      if (std::isinf(m[i])) m[i] = T(0);  // all -inf (or +inf present): let the arithmetic give torch's NaN/0
    for (int64_t r = 0; r < L.R; ++r) {
      const T* q = x0 + r * L.I;
      for (int64_t i = 0; i < n; ++i) s[i] += static_cast<double>(cpu::exp_f32(q[i] - m[i]));
    }
    if (mode == Mode::LogSumExp) {
      for (int64_t i = 0; i < n; ++i) py[o * L.I + i0 + i] = static_cast<T>(m[i] + std::log(s[i]));
      return;
    }
    std::array<T, kBlock> a;  // 1/s or log s
    for (int64_t i = 0; i < n; ++i)
      a[i] = mode == Mode::Softmax ? static_cast<T>(1.0 / s[i]) : static_cast<T>(std::log(s[i]));
    T* y0 = py + o * L.R * L.I + i0;
    for (int64_t r = 0; r < L.R; ++r) {
      const T* q = x0 + r * L.I;
      T* y = y0 + r * L.I;
      if (mode == Mode::Softmax)
        for (int64_t i = 0; i < n; ++i) y[i] = cpu::exp_f32(q[i] - m[i]) * a[i];
      else
        for (int64_t i = 0; i < n; ++i) y[i] = (q[i] - m[i]) - a[i];
    }
  });
}

Tensor forward(Mode mode, const char* op, const Tensor& x, int axis, bool keepdim = false) {
  Layout L = layout(op, x, axis);
  Shape os = x.shape();
  if (mode == Mode::LogSumExp) os[L.ax] = 1;
  Tensor out = Tensor::empty(os, x.dtype(), x.device());
  const Tensor xc = x.contiguous();
#if KDET_CUDA
  if (x.device().is_cuda()) {
    cuda::softmax_forward(static_cast<int>(mode), xc, L.O, L.R, L.I, out);
  } else
#endif
    dispatch_float(x.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      forward_kernel<T>(mode, L, xc.data<T>(), out.data<T>());
    });
  if (mode == Mode::LogSumExp && !keepdim) return out.squeeze(L.ax);
  return out;
}

// softmax: dx = y (g - Σ g y); log_softmax: dx = g - exp(y) Σ g.
Tensor backward(Mode mode, const char* op, const Tensor& g, const Tensor& y, int axis) {
  Layout L = layout(op, y, axis);
  KDET_CHECK(g.shape() == y.shape() && g.dtype() == y.dtype(), op, ": gradient ", g.desc(), " for output ",
             y.desc());
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
  const Tensor gc = g.contiguous(), yc = y.contiguous();
#if KDET_CUDA
  if (y.device().is_cuda()) {
    KDET_CHECK(g.device() == y.device(), op, ": gradient ", g.desc(), " for output ", y.desc());
    cuda::softmax_backward(static_cast<int>(mode), gc, yc, L.O, L.R, L.I, dx);
    return dx;
  }
#endif
  dispatch_float(y.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gc.data<T>();
    const T* py = yc.data<T>();
    T* pd = dx.data<T>();
    if (L.I == 1) {  // contiguous rows
#pragma omp parallel for schedule(static) if (L.O * L.R > cpu::kParallelGrain && L.O > 1)
      for (int64_t o = 0; o < L.O; ++o) {
        const T* gq = pg + o * L.R;
        const T* yq = py + o * L.R;
        T* d = pd + o * L.R;
        double acc = 0;
        if (mode == Mode::Softmax) {
#pragma omp simd reduction(+ : acc)
          for (int64_t r = 0; r < L.R; ++r) acc += static_cast<double>(gq[r]) * yq[r];
          const T a = static_cast<T>(acc);
#pragma omp simd
          for (int64_t r = 0; r < L.R; ++r) d[r] = yq[r] * (gq[r] - a);
        } else {
#pragma omp simd reduction(+ : acc)
          for (int64_t r = 0; r < L.R; ++r) acc += static_cast<double>(gq[r]);
          const T a = static_cast<T>(acc);
#pragma omp simd
          for (int64_t r = 0; r < L.R; ++r) d[r] = gq[r] - cpu::exp_f32(yq[r]) * a;
        }
      }
      return;
    }
    for_blocks(L, [&](int64_t o, int64_t i0, int64_t n) {
      std::array<double, kBlock> acc;
      std::fill(acc.begin(), acc.begin() + n, 0.0);
      const int64_t base = o * L.R * L.I + i0;
      for (int64_t r = 0; r < L.R; ++r) {
        const T* gq = pg + base + r * L.I;
        const T* yq = py + base + r * L.I;
        if (mode == Mode::Softmax)
          for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<double>(gq[i]) * yq[i];
        else
          for (int64_t i = 0; i < n; ++i) acc[i] += gq[i];
      }
      std::array<T, kBlock> a;
      for (int64_t i = 0; i < n; ++i) a[i] = static_cast<T>(acc[i]);
      for (int64_t r = 0; r < L.R; ++r) {
        const T* gq = pg + base + r * L.I;
        const T* yq = py + base + r * L.I;
        T* d = pd + base + r * L.I;
        if (mode == Mode::Softmax)
          for (int64_t i = 0; i < n; ++i) d[i] = yq[i] * (gq[i] - a[i]);
        else
          for (int64_t i = 0; i < n; ++i) d[i] = gq[i] - cpu::exp_f32(yq[i]) * a[i];
      }
    });
  });
  return dx;
}

}  // namespace

namespace ops {
Tensor softmax(const Tensor& x, int axis) { return forward(Mode::Softmax, "softmax", x, axis); }
Tensor log_softmax(const Tensor& x, int axis) { return forward(Mode::LogSoftmax, "log_softmax", x, axis); }
Tensor logsumexp(const Tensor& x, int axis, bool keepdim) {
  return forward(Mode::LogSumExp, "logsumexp", x, axis, keepdim);
}
Tensor softmax_backward(const Tensor& g, const Tensor& y, int axis) {
  return backward(Mode::Softmax, "softmax_backward", g, y, axis);
}
Tensor log_softmax_backward(const Tensor& g, const Tensor& y, int axis) {
  return backward(Mode::LogSoftmax, "log_softmax_backward", g, y, axis);
}
}  // namespace ops

Var softmax(const Var& x, int axis) {
  Tensor y = ops::softmax(x.data(), axis);
  return record("softmax", y, {&x},
                [y, axis](const Tensor& g, Grads& gr) { gr.accumulate(0, ops::softmax_backward(g, y, axis)); });
}

Var log_softmax(const Var& x, int axis) {
  Tensor y = ops::log_softmax(x.data(), axis);
  return record("log_softmax", y, {&x}, [y, axis](const Tensor& g, Grads& gr) {
    gr.accumulate(0, ops::log_softmax_backward(g, y, axis));
  });
}

Var logsumexp(const Var& x, int axis, bool keepdim) {
  Tensor y = ops::logsumexp(x.data(), axis, keepdim);
  const int ax = normalize_axis(axis, x.ndim(), "logsumexp");
  return record("logsumexp", y, {&x}, [xd = x.data(), ax, keepdim](const Tensor& g, Grads& gr) {
    Tensor gk = keepdim ? g : g.unsqueeze(ax);
    gr.accumulate(0, ops::mul(ops::softmax(xd, ax), gk));
  });
}

}  // namespace kdet
