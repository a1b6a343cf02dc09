#include "detectors/iou.h"

#include <algorithm>

#if KDET_CUDA
#include "detectors/iou_cuda.h"
#endif

namespace kdet {

IouMode iou_mode(const std::string& s) {
  if (s == "iou") return IouMode::IoU;
  if (s == "iof") return IouMode::IoF;
  if (s == "giou") return IouMode::GIoU;
  KDET_FAIL("bbox_overlaps: unknown mode '", s, "' (expected iou, iof or giou)");
}

Tensor bbox_overlaps(const Tensor& a_in, const Tensor& b_in, IouMode mode, double eps_d) {
  KDET_CHECK(a_in.ndim() == 2 && a_in.size(1) >= 4 && b_in.ndim() == 2 && b_in.size(1) >= 4,
             "bbox_overlaps: expects [N, 4] and [M, 4] boxes, got ", a_in.desc(), " and ", b_in.desc());
  KDET_CHECK(a_in.device() == b_in.device(), "bbox_overlaps: boxes on different devices, ", a_in.desc(), " and ",
             b_in.desc());
  KDET_CHECK(a_in.device().is_cpu() || (KDET_CUDA && a_in.device().is_cuda()),
             "bbox_overlaps: CPU (or CUDA) tensors only, got ", a_in.desc(), " and ", b_in.desc());
  Tensor a = a_in.to(DType::F32).contiguous(), b = b_in.to(DType::F32).contiguous();
  const int64_t n = a.size(0), m = b.size(0), sa = a.size(1), sb = b.size(1);
  Tensor out = Tensor::empty({n, m}, DType::F32, a.device());
  if (n == 0 || m == 0) return out;
#if KDET_CUDA
  if (a.device().is_cuda()) {
    cuda::bbox_overlaps(a, b, mode == IouMode::IoU ? 0 : mode == IouMode::IoF ? 1 : 2, static_cast<float>(eps_d), out);
    return out;
  }
#endif
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  const float eps = static_cast<float>(eps_d);
  std::vector<float> area_b(m);
  for (int64_t j = 0; j < m; ++j) {
    const float* q = pb + j * sb;
    area_b[j] = (q[2] - q[0]) * (q[3] - q[1]);
  }
#pragma omp parallel for schedule(static) if (n * m > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float* p = pa + i * sa;
    const float area_a = (p[2] - p[0]) * (p[3] - p[1]);
    float* row = po + i * m;
    for (int64_t j = 0; j < m; ++j) {
      const float* q = pb + j * sb;
      float w = std::min(p[2], q[2]) - std::max(p[0], q[0]);
      float h = std::min(p[3], q[3]) - std::max(p[1], q[1]);
      w = std::max(w, 0.0f);
      h = std::max(h, 0.0f);
      const float overlap = w * h;
      float uni = mode == IouMode::IoF ? area_a : (area_a + area_b[j]) - overlap;
      uni = std::max(uni, eps);
      float iou = overlap / uni;
      if (mode == IouMode::GIoU) {
        float ew = std::max(std::max(p[2], q[2]) - std::min(p[0], q[0]), 0.0f);
        float eh = std::max(std::max(p[3], q[3]) - std::min(p[1], q[1]), 0.0f);
        float enclose = std::max(ew * eh, eps);
        iou = iou - (enclose - uni) / enclose;
      }
      row[j] = iou;
    }
  }
  return out;
}

}  // namespace kdet
