// engine/ops/roi_align_cuda.cu — RoIAlign gather / scatter on the GPU with host-computed samples
// (CPU: roi_align.cpp; the same per-element arithmetic and order).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/roi_align_cuda.h"

namespace kdet::cuda {

namespace {

template <class T>
__global__ void roi_fwd_kernel(int64_t n, int64_t C, int64_t PHW, int64_t HW, const T* feat, const int64_t* idx,
                               const T* w, const int64_t* roi, const T* count, T* out) {
  KDET_GRID_STRIDE(t, n) {
    const int64_t b = t % PHW, c = (t / PHW) % C, k = t / (PHW * C);
    const int64_t batch = roi[k * 3], per_bin = roi[k * 3 + 2];
    const int64_t first = roi[k * 3 + 1] + b * per_bin;
    const T* plane = feat + (batch * C + c) * HW;
    T v = 0;
    for (int64_t i = first; i < first + per_bin; ++i) {
      const int64_t* p = idx + i * 4;
      const T* ww = w + i * 4;
      v += ww[0] * plane[p[0]] + ww[1] * plane[p[1]] + ww[2] * plane[p[2]] + ww[3] * plane[p[3]];
    }
    out[t] = v / count[k];
  }
}

template <class T>
__global__ void roi_bwd_kernel(int64_t n, int64_t C, int64_t PHW, int64_t HW, const T* g, const int64_t* off,
                               const int64_t* roi, const int64_t* bin, const T* w, const T* count, T* gx) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t p = i % HW, c = (i / HW) % C, img = i / (HW * C);
    const int64_t e0 = off[img * HW + p], e1 = off[img * HW + p + 1];
    T acc = 0;
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t k = roi[e];
      acc += g[(k * C + c) * PHW + bin[e]] * w[e] / count[k];
    }
    gx[i] = acc;
  }
}

}  // namespace

void roi_align_forward(const Tensor& feat, const RoISamples& s, int64_t PHW, Tensor& out) {
  const char* op = "roi_align";
  KDET_CHECK(feat.is_contiguous() && out.is_contiguous(), op, " (cuda): bad layout");
  Context& ctx = activate(feat, op);
  const int64_t n = out.numel(), C = feat.size(1), HW = feat.size(2) * feat.size(3);
  if (n == 0) return;
  dispatch_float(feat.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    roi_fwd_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, C, PHW, HW, feat.data<T>(),
                                                                  s.idx.data<int64_t>(), s.w.data<T>(),
                                                                  s.roi.data<int64_t>(), s.count.data<T>(),
                                                                  out.data<T>());
  });
  check_launch(ctx, op);
}

void roi_align_backward(const Tensor& g, const RoIBackwardMap& m, int64_t PHW, Tensor& gx) {
  const char* op = "roi_align_backward";
  KDET_CHECK(g.is_contiguous() && gx.is_contiguous() && gx.ndim() == 4, op, " (cuda): bad layout");
  Context& ctx = activate(g, op);
  const int64_t n = gx.numel(), C = gx.size(1), HW = gx.size(2) * gx.size(3);
  if (n == 0) return;
  dispatch_float(g.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    roi_bwd_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(
        n, C, PHW, HW, g.data<T>(), m.off.data<int64_t>(), m.roi.data<int64_t>(), m.bin.data<int64_t>(),
        m.w.data<T>(), m.count.data<T>(), gx.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
