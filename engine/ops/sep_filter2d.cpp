// engine/ops/sep_filter2d.cpp — separable symmetric depthwise filter (see the header).
#include "engine/ops/sep_filter2d.h"

#include <algorithm>

#include "engine/backend.h"
#include "engine/ops/conv2d.h"
#include "engine/ops/cpu_map.h"

namespace kdet {

namespace cpu {

template <class T>
void sep_filter_plane(const T* in, T* out, int64_t H, int64_t W, const T* g, int64_t w, T* scratch) {
  const int64_t r = w / 2;
  T* tmp = scratch;          // [H, W] after the row pass
  T* pad = scratch + H * W;  // one zero-padded row: r zeros, W values, r zeros
  std::fill(pad, pad + r, T(0));
  std::fill(pad + r + W, pad + W + 2 * r, T(0));
  for (int64_t h = 0; h < H; ++h) {  // rows: taps in order j = 0..w-1 (padding adds exact zeros)
    std::copy_n(in + h * W, W, pad + r);
    T* t = tmp + h * W;
    std::fill(t, t + W, T(0));
    for (int64_t j = 0; j < w; ++j) {
      const T gj = g[j];
      const T* p = pad + j;
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) t[c] += gj * p[c];
    }
  }
  for (int64_t h = 0; h < H; ++h) {  // columns: only the taps that land inside the plane
    const int64_t i0 = std::max<int64_t>(0, r - h), i1 = std::min<int64_t>(w, H + r - h);
    T* y = out + h * W;
    std::fill(y, y + W, T(0));
    for (int64_t i = i0; i < i1; ++i) {
      const T gi = g[i];
      const T* t = tmp + (h + i - r) * W;
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) y[c] += gi * t[c];
    }
  }
}

template void sep_filter_plane<float>(const float*, float*, int64_t, int64_t, const float*, int64_t, float*);
template void sep_filter_plane<double>(const double*, double*, int64_t, int64_t, const double*, int64_t, double*);

}  // namespace cpu

namespace {

void check_kernel(const std::vector<double>& g) {
  KDET_CHECK(!g.empty() && g.size() % 2 == 1, "sep_filter2d: kernel length ", g.size(), " must be odd");
  for (size_t j = 0; j < g.size() / 2; ++j)
    KDET_CHECK(g[j] == g[g.size() - 1 - j], "sep_filter2d: kernel must be symmetric (g[", j, "] = ", g[j],
               ", g[", g.size() - 1 - j, "] = ", g[g.size() - 1 - j], ")");
}

}  // namespace

namespace ops {

Tensor sep_filter2d(const Tensor& x, const std::vector<double>& g) {
  check_kernel(g);
  KDET_CHECK(x.ndim() == 4, "sep_filter2d: expects [N, C, H, W], got ", x.desc());
  if (!x.device().is_cpu()) {  // CUDA: the definition, a depthwise conv2d with outer(g, g) (cuDNN)
    if (!(KDET_CUDA && x.device().is_cuda())) no_kernel("sep_filter2d", x.device());
    const int64_t C = x.size(1), w = static_cast<int64_t>(g.size());
    std::vector<double> k(static_cast<size_t>(C * w * w));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < w; ++i)
        for (int64_t j = 0; j < w; ++j) k[static_cast<size_t>((c * w + i) * w + j)] = g[i] * g[j];
    const Tensor wk = Tensor::from_vector(k, Shape{C, 1, w, w}).to(x.dtype()).to(x.device());
    return conv2d(x, wk, Tensor(), Conv2dArgs::make(1, w / 2, 1, C));
  }
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  const int64_t P = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), w = static_cast<int64_t>(g.size());
  dispatch_float(x.dtype(), "sep_filter2d", [&](auto tag) {
    using T = decltype(tag);
    const std::vector<T> gt(g.begin(), g.end());
    const T* px = xc.data<T>();
    T* py = y.data<T>();
#pragma omp parallel if (P * H * W * w > cpu::kParallelGrain)
    {
      std::vector<T> scratch(cpu::sep_filter_scratch(H, W, w));
#pragma omp for schedule(static)
      for (int64_t p = 0; p < P; ++p) cpu::sep_filter_plane<T>(px + p * H * W, py + p * H * W, H, W, gt.data(), w, scratch.data());
    }
  });
  return y;
}

}  // namespace ops

Var sep_filter2d(const Var& x, const std::vector<double>& g) {
  return record("sep_filter2d", ops::sep_filter2d(x.data(), g), {&x},
                [g](const Tensor& gy, Grads& gr) { gr.accumulate(0, ops::sep_filter2d(gy, g)); });
}

}  // namespace kdet
