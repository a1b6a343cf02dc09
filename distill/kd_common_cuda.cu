// distill/kd_common_cuda.cu — the fused KD ops of distill/kd_common.cpp on the GPU (CPU kernels: kd_common.cpp).
//
//   kd_plane_stats         mean_hw (|f|, f): one block per (n, c) plane, a fixed-shape tree sum in double;
//                          mean_c (|f|, f): one thread per (n, pixel), channels added in order in double
//   kd_abs_mean_backward   elementwise sign(f)·g/n (0 at 0), the CPU's expression
//   kd_signed_means_backward  elementwise g_c/HW + g_p/C
//   kd_sq_dist             one block per (n, c) plane (double tree sum), then per image in channel order and
//                          the total in image order (one block), as the CPU combines its plane sums
//   kd_sq_dist_backward    elementwise 2·gs[n]·Π w·(a − b), the CPU's expression and rounding order
// Deterministic: no atomics, fixed reduction shapes (engine/cuda/launch.cuh's block_sum).
#include <algorithm>
#include <limits>

#include "distill/kd_common_cuda.h"
#include "engine/cuda/launch.cuh"

namespace kdet::cuda {

namespace {

// Blocks for a one-block-per-item kernel (the loops stride over the items, so any count is correct).
unsigned blocks_for(int64_t items) { return static_cast<unsigned>(std::clamp<int64_t>(items, 1, 65535)); }

template <class T>
__global__ void plane_hw_kernel(int64_t planes, int64_t C, int64_t HW, const T* f, T* ach, int64_t sa, T* sch,
                                int64_t ss) {
  __shared__ double sh[kThreads];
  for (int64_t pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const T* x = f + pl * HW;
    double a = 0, s = 0;
    for (int64_t p = threadIdx.x; p < HW; p += blockDim.x) {
      const double v = static_cast<double>(x[p]);
      a += ::fabs(v);
      s += v;
    }
    const int64_t n = pl / C, c = pl % C;
    if (ach) {
      const double t = block_sum(a, sh);
      if (threadIdx.x == 0) ach[n * sa + c] = static_cast<T>(t / static_cast<double>(HW));
    }
    if (sch) {
      const double t = block_sum(s, sh);
      if (threadIdx.x == 0) sch[n * ss + c] = static_cast<T>(t / static_cast<double>(HW));
    }
  }
}

template <class T>
__global__ void plane_c_kernel(int64_t n_items, int64_t C, int64_t HW, const T* f, T* asp, int64_t sa, T* ssp,
                               int64_t ss) {
  KDET_GRID_STRIDE(t, n_items) {
    const int64_t n = t / HW, p = t % HW;
    const T* x = f + n * C * HW + p;
    double a = 0, s = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double v = static_cast<double>(x[c * HW]);
      a += ::fabs(v);
      s += v;
    }
    if (asp) asp[n * sa + p] = static_cast<T>(a / static_cast<double>(C));
    if (ssp) ssp[n * ss + p] = static_cast<T>(s / static_cast<double>(C));
  }
}

template <class T>
__global__ void abs_mean_bwd_kernel(int64_t n_items, int64_t C, int64_t HW, bool over_c, const T* f, const T* g,
                                    T* dx) {
  const T inv = T(1) / static_cast<T>(over_c ? C : HW);
  KDET_GRID_STRIDE(i, n_items) {
    const int64_t nc = i / HW, p = i % HW;
    const T x = f[i];
    const T gv = over_c ? g[(nc / C) * HW + p] * inv : g[nc] * inv;
    dx[i] = x > T(0) ? gv : x < T(0) ? -gv : T(0);
  }
}

template <class T>
__global__ void signed_means_bwd_kernel(int64_t n_items, int64_t C, int64_t HW, const T* g, T* dx) {
  const T ic = T(1) / static_cast<T>(C), ihw = T(1) / static_cast<T>(HW);
  KDET_GRID_STRIDE(i, n_items) {
    const int64_t nc = i / HW, p = i % HW, n = nc / C, c = nc % C;
    const T* gi = g + n * (C + HW);
    dx[i] = gi[c] * ihw + gi[C + p] * ic;
  }
}

template <class T>
__global__ void sq_plane_kernel(int64_t planes, kd::SqGeom g, const T* a, const T* b, const T* w0, const T* w1,
                                double* part) {
  __shared__ double sh[kThreads];
  for (int64_t pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const int64_t n = pl / g.C, c = pl % g.C;
    const T* x = a + pl * g.L;
    const T* y = b + pl * g.L;
    double acc = 0;
    for (int64_t p = threadIdx.x; p < g.L; p += blockDim.x) {
      const double d = static_cast<double>(x[p]) - static_cast<double>(y[p]);
      if (g.nw > 0) {
        double r = 1.0;
        r *= static_cast<double>(w0[n * g.wn[0] + c * g.wc[0] + p * g.wp[0]]);
        if (g.nw > 1) r *= static_cast<double>(w1[n * g.wn[1] + c * g.wc[1] + p * g.wp[1]]);
        acc += r * (d * d);
      } else {
        acc += d * d;
      }
    }
    const double t = block_sum(acc, sh);
    if (threadIdx.x == 0) part[pl] = t;
  }
}

// One block: sums[n] = Σ_c part[n, c] in channel order, then sums[N] = Σ_n sums[n] in image order.
__global__ void sq_image_sums_kernel(int64_t N, int64_t C, const double* part, double* sums) {
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += part[n * C + c];
    sums[n] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int64_t n = 0; n < N; ++n) t += sums[n];
    sums[N] = t;
  }
}

template <class T>
__global__ void sq_bwd_kernel(int64_t n_items, kd::SqGeom g, const T* a, const T* b, const T* w0, const T* w1,
                              const double* gs, T* da, T* db) {
  KDET_GRID_STRIDE(i, n_items) {
    const int64_t nc = i / g.L, p = i % g.L, n = nc / g.C, c = nc % g.C;
    const T s = static_cast<T>(2.0 * gs[n]);
    T r = s;
    if (g.nw > 0) {
      r = T(1);
      r *= w0[n * g.wn[0] + c * g.wc[0] + p * g.wp[0]];
      if (g.nw > 1) r *= w1[n * g.wn[1] + c * g.wc[1] + p * g.wp[1]];
      r *= s;
    }
    const T v = r * (a[i] - b[i]);
    if (da) da[i] = v;
    if (db) db[i] = -v;
  }
}

template <class T>
T* out_ptr(Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <class T>
const T* in_ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
int64_t row_stride(const Tensor& t) { return t.defined() ? t.strides()[0] : 0; }

void check_row_view(const Tensor& t, int64_t N, int64_t X, const char* op) {
  if (!t.defined()) return;
  KDET_CHECK(t.ndim() == 2 && t.size(0) == N && t.size(1) == X && (X <= 1 || t.strides()[1] == 1), op,
             " (cuda): output ", t.desc(), " must be an [", N, ", ", X, "] view with unit element stride");
}

}  // namespace

void kd_plane_stats(const Tensor& f, Tensor& asp, Tensor& ach, Tensor& ssp, Tensor& sch) {
  const char* op = "kd_plane_stats";
  KDET_CHECK(f.ndim() == 4 && f.is_contiguous(), op, " (cuda): expects a contiguous [N, C, H, W] input, got ",
             f.desc());
  Context& ctx = activate(f, op);
  const int64_t N = f.size(0), C = f.size(1), HW = f.size(2) * f.size(3);
  check_row_view(asp, N, HW, op), check_row_view(ssp, N, HW, op);
  check_row_view(ach, N, C, op), check_row_view(sch, N, C, op);
  if (N * C * HW == 0) {  // empty means are NaN on the CPU too (0 / 0); fill what is left unwritten
    for (Tensor* t : {&asp, &ach, &ssp, &sch})
      if (t->defined() && t->numel() > 0) t->fill_(std::numeric_limits<double>::quiet_NaN());
    return;
  }
  dispatch_float(f.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (ach.defined() || sch.defined()) {
      plane_hw_kernel<T><<<blocks_for(N * C), kThreads, 0, ctx.stream()>>>(
          N * C, C, HW, f.data<T>(), out_ptr<T>(ach), row_stride(ach), out_ptr<T>(sch), row_stride(sch));
      check_launch(ctx, op);
    }
    if (asp.defined() || ssp.defined()) {
      plane_c_kernel<T><<<grid_for(N * HW), kThreads, 0, ctx.stream()>>>(
          N * HW, C, HW, f.data<T>(), out_ptr<T>(asp), row_stride(asp), out_ptr<T>(ssp), row_stride(ssp));
      check_launch(ctx, op);
    }
  });
}

void kd_abs_mean_backward(const Tensor& f, const Tensor& g, bool over_c, Tensor& dx) {
  const char* op = "kd_abs_mean backward";
  KDET_CHECK(f.is_contiguous() && g.is_contiguous() && dx.is_contiguous(), op, " (cuda): operands must be contiguous");
  Context& ctx = activate(f, op);
  const int64_t n = f.numel(), C = f.size(1), HW = f.size(2) * f.size(3);
  if (n == 0) return;
  dispatch_float(f.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    abs_mean_bwd_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, C, HW, over_c, f.data<T>(), g.data<T>(),
                                                                      dx.data<T>());
  });
  check_launch(ctx, op);
}

void kd_signed_means_backward(const Tensor& g, Tensor& dx) {
  const char* op = "kd_signed_means backward";
  KDET_CHECK(g.is_contiguous() && dx.is_contiguous() && dx.ndim() == 4, op, " (cuda): bad layout");
  Context& ctx = activate(g, op);
  const int64_t n = dx.numel(), C = dx.size(1), HW = dx.size(2) * dx.size(3);
  if (n == 0) return;
  dispatch_float(g.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    signed_means_bwd_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, C, HW, g.data<T>(), dx.data<T>());
  });
  check_launch(ctx, op);
}

void kd_sq_dist(const Tensor& a, const Tensor& b, const Tensor& w0, const Tensor& w1, const kd::SqGeom& g,
                Tensor& sums) {
  const char* op = "kd_sq_dist_sum";
  KDET_CHECK(sums.dtype() == DType::F64 && sums.numel() == g.N + 1 && sums.is_contiguous(), op,
             " (cuda): sums must be f64[", g.N + 1, "], got ", sums.desc());
  Context& ctx = activate(a, op);
  const int64_t planes = g.N * g.C;
  Tensor part = Tensor::empty({std::max<int64_t>(1, planes)}, DType::F64, a.device());
  dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (planes > 0) {
      sq_plane_kernel<T><<<blocks_for(planes), kThreads, 0, ctx.stream()>>>(
          planes, g, a.data<T>(), b.data<T>(), in_ptr<T>(w0), in_ptr<T>(w1), part.data<double>());
      check_launch(ctx, op);
    }
  });
  sq_image_sums_kernel<<<1, kThreads, 0, ctx.stream()>>>(g.N, g.C, part.data<double>(), sums.data<double>());
  check_launch(ctx, op);
}

void kd_sq_dist_backward(const Tensor& a, const Tensor& b, const Tensor& w0, const Tensor& w1, const kd::SqGeom& g,
                         const Tensor& gs, Tensor& da, Tensor& db) {
  const char* op = "kd_sq_dist_sum backward";
  KDET_CHECK(gs.dtype() == DType::F64 && gs.numel() == g.N && gs.device() == a.device(), op,
             " (cuda): per-image gradient must be f64[", g.N, "] on ", a.device(), ", got ", gs.desc());
  Context& ctx = activate(a, op);
  const int64_t n = a.numel();
  if (n == 0 || (!da.defined() && !db.defined())) return;
  dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    sq_bwd_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, g, a.data<T>(), b.data<T>(), in_ptr<T>(w0),
                                                                in_ptr<T>(w1), gs.data<double>(), out_ptr<T>(da),
                                                                out_ptr<T>(db));
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
