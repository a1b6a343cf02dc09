// detectors/nms_cuda.cu — the O(n²) IoU part of NMS on the GPU (CPU: nms.cpp); the greedy scan over the
// returned suppression bitmask runs on the host, as in torchvision's CUDA NMS.
#include "detectors/nms_cuda.h"
#include "engine/cuda/pointwise.cuh"

namespace kdet::cuda {

namespace {

__global__ void nms_mask_kernel(int64_t n, int64_t words, const float* b, float thr, unsigned long long* mask) {
  KDET_GRID_STRIDE(t, n * words) {
    const int64_t i = t / words, w = t % words;
    const float* a = b + i * 4;
    const float area_i = __fmul_rn(a[2] - a[0], a[3] - a[1]);
    unsigned long long bits = 0;
    for (int k = 0; k < 64; ++k) {
      const int64_t j = w * 64 + k;
      if (j >= n) break;
      if (j <= i) continue;
      const float* q = b + j * 4;
      const float area_j = __fmul_rn(q[2] - q[0], q[3] - q[1]);
      const float iw = dm::max(0.f, dm::min(a[2], q[2]) - dm::max(a[0], q[0]));
      const float ih = dm::max(0.f, dm::min(a[3], q[3]) - dm::max(a[1], q[1]));
      const float inter = __fmul_rn(iw, ih);
      const float ovr = inter / (__fadd_rn(area_i, area_j) - inter);
      if (ovr > thr) bits |= 1ull << k;
    }
    mask[t] = bits;
  }
}

}  // namespace

void nms_mask(const Tensor& boxes, float thr, Tensor& mask) {
  const char* op = "nms";
  KDET_CHECK(boxes.is_contiguous() && boxes.dtype() == DType::F32 && boxes.ndim() == 2 && boxes.size(1) == 4 &&
                 mask.is_contiguous() && mask.dtype() == DType::I64,
             op, " (cuda): bad operands ", boxes.desc(), ", ", mask.desc());
  Context& ctx = activate(boxes, op);
  const int64_t n = boxes.size(0), words = (n + 63) / 64;
  KDET_CHECK(mask.numel() == n * words, op, " (cuda): mask ", mask.desc(), " for ", n, " boxes");
  if (n == 0) return;
  nms_mask_kernel<<<grid_for(n * words), kThreads, 0, ctx.stream()>>>(
      n, words, boxes.data<float>(), thr, reinterpret_cast<unsigned long long*>(mask.data<int64_t>()));
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
