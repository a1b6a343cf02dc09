// detectors/iou_cuda.cu — bbox_overlaps on the GPU (CPU: iou.cpp). __fmul_rn / __fadd_rn keep nvcc from
// contracting a*b + c into an FMA, so every value is rounded exactly as in the CPU code.
#include "detectors/iou_cuda.h"
#include "engine/cuda/pointwise.cuh"

namespace kdet::cuda {

namespace {

__device__ inline float area(const float* q) { return __fmul_rn(q[2] - q[0], q[3] - q[1]); }

__global__ void overlaps_kernel(int64_t N, int64_t M, int64_t sa, int64_t sb, const float* a, const float* b, int mode,
                                float eps, float* out) {
  KDET_GRID_STRIDE(k, N * M) {
    const int64_t i = k / M, j = k % M;
    const float* p = a + i * sa;
    const float* q = b + j * sb;
    const float area_a = area(p), area_b = area(q);
    float w = dm::min(p[2], q[2]) - dm::max(p[0], q[0]);
    float h = dm::min(p[3], q[3]) - dm::max(p[1], q[1]);
    w = dm::max(w, 0.0f);
    h = dm::max(h, 0.0f);
    const float overlap = __fmul_rn(w, h);
    float uni = mode == 1 ? area_a : __fadd_rn(area_a, area_b) - overlap;
    uni = dm::max(uni, eps);
    float iou = overlap / uni;
    if (mode == 2) {
      const float ew = dm::max(dm::max(p[2], q[2]) - dm::min(p[0], q[0]), 0.0f);
      const float eh = dm::max(dm::max(p[3], q[3]) - dm::min(p[1], q[1]), 0.0f);
      const float enclose = dm::max(__fmul_rn(ew, eh), eps);
      iou = iou - (enclose - uni) / enclose;
    }
    out[k] = iou;
  }
}

}  // namespace

void bbox_overlaps(const Tensor& a, const Tensor& b, int mode, float eps, Tensor& out) {
  const char* op = "bbox_overlaps";
  KDET_CHECK(a.is_contiguous() && b.is_contiguous() && out.is_contiguous() && a.dtype() == DType::F32 &&
                 b.dtype() == DType::F32 && out.dtype() == DType::F32,
             op, " (cuda): expects contiguous f32 boxes");
  Context& ctx = activate(a, op);
  const int64_t N = a.size(0), M = b.size(0);
  if (N * M == 0) return;
  overlaps_kernel<<<grid_for(N * M), kThreads, 0, ctx.stream()>>>(N, M, a.size(1), b.size(1), a.data<float>(),
                                                                   b.data<float>(), mode, eps, out.data<float>());
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
