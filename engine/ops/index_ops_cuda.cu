// engine/ops/index_ops_cuda.cu — index_select / index_add / index_copy / gather / scatter_add on the GPU
// (CPU: index_ops.cpp).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/index_ops_cuda.h"

namespace kdet::cuda {

namespace {

__device__ inline int64_t wrap(int64_t v, int64_t n) { return v < 0 ? v + n : v; }

template <class T>
__global__ void index_select_kernel(int64_t n, int64_t K, int64_t N, int64_t I, const T* x, const int64_t* idx,
                                    T* out) {
  KDET_GRID_STRIDE(t, n) {
    const int64_t i = t % I, k = (t / I) % K, o = t / (I * K);
    out[t] = x[(o * N + wrap(idx[k], N)) * I + i];
  }
}

template <class T>
__device__ inline void write(T& dst, T v, bool add) {
  if constexpr (std::is_same_v<T, bool>)
    dst = v;
  else
    dst = add ? static_cast<T>(dst + v) : v;
}

// Unique indices: one thread per source element.
template <class T>
__global__ void index_write_unique(int64_t n, int64_t K, int64_t N, int64_t I, const T* src, const int64_t* idx,
                                   bool add, T* out) {
  KDET_GRID_STRIDE(t, n) {
    const int64_t i = t % I, k = (t / I) % K, o = t / (I * K);
    write(out[(o * N + wrap(idx[k], N)) * I + i], src[t], add);
  }
}

// Repeated indices: one thread per (o, i) walking k in order.
template <class T>
__global__ void index_write_serial(int64_t n, int64_t K, int64_t N, int64_t I, const T* src, const int64_t* idx,
                                   bool add, T* out) {
  KDET_GRID_STRIDE(t, n) {
    const int64_t i = t % I, o = t / I;
    for (int64_t k = 0; k < K; ++k) write(out[(o * N + wrap(idx[k], N)) * I + i], src[(o * K + k) * I + i], add);
  }
}

struct GatherGeom {
  int nd = 0, dim = 0;
  int64_t extent = 0;           // size of x / out along dim
  int64_t shape[kMaxDims];      // idx's shape
  int64_t xst[kMaxDims];        // strides of the indexed tensor (x for gather, out for scatter)
  int64_t sst[kMaxDims];        // strides of src (scatter) / out (gather)
};

GatherGeom make_geom(const char* op, const Tensor& idx, int dim, const Tensor& indexed, const Tensor& other) {
  KDET_CHECK(idx.ndim() <= kMaxDims, op, " (cuda): at most ", kMaxDims, " dims, got ", idx.desc());
  GatherGeom g;
  g.nd = idx.ndim();
  g.dim = dim;
  g.extent = indexed.shape()[dim];
  for (int d = 0; d < kMaxDims; ++d) {
    g.shape[d] = d < g.nd ? idx.shape()[d] : 1;
    g.xst[d] = d < g.nd ? indexed.strides()[d] : 0;
    g.sst[d] = d < g.nd ? other.strides()[d] : 0;
  }
  return g;
}

template <class T>
__global__ void gather_kernel(int64_t n, GatherGeom g, const T* x, const int64_t* idx, T* out) {
  KDET_GRID_STRIDE(lin, n) {
    int64_t rem = lin, ox = 0, oo = 0;
    for (int d = g.nd - 1; d >= 0; --d) {
      const int64_t c = rem % g.shape[d];
      rem /= g.shape[d];
      ox += (d == g.dim ? wrap(idx[lin], g.extent) : c) * g.xst[d];
      oo += c * g.sst[d];
    }
    out[oo] = x[ox];
  }
}

// Fiber f: every coordinate of idx's shape but dim; walks j along dim in order.
template <class T>
__global__ void scatter_add_kernel(int64_t fibers, GatherGeom g, const T* src, const int64_t* idx, T* out) {
  KDET_GRID_STRIDE(f, fibers) {
    int64_t rem = f, lin0 = 0, oo0 = 0, os0 = 0, lin_stride = 1, acc = 1;
    for (int d = g.nd - 1; d >= 0; --d) {  // idx is contiguous: its linear index from the coordinates
      if (d == g.dim) {
        lin_stride = acc;
      } else {
        const int64_t c = rem % g.shape[d];
        rem /= g.shape[d];
        lin0 += c * acc;
        oo0 += c * g.xst[d];
        os0 += c * g.sst[d];
      }
      acc *= g.shape[d];
    }
    for (int64_t j = 0; j < g.shape[g.dim]; ++j) {
      const int64_t v = wrap(idx[lin0 + j * lin_stride], g.extent);
      out[oo0 + v * g.xst[g.dim]] += src[os0 + j * g.sst[g.dim]];
    }
  }
}

}  // namespace

void index_select(const Tensor& x, const Tensor& idx, int64_t O, int64_t N, int64_t I, Tensor& out) {
  const char* op = "index_select";
  KDET_CHECK(x.is_contiguous() && idx.is_contiguous() && out.is_contiguous(), op, " (cuda): bad layout");
  Context& ctx = activate(x, op);
  const int64_t K = idx.numel(), n = O * K * I;
  if (n == 0) return;
  dispatch_all(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    index_select_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, K, N, I, x.data<T>(), idx.data<int64_t>(),
                                                                       out.data<T>());
  });
  check_launch(ctx, op);
}

void index_write(const Tensor& src, const Tensor& idx, int64_t O, int64_t N, int64_t I, bool add, bool unique,
                 Tensor& out) {
  const char* op = add ? "index_add" : "index_copy";
  KDET_CHECK(src.is_contiguous() && idx.is_contiguous() && out.is_contiguous(), op, " (cuda): bad layout");
  KDET_CHECK(!(add && src.dtype() == DType::Bool), op, ": cannot accumulate bool tensors");
  Context& ctx = activate(out, op);
  const int64_t K = idx.numel();
  if (O * K * I == 0) return;
  dispatch_all(out.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (unique) {
      const int64_t n = O * K * I;
      index_write_unique<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, K, N, I, src.data<T>(),
                                                                        idx.data<int64_t>(), add, out.data<T>());
    } else {
      const int64_t n = O * I;
      index_write_serial<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, K, N, I, src.data<T>(),
                                                                        idx.data<int64_t>(), add, out.data<T>());
    }
  });
  check_launch(ctx, op);
}

void gather(const Tensor& x, int dim, const Tensor& idx, Tensor& out) {
  const char* op = "gather";
  KDET_CHECK(idx.is_contiguous() && out.is_contiguous() && out.shape() == idx.shape(), op, " (cuda): bad layout");
  Context& ctx = activate(x, op);
  const int64_t n = idx.numel();
  if (n == 0) return;
  const GatherGeom g = make_geom(op, idx, dim, x, out);
  dispatch_all(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    gather_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, g, x.data<T>(), idx.data<int64_t>(),
                                                                 out.data<T>());
  });
  check_launch(ctx, op);
}

void scatter_add(const Tensor& src, int dim, const Tensor& idx, Tensor& out) {
  const char* op = "scatter_add";
  KDET_CHECK(idx.is_contiguous() && out.is_contiguous(), op, " (cuda): bad layout");
  Context& ctx = activate(out, op);
  const int64_t along = idx.shape()[dim];
  if (idx.numel() == 0 || along == 0) return;
  const int64_t fibers = idx.numel() / along;
  const GatherGeom g = make_geom(op, idx, dim, out, src);
  dispatch_float(out.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    scatter_add_kernel<T><<<grid_for(fibers), kThreads, 0, ctx.stream()>>>(fibers, g, src.data<T>(),
                                                                           idx.data<int64_t>(), out.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
