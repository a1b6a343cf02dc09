// engine/ops/reduce_cuda.cu — deterministic row reductions on the GPU (CPU: reduce.cpp).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/reduce_cuda.h"

namespace kdet::cuda {

namespace {

constexpr int64_t kChunk = 8192;   // elements of a row summed by one block in pass 1
constexpr int64_t kShortRow = 64;  // rows up to this length: one thread per row, serial

template <class T>
__global__ void sum_short_rows(int64_t O, int64_t R, const T* x, T* out, double scale) {
  KDET_GRID_STRIDE(o, O) {
    double a = 0;
    for (int64_t r = 0; r < R; ++r) a += static_cast<double>(x[o * R + r]);
    out[o] = static_cast<T>(a * scale);
  }
}

// Pass 1: task t = (row o, chunk c) -> partial[t] (or out[o] directly when a row is one chunk).
template <class T>
__global__ void sum_chunks(int64_t O, int64_t R, int64_t nc, const T* x, double* partial, T* out, double scale) {
  __shared__ double sh[kThreads];
  for (int64_t t = blockIdx.x; t < O * nc; t += gridDim.x) {
    const int64_t o = t / nc, c = t % nc;
    const int64_t b = c * kChunk, e = dm::min<int64_t>(R, b + kChunk);
    double a = 0;
    for (int64_t r = b + threadIdx.x; r < e; r += kThreads) a += static_cast<double>(x[o * R + r]);
    const double s = block_sum(a, sh);
    if (threadIdx.x == 0) {
      if (nc == 1)
        out[o] = static_cast<T>(s * scale);
      else
        partial[t] = s;
    }
  }
}

// Pass 2: out[o] = scale * Σ_c partial[o, c].
template <class T>
__global__ void sum_partials(int64_t O, int64_t nc, const double* partial, T* out, double scale) {
  __shared__ double sh[kThreads];
  for (int64_t o = blockIdx.x; o < O; o += gridDim.x) {
    double a = 0;
    for (int64_t c = threadIdx.x; c < nc; c += kThreads) a += partial[o * nc + c];
    const double s = block_sum(a, sh);
    if (threadIdx.x == 0) out[o] = static_cast<T>(s * scale);
  }
}

// (value, index) candidates; index -1 = empty. Returns true when a should be kept over b: NaN beats
// numbers, a strictly better value wins, ties go to the lower index.
template <class T>
__device__ inline bool keep_first(T av, int64_t ai, T bv, int64_t bi, bool is_max) {
  if (bi < 0) return true;
  if (ai < 0) return false;
  const bool an = av != av, bn = bv != bv;
  if (an || bn) return an && (!bn || ai < bi);
  if (av == bv) return ai < bi;
  return is_max ? av > bv : av < bv;
}

template <class T>
__device__ void block_extreme(T& v, int64_t& i, T* shv, int64_t* shi, bool is_max) {
  const int t = threadIdx.x;
  shv[t] = v;
  shi[t] = i;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (t < s && !keep_first(shv[t], shi[t], shv[t + s], shi[t + s], is_max)) {
      shv[t] = shv[t + s];
      shi[t] = shi[t + s];
    }
    __syncthreads();
  }
  v = shv[0];
  i = shi[0];
  __syncthreads();
}

// Pass 1 of max/min over chunks (task = row, chunk); writes partial values/indices.
template <class T>
__global__ void extreme_chunks(int64_t O, int64_t R, int64_t nc, const T* x, T* pv, int64_t* pi, bool is_max) {
  __shared__ T shv[kThreads];
  __shared__ int64_t shi[kThreads];
  for (int64_t t = blockIdx.x; t < O * nc; t += gridDim.x) {
    const int64_t o = t / nc, c = t % nc;
    const int64_t b = c * kChunk, e = dm::min<int64_t>(R, b + kChunk);
    T bv = T(0);
    int64_t bi = -1;
    for (int64_t r = b + threadIdx.x; r < e; r += kThreads) {
      const T v = x[o * R + r];
      if (keep_first(v, r, bv, bi, is_max)) {
        bv = v;
        bi = r;
      }
    }
    block_extreme(bv, bi, shv, shi, is_max);
    if (threadIdx.x == 0) {
      pv[t] = bv;
      pi[t] = bi;
    }
  }
}

// Pass 2: combine the nc candidates of each row.
template <class T>
__global__ void extreme_partials(int64_t O, int64_t nc, const T* pv, const int64_t* pi, T* out, int64_t* idx,
                                 bool is_max) {
  __shared__ T shv[kThreads];
  __shared__ int64_t shi[kThreads];
  for (int64_t o = blockIdx.x; o < O; o += gridDim.x) {
    T bv = T(0);
    int64_t bi = -1;
    for (int64_t c = threadIdx.x; c < nc; c += kThreads) {
      const T v = pv[o * nc + c];
      const int64_t i = pi[o * nc + c];
      if (keep_first(v, i, bv, bi, is_max)) {
        bv = v;
        bi = i;
      }
    }
    block_extreme(bv, bi, shv, shi, is_max);
    if (threadIdx.x == 0) {
      out[o] = bv;
      if (idx) idx[o] = bi;
    }
  }
}

template <class T>
__global__ void scatter_to_index_kernel(int64_t O, int64_t R, int64_t I, const T* g, const int64_t* idx, T* gx) {
  KDET_GRID_STRIDE(t, O * I) {
    const int64_t o = t / I, i = t % I;
    const int64_t r = idx[t];
    if (r >= 0 && r < R) gx[(o * R + r) * I + i] = g[t];
  }
}

unsigned task_grid(int64_t tasks) { return static_cast<unsigned>(std::clamp<int64_t>(tasks, 1, 65535)); }

}  // namespace

void sum_rows(const Tensor& x, int64_t O, int64_t R, double scale, Tensor& out) {
  const char* op = "sum";
  KDET_CHECK(x.is_contiguous() && out.is_contiguous() && out.numel() == O, op, " (cuda): bad layout ", x.desc(),
             " -> ", out.desc());
  Context& ctx = activate(x, op);
  if (O == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* px = R > 0 ? x.data<T>() : nullptr;
    T* po = out.data<T>();
    if (R <= kShortRow) {
      sum_short_rows<T><<<grid_for(O), kThreads, 0, ctx.stream()>>>(O, R, px, po, scale);
      check_launch(ctx, op);
      return;
    }
    const int64_t nc = ceil_div(R, kChunk);
    Tensor partial;
    double* pp = nullptr;
    if (nc > 1) {
      partial = Tensor::empty({O * nc}, DType::F64, x.device());
      pp = partial.data<double>();
    }
    sum_chunks<T><<<task_grid(O * nc), kThreads, 0, ctx.stream()>>>(O, R, nc, px, pp, po, scale);
    check_launch(ctx, op);
    if (nc > 1) {
      sum_partials<T><<<task_grid(O), kThreads, 0, ctx.stream()>>>(O, nc, pp, po, scale);
      check_launch(ctx, op);
    }
  });
}

void extreme_rows(const Tensor& x, int64_t O, int64_t R, bool is_max, Tensor& out, Tensor* idx) {
  const char* op = is_max ? "max" : "min";
  KDET_CHECK(R > 0 && x.is_contiguous() && out.is_contiguous() && out.numel() == O, op, " (cuda): bad layout ",
             x.desc(), " -> ", out.desc());
  Context& ctx = activate(x, op);
  if (O == 0) return;
  const int64_t nc = ceil_div(R, kChunk);
  Tensor pv = Tensor::empty({O * nc}, x.dtype(), x.device());
  Tensor pi = Tensor::empty({O * nc}, DType::I64, x.device());
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    extreme_chunks<T><<<task_grid(O * nc), kThreads, 0, ctx.stream()>>>(O, R, nc, x.data<T>(), pv.data<T>(),
                                                                       pi.data<int64_t>(), is_max);
    check_launch(ctx, op);
    extreme_partials<T><<<task_grid(O), kThreads, 0, ctx.stream()>>>(
        O, nc, pv.data<T>(), pi.data<int64_t>(), out.data<T>(), idx ? idx->data<int64_t>() : nullptr, is_max);
    check_launch(ctx, op);
  });
}

void scatter_to_index(const Tensor& g, const Tensor& idx, int64_t O, int64_t R, int64_t I, Tensor& gx) {
  const char* op = "max_backward";
  KDET_CHECK(g.is_contiguous() && idx.is_contiguous() && gx.is_contiguous() && g.numel() == O * I &&
                 idx.numel() == O * I && gx.numel() == O * R * I,
             op, " (cuda): bad layout");
  Context& ctx = activate(g, op);
  if (O * I == 0) return;
  dispatch_float(g.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    scatter_to_index_kernel<T><<<grid_for(O * I), kThreads, 0, ctx.stream()>>>(O, R, I, g.data<T>(),
                                                                               idx.data<int64_t>(), gx.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
