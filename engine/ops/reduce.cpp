#include "engine/ops/reduce.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "engine/backend.h"
#include "engine/ops/compare.h"
#include "engine/ops/cpu_map.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/shape_ops.h"

#if KDET_CUDA
#include "engine/ops/reduce_cuda.h"
#endif

namespace kdet {

namespace {

constexpr int64_t kChunk = 8192;  // fixed split of long rows: results independent of thread count
constexpr int64_t kBlock = 512;   // inner-dimension block for [O, R, I] reductions with I > 1

// x viewed as a contiguous [O, R, I] block: O outer rows, R reduced, I inner (kept) elements.
struct Plan {
  Shape keep;  // x's shape with reduced dims set to 1
  Shape out;   // result shape (keep, or keep without the reduced dims)
  int64_t O = 1, R = 1, I = 1;
  Tensor src;
  bool device = false;  // a CUDA tensor: src is always [O, R] (reduced dims moved last), I == 1
  // Set instead (sum/mean only) when contiguous x is [A reduced, B kept, C reduced] after merging dims,
  // e.g. NCHW over (0, 2, 3): reduced without a permuted copy.
  bool rkr = false;
  int64_t A = 1, B = 1, C = 1;
};

Plan make_plan(const char* op, const Tensor& x, const std::vector<int>& axes, bool keepdim, bool allow_rkr = false) {
  KDET_CHECK(x.defined(), op, ": undefined tensor");
  KDET_CHECK(is_floating(x.dtype()), op, ": expects an f32 or f64 tensor, got ", x.desc());
  const bool device = !x.device().is_cpu();
  if (device && !(KDET_CUDA && x.device().is_cuda())) no_kernel(op, x.device());
  const int nd = x.ndim();
  std::vector<bool> red(nd, axes.empty());
  for (int a : axes) {
    int d = normalize_axis(a, nd, op);
    KDET_CHECK(!red[d], op, ": axis ", a, " repeated in the axis list for ", x.desc());
    red[d] = true;
  }
  Plan P;
  P.device = device;
  P.keep = x.shape();
  for (int d = 0; d < nd; ++d) {
    if (red[d]) {
      P.R *= x.shape()[d];
      P.keep[d] = 1;
    } else if (!keepdim) {
      P.out.push_back(x.shape()[d]);
    }
  }
  if (keepdim) P.out = P.keep;
  int lo = -1, hi = -1;
  for (int d = 0; d < nd; ++d)
    if (red[d] && x.shape()[d] != 1) {
      if (lo < 0) lo = d;
      hi = d;
    }
  bool block = x.is_contiguous() && !device;
  for (int d = std::max(lo, 0); block && lo >= 0 && d <= hi; ++d)
    if (!red[d] && x.shape()[d] != 1) block = false;
  if (lo < 0) {  // nothing of size > 1 is reduced
    P.O = x.numel();
    P.src = x.contiguous();
  } else if (block) {
    for (int d = 0; d < lo; ++d) P.O *= x.shape()[d];
    for (int d = hi + 1; d < nd; ++d) P.I *= x.shape()[d];
    P.src = x;
  } else if (allow_rkr && !device && x.is_contiguous() && [&] {
               std::vector<std::pair<bool, int64_t>> groups;  // (reduced, extent) runs of dims of size > 1
               for (int d = 0; d < nd; ++d) {
                 if (x.shape()[d] == 1) continue;
                 if (!groups.empty() && groups.back().first == red[d])
                   groups.back().second *= x.shape()[d];
                 else
                   groups.push_back({red[d], x.shape()[d]});
               }
               if (groups.size() != 3 || !groups[0].first) return false;
               P.A = groups[0].second;
               P.B = groups[1].second;
               P.C = groups[2].second;
               return true;
             }()) {
    P.rkr = true;
    P.src = x;
  } else {  // move the reduced dims last and copy
    std::vector<int> order;
    for (int d = 0; d < nd; ++d)
      if (!red[d]) order.push_back(d);
    for (int d = 0; d < nd; ++d)
      if (red[d]) order.push_back(d);
    P.src = x.permute(order).contiguous();
    P.O = P.R == 0 ? 0 : x.numel() / P.R;
    if (P.R == 0) {
      P.O = 1;
      for (int d = 0; d < nd; ++d)
        if (!red[d]) P.O *= x.shape()[d];
    }
  }
  return P;
}

template <class T>
void sum_kernel(const T* p, int64_t O, int64_t R, int64_t I, T* out, double scale) {
  if (I == 1) {
    const int64_t nc = std::max<int64_t>(1, (R + kChunk - 1) / kChunk);
    const int64_t tasks = O * nc;
    std::vector<double> part(tasks, 0.0);
#pragma omp parallel for schedule(static) if (O * R > cpu::kParallelGrain && tasks > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t o = t / nc, c = t % nc;
      const T* q = p + o * R;
      const int64_t b = c * kChunk, e = std::min(R, b + kChunk);
      double a = 0;  // omp simd: vectorised with a fixed lane split, so still bit-reproducible
#pragma omp simd reduction(+ : a)
      for (int64_t r = b; r < e; ++r) a += static_cast<double>(q[r]);
      part[t] = a;
    }
    for (int64_t o = 0; o < O; ++o) {
      double s = 0;
      for (int64_t c = 0; c < nc; ++c) s += part[o * nc + c];
      out[o] = static_cast<T>(s * scale);
    }
    return;
  }
  const int64_t nb = (I + kBlock - 1) / kBlock;
  const int64_t tasks = O * nb;
#pragma omp parallel for schedule(static) if (O * R * I > cpu::kParallelGrain && tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t o = t / nb, i0 = (t % nb) * kBlock, i1 = std::min(I, i0 + kBlock);
    std::array<double, kBlock> acc;
    std::fill(acc.begin(), acc.begin() + (i1 - i0), 0.0);
    for (int64_t r = 0; r < R; ++r) {
      const T* q = p + (o * R + r) * I + i0;
      for (int64_t i = 0; i < i1 - i0; ++i) acc[i] += q[i];
    }
    for (int64_t i = i0; i < i1; ++i) out[o * I + i] = static_cast<T>(acc[i - i0] * scale);
  }
}

// Max (Max=true) or min along R, first extreme wins, NaN propagates (and wins).
template <class T, bool Max>
void extreme_kernel(const T* p, int64_t O, int64_t R, int64_t I, T* out, int64_t* idx) {
  if (I == 1) {  // contiguous rows
#pragma omp parallel for schedule(static) if (O * R > cpu::kParallelGrain && O > 1)
    for (int64_t o = 0; o < O; ++o) {
      const T* q = p + o * R;
      // Pass 1 (vectorised): the extreme value and whether a NaN is present; pass 2: its first index.
      T best = q[0];
      int64_t nan = 0;
      if constexpr (Max) {
#pragma omp simd reduction(max : best) reduction(+ : nan)
        for (int64_t r = 0; r < R; ++r) {
          best = q[r] > best ? q[r] : best;
          nan += q[r] != q[r];
        }
      } else {
#pragma omp simd reduction(min : best) reduction(+ : nan)
        for (int64_t r = 0; r < R; ++r) {
          best = q[r] < best ? q[r] : best;
          nan += q[r] != q[r];
        }
      }
      int64_t bi = 0;
      if (nan) {
        while (!std::isnan(q[bi])) ++bi;
        best = q[bi];
      } else {
        while (q[bi] != best) ++bi;
      }
      out[o] = best;
      if (idx) idx[o] = bi;
    }
    return;
  }
  const int64_t bs = std::min<int64_t>(I, kBlock);
  const int64_t nb = (I + bs - 1) / bs;
  const int64_t tasks = O * nb;
#pragma omp parallel for schedule(static) if (O * R * I > cpu::kParallelGrain && tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t o = t / nb, i0 = (t % nb) * bs, i1 = std::min(I, i0 + bs), n = i1 - i0;
    std::array<T, kBlock> best;
    std::array<int64_t, kBlock> bi;
    const T* q0 = p + o * R * I + i0;
    for (int64_t i = 0; i < n; ++i) {
      best[i] = q0[i];
      bi[i] = 0;
    }
    for (int64_t r = 1; r < R; ++r) {
      const T* q = q0 + r * I;
      for (int64_t i = 0; i < n; ++i) {
        const T v = q[i];
        const bool better = Max ? (v > best[i]) : (v < best[i]);
        if ((better || std::isnan(v)) && !std::isnan(best[i])) {
          best[i] = v;
          bi[i] = r;
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      out[o * I + i0 + i] = best[i];
      if (idx) idx[o * I + i0 + i] = bi[i];
    }
  }
}

// out[b] = scale * Σ_a Σ_c x[a, b, c] (fixed order: a outer, c inner).
template <class T>
void sum_rkr_kernel(const T* p, int64_t A, int64_t B, int64_t C, T* out, double scale) {
#pragma omp parallel for schedule(static) if (A * B * C > cpu::kParallelGrain && B > 1)
  for (int64_t b = 0; b < B; ++b) {
    double acc = 0;
    for (int64_t a = 0; a < A; ++a) {
      const T* q = p + (a * B + b) * C;
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; ++c) s += static_cast<double>(q[c]);
      acc += s;
    }
    out[b] = static_cast<T>(acc * scale);
  }
}

Tensor reduce_sum(const char* op, const Tensor& x, const std::vector<int>& axes, bool keepdim, bool mean) {
  Plan P = make_plan(op, x, axes, keepdim, /*allow_rkr=*/true);
  Tensor out = Tensor::empty(P.keep, x.dtype(), x.device());
  const double scale = mean ? 1.0 / static_cast<double>(P.R) : 1.0;
#if KDET_CUDA
  if (P.device) {
    cuda::sum_rows(P.src, P.O, P.R, scale, out);
    return out.view(P.out);
  }
#endif
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (P.rkr) {
      sum_rkr_kernel<T>(P.src.template data<T>(), P.A, P.B, P.C, out.data<T>(), scale);
      return;
    }
    sum_kernel<T>(P.src.template data<T>(), P.O, P.R, P.I, out.data<T>(), scale);
  });
  return out.view(P.out);
}

Tensor reduce_extreme(const char* op, const Tensor& x, const std::vector<int>& axes, bool keepdim, bool is_max,
                      Tensor* indices) {
  Plan P = make_plan(op, x, axes, keepdim);
  KDET_CHECK(P.R > 0, op, ": reduction over an empty axis of ", x.desc());
  Tensor out = Tensor::empty(P.keep, x.dtype(), x.device());
  Tensor idx;
  if (indices) idx = Tensor::empty(P.keep, DType::I64, x.device());
#if KDET_CUDA
  if (P.device) {
    cuda::extreme_rows(P.src, P.O, P.R, is_max, out, indices ? &idx : nullptr);
    if (indices) *indices = idx.view(P.out);
    return out.view(P.out);
  }
#endif
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    int64_t* pi = indices ? idx.data<int64_t>() : nullptr;
    if (is_max)
      extreme_kernel<T, true>(P.src.template data<T>(), P.O, P.R, P.I, out.data<T>(), pi);
    else
      extreme_kernel<T, false>(P.src.template data<T>(), P.O, P.R, P.I, out.data<T>(), pi);
  });
  if (indices) *indices = idx.view(P.out);
  return out.view(P.out);
}

// Shape of x with the given axes set to 1 (the keepdim shape).
Shape keep_shape(const Shape& s, const std::vector<int>& axes, const char* op) {
  Shape k = s;
  if (axes.empty()) {
    for (auto& d : k) d = 1;
  } else {
    for (int a : axes) k[normalize_axis(a, s.ndim(), op)] = 1;
  }
  return k;
}

// Gradient of a single-axis max/min: g (keep shape) goes to the recorded index, zeros elsewhere.
Tensor scatter_to_index(const Tensor& g, const Tensor& idx_keep, const Shape& xs, int ax) {
  Tensor gx = Tensor::zeros(xs, g.dtype(), g.device());
  int64_t O = 1, I = 1;
  const int64_t R = xs[ax];
  for (int d = 0; d < ax; ++d) O *= xs[d];
  for (int d = ax + 1; d < xs.ndim(); ++d) I *= xs[d];
  const Tensor gc = g.contiguous();
#if KDET_CUDA
  if (g.device().is_cuda()) {
    cuda::scatter_to_index(gc, idx_keep.contiguous(), O, R, I, gx);
    return gx;
  }
#endif
  const int64_t* pi = idx_keep.data<int64_t>();
  dispatch_float(g.dtype(), "max_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gc.data<T>();
    T* po = gx.data<T>();
#pragma omp parallel for schedule(static) if (O * I > cpu::kParallelGrain)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) po[(o * R + pi[o * I + i]) * I + i] = pg[o * I + i];
  });
  return gx;
}

Var single_extreme(const char* op, const Var& x, int axis, bool keepdim, bool is_max) {
  const int ax = normalize_axis(axis, x.ndim(), op);
  Tensor idx;
  Tensor v = reduce_extreme(op, x.data(), {ax}, keepdim, is_max, &idx);
  Shape keep = keep_shape(x.shape(), {ax}, op);
  return record(op, v, {&x}, [idx = idx.view(keep), keep, xs = x.shape(), ax](const Tensor& g, Grads& gr) {
    gr.accumulate(0, scatter_to_index(g.reshape(keep), idx, xs, ax));
  });
}

Var multi_extreme(const char* op, const Var& x, const std::vector<int>& axes, bool keepdim, bool is_max) {
  Tensor v = reduce_extreme(op, x.data(), axes, keepdim, is_max, nullptr);
  Shape keep = keep_shape(x.shape(), axes, op);
  return record(op, v, {&x}, [xd = x.data(), vk = v.view(keep), keep, axes](const Tensor& g, Grads& gr) {
    // torch semantics: the gradient is split evenly between all elements equal to the extreme.
    Tensor mask = ops::eq(xd, vk).to(xd.dtype());
    Tensor count = ops::sum(mask, axes, true);
    gr.accumulate(0, ops::mul(mask, ops::div(g.reshape(keep), count)));
  });
}

}  // namespace

namespace ops {
Tensor sum(const Tensor& x) { return reduce_sum("sum", x, {}, false, false); }
Tensor sum(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  return reduce_sum("sum", x, axes, keepdim, false);
}
Tensor mean(const Tensor& x) { return reduce_sum("mean", x, {}, false, true); }
Tensor mean(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  return reduce_sum("mean", x, axes, keepdim, true);
}
Tensor amax(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  return reduce_extreme("amax", x, axes, keepdim, true, nullptr);
}
Tensor amin(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  return reduce_extreme("amin", x, axes, keepdim, false, nullptr);
}
std::pair<Tensor, Tensor> max(const Tensor& x, int axis, bool keepdim) {
  Tensor idx;
  Tensor v = reduce_extreme("max", x, {axis}, keepdim, true, &idx);
  return {v, idx};
}
std::pair<Tensor, Tensor> min(const Tensor& x, int axis, bool keepdim) {
  Tensor idx;
  Tensor v = reduce_extreme("min", x, {axis}, keepdim, false, &idx);
  return {v, idx};
}
double sum_all(const Tensor& x) {
  if (x.dtype() == DType::F32) return sum(x.to(DType::F64)).item();  // exact double result
  return sum(x).item();
}

std::vector<double> scalar_values(const std::vector<Tensor>& xs) {
  std::vector<double> out(xs.size());
  std::vector<bool> done(xs.size(), false);
  for (size_t i = 0; i < xs.size(); ++i) {
    KDET_CHECK(xs[i].defined() && xs[i].numel() == 1, "scalar_values: tensor ", i, " is ",
               xs[i].defined() ? xs[i].desc() : "undefined", ", not one element");
    if (done[i]) continue;
    const Device d = xs[i].device();
    std::vector<size_t> at;
    std::vector<Tensor> group;
    for (size_t j = i; j < xs.size(); ++j)
      if (!done[j] && xs[j].device() == d) {
        at.push_back(j);
        group.push_back(xs[j].to(DType::F64).reshape({1}));
        done[j] = true;
      }
    const std::vector<double> v = concat(group, 0).to(Device::cpu()).to_vector<double>();
    for (size_t k = 0; k < at.size(); ++k) out[at[k]] = v[k];
  }
  return out;
}
}  // namespace ops

Var sum(const Var& x) { return sum(x, {}, false); }

Var sum(const Var& x, const std::vector<int>& axes, bool keepdim) {
  Shape keep = keep_shape(x.shape(), axes, "sum");
  return record("sum", ops::sum(x.data(), axes, keepdim), {&x}, [keep, xs = x.shape()](const Tensor& g, Grads& gr) {
    gr.accumulate(0, g.reshape(keep).expand(xs).contiguous());
  });
}

Var mean(const Var& x) { return mean(x, {}, false); }

Var mean(const Var& x, const std::vector<int>& axes, bool keepdim) {
  Shape keep = keep_shape(x.shape(), axes, "mean");
  const int64_t n = keep.numel() == 0 ? 0 : x.numel() / std::max<int64_t>(keep.numel(), 1);
  return record("mean", ops::mean(x.data(), axes, keepdim), {&x},
                [keep, xs = x.shape(), n](const Tensor& g, Grads& gr) {
                  gr.accumulate(0, ops::mul_scalar(g.reshape(keep).expand(xs), 1.0 / static_cast<double>(n)));
                });
}

Var max(const Var& x, int axis, bool keepdim) { return single_extreme("max", x, axis, keepdim, true); }
Var min(const Var& x, int axis, bool keepdim) { return single_extreme("min", x, axis, keepdim, false); }
Var amax(const Var& x, const std::vector<int>& axes, bool keepdim) {
  return multi_extreme("amax", x, axes, keepdim, true);
}
Var amin(const Var& x, const std::vector<int>& axes, bool keepdim) {
  return multi_extreme("amin", x, axes, keepdim, false);
}

}  // namespace kdet
