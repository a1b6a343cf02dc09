#include "engine/ops/interpolate.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/backend.h"

#if KDET_CUDA
#include "engine/ops/interpolate_cuda.h"
#endif

namespace kdet {

namespace {

constexpr int64_t kGrain = 1 << 14;

void check_input(const char* op, const Tensor& x, int64_t oh, int64_t ow) {
  KDET_CHECK(x.defined(), op, ": undefined input");
  KDET_CHECK(x.ndim() == 4, op, ": expected an NCHW input, got ", x.desc());
  KDET_CHECK(oh > 0 && ow > 0, op, ": output size must be positive, got ", oh, "x", ow, " for input ", x.desc());
  KDET_CHECK(x.size(2) > 0 && x.size(3) > 0, op, ": empty spatial input ", x.desc());
}

// torch's nearest_idx (UpSample.h): identity, >>1 for exact 2x, else floor(dst * (float)in/out).
std::vector<int64_t> nearest_index(int64_t in, int64_t out) {
  std::vector<int64_t> idx(out);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t d = 0; d < out; ++d) {
    if (out == in)
      idx[d] = d;
    else if (out == 2 * in)
      idx[d] = d >> 1;
    else
      idx[d] = std::min(static_cast<int64_t>(std::floor(static_cast<float>(d) * scale)), in - 1);
  }
  return idx;
}

template <class T>
struct Linear {
  std::vector<int64_t> i0, i1;
  std::vector<T> l0, l1;
};

// torch's compute_indices_weights_linear with opmath = T.
template <class T>
Linear<T> linear_index(int64_t in, int64_t out, bool align_corners) {
  Linear<T> L;
  L.i0.resize(out);
  L.i1.resize(out);
  L.l0.resize(out);
  L.l1.resize(out);
  const T scale = align_corners ? (out > 1 ? static_cast<T>(in - 1) / static_cast<T>(out - 1) : T(0))
                                : static_cast<T>(in) / static_cast<T>(out);
  for (int64_t d = 0; d < out; ++d) {
    T src;
    if (align_corners) {
      src = scale * static_cast<T>(d);
    } else {
      src = scale * (static_cast<T>(d) + T(0.5)) - T(0.5);
      if (src < T(0)) src = T(0);
    }
    int64_t i0 = static_cast<int64_t>(src);
    if (i0 > in - 1) i0 = in - 1;
    const int64_t off = i0 < in - 1 ? 1 : 0;
    const T l1 = src - static_cast<T>(i0);
    L.i0[d] = i0;
    L.i1[d] = i0 + off;
    L.l1[d] = l1;
    L.l0[d] = T(1) - l1;
  }
  return L;
}

template <class T>
void nearest_fwd(const Tensor& x, Tensor& out) {
  const int64_t P = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), OH = out.size(2), OW = out.size(3);
  auto ih = nearest_index(H, OH), iw = nearest_index(W, OW);
  const T* px = x.data<T>();
  T* po = out.data<T>();
#pragma omp parallel for schedule(static) if (P * OH * OW > kGrain)
  for (int64_t p = 0; p < P; ++p) {
    const T* xi = px + p * H * W;
    T* o = po + p * OH * OW;
    for (int64_t y = 0; y < OH; ++y) {
      const T* row = xi + ih[y] * W;
      T* orow = o + y * OW;
      for (int64_t xo = 0; xo < OW; ++xo) orow[xo] = row[iw[xo]];
    }
  }
}

template <class T>
void nearest_bwd(const Tensor& g, Tensor& gx) {
  const int64_t P = gx.size(0) * gx.size(1), H = gx.size(2), W = gx.size(3), OH = g.size(2), OW = g.size(3);
  auto ih = nearest_index(H, OH), iw = nearest_index(W, OW);
  const T* pg = g.data<T>();
  T* po = gx.data<T>();
#pragma omp parallel for schedule(static) if (P * OH * OW > kGrain)
  for (int64_t p = 0; p < P; ++p) {
    T* o = po + p * H * W;
    for (int64_t i = 0; i < H * W; ++i) o[i] = T(0);
    const T* gi = pg + p * OH * OW;
    for (int64_t y = 0; y < OH; ++y) {
      T* row = o + ih[y] * W;
      const T* grow = gi + y * OW;
      for (int64_t xo = 0; xo < OW; ++xo) row[iw[xo]] += grow[xo];
    }
  }
}

template <class T>
void bilinear_fwd(const Tensor& x, Tensor& out, bool ac) {
  const int64_t P = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), OH = out.size(2), OW = out.size(3);
  auto lh = linear_index<T>(H, OH, ac), lw = linear_index<T>(W, OW, ac);
  const T* px = x.data<T>();
  T* po = out.data<T>();
#pragma omp parallel for schedule(static) if (P * OH * OW > kGrain)
  for (int64_t p = 0; p < P; ++p) {
    const T* xi = px + p * H * W;
    T* o = po + p * OH * OW;
    for (int64_t y = 0; y < OH; ++y) {
      const T* r0 = xi + lh.i0[y] * W;
      const T* r1 = xi + lh.i1[y] * W;
      const T h0 = lh.l0[y], h1 = lh.l1[y];
      T* orow = o + y * OW;
      for (int64_t xo = 0; xo < OW; ++xo) {
        const int64_t a = lw.i0[xo], b = lw.i1[xo];
        const T w0 = lw.l0[xo], w1 = lw.l1[xo];
        orow[xo] = h0 * (w0 * r0[a] + w1 * r0[b]) + h1 * (w0 * r1[a] + w1 * r1[b]);
      }
    }
  }
}

template <class T>
void bilinear_bwd(const Tensor& g, Tensor& gx, bool ac) {
  const int64_t P = gx.size(0) * gx.size(1), H = gx.size(2), W = gx.size(3), OH = g.size(2), OW = g.size(3);
  auto lh = linear_index<T>(H, OH, ac), lw = linear_index<T>(W, OW, ac);
  const T* pg = g.data<T>();
  T* po = gx.data<T>();
#pragma omp parallel for schedule(static) if (P * OH * OW > kGrain)
  for (int64_t p = 0; p < P; ++p) {
    T* o = po + p * H * W;
    for (int64_t i = 0; i < H * W; ++i) o[i] = T(0);
    const T* gi = pg + p * OH * OW;
    for (int64_t y = 0; y < OH; ++y) {
      T* r0 = o + lh.i0[y] * W;
      T* r1 = o + lh.i1[y] * W;
      const T h0 = lh.l0[y], h1 = lh.l1[y];
      const T* grow = gi + y * OW;
      for (int64_t xo = 0; xo < OW; ++xo) {
        const int64_t a = lw.i0[xo], b = lw.i1[xo];
        const T w0 = lw.l0[xo], w1 = lw.l1[xo];
        const T gv = grow[xo];
        r0[a] += h0 * w0 * gv;
        r0[b] += h0 * w1 * gv;
        r1[a] += h1 * w0 * gv;
        r1[b] += h1 * w1 * gv;
      }
    }
  }
}

#if KDET_CUDA
// One axis' sampling tables for the CUDA kernels (engine/ops/interpolate_cuda.h): the same index
// functions as the CPU kernels, plus for each input position the range of outputs that read it
// (outputs d with i0[d] in [h - mode, h]; i0 is non-decreasing).
cuda::ResizeAxis resize_axis(int mode, int64_t in, int64_t out, bool ac, DType dt, Device dev) {
  cuda::ResizeAxis a;
  std::vector<int64_t> i0;
  if (mode == 0) {
    i0 = nearest_index(in, out);
  } else {
    dispatch_float(dt, "interpolate_bilinear", [&](auto tag) {
      using T = decltype(tag);
      const Linear<T> L = linear_index<T>(in, out, ac);
      i0 = L.i0;
      a.i1 = Tensor::from_vector(L.i1).to(dev);
      a.l0 = Tensor::from_vector(L.l0).to(dev);
      a.l1 = Tensor::from_vector(L.l1).to(dev);
    });
  }
  a.i0 = Tensor::from_vector(i0).to(dev);
  std::vector<int64_t> lo(in), hi(in);
  int64_t d_lo = 0, d_hi = 0;
  for (int64_t h = 0; h < in; ++h) {
    while (d_lo < out && i0[d_lo] < h - mode) ++d_lo;
    while (d_hi < out && i0[d_hi] <= h) ++d_hi;
    lo[h] = d_lo;
    hi[h] = std::max(d_lo, d_hi);
  }
  a.lo = Tensor::from_vector(lo).to(dev);
  a.hi = Tensor::from_vector(hi).to(dev);
  return a;
}
#endif

Tensor run(const char* op, const Tensor& xin, int64_t oh, int64_t ow, int mode /*0 nearest, 1 bilinear*/, bool ac) {
  check_input(op, xin, oh, ow);
  if (!xin.device().is_cpu() && !(KDET_CUDA && xin.device().is_cuda())) no_kernel(op, xin.device());
  const Tensor x = xin.contiguous();
  Tensor out = Tensor::empty({x.size(0), x.size(1), oh, ow}, x.dtype(), x.device());
#if KDET_CUDA
  if (x.device().is_cuda()) {
    cuda::resize_forward(mode == 1, x, resize_axis(mode, x.size(2), oh, ac, x.dtype(), x.device()),
                         resize_axis(mode, x.size(3), ow, ac, x.dtype(), x.device()), out);
    return out;
  }
#endif
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (mode == 0)
      nearest_fwd<T>(x, out);
    else
      bilinear_fwd<T>(x, out, ac);
  });
  return out;
}

Tensor run_bwd(const char* op, const Tensor& gin, const Shape& xshape, int mode, bool ac) {
  const Tensor g = gin.contiguous();
  Tensor gx = Tensor::empty(xshape, g.dtype(), g.device());
#if KDET_CUDA
  if (g.device().is_cuda()) {
    cuda::resize_backward(mode == 1, g, resize_axis(mode, xshape[2], g.size(2), ac, g.dtype(), g.device()),
                          resize_axis(mode, xshape[3], g.size(3), ac, g.dtype(), g.device()), gx);
    return gx;
  }
#endif
  dispatch_float(g.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (mode == 0)
      nearest_bwd<T>(g, gx);
    else
      bilinear_bwd<T>(g, gx, ac);
  });
  return gx;
}

}  // namespace

namespace ops {
Tensor interpolate_nearest(const Tensor& x, int64_t out_h, int64_t out_w) {
  return run("interpolate_nearest", x, out_h, out_w, 0, false);
}
Tensor interpolate_bilinear(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners) {
  return run("interpolate_bilinear", x, out_h, out_w, 1, align_corners);
}
}  // namespace ops

Var interpolate_nearest(const Var& x, int64_t out_h, int64_t out_w) {
  return record("interpolate_nearest", ops::interpolate_nearest(x.data(), out_h, out_w), {&x},
                [xs = x.shape()](const Tensor& g, Grads& gr) {
                  gr.accumulate(0, run_bwd("interpolate_nearest", g, xs, 0, false));
                });
}

Var interpolate_bilinear(const Var& x, int64_t out_h, int64_t out_w, bool align_corners) {
  return record("interpolate_bilinear", ops::interpolate_bilinear(x.data(), out_h, out_w, align_corners), {&x},
                [xs = x.shape(), align_corners](const Tensor& g, Grads& gr) {
                  gr.accumulate(0, run_bwd("interpolate_bilinear", g, xs, 1, align_corners));
                });
}

}  // namespace kdet
