// distill/ssim_math.h — SSIM of one pixel from its five filtered statistics and the coefficient maps the
// backward needs (kd_losses.md §5c), shared by the CPU kernel (loss_ssim.cpp) and the CUDA kernel
// (loss_ssim_cuda.cu) so that both evaluate the same expressions. Plain C++; __host__ __device__ under nvcc.
#pragma once

#if defined(__CUDACC__)
#define KDET_SSIM_HD __host__ __device__
#else
#define KDET_SSIM_HD
#endif

namespace kdet::kd {

// mx = g∗x, my = g∗y, exx = g∗x², eyy = g∗y², exy = g∗xy. Returns SSIM; a = ∂S/∂μx, b = ∂S/∂(g∗xy),
// c = 2·∂S/∂(g∗x²).
template <class T>
KDET_SSIM_HD inline T ssim_pixel(T mx, T my, T exx, T eyy, T exy, T C1, T C2, T& a, T& b, T& c) {
  const T mx2 = mx * mx, my2 = my * my, mxy = mx * my;
  const T sxx = exx - mx2, syy = eyy - my2, sxy = exy - mxy;
  const T A1 = mxy * T(2) + C1, A2 = sxy * T(2) + C2, B1 = mx2 + my2 + C1, B2 = sxx + syy + C2;
  const T den = B1 * B2;
  const T S = (A1 * A2) / den;
  a = T(2) * (my * (A2 - A1) + S * mx * (B1 - B2)) / den;
  b = T(2) * A1 / den;
  c = T(-2) * S / B2;
  return S;
}

}  // namespace kdet::kd
