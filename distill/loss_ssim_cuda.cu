// distill/loss_ssim_cuda.cu — SSIM-KD kernels on the GPU (CPU: distill/loss_ssim.cpp, same expressions).
//
//   kd_ssim_coeffs      one block per (n, c) plane: SSIM, the coefficient maps a, b, c per element and the
//                       plane's Σ (1 − SSIM) as a fixed-shape double tree sum
//   kd_ssim_combine     elementwise dx = f_a + y·f_b + x·f_c (× the constant upstream gradient)
//   kd_minmax_forward   one block per plane: min / max (exact in double), then the rescaled plane
//   kd_minmax_backward  one block per plane: Σ g, Σ g·x̂ and the tie counts (double tree sums), then dx
// No atomics: bit-identical run to run.
#include "distill/loss_ssim_cuda.h"
#include "distill/ssim_math.h"
#include "engine/cuda/launch.cuh"

namespace kdet::cuda {

namespace {

unsigned blocks_for(int64_t items) { return static_cast<unsigned>(std::clamp<int64_t>(items, 1, 65535)); }

template <class T>
__global__ void ssim_coeffs_kernel(int64_t P, int64_t C, int64_t HW, T C1, T C2, const T* f5, T* abc, T* map,
                                   double* plane_loss) {
  __shared__ double sh[kThreads];
  for (int64_t p = blockIdx.x; p < P; p += gridDim.x) {
    const int64_t n = p / C, c = p % C;
    const T* f = f5 + (n * 5 * C + c) * HW;  // map k at f + k·C·HW
    const int64_t ks = C * HW;
    T* a = abc + p * 3 * HW;
    double loss = 0;
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
      const T S = kd::ssim_pixel(f[i], f[ks + i], f[2 * ks + i], f[3 * ks + i], f[4 * ks + i], C1, C2, a[i],
                                 a[HW + i], a[2 * HW + i]);
      loss += static_cast<double>(T(1) - S);
      if (map) map[p * HW + i] = S;
    }
    const double t = block_sum(loss, sh);
    if (threadIdx.x == 0) plane_loss[p] = t;
  }
}

template <class T>
__global__ void ssim_combine_kernel(int64_t n, int64_t HW, bool scale, T gs, const T* x, const T* y, const T* f3,
                                    T* dx) {
  KDET_GRID_STRIDE(t, n) {
    const int64_t p = t / HW, i = t % HW;
    const T* f = f3 + p * 3 * HW;
    const T v = f[i] + y[t] * f[HW + i] + x[t] * f[2 * HW + i];
    dx[t] = scale ? gs * v : v;
  }
}

// std::min / std::max of the CPU's sequential scan, as a fixed tree (same result for non-NaN values).
template <class T>
__global__ void minmax_fwd_kernel(int64_t P, int64_t HW, T eps, const T* x, T* out, T* mn, T* mx) {
  __shared__ double slo[kThreads], shi[kThreads];
  for (int64_t p = blockIdx.x; p < P; p += gridDim.x) {
    const T* a = x + p * HW;
    double lo = static_cast<double>(a[0]), hi = lo;
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
      const double v = static_cast<double>(a[i]);
      lo = v < lo ? v : lo;
      hi = hi < v ? v : hi;
    }
    const int t = threadIdx.x;
    slo[t] = lo, shi[t] = hi;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (t < s) {
        slo[t] = slo[t + s] < slo[t] ? slo[t + s] : slo[t];
        shi[t] = shi[t] < shi[t + s] ? shi[t + s] : shi[t];
      }
      __syncthreads();
    }
    const T l = static_cast<T>(slo[0]), h = static_cast<T>(shi[0]);
    __syncthreads();
    const T den = h - l + eps;
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) out[p * HW + i] = (a[i] - l) / den;
    if (t == 0) mn[p] = l, mx[p] = h;
  }
}

template <class T>
__global__ void minmax_bwd_kernel(int64_t P, int64_t HW, T eps, const T* g, const T* x, const T* o, const T* mn,
                                  const T* mx, T* dx) {
  __shared__ double sh[kThreads];
  for (int64_t p = blockIdx.x; p < P; p += gridDim.x) {
    const T lo = mn[p], hi = mx[p], R = hi - lo + eps;
    const T* gp = g + p * HW;
    const T* a = x + p * HW;
    const T* op = o + p * HW;
    double s1 = 0, s2 = 0, nlo = 0, nhi = 0;
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
      s1 += static_cast<double>(gp[i]);
      s2 += static_cast<double>(gp[i]) * static_cast<double>(op[i]);
      nlo += a[i] == lo ? 1.0 : 0.0;
      nhi += a[i] == hi ? 1.0 : 0.0;
    }
    s1 = block_sum(s1, sh), s2 = block_sum(s2, sh), nlo = block_sum(nlo, sh), nhi = block_sum(nhi, sh);
    const T gmin = static_cast<T>((s2 - s1) / static_cast<double>(R) / nlo);
    const T gmax = static_cast<T>(-s2 / static_cast<double>(R) / nhi);
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
      T v = gp[i] / R;
      if (a[i] == lo) v += gmin;
      if (a[i] == hi) v += gmax;
      dx[p * HW + i] = v;
    }
  }
}

}  // namespace

void kd_ssim_coeffs(const Tensor& f5, int64_t C, double C1, double C2, Tensor& abc, Tensor& map, Tensor& plane_loss) {
  const char* op = "kd_ssim";
  KDET_CHECK(f5.ndim() == 4 && f5.is_contiguous() && f5.size(1) == 5 * C && abc.is_contiguous() &&
                 (!map.defined() || map.is_contiguous()) && plane_loss.dtype() == DType::F64,
             op, " (cuda): bad operands ", f5.desc(), ", ", abc.desc());
  Context& ctx = activate(f5, op);
  const int64_t P = f5.size(0) * C, HW = f5.size(2) * f5.size(3);
  if (P == 0) return;
  dispatch_float(f5.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    ssim_coeffs_kernel<T><<<blocks_for(P), kThreads, 0, ctx.stream()>>>(
        P, C, HW, T(C1), T(C2), f5.data<T>(), abc.data<T>(), map.defined() ? map.data<T>() : nullptr,
        plane_loss.data<double>());
  });
  check_launch(ctx, op);
}

void kd_ssim_combine(const Tensor& x, const Tensor& y, const Tensor& f3, bool scale, double gs, Tensor& dx) {
  const char* op = "kd_ssim backward";
  KDET_CHECK(x.is_contiguous() && y.is_contiguous() && f3.is_contiguous() && dx.is_contiguous(), op,
             " (cuda): operands must be contiguous");
  Context& ctx = activate(x, op);
  const int64_t n = x.numel(), HW = x.size(-2) * x.size(-1);
  if (n == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    ssim_combine_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, HW, scale, T(gs), x.data<T>(), y.data<T>(),
                                                                      f3.data<T>(), dx.data<T>());
  });
  check_launch(ctx, op);
}

void kd_minmax_forward(const Tensor& x, double eps, Tensor& out, Tensor& mn, Tensor& mx) {
  const char* op = "kd_minmax_normalize";
  KDET_CHECK(x.is_contiguous() && out.is_contiguous() && x.ndim() == 4, op, " (cuda): bad layout");
  Context& ctx = activate(x, op);
  const int64_t P = x.size(0) * x.size(1), HW = x.size(2) * x.size(3);
  if (P == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    minmax_fwd_kernel<T><<<blocks_for(P), kThreads, 0, ctx.stream()>>>(P, HW, T(eps), x.data<T>(), out.data<T>(),
                                                                      mn.data<T>(), mx.data<T>());
  });
  check_launch(ctx, op);
}

void kd_minmax_backward(const Tensor& g, const Tensor& x, const Tensor& out, const Tensor& mn, const Tensor& mx,
                        double eps, Tensor& dx) {
  const char* op = "kd_minmax_normalize backward";
  KDET_CHECK(g.is_contiguous() && x.is_contiguous() && out.is_contiguous() && dx.is_contiguous(), op,
             " (cuda): operands must be contiguous");
  Context& ctx = activate(x, op);
  const int64_t P = x.size(0) * x.size(1), HW = x.size(2) * x.size(3);
  if (P == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    minmax_bwd_kernel<T><<<blocks_for(P), kThreads, 0, ctx.stream()>>>(P, HW, T(eps), g.data<T>(), x.data<T>(),
                                                                      out.data<T>(), mn.data<T>(), mx.data<T>(),
                                                                      dx.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
