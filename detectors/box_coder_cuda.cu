// detectors/box_coder_cuda.cu — DeltaXYWHBBoxCoder encode / decode on the GPU (CPU: box_coder.cpp).
#include "detectors/box_coder_cuda.h"
#include "engine/cuda/pointwise.cuh"

namespace kdet::cuda {

namespace {

struct Coef {
  double mean[4], std[4];
};

Coef coef(const std::array<double, 4>& means, const std::array<double, 4>& stds) {
  Coef c;
  for (int k = 0; k < 4; ++k) c.mean[k] = means[k], c.std[k] = stds[k];
  return c;
}

__global__ void encode_kernel(int64_t n, int64_t sp, int64_t sg, const float* pp, const float* pg, Coef c, float* po) {
  KDET_GRID_STRIDE(i, n) {
    const float* a = pp + i * sp;
    const float* b = pg + i * sg;
    const float px = (a[0] + a[2]) * 0.5f, py = (a[1] + a[3]) * 0.5f;
    const float pw = a[2] - a[0], ph = a[3] - a[1];
    const float gx = (b[0] + b[2]) * 0.5f, gy = (b[1] + b[3]) * 0.5f;
    const float gw = b[2] - b[0], gh = b[3] - b[1];
    const float d[4] = {(gx - px) / pw, (gy - py) / ph, logf(gw / pw), logf(gh / ph)};
    for (int k = 0; k < 4; ++k)
      po[i * 4 + k] = (d[k] - static_cast<float>(c.mean[k])) / static_cast<float>(c.std[k]);
  }
}

__global__ void decode_kernel(int64_t n, int64_t sp, int64_t c4, const float* pp, const float* pd, Coef c,
                              float max_ratio, bool clip, float H, float W, float* po) {
  KDET_GRID_STRIDE(t, n * (c4 / 4)) {
    const int64_t i = t / (c4 / 4), cc = (t % (c4 / 4)) * 4;
    const float* a = pp + i * sp;
    const float px = (a[0] + a[2]) * 0.5f, py = (a[1] + a[3]) * 0.5f;
    const float pw = a[2] - a[0], ph = a[3] - a[1];
    const float* q = pd + i * c4 + cc;
    float m[4], s[4];
    for (int k = 0; k < 4; ++k) m[k] = static_cast<float>(c.mean[k]), s[k] = static_cast<float>(c.std[k]);
    const float dx = q[0] * s[0] + m[0], dy = q[1] * s[1] + m[1];
    float dw = q[2] * s[2] + m[2], dh = q[3] * s[3] + m[3];
    dw = dm::min(dm::max(dw, -max_ratio), max_ratio);
    dh = dm::min(dm::max(dh, -max_ratio), max_ratio);
    const float gx = px + pw * dx, gy = py + ph * dy;
    const float gw = pw * expf(dw), gh = ph * expf(dh);
    float box[4] = {gx - gw * 0.5f, gy - gh * 0.5f, gx + gw * 0.5f, gy + gh * 0.5f};
    if (clip) {
      box[0] = dm::min(dm::max(box[0], 0.f), W);
      box[2] = dm::min(dm::max(box[2], 0.f), W);
      box[1] = dm::min(dm::max(box[1], 0.f), H);
      box[3] = dm::min(dm::max(box[3], 0.f), H);
    }
    for (int k = 0; k < 4; ++k) po[i * c4 + cc + k] = box[k];
  }
}

template <class T>
__global__ void decode_jac_kernel(int64_t n, int64_t sp, const T* pp, const T* pd, Coef c, double max_ratio, T* out,
                                  T* jac) {
  KDET_GRID_STRIDE(i, n) {
    const T mr = static_cast<T>(max_ratio);
    const T* a = pp + i * sp;
    const T* q = pd + i * 4;
    const T px = (a[0] + a[2]) * T(0.5), py = (a[1] + a[3]) * T(0.5);
    const T pw = a[2] - a[0], ph = a[3] - a[1];
    const T dx = q[0] * T(c.std[0]) + T(c.mean[0]), dy = q[1] * T(c.std[1]) + T(c.mean[1]);
    const T dw0 = q[2] * T(c.std[2]) + T(c.mean[2]), dh0 = q[3] * T(c.std[3]) + T(c.mean[3]);
    const T dw = dm::min(dm::max(dw0, -mr), mr), dh = dm::min(dm::max(dh0, -mr), mr);
    const T gx = px + pw * dx, gy = py + ph * dy;
    const T gw = pw * dm::exp(dw), gh = ph * dm::exp(dh);
    T* o = out + i * 4;
    o[0] = gx - gw * T(0.5);
    o[1] = gy - gh * T(0.5);
    o[2] = gx + gw * T(0.5);
    o[3] = gy + gh * T(0.5);
    T* J = jac + i * 4;  // d gx/d q0, d gy/d q1, d (gw/2)/d q2, d (gh/2)/d q3
    J[0] = pw * T(c.std[0]);
    J[1] = ph * T(c.std[1]);
    J[2] = (dw0 > -mr && dw0 < mr) ? gw * T(0.5) * T(c.std[2]) : T(0);
    J[3] = (dh0 > -mr && dh0 < mr) ? gh * T(0.5) * T(c.std[3]) : T(0);
  }
}

template <class T>
__global__ void decode_bwd_kernel(int64_t n, const T* g, const T* J, T* o) {
  KDET_GRID_STRIDE(i, n) {
    const T* gi = g + i * 4;
    const T* Ji = J + i * 4;
    o[i * 4 + 0] = (gi[0] + gi[2]) * Ji[0];  // x1 = gx - gw/2, x2 = gx + gw/2
    o[i * 4 + 1] = (gi[1] + gi[3]) * Ji[1];
    o[i * 4 + 2] = (gi[2] - gi[0]) * Ji[2];
    o[i * 4 + 3] = (gi[3] - gi[1]) * Ji[3];
  }
}

}  // namespace

void delta_encode(const Tensor& priors, const Tensor& gt, const std::array<double, 4>& means,
                  const std::array<double, 4>& stds, Tensor& out) {
  const char* op = "DeltaXYWHBBoxCoder::encode";
  Context& ctx = activate(priors, op);
  const int64_t n = priors.size(0);
  if (n == 0) return;
  encode_kernel<<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, priors.size(1), gt.size(1), priors.data<float>(),
                                                             gt.data<float>(), coef(means, stds), out.data<float>());
  check_launch(ctx, op);
}

void delta_decode(const Tensor& priors, const Tensor& deltas, const std::array<double, 4>& means,
                  const std::array<double, 4>& stds, double max_ratio, bool clip, float H, float W, Tensor& out) {
  const char* op = "DeltaXYWHBBoxCoder::decode";
  Context& ctx = activate(priors, op);
  const int64_t n = priors.size(0), c4 = deltas.size(1);
  if (n * c4 == 0) return;
  decode_kernel<<<grid_for(n * (c4 / 4)), kThreads, 0, ctx.stream()>>>(
      n, priors.size(1), c4, priors.data<float>(), deltas.data<float>(), coef(means, stds),
      static_cast<float>(max_ratio), clip, H, W, out.data<float>());
  check_launch(ctx, op);
}

void delta_decode_jac(const Tensor& priors, const Tensor& deltas, const std::array<double, 4>& means,
                      const std::array<double, 4>& stds, double max_ratio, Tensor& out, Tensor& jac) {
  const char* op = "bbox_decode";
  Context& ctx = activate(priors, op);
  const int64_t n = priors.size(0);
  if (n == 0) return;
  dispatch_float(deltas.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    decode_jac_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, priors.size(1), priors.data<T>(),
                                                                     deltas.data<T>(), coef(means, stds), max_ratio,
                                                                     out.data<T>(), jac.data<T>());
  });
  check_launch(ctx, op);
}

void delta_decode_backward(const Tensor& g, const Tensor& jac, Tensor& gd) {
  const char* op = "bbox_decode_backward";
  Context& ctx = activate(g, op);
  const int64_t n = g.size(0);
  if (n == 0) return;
  dispatch_float(g.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    decode_bwd_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, g.data<T>(), jac.data<T>(), gd.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
