#include "engine/ops/index_ops.h"

#include <algorithm>
#include <cstring>

#include "engine/backend.h"
#include "engine/ops/compare.h"
#include "engine/ops/cpu_map.h"

#if KDET_CUDA
#include "engine/ops/index_ops_cuda.h"
#endif

namespace kdet {

namespace {

constexpr int64_t kBlock = 1024;

inline int64_t wrap(int64_t v, int64_t n) { return v < 0 ? v + n : v; }

// Validates an i64 index tensor against an extent n (indices in [-n, n)); returns it contiguous (on its
// device; a device index is checked on a host copy, returned through `host` when asked for).
Tensor checked_index(const char* op, const Tensor& idx, int64_t n, const Tensor& x, int dim, Tensor* host = nullptr) {
  KDET_CHECK(idx.defined(), op, ": undefined index tensor");
  KDET_CHECK(idx.dtype() == DType::I64, op, ": index must be i64, got ", idx.desc());
  // A host index for a device input is checked here and uploaded: no download of a device index (a sync).
  KDET_CHECK(idx.device() == x.device() || idx.device().is_cpu(), op, ": index on ", idx.device(), " but input ",
             x.desc());
  Tensor ic = idx.contiguous();
  const Tensor hc = ic.device().is_cpu() ? ic : ic.to(Device::cpu());
  const int64_t* p = hc.data<int64_t>();
  for (int64_t k = 0; k < hc.numel(); ++k)
    KDET_CHECK(p[k] >= -n && p[k] < n, op, ": index ", p[k], " (at position ", k, ") out of range for dim ", dim,
               " of ", x.desc());
  if (host) *host = hc;
  return ic.device() == x.device() ? ic : ic.to(x.device());
}

// True when the (checked) host indices name distinct positions of an extent n.
[[maybe_unused]] bool distinct_indices(const Tensor& host_idx, int64_t n) {
  std::vector<char> seen(static_cast<size_t>(n), 0);
  const int64_t* p = host_idx.data<int64_t>();
  for (int64_t k = 0; k < host_idx.numel(); ++k) {
    char& s = seen[static_cast<size_t>(wrap(p[k], n))];
    if (s) return false;
    s = 1;
  }
  return true;
}

struct Dims {
  int64_t O = 1, N = 1, I = 1;
};
Dims dims_of(const Shape& s, int d) {
  Dims r;
  r.N = s[d];
  for (int k = 0; k < d; ++k) r.O *= s[k];
  for (int k = d + 1; k < s.ndim(); ++k) r.I *= s[k];
  return r;
}

// Shared by index_add (accumulate) and index_copy (assign): out = base; out[o, idx[k], i] (+)= src[o, k, i].
Tensor index_write(const char* op, const Tensor& base, int dim, const Tensor& index, const Tensor& src, bool add) {
  KDET_CHECK(base.defined() && src.defined(), op, ": undefined operand");
  KDET_CHECK(base.ndim() > 0, op, ": base must have at least one dimension, got ", base.desc());
  if (!base.device().is_cpu() && !(KDET_CUDA && base.device().is_cuda())) no_kernel(op, base.device());
  const int d = normalize_axis(dim, base.ndim(), op);
  KDET_CHECK(index.defined() && index.ndim() <= 1, op, ": index must be 1-D, got ",
             index.defined() ? index.desc() : "undefined");
  KDET_CHECK(base.dtype() == src.dtype() && base.device() == src.device(), op, ": base ", base.desc(), " vs src ",
             src.desc());
  Shape want = base.shape();
  want[d] = index.numel();
  KDET_CHECK(src.shape() == want, op, ": src ", src.desc(), " should have shape ", want, " (base ", base.desc(),
             ", ", index.numel(), " indices along dim ", dim, ")");
  Tensor host_idx;
  Tensor ic = checked_index(op, index, base.shape()[d], base, dim, &host_idx);
  Tensor out = base.clone();
  const Tensor sc = src.contiguous();
  const Dims D = dims_of(base.shape(), d);
#if KDET_CUDA
  if (base.device().is_cuda()) {
    cuda::index_write(sc, ic, D.O, D.N, D.I, add, distinct_indices(host_idx, D.N), out);
    return out;
  }
#endif
  const int64_t K = index.numel();
  const int64_t* pi = ic.data<int64_t>();
  dispatch_all(base.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      KDET_CHECK(!add, op, ": cannot accumulate bool tensors");
    }
    const T* ps = sc.data<T>();
    T* po = out.data<T>();
    const int64_t nb = (D.I + kBlock - 1) / kBlock;
    const int64_t tasks = D.O * nb;
    // Each task owns out[o, :, i-block], and walks k in order: deterministic accumulation.
#pragma omp parallel for schedule(static) if (D.O * K * D.I > cpu::kParallelGrain && tasks > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t o = t / nb, i0 = (t % nb) * kBlock, i1 = std::min(D.I, i0 + kBlock);
      for (int64_t k = 0; k < K; ++k) {
        T* dst = po + (o * D.N + wrap(pi[k], D.N)) * D.I;
        const T* s = ps + (o * K + k) * D.I;
        if constexpr (std::is_same_v<T, bool>) {
          for (int64_t i = i0; i < i1; ++i) dst[i] = s[i];
        } else {
          if (add)
            for (int64_t i = i0; i < i1; ++i) dst[i] += s[i];
          else
            for (int64_t i = i0; i < i1; ++i) dst[i] = s[i];
        }
      }
    }
  });
  return out;
}

// Visits every element of `index` (shape is), calling f(lin /*linear position in index*/, v /*index value*/,
// off_a, off_b) where off_a/off_b are element offsets into tensors with strides sa/sb at the same
// coordinates except that coordinate `dim` is replaced by v in a and kept in b.
// Rows (all dims but the last) are processed in order; `parallel` splits rows over threads.
template <class F>
void visit_index(const Shape& is, const int64_t* pi, int dim, int64_t nd_extent, const Shape& sa, const Shape& sb,
                 bool parallel, F f) {
  const int nd = is.ndim();
  const int64_t last = is[nd - 1];
  const int64_t rows = last == 0 ? 0 : is.numel() / last;
#pragma omp parallel for schedule(static) if (parallel && rows > 1 && is.numel() > cpu::kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, ba = 0, bb = 0;
    for (int k = nd - 2; k >= 0; --k) {
      const int64_t c = rem % is[k];
      rem /= is[k];
      if (k != dim) ba += c * sa[k];
      bb += c * sb[k];
    }
    for (int64_t j = 0; j < last; ++j) {
      const int64_t lin = r * last + j;
      const int64_t v = wrap(pi[lin], nd_extent);
      const int64_t oa = ba + (dim == nd - 1 ? 0 : j * sa[nd - 1]) + v * sa[dim];
      const int64_t ob = bb + j * sb[nd - 1];
      f(lin, oa, ob);
    }
  }
}

void check_gather_shapes(const char* op, const Tensor& x, int d, const Tensor& index, const Tensor* src) {
  KDET_CHECK(index.defined() && index.ndim() == x.ndim(), op, ": index ",
             index.defined() ? index.desc() : "undefined", " must have the rank of ", x.desc());
  for (int k = 0; k < x.ndim(); ++k) {
    KDET_CHECK(k == d || index.shape()[k] <= x.shape()[k], op, ": index ", index.desc(), " larger than ", x.desc(),
               " in dim ", k);
    if (src)
      KDET_CHECK(index.shape()[k] <= src->shape()[k], op, ": index ", index.desc(), " larger than src ",
                 src->desc(), " in dim ", k);
  }
}

}  // namespace

namespace ops {

Tensor index_select(const Tensor& x, int dim, const Tensor& index) {
  KDET_CHECK(x.defined(), "index_select: undefined input");
  KDET_CHECK(x.ndim() > 0, "index_select: input must have at least one dimension, got ", x.desc());
  if (!x.device().is_cpu() && !(KDET_CUDA && x.device().is_cuda())) no_kernel("index_select", x.device());
  const int d = normalize_axis(dim, x.ndim(), "index_select");
  KDET_CHECK(index.defined() && index.ndim() <= 1, "index_select: index must be 1-D, got ",
             index.defined() ? index.desc() : "undefined");
  Tensor ic = checked_index("index_select", index, x.shape()[d], x, dim);
  const Tensor xc = x.contiguous();
  const Dims D = dims_of(x.shape(), d);
  const int64_t K = index.numel();
  Shape os = x.shape();
  os[d] = K;
  Tensor out = Tensor::empty(os, x.dtype(), x.device());
#if KDET_CUDA
  if (x.device().is_cuda()) {
    cuda::index_select(xc, ic, D.O, D.N, D.I, out);
    return out;
  }
#endif
  const int64_t* pi = ic.data<int64_t>();
  const size_t es = dtype_size(x.dtype());
  const char* px = static_cast<const char*>(xc.raw_data());
  char* po = static_cast<char*>(out.raw_data());
  const int64_t tasks = D.O * K;
#pragma omp parallel for schedule(static) if (tasks * D.I > cpu::kParallelGrain && tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t o = t / K, k = t % K;
    std::memcpy(po + (o * K + k) * D.I * es, px + (o * D.N + wrap(pi[k], D.N)) * D.I * es, D.I * es);
  }
  return out;
}

Tensor index_add(const Tensor& base, int dim, const Tensor& index, const Tensor& src) {
  return index_write("index_add", base, dim, index, src, true);
}

Tensor index_copy(const Tensor& base, int dim, const Tensor& index, const Tensor& src) {
  return index_write("index_copy", base, dim, index, src, false);
}

Tensor gather(const Tensor& x, int dim, const Tensor& index) {
  KDET_CHECK(x.defined() && x.ndim() > 0, "gather: input must have at least one dimension");
  if (!x.device().is_cpu() && !(KDET_CUDA && x.device().is_cuda())) no_kernel("gather", x.device());
  const int d = normalize_axis(dim, x.ndim(), "gather");
  check_gather_shapes("gather", x, d, index, nullptr);
  Tensor ic = checked_index("gather", index, x.shape()[d], x, dim);
  Tensor out = Tensor::empty(index.shape(), x.dtype(), x.device());
  if (out.numel() == 0) return out;
#if KDET_CUDA
  if (x.device().is_cuda()) {
    cuda::gather(x, d, ic, out);
    return out;
  }
#endif
  dispatch_all(x.dtype(), "gather", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    visit_index(index.shape(), ic.data<int64_t>(), d, x.shape()[d], x.strides(), out.strides(), true,
                [&](int64_t, int64_t ox, int64_t oo) { po[oo] = px[ox]; });
  });
  return out;
}

Tensor scatter_add(const Tensor& base, int dim, const Tensor& index, const Tensor& src) {
  KDET_CHECK(base.defined() && src.defined() && base.ndim() > 0, "scatter_add: undefined or 0-d operand");
  if (!base.device().is_cpu() && !(KDET_CUDA && base.device().is_cuda())) no_kernel("scatter_add", base.device());
  KDET_CHECK(base.dtype() == src.dtype() && base.device() == src.device() && src.ndim() == base.ndim(),
             "scatter_add: base ", base.desc(), " vs src ", src.desc());
  const int d = normalize_axis(dim, base.ndim(), "scatter_add");
  check_gather_shapes("scatter_add", base, d, index, &src);
  Tensor ic = checked_index("scatter_add", index, base.shape()[d], base, dim);
  Tensor out = base.clone();
  if (index.numel() == 0) return out;
#if KDET_CUDA
  if (base.device().is_cuda()) {
    cuda::scatter_add(src, d, ic, out);
    return out;
  }
#endif
  dispatch_float(base.dtype(), "scatter_add", [&](auto tag) {
    using T = decltype(tag);
    const T* ps = src.data<T>();
    T* po = out.data<T>();
    // Parallel only when rows of different threads write disjoint output slabs: dim != 0 and each
    // thread's rows cover whole dim-0 slices (rows are ordered with dim 0 outermost).
    const bool par = d != 0 && index.ndim() > 1 && index.shape()[0] > 1;
    if (par) {
      const int64_t n0 = index.shape()[0];
      Shape sub = index.shape();
      sub[0] = 1;
      const int64_t per = sub.numel();
      const int64_t* pi = ic.data<int64_t>();
#pragma omp parallel for schedule(static) if (index.numel() > cpu::kParallelGrain)
      for (int64_t c = 0; c < n0; ++c) {
        visit_index(sub, pi + c * per, d, base.shape()[d], out.strides(), src.strides(), false,
                    [&](int64_t, int64_t oo, int64_t os) {
                      po[oo + c * out.strides()[0]] += ps[os + c * src.strides()[0]];
                    });
      }
    } else {
      visit_index(index.shape(), ic.data<int64_t>(), d, base.shape()[d], out.strides(), src.strides(), false,
                  [&](int64_t, int64_t oo, int64_t os) { po[oo] += ps[os]; });
    }
  });
  return out;
}

Tensor masked_select_rows(const Tensor& x, const Tensor& mask1d) {
  KDET_CHECK(x.defined() && x.ndim() > 0, "masked_select_rows: input must have at least one dimension");
  KDET_CHECK(mask1d.defined() && mask1d.dtype() == DType::Bool && mask1d.ndim() == 1 &&
                 mask1d.shape()[0] == x.shape()[0],
             "masked_select_rows: mask ", mask1d.defined() ? mask1d.desc() : "undefined",
             " must be bool [N] for input ", x.desc());
  return index_select(x, 0, nonzero(mask1d));
}

}  // namespace ops

Var index_select(const Var& x, int dim, const Tensor& index) {
  Tensor out = ops::index_select(x.data(), dim, index);
  return record("index_select", out, {&x}, [xs = x.shape(), dim, index](const Tensor& g, Grads& gr) {
    gr.accumulate(0, ops::index_add(Tensor::zeros(xs, g.dtype(), g.device()), dim, index, g));
  });
}

Var gather(const Var& x, int dim, const Tensor& index) {
  Tensor out = ops::gather(x.data(), dim, index);
  return record("gather", out, {&x}, [xs = x.shape(), dim, index](const Tensor& g, Grads& gr) {
    gr.accumulate(0, ops::scatter_add(Tensor::zeros(xs, g.dtype(), g.device()), dim, index, g));
  });
}

Var scatter_add(const Var& base, int dim, const Tensor& index, const Var& src) {
  Tensor out = ops::scatter_add(base.data(), dim, index, src.data());
  return record("scatter_add", out, {&base, &src}, [ss = src.shape(), dim, index](const Tensor& g, Grads& gr) {
    if (gr.wants(0)) gr.accumulate(0, g);
    if (gr.wants(1)) {
      Tensor gs = ops::gather(g, dim, index);
      if (gs.shape() != ss) {  // src larger than index: only the indexed corner received gradient
        Tensor full = Tensor::zeros(ss, g.dtype(), g.device());
        Tensor dst = full;
        for (int k = 0; k < full.ndim(); ++k) dst = dst.slice(k, 0, gs.shape()[k]);
        dst.copy_(gs);
        gs = full;
      }
      gr.accumulate(1, gs);
    }
  });
}

Var index_add(const Var& base, int dim, const Tensor& index, const Var& src) {
  Tensor out = ops::index_add(base.data(), dim, index, src.data());
  return record("index_add", out, {&base, &src}, [dim, index](const Tensor& g, Grads& gr) {
    if (gr.wants(0)) gr.accumulate(0, g);
    if (gr.wants(1)) gr.accumulate(1, ops::index_select(g, dim, index));
  });
}

Var masked_select_rows(const Var& x, const Tensor& mask1d) {
  KDET_CHECK(mask1d.defined() && mask1d.dtype() == DType::Bool && mask1d.ndim() == 1 && x.ndim() > 0 &&
                 mask1d.shape()[0] == x.shape()[0],
             "masked_select_rows: mask ", mask1d.defined() ? mask1d.desc() : "undefined",
             " must be bool [N] for input ", x.data().desc());
  return index_select(x, 0, ops::nonzero(mask1d));
}

}  // namespace kdet
