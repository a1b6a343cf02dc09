#include "detectors/box_coder.h"

#include <algorithm>
#include <cmath>

#if KDET_CUDA
#include "detectors/box_coder_cuda.h"
#endif

namespace kdet {

namespace {
void check_boxes(const Tensor& t, const char* op, const char* what) {
  KDET_CHECK(t.ndim() == 2 && t.size(1) >= 4 && (t.device().is_cpu() || (KDET_CUDA && t.device().is_cuda())), op,
             ": ", what, " must be [N, 4] boxes on the CPU (or a CUDA device), got ", t.desc());
}
}  // namespace

Tensor DeltaXYWHBBoxCoder::encode(const Tensor& priors_in, const Tensor& gt_in) const {
  check_boxes(priors_in, "DeltaXYWHBBoxCoder::encode", "priors");
  check_boxes(gt_in, "DeltaXYWHBBoxCoder::encode", "gt");
  KDET_CHECK(priors_in.size(0) == gt_in.size(0), "DeltaXYWHBBoxCoder::encode: ", priors_in.desc(), " priors vs ",
             gt_in.desc(), " gt boxes");
  KDET_CHECK(priors_in.device() == gt_in.device(), "DeltaXYWHBBoxCoder::encode: priors ", priors_in.desc(),
             " and gt ", gt_in.desc(), " on different devices");
  Tensor p = priors_in.to(DType::F32).contiguous(), g = gt_in.to(DType::F32).contiguous();
  const int64_t n = p.size(0), sp = p.size(1), sg = g.size(1);
  Tensor out = Tensor::empty({n, 4}, DType::F32, p.device());
#if KDET_CUDA
  if (p.device().is_cuda()) {
    cuda::delta_encode(p, g, means, stds, out);
    return out;
  }
#endif
  const float* pp = p.data<float>();
  const float* pg = g.data<float>();
  float* po = out.data<float>();
  float mean[4], std_[4];
  for (int k = 0; k < 4; ++k) mean[k] = static_cast<float>(means[k]), std_[k] = static_cast<float>(stds[k]);
  for (int64_t i = 0; i < n; ++i) {
    const float* a = pp + i * sp;
    const float* b = pg + i * sg;
    const float px = (a[0] + a[2]) * 0.5f, py = (a[1] + a[3]) * 0.5f;
    const float pw = a[2] - a[0], ph = a[3] - a[1];
    const float gx = (b[0] + b[2]) * 0.5f, gy = (b[1] + b[3]) * 0.5f;
    const float gw = b[2] - b[0], gh = b[3] - b[1];
    const float d[4] = {(gx - px) / pw, (gy - py) / ph, std::log(gw / pw), std::log(gh / ph)};
    for (int k = 0; k < 4; ++k) po[i * 4 + k] = (d[k] - mean[k]) / std_[k];
  }
  return out;
}

Tensor DeltaXYWHBBoxCoder::decode(const Tensor& priors_in, const Tensor& deltas_in,
                                  std::optional<std::pair<int64_t, int64_t>> max_shape) const {
  check_boxes(priors_in, "DeltaXYWHBBoxCoder::decode", "priors");
  KDET_CHECK(deltas_in.ndim() == 2 && deltas_in.size(1) % 4 == 0 && deltas_in.size(1) > 0 &&
                 deltas_in.size(0) == priors_in.size(0),
             "DeltaXYWHBBoxCoder::decode: deltas must be [N, 4*C] for ", priors_in.desc(), " priors, got ",
             deltas_in.desc());
  KDET_CHECK(priors_in.device() == deltas_in.device(), "DeltaXYWHBBoxCoder::decode: priors ", priors_in.desc(),
             " and deltas ", deltas_in.desc(), " on different devices");
  Tensor p = priors_in.to(DType::F32).contiguous(), d = deltas_in.to(DType::F32).contiguous();
  const int64_t n = p.size(0), sp = p.size(1), c4 = d.size(1);
  Tensor out = Tensor::empty({n, c4}, DType::F32, p.device());
#if KDET_CUDA
  if (p.device().is_cuda()) {
    cuda::delta_decode(p, d, means, stds, std::abs(std::log(wh_ratio_clip)), max_shape.has_value(),
                       max_shape ? static_cast<float>(max_shape->first) : 0.f,
                       max_shape ? static_cast<float>(max_shape->second) : 0.f, out);
    return out;
  }
#endif
  const float* pp = p.data<float>();
  const float* pd = d.data<float>();
  float* po = out.data<float>();
  float mean[4], std_[4];
  for (int k = 0; k < 4; ++k) mean[k] = static_cast<float>(means[k]), std_[k] = static_cast<float>(stds[k]);
  const float max_ratio = static_cast<float>(std::abs(std::log(wh_ratio_clip)));
  const float W = max_shape ? static_cast<float>(max_shape->second) : 0.f;
  const float H = max_shape ? static_cast<float>(max_shape->first) : 0.f;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float* a = pp + i * sp;
    const float px = (a[0] + a[2]) * 0.5f, py = (a[1] + a[3]) * 0.5f;
    const float pw = a[2] - a[0], ph = a[3] - a[1];
    for (int64_t c = 0; c < c4; c += 4) {
      const float* q = pd + i * c4 + c;
      const float dx = q[0] * std_[0] + mean[0], dy = q[1] * std_[1] + mean[1];
      float dw = q[2] * std_[2] + mean[2], dh = q[3] * std_[3] + mean[3];
      dw = std::min(std::max(dw, -max_ratio), max_ratio);
      dh = std::min(std::max(dh, -max_ratio), max_ratio);
      const float gx = px + pw * dx, gy = py + ph * dy;
      const float gw = pw * std::exp(dw), gh = ph * std::exp(dh);
      float box[4] = {gx - gw * 0.5f, gy - gh * 0.5f, gx + gw * 0.5f, gy + gh * 0.5f};
      if (max_shape) {
        box[0] = std::min(std::max(box[0], 0.f), W);
        box[2] = std::min(std::max(box[2], 0.f), W);
        box[1] = std::min(std::max(box[1], 0.f), H);
        box[3] = std::min(std::max(box[3], 0.f), H);
      }
      for (int k = 0; k < 4; ++k) po[i * c4 + c + k] = box[k];
    }
  }
  return out;
}

namespace {
// Decode in T with the local derivatives of each output coordinate w.r.t. the 4 deltas.
template <class T>
void decode_with_grad(const T* pp, int64_t sp, const T* pd, int64_t n, const double* mean, const double* std_,
                      double max_ratio, T* out, T* jac /* n*4 x 4 diag-ish: d(x1,y1,x2,y2)/d(dx,dy,dw,dh) */) {
  const T mr = static_cast<T>(max_ratio);
  for (int64_t i = 0; i < n; ++i) {
    const T* a = pp + i * sp;
    const T* q = pd + i * 4;
    const T px = (a[0] + a[2]) * T(0.5), py = (a[1] + a[3]) * T(0.5);
    const T pw = a[2] - a[0], ph = a[3] - a[1];
    const T dx = q[0] * T(std_[0]) + T(mean[0]), dy = q[1] * T(std_[1]) + T(mean[1]);
    const T dw0 = q[2] * T(std_[2]) + T(mean[2]), dh0 = q[3] * T(std_[3]) + T(mean[3]);
    const T dw = std::min(std::max(dw0, -mr), mr), dh = std::min(std::max(dh0, -mr), mr);
    const T gx = px + pw * dx, gy = py + ph * dy;
    const T gw = pw * std::exp(dw), gh = ph * std::exp(dh);
    T* o = out + i * 4;
    o[0] = gx - gw * T(0.5);
    o[1] = gy - gh * T(0.5);
    o[2] = gx + gw * T(0.5);
    o[3] = gy + gh * T(0.5);
    // jac rows: [d gx/d q0, d gy/d q1, d (gw/2)/d q2, d (gh/2)/d q3]
    T* J = jac + i * 4;
    J[0] = pw * T(std_[0]);
    J[1] = ph * T(std_[1]);
    J[2] = (dw0 > -mr && dw0 < mr) ? gw * T(0.5) * T(std_[2]) : T(0);
    J[3] = (dh0 > -mr && dh0 < mr) ? gh * T(0.5) * T(std_[3]) : T(0);
  }
}
}  // namespace

Var DeltaXYWHBBoxCoder::decode_var(const Tensor& priors_in, const Var& deltas) const {
  check_boxes(priors_in, "DeltaXYWHBBoxCoder::decode_var", "priors");
  KDET_CHECK(deltas.ndim() == 2 && deltas.size(1) == 4 && deltas.size(0) == priors_in.size(0) &&
                 deltas.device() == priors_in.device(),
             "DeltaXYWHBBoxCoder::decode_var: deltas must be [N, 4] on the device of the ", priors_in.desc(),
             " priors, got ", deltas.data().desc());
  const DType dt = deltas.dtype();
  Tensor p = priors_in.to(dt).contiguous(), d = deltas.data().contiguous();
  const int64_t n = p.size(0);
  Tensor out = Tensor::empty({n, 4}, dt, d.device()), jac = Tensor::empty({n, 4}, dt, d.device());
  const double max_ratio = std::abs(std::log(wh_ratio_clip));
#if KDET_CUDA
  if (d.device().is_cuda()) {
    cuda::delta_decode_jac(p, d, means, stds, max_ratio, out, jac);
    return record("bbox_decode", out, {&deltas}, [jac, n](const Tensor& g_in, Grads& grads) {
      Tensor gd = Tensor::empty({n, 4}, g_in.dtype(), g_in.device());
      cuda::delta_decode_backward(g_in.contiguous(), jac, gd);
      grads.accumulate(0, gd);
    });
  }
#endif
  dispatch_float(dt, "decode_var", [&](auto tag) {
    using T = decltype(tag);
    decode_with_grad<T>(p.data<T>(), p.size(1), d.data<T>(), n, means.data(), stds.data(), max_ratio,
                        out.data<T>(), jac.data<T>());
  });
  return record("bbox_decode", out, {&deltas}, [jac, n](const Tensor& g_in, Grads& grads) {
    Tensor g = g_in.contiguous();
    Tensor gd = Tensor::empty({n, 4}, g.dtype());
    dispatch_float(g.dtype(), "bbox_decode_backward", [&](auto tag) {
      using T = decltype(tag);
      const T* pg = g.data<T>();
      const T* J = jac.data<T>();
      T* o = gd.data<T>();
      for (int64_t i = 0; i < n; ++i) {
        const T* gi = pg + i * 4;
        const T* Ji = J + i * 4;
        // x1 = gx - gw/2, x2 = gx + gw/2 ; gx depends on q0, gw/2 on q2
        o[i * 4 + 0] = (gi[0] + gi[2]) * Ji[0];
        o[i * 4 + 1] = (gi[1] + gi[3]) * Ji[1];
        o[i * 4 + 2] = (gi[2] - gi[0]) * Ji[2];
        o[i * 4 + 3] = (gi[3] - gi[1]) * Ji[3];
      }
    });
    grads.accumulate(0, gd);
  });
}

}  // namespace kdet
