#include "engine/ops/compare.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/backend.h"
#include "engine/ops/cpu_map.h"

#if KDET_CUDA
#include "engine/ops/compare_cuda.h"
#endif

namespace kdet::ops {

namespace {

enum class Cmp { Gt, Ge, Lt, Le, Eq, Ne };

template <class T>
inline bool cmp_apply(Cmp c, T a, T b) {
  switch (c) {
    case Cmp::Gt: return a > b;
    case Cmp::Ge: return a >= b;
    case Cmp::Lt: return a < b;
    case Cmp::Le: return a <= b;
    case Cmp::Eq: return a == b;
    case Cmp::Ne: return a != b;
  }
  return false;
}

Tensor compare(Cmp c, const char* op, const Tensor& a, const Tensor& b) {
  KDET_CHECK(a.defined() && b.defined(), op, ": undefined operand");
  KDET_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch ", a.desc(), " vs ", b.desc());
  KDET_CHECK(a.device() == b.device(), op, ": device mismatch ", a.desc(), " vs ", b.desc());
  Tensor out = Tensor::empty(broadcast_shapes(a.shape(), b.shape(), op), DType::Bool, a.device());
  if (!a.device().is_cpu()) {
#if KDET_CUDA
    if (a.device().is_cuda()) {
      KDET_CHECK(a.dtype() != DType::Bool || c == Cmp::Eq || c == Cmp::Ne, op, ": ordering comparison of bool tensors");
      cuda::compare(static_cast<int>(c), a, b, out);
      return out;
    }
#endif
    no_kernel(op, a.device());
  }
  dispatch_all(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      KDET_CHECK(c == Cmp::Eq || c == Cmp::Ne, op, ": ordering comparison of bool tensors");
    }
    switch (c) {  // one instantiation per comparison keeps the inner loops branch-free
      case Cmp::Gt: cpu::cpu_binary<T, bool>(a, b, out, [](T x, T y) { return x > y; }); break;
      case Cmp::Ge: cpu::cpu_binary<T, bool>(a, b, out, [](T x, T y) { return x >= y; }); break;
      case Cmp::Lt: cpu::cpu_binary<T, bool>(a, b, out, [](T x, T y) { return x < y; }); break;
      case Cmp::Le: cpu::cpu_binary<T, bool>(a, b, out, [](T x, T y) { return x <= y; }); break;
      case Cmp::Eq: cpu::cpu_binary<T, bool>(a, b, out, [](T x, T y) { return x == y; }); break;
      case Cmp::Ne: cpu::cpu_binary<T, bool>(a, b, out, [](T x, T y) { return x != y; }); break;
    }
  });
  return out;
}

Tensor compare_scalar(Cmp c, const char* op, const Tensor& a, double v) {
  KDET_CHECK(a.defined(), op, ": undefined operand");
  Tensor out = Tensor::empty(a.shape(), DType::Bool, a.device());
  if (!a.device().is_cpu()) {
#if KDET_CUDA
    if (a.device().is_cuda()) {
      cuda::compare_scalar(static_cast<int>(c), a, v, out);
      return out;
    }
#endif
    no_kernel(op, a.device());
  }
  dispatch_all(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const Tensor ac = a.contiguous();
    const T* p = ac.data<T>();
    bool* po = out.data<bool>();
    const int64_t n = a.numel();
#pragma omp parallel for schedule(static) if (n > cpu::kParallelGrain)
    for (int64_t i = 0; i < n; ++i) po[i] = cmp_apply<double>(c, static_cast<double>(p[i]), v);
  });
  return out;
}

void check_bool(const char* op, const Tensor& a) {
  KDET_CHECK(a.defined(), op, ": undefined operand");
  KDET_CHECK(a.dtype() == DType::Bool, op, ": expects a bool tensor, got ", a.desc());
  if (!a.device().is_cpu() && !(KDET_CUDA && a.device().is_cuda())) no_kernel(op, a.device());
}

Tensor logical2(const char* op, const Tensor& a, const Tensor& b, bool is_and) {
  check_bool(op, a);
  check_bool(op, b);
  KDET_CHECK(a.device() == b.device(), op, ": device mismatch ", a.desc(), " vs ", b.desc());
  Tensor out = Tensor::empty(broadcast_shapes(a.shape(), b.shape(), op), DType::Bool, a.device());
#if KDET_CUDA
  if (a.device().is_cuda()) {
    cuda::logical(is_and, a, b, out);
    return out;
  }
#endif
  if (is_and)
    cpu::cpu_binary<bool>(a, b, out, [](bool x, bool y) { return x && y; });
  else
    cpu::cpu_binary<bool>(a, b, out, [](bool x, bool y) { return x || y; });
  return out;
}

// NaN-aware "a is greater than b" (NaN counts as the largest value, like torch's sort/argmax).
template <class T>
inline bool greater(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a)) return !std::isnan(b);
    if (std::isnan(b)) return false;
  }
  return a > b;
}

Tensor arg_extreme(const char* op, const Tensor& x, int axis, bool keepdim, bool want_max) {
  KDET_CHECK(x.defined(), op, ": undefined operand");
  KDET_CHECK(x.ndim() > 0, op, ": needs at least one dimension, got ", x.desc());
  if (!x.device().is_cpu() && !(KDET_CUDA && x.device().is_cuda())) no_kernel(op, x.device());
  const int ax = normalize_axis(axis, x.ndim(), op);
  KDET_CHECK(x.shape()[ax] > 0, op, ": empty axis ", axis, " of ", x.desc());
  Shape os = x.shape();
  os[ax] = 1;
  Tensor out = Tensor::empty(os, DType::I64, x.device());
  int64_t O = 1, I = 1;
  const int64_t R = x.shape()[ax];
  for (int d = 0; d < ax; ++d) O *= x.shape()[d];
  for (int d = ax + 1; d < x.ndim(); ++d) I *= x.shape()[d];
  const Tensor xc = x.contiguous();
#if KDET_CUDA
  if (x.device().is_cuda()) {
    cuda::arg_extreme(xc, O, R, I, want_max, out);
    return keepdim ? out : out.squeeze(ax);
  }
#endif
  dispatch_all(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      KDET_FAIL(op, ": not defined for bool tensors");
    } else {
      const T* p = xc.data<T>();
      int64_t* po = out.data<int64_t>();
#pragma omp parallel for schedule(static) if (O * R * I > cpu::kParallelGrain && O > 1)
      for (int64_t o = 0; o < O; ++o) {
        for (int64_t i = 0; i < I; ++i) {
          const T* q = p + o * R * I + i;
          int64_t best = 0;
          T bv = q[0];
          for (int64_t r = 1; r < R; ++r) {
            T v = q[r * I];
            if (want_max ? greater(v, bv) : greater(bv, v)) {
              bv = v;
              best = r;
            }
          }
          po[o * I + i] = best;
        }
      }
    }
  });
  return keepdim ? out : out.squeeze(ax);
}

void check_1d(const char* op, const Tensor& x) {
  KDET_CHECK(x.defined(), op, ": undefined operand");
  KDET_CHECK(x.ndim() == 1, op, ": expects a 1-D tensor, got ", x.desc());
  if (!x.device().is_cpu() && !(KDET_CUDA && x.device().is_cuda())) no_kernel(op, x.device());
}

// nonzero / argsort / topk_indices of a device tensor run on a host copy and return their indices to
// the device: small index lists whose stable tie order must match the CPU exactly.
bool on_device(const Tensor& x) { return !x.device().is_cpu(); }

template <class T>
std::vector<int64_t> sorted_order(const Tensor& x, bool descending) {
  const Tensor xc = x.contiguous();
  const T* p = xc.data<T>();
  std::vector<int64_t> idx(x.numel());
  std::iota(idx.begin(), idx.end(), 0);
  if (descending)
    std::stable_sort(idx.begin(), idx.end(), [p](int64_t a, int64_t b) { return greater(p[a], p[b]); });
  else
    std::stable_sort(idx.begin(), idx.end(), [p](int64_t a, int64_t b) { return greater(p[b], p[a]); });
  return idx;
}

}  // namespace

Tensor gt(const Tensor& a, const Tensor& b) { return compare(Cmp::Gt, "gt", a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare(Cmp::Ge, "ge", a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare(Cmp::Lt, "lt", a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return compare(Cmp::Le, "le", a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return compare(Cmp::Eq, "eq", a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare(Cmp::Ne, "ne", a, b); }

Tensor gt_scalar(const Tensor& a, double v) { return compare_scalar(Cmp::Gt, "gt_scalar", a, v); }
Tensor ge_scalar(const Tensor& a, double v) { return compare_scalar(Cmp::Ge, "ge_scalar", a, v); }
Tensor lt_scalar(const Tensor& a, double v) { return compare_scalar(Cmp::Lt, "lt_scalar", a, v); }
Tensor le_scalar(const Tensor& a, double v) { return compare_scalar(Cmp::Le, "le_scalar", a, v); }
Tensor eq_scalar(const Tensor& a, double v) { return compare_scalar(Cmp::Eq, "eq_scalar", a, v); }
Tensor ne_scalar(const Tensor& a, double v) { return compare_scalar(Cmp::Ne, "ne_scalar", a, v); }

Tensor logical_and(const Tensor& a, const Tensor& b) { return logical2("logical_and", a, b, true); }
Tensor logical_or(const Tensor& a, const Tensor& b) { return logical2("logical_or", a, b, false); }
Tensor logical_not(const Tensor& a) {
  check_bool("logical_not", a);
  Tensor out = Tensor::empty(a.shape(), DType::Bool, a.device());
#if KDET_CUDA
  if (a.device().is_cuda()) {
    cuda::logical_not(a, out);
    return out;
  }
#endif
  cpu::cpu_unary<bool>(a, out, [](bool x) { return !x; });
  return out;
}

int64_t count_nonzero(const Tensor& a) {
  KDET_CHECK(a.defined(), "count_nonzero: undefined operand");
  if (!a.device().is_cpu()) {
#if KDET_CUDA
    if (a.device().is_cuda()) return cuda::count_nonzero(a);
#endif
    no_kernel("count_nonzero", a.device());
  }
  int64_t c = 0;
  dispatch_all(a.dtype(), "count_nonzero", [&](auto tag) {
    using T = decltype(tag);
    const Tensor ac = a.contiguous();
    const T* p = ac.data<T>();
    const int64_t n = a.numel();
#pragma omp parallel for schedule(static) reduction(+ : c) if (n > cpu::kParallelGrain)
    for (int64_t i = 0; i < n; ++i) c += p[i] != T(0);
  });
  return c;
}
bool any(const Tensor& a) { return count_nonzero(a) > 0; }
bool all(const Tensor& a) { return count_nonzero(a) == a.numel(); }

Tensor nonzero(const Tensor& mask1d) {
  check_1d("nonzero", mask1d);
  if (on_device(mask1d)) return nonzero(mask1d.to(Device::cpu())).to(mask1d.device());
  std::vector<int64_t> idx;
  dispatch_all(mask1d.dtype(), "nonzero", [&](auto tag) {
    using T = decltype(tag);
    const Tensor mc = mask1d.contiguous();
    const T* p = mc.data<T>();
    for (int64_t i = 0; i < mask1d.numel(); ++i)
      if (p[i] != T(0)) idx.push_back(i);
  });
  return Tensor::from_vector(idx);
}

Tensor argmax(const Tensor& x, int axis, bool keepdim) { return arg_extreme("argmax", x, axis, keepdim, true); }
Tensor argmin(const Tensor& x, int axis, bool keepdim) { return arg_extreme("argmin", x, axis, keepdim, false); }

Tensor argsort(const Tensor& x1d, bool descending) {
  check_1d("argsort", x1d);
  if (on_device(x1d)) return argsort(x1d.to(Device::cpu()), descending).to(x1d.device());
  std::vector<int64_t> idx;
  dispatch_all(x1d.dtype(), "argsort", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>)
      KDET_FAIL("argsort: not defined for bool tensors");
    else
      idx = sorted_order<T>(x1d, descending);
  });
  return Tensor::from_vector(idx);
}

Tensor topk_indices(const Tensor& x1d, int64_t k) {
  check_1d("topk_indices", x1d);
  KDET_CHECK(k >= 0 && k <= x1d.numel(), "topk_indices: k = ", k, " out of range for ", x1d.desc());
  if (on_device(x1d)) return topk_indices(x1d.to(Device::cpu()), k).to(x1d.device());
  std::vector<int64_t> idx;
  dispatch_all(x1d.dtype(), "topk_indices", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      KDET_FAIL("topk_indices: not defined for bool tensors");
    } else {
      const Tensor xc = x1d.contiguous();
      const T* p = xc.data<T>();
      idx.resize(x1d.numel());
      std::iota(idx.begin(), idx.end(), 0);
      // Total order (value desc, index asc) => partial_sort gives exactly the stable first k.
      auto before = [p](int64_t a, int64_t b) {
        if (greater(p[a], p[b])) return true;
        if (greater(p[b], p[a])) return false;
        return a < b;
      };
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
      idx.resize(k);
    }
  });
  return Tensor::from_vector(idx, Shape{k});
}

}  // namespace kdet::ops
