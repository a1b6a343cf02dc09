// engine/ops/box_loss_math.h — the aligned IoU / GIoU box losses of one box pair with their analytic
// gradient, shared by the CPU kernel (losses.cpp) and the CUDA kernel (losses_cuda.cu) so that both
// backends evaluate the same double-precision formulas. Plain C++; __host__ __device__ under nvcc.
#pragma once

#if defined(__CUDACC__)
#define KDET_HD __host__ __device__
#else
#define KDET_HD
#endif

#include <math.h>

namespace kdet::box_loss_math {

// std::max / std::min semantics (first argument on ties), usable in device code.
KDET_HD inline double hd_max(double a, double b) { return (a < b) ? b : a; }
KDET_HD inline double hd_min(double a, double b) { return (b < a) ? b : a; }
KDET_HD inline double hd_log(double x) { return ::log(x); }

// max(a, b) derivative share for a (torch maximum/minimum: half each at a tie).
KDET_HD inline double share_max(double a, double b) { return a > b ? 1.0 : (a == b ? 0.5 : 0.0); }
KDET_HD inline double share_min(double a, double b) { return a < b ? 1.0 : (a == b ? 0.5 : 0.0); }

// Aligned IoU / GIoU between box rows, with analytic gradient w.r.t. the prediction.
// kind: 0 = GIoU loss (1 - giou), 1/2/3 = IoU loss linear / square / log.
struct BoxLossOut {
  double loss;
  double d[4];  // dloss/dpred
};

KDET_HD inline BoxLossOut box_loss(const double* p, const double* t, int kind, double eps, bool want_grad) {
  const double px1 = p[0], py1 = p[1], px2 = p[2], py2 = p[3];
  const double tx1 = t[0], ty1 = t[1], tx2 = t[2], ty2 = t[3];
  const double area_p = (px2 - px1) * (py2 - py1);
  const double area_t = (tx2 - tx1) * (ty2 - ty1);
  const double ltx = hd_max(px1, tx1), lty = hd_max(py1, ty1);
  const double rbx = hd_min(px2, tx2), rby = hd_min(py2, ty2);
  const double iw_raw = rbx - ltx, ih_raw = rby - lty;
  const double iw = hd_max(iw_raw, 0.0), ih = hd_max(ih_raw, 0.0);
  const double overlap = iw * ih;
  const double uni_raw = area_p + area_t - overlap;
  const double ueps = kind == 0 ? eps : 1e-6;  // bbox_overlaps' own eps for the IoU loss
  const double uni = hd_max(uni_raw, ueps);
  const double iou = overlap / uni;
  BoxLossOut r{};
  double d_ov = 0, d_u = 0, d_E = 0;
  double ew = 0, eh = 0, ew_raw = 0, eh_raw = 0, E = 0, enc = 0;
  if (kind == 0) {
    const double elx = hd_min(px1, tx1), ely = hd_min(py1, ty1);
    const double erx = hd_max(px2, tx2), ery = hd_max(py2, ty2);
    ew_raw = erx - elx;
    eh_raw = ery - ely;
    ew = hd_max(ew_raw, 0.0);
    eh = hd_max(eh_raw, 0.0);
    enc = ew * eh;
    E = hd_max(enc, eps);
    const double giou = iou - (E - uni) / E;
    r.loss = 1.0 - giou;
    if (!want_grad) return r;
    // loss = 2 - overlap/u - u/E
    d_ov = -1.0 / uni;
    d_u = overlap / (uni * uni) - 1.0 / E;
    d_E = uni / (E * E);
  } else {
    const double ic = hd_max(iou, eps);
    double d_iou = 0;
    if (kind == 1) {
      r.loss = 1.0 - ic;
      d_iou = -1.0;
    } else if (kind == 2) {
      r.loss = 1.0 - ic * ic;
      d_iou = -2.0 * ic;
    } else {
      r.loss = -hd_log(ic);
      d_iou = -1.0 / ic;
    }
    if (!want_grad) return r;
    d_iou *= iou >= eps ? 1.0 : 0.0;  // clamp(min=eps) passes the gradient where iou >= eps
    d_ov = d_iou / uni;
    d_u = -d_iou * overlap / (uni * uni);
  }
  // union = max(uni_raw, eps) (torch.max: half at a tie)
  const double d_uraw = d_u * share_max(uni_raw, ueps);
  const double d_area = d_uraw;
  d_ov += -d_uraw;
  // overlap = clamp(iw_raw, 0) * clamp(ih_raw, 0); clamp passes where raw >= 0
  const double d_iw = iw_raw >= 0 ? d_ov * ih : 0.0;
  const double d_ih = ih_raw >= 0 ? d_ov * iw : 0.0;
  double* d = r.d;
  d[0] = d[1] = d[2] = d[3] = 0;
  // area_p
  d[2] += d_area * (py2 - py1);
  d[0] -= d_area * (py2 - py1);
  d[3] += d_area * (px2 - px1);
  d[1] -= d_area * (px2 - px1);
  // iw_raw = min(px2, tx2) - max(px1, tx1)
  d[2] += d_iw * share_min(px2, tx2);
  d[0] -= d_iw * share_max(px1, tx1);
  d[3] += d_ih * share_min(py2, ty2);
  d[1] -= d_ih * share_max(py1, ty1);
  if (kind == 0) {
    const double d_enc = d_E * share_max(enc, eps);
    const double d_ew = ew_raw >= 0 ? d_enc * eh : 0.0;
    const double d_eh = eh_raw >= 0 ? d_enc * ew : 0.0;
    // ew_raw = max(px2, tx2) - min(px1, tx1)
    d[2] += d_ew * share_max(px2, tx2);
    d[0] -= d_ew * share_min(px1, tx1);
    d[3] += d_eh * share_max(py2, ty2);
    d[1] -= d_eh * share_min(py1, ty1);
  }
  return r;
}

}  // namespace kdet::box_loss_math
