#include "engine/ops/losses.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "engine/backend.h"
#include "engine/ops/box_loss_math.h"

#if KDET_CUDA
#include "engine/ops/losses_cuda.h"
#endif

namespace kdet {

namespace {

constexpr int64_t kGrain = 1 << 15;

void check_pair(const char* op, const Var& pred, const Tensor& target) {
  KDET_CHECK(pred.defined() && target.defined(), op, ": undefined operand");
  KDET_CHECK(pred.shape() == target.shape(), op, ": prediction ", pred.data().desc(), " and target ", target.desc(),
             " must have the same shape");
  KDET_CHECK(pred.dtype() == target.dtype(), op, ": dtype mismatch, prediction ", pred.data().desc(), " vs target ",
             target.desc());
  KDET_CHECK(pred.device() == target.device(), op, ": device mismatch, prediction ", pred.data().desc(),
             " vs target ", target.desc());
  // CUDA inputs are dispatched by each loss right after this check (engine/ops/losses_cuda.h).
  if (!pred.device().is_cpu() && !(KDET_CUDA && pred.device().is_cuda())) no_kernel(op, pred.device());
}

// out[i] = f(x[i], t[i]) for contiguous same-shape operands.
template <class T, class F>
Tensor map2(const Tensor& xin, const Tensor& tin, F f) {
  const Tensor x = xin.contiguous(), t = tin.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const T* px = x.data<T>();
  const T* pt = t.data<T>();
  T* po = out.data<T>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n > kGrain)
  for (int64_t i = 0; i < n; ++i) po[i] = f(px[i], pt[i]);
  return out;
}

// out[i] = f(g[i], x[i], t[i]).
template <class T, class F>
Tensor map3(const Tensor& gin, const Tensor& xin, const Tensor& tin, F f) {
  const Tensor g = gin.contiguous(), x = xin.contiguous(), t = tin.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const T* pg = g.data<T>();
  const T* px = x.data<T>();
  const T* pt = t.data<T>();
  T* po = out.data<T>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n > kGrain)
  for (int64_t i = 0; i < n; ++i) po[i] = f(pg[i], px[i], pt[i]);
  return out;
}

// An element-wise loss with forward f(x, t) and backward b(g, x, t) (both templated lambdas taking T).
// cuda_kind: the same loss in engine/ops/losses_cuda.h (pointwise_loss), with its parameter.
template <class Fwd, class Bwd>
Var elementwise_loss(const char* op, const Var& pred, const Tensor& target, Fwd fwd, Bwd bwd, int cuda_kind,
                     double param = 0) {
  check_pair(op, pred, target);
#if KDET_CUDA
  if (pred.device().is_cuda()) return cuda::pointwise_loss(cuda_kind, op, pred, target, param);
#endif
  Tensor out;
  dispatch_float(pred.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    out = map2<T>(pred.data(), target, [&](T x, T t) { return fwd(x, t); });
  });
  return record(op, out, {&pred}, [op, x = pred.data(), target, bwd](const Tensor& g, Grads& gr) {
    Tensor gx;
    dispatch_float(g.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      gx = map3<T>(g, x, target, [&](T gv, T xv, T tv) { return bwd(gv, xv, tv); });
    });
    gr.accumulate(0, gx);
  });
}

// exp(-|x|) and log1p(e) for e in [0, 1]. float: branch-free polynomial versions that the compiler
// vectorises (glibc's scalar expf/log1pf dominate the focal loss otherwise); ~1-2 ulp.
// double: libm (the gradcheck / reference precision).
inline float exp_neg_abs(float x) {
  // -min(|x|, 87.3) through the bit pattern (ordered like the value for non-negative floats): an
  // integer min keeps the loop branch-free so that it vectorises (a float select did not).
  int32_t ib = __builtin_bit_cast(int32_t, x) & 0x7fffffff;
  ib = std::min(ib, int32_t{0x42ae999a});  // 87.3f
  float a = -__builtin_bit_cast(float, ib);
  // Cephes expf: 2^n * P(r), r = a - n*ln2 (two-part ln2), n = floor(a*log2(e) + 0.5) in [-126, 0].
  const float v = a * 1.44269504088896341f + 0.5f;
  const int32_t tr = static_cast<int32_t>(v);
  const int32_t n = tr - (static_cast<float>(tr) > v ? 1 : 0);
  const float fx = static_cast<float>(n);
  a -= fx * 0.693359375f;
  a -= fx * -2.12194440e-4f;
  const float z = a * a;
  float y = 1.9875691500e-4f;
  y = y * a + 1.3981999507e-3f;
  y = y * a + 8.3334519073e-3f;
  y = y * a + 4.1665795894e-2f;
  y = y * a + 1.6666665459e-1f;
  y = y * a + 5.0000001201e-1f;
  y = y * z + a + 1.0f;
  return y * __builtin_bit_cast(float, (n + 127) << 23);
}
inline double exp_neg_abs(double x) { return std::exp(-std::abs(x)); }
inline float log1p_unit(float e) {
  // log1p(e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3]: no cancellation for small e.
  const float s = e / (2.0f + e);
  const float z = s * s;
  float p = 1.0f / 15.0f;
  p = p * z + 1.0f / 13.0f;
  p = p * z + 1.0f / 11.0f;
  p = p * z + 1.0f / 9.0f;
  p = p * z + 1.0f / 7.0f;
  p = p * z + 1.0f / 5.0f;
  p = p * z + 1.0f / 3.0f;
  p = p * z + 1.0f;
  return 2.0f * s * p;
}
inline double log1p_unit(double e) { return std::log1p(e); }

// Stable pieces of the logistic: e = exp(-|x|), p = sigmoid(x), ce = BCE-with-logits(x, t).
template <class T>
inline T sigmoid_from(T x, T e) {
  return (x >= T(0) ? T(1) : e) / (T(1) + e);
}
template <class T>
inline T bce_logits(T x, T t, T e) {
  return std::max(x, T(0)) - x * t + log1p_unit(e);
}

void check_boxes(const char* op, const Var& pred, const Tensor& target) {
  check_pair(op, pred, target);
  KDET_CHECK(pred.ndim() == 2 && pred.size(1) == 4, op, ": expected boxes [N, 4], got prediction ",
             pred.data().desc());
}

using box_loss_math::box_loss;
using box_loss_math::BoxLossOut;

Var box_loss_op(const char* op, const Var& pred, const Tensor& target, int kind, double eps) {
  check_boxes(op, pred, target);
#if KDET_CUDA
  if (pred.device().is_cuda()) return cuda::box_loss(op, pred, target, kind, eps);
#endif
  const int64_t N = pred.size(0);
  const Tensor p = pred.data().contiguous(), t = target.contiguous();
  Tensor out = Tensor::empty({N}, p.dtype(), p.device());
  dispatch_float(p.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pp = p.data<T>();
    const T* pt = t.data<T>();
    T* po = out.data<T>();
#pragma omp parallel for schedule(static) if (N > 4096)
    for (int64_t i = 0; i < N; ++i) {
      double a[4], b[4];
      for (int k = 0; k < 4; ++k) {
        a[k] = pp[i * 4 + k];
        b[k] = pt[i * 4 + k];
      }
      po[i] = static_cast<T>(box_loss(a, b, kind, eps, false).loss);
    }
  });
  return record(op, out, {&pred}, [op, p, t, kind, eps, N](const Tensor& gin, Grads& gr) {
    const Tensor g = gin.contiguous();
    Tensor gx = Tensor::empty(p.shape(), p.dtype(), p.device());
    dispatch_float(p.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      const T* pp = p.data<T>();
      const T* pt = t.data<T>();
      const T* pg = g.data<T>();
      T* po = gx.data<T>();
#pragma omp parallel for schedule(static) if (N > 4096)
      for (int64_t i = 0; i < N; ++i) {
        double a[4], b[4];
        for (int k = 0; k < 4; ++k) {
          a[k] = pp[i * 4 + k];
          b[k] = pt[i * 4 + k];
        }
        const BoxLossOut r = box_loss(a, b, kind, eps, true);
        const double gv = pg[i];
        for (int k = 0; k < 4; ++k) po[i * 4 + k] = static_cast<T>(gv * r.d[k]);
      }
    });
    gr.accumulate(0, gx);
  });
}

}  // namespace

namespace {

// Focal loss value (or its derivative w.r.t. x) for one element. G2: gamma == 2 without pow.
template <bool G2, bool Grad, class T>
inline T focal_elem(T x, T t, T gamma, T alpha_pos, T alpha_neg) {
  const T e = exp_neg_abs(x);
  const T p = sigmoid_from(x, e);
  const T ce = bce_logits(x, t, e);
  const T q = p + t - T(2) * p * t;  // 1 - p_t = p*(1-t) + (1-p)*t
  const T at = alpha_pos * t + alpha_neg * (T(1) - t);
  T qg, dqg = T(0);  // q^gamma and d(q^gamma)/dq
  if constexpr (G2) {
    qg = q * q;
    dqg = T(2) * q;
  } else {
    qg = std::pow(q, gamma);
    if constexpr (Grad) {
      if (gamma == T(0))
        dqg = T(0);
      else if (q > T(0))
        dqg = gamma * std::pow(q, gamma - T(1));
      else
        dqg = gamma == T(1) ? T(1) : (gamma > T(1) ? T(0) : std::numeric_limits<T>::infinity());
    }
  }
  if constexpr (!Grad) {
    return at * ce * qg;
  } else {
    // d/dx [ce * q^g] = (p - t) q^g + ce * dqg * (1 - 2t) p (1 - p)
    return at * ((p - t) * qg + ce * dqg * (T(1) - T(2) * t) * p * (T(1) - p));
  }
}

// Dedicated loops (plain locals, no closures) so that the gamma == 2 float path vectorises.
template <class T, bool G2, bool Grad>
void focal_loop(const T* px, const T* pt, const T* pg, T* po, int64_t n, T gamma, T ap, T an) {
#pragma omp parallel for simd schedule(static) if (n > kGrain)
  for (int64_t i = 0; i < n; ++i) {
    const T v = focal_elem<G2, Grad>(px[i], pt[i], gamma, ap, an);
    if constexpr (Grad)
      po[i] = pg[i] * v;
    else
      po[i] = v;
  }
}

template <class T, bool Grad>
Tensor focal_run(const Tensor& xin, const Tensor& tin, const Tensor& gin, double gamma, double alpha) {
  const Tensor x = xin.contiguous(), t = tin.contiguous();
  const Tensor g = Grad ? gin.contiguous() : Tensor();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const T ap = static_cast<T>(alpha >= 0 ? alpha : 1.0), an = static_cast<T>(alpha >= 0 ? 1.0 - alpha : 1.0);
  const T* pg = Grad ? g.data<T>() : nullptr;
  if (gamma == 2.0)
    focal_loop<T, true, Grad>(x.data<T>(), t.data<T>(), pg, out.data<T>(), x.numel(), T(2), ap, an);
  else
    focal_loop<T, false, Grad>(x.data<T>(), t.data<T>(), pg, out.data<T>(), x.numel(), static_cast<T>(gamma), ap, an);
  return out;
}

}  // namespace

Var sigmoid_focal_loss(const Var& logits, const Tensor& target, double gamma, double alpha) {
  const char* op = "sigmoid_focal_loss";
  KDET_CHECK(gamma >= 0, op, ": gamma must be >= 0, got ", gamma);
  check_pair(op, logits, target);
#if KDET_CUDA
  if (logits.device().is_cuda()) return cuda::sigmoid_focal_loss(logits, target, gamma, alpha);
#endif
  Tensor out;
  dispatch_float(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    out = focal_run<T, false>(logits.data(), target, Tensor(), gamma, alpha);
  });
  return record(op, out, {&logits}, [x = logits.data(), target, gamma, alpha](const Tensor& g, Grads& gr) {
    Tensor gx;
    dispatch_float(g.dtype(), "sigmoid_focal_loss", [&](auto tag) {
      using T = decltype(tag);
      gx = focal_run<T, true>(x, target, g, gamma, alpha);
    });
    gr.accumulate(0, gx);
  });
}

Var smooth_l1_loss(const Var& pred, const Tensor& target, double beta) {
  KDET_CHECK(beta >= 0, "smooth_l1_loss: beta must be >= 0, got ", beta);
  if (beta == 0) return l1_loss(pred, target);
  return elementwise_loss(
      "smooth_l1_loss", pred, target,
      [=](auto x, auto t) {
        using T = decltype(x);
        const T b = static_cast<T>(beta);
        const T d = std::abs(x - t);
        return d < b ? T(0.5) * d * d / b : d - T(0.5) * b;
      },
      [=](auto g, auto x, auto t) {
        using T = decltype(x);
        const T b = static_cast<T>(beta);
        const T d = x - t;
        const T ad = std::abs(d);
        const T s = d > T(0) ? T(1) : (d < T(0) ? T(-1) : T(0));
        return ad < b ? g * d / b : g * s;
      },
      0, beta);
}

Var l1_loss(const Var& pred, const Tensor& target) {
  return elementwise_loss(
      "l1_loss", pred, target, [](auto x, auto t) { return std::abs(x - t); },
      [](auto g, auto x, auto t) {
        using T = decltype(x);
        const T d = x - t;
        return d > T(0) ? g : (d < T(0) ? -g : T(0));
      },
      1);
}

Var giou_loss(const Var& pred, const Tensor& target, double eps) {
  return box_loss_op("giou_loss", pred, target, 0, eps);
}

Var iou_loss(const Var& pred, const Tensor& target, IoULossMode mode, double eps) {
  const int kind = mode == IoULossMode::Linear ? 1 : mode == IoULossMode::Square ? 2 : 3;
  return box_loss_op("iou_loss", pred, target, kind, eps);
}

Var binary_cross_entropy_with_logits(const Var& logits, const Tensor& target) {
  return elementwise_loss(
      "binary_cross_entropy_with_logits", logits, target,
      [](auto x, auto t) { return bce_logits(x, t, exp_neg_abs(x)); },
      [](auto g, auto x, auto t) { return g * (sigmoid_from(x, exp_neg_abs(x)) - t); }, 2);
}

Var binary_cross_entropy(const Var& prob, const Tensor& target) {
  const char* op = "binary_cross_entropy";
  check_pair(op, prob, target);
  bool in_range = true;
#if KDET_CUDA
  if (prob.device().is_cuda()) in_range = cuda::all_in_unit_interval(prob.data());
  else
#endif
    dispatch_float(prob.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      const Tensor p = prob.data().contiguous();
      const T* pp = p.data<T>();
      for (int64_t i = 0; i < p.numel(); ++i)
        if (!(pp[i] >= T(0) && pp[i] <= T(1))) in_range = false;
    });
  KDET_CHECK(in_range, op, ": all elements of the input ", prob.data().desc(), " must be between 0 and 1");
  return elementwise_loss(
      op, prob, target,
      [](auto p, auto t) {
        using T = decltype(p);
        return (t - T(1)) * std::max(static_cast<T>(std::log1p(-p)), T(-100)) -
               t * std::max(static_cast<T>(std::log(p)), T(-100));
      },
      [](auto g, auto p, auto t) {
        using T = decltype(p);
        return g * (p - t) / std::max((T(1) - p) * p, static_cast<T>(1e-12));
      },
      3);
}

Var cross_entropy(const Var& logits, const Tensor& labels, int64_t ignore_index) {
  const char* op = "cross_entropy";
  KDET_CHECK(logits.defined() && labels.defined(), op, ": undefined operand");
  KDET_CHECK(logits.ndim() == 2, op, ": expected logits [N, C], got ", logits.data().desc());
  KDET_CHECK(labels.dtype() == DType::I64 && labels.ndim() == 1 && labels.size(0) == logits.size(0), op,
             ": labels ", labels.desc(), " must be i64 [N] for logits ", logits.data().desc());
  // Host labels for device logits are allowed: they are checked on the host and uploaded once.
  KDET_CHECK(labels.device() == logits.device() || labels.device().is_cpu(), op, ": labels ", labels.desc(),
             " and logits ", logits.data().desc(), " are on different devices");
#if KDET_CUDA
  if (logits.device().is_cuda()) return cuda::cross_entropy(logits, labels, ignore_index);
#endif
  if (!logits.device().is_cpu()) no_kernel(op, logits.device());
  const int64_t N = logits.size(0), C = logits.size(1);
  const Tensor x = logits.data().contiguous(), lab = labels.contiguous();
  const int64_t* pl = lab.data<int64_t>();
  for (int64_t i = 0; i < N; ++i)
    KDET_CHECK(pl[i] == ignore_index || (pl[i] >= 0 && pl[i] < C), op, ": label ", pl[i], " at row ", i,
               " out of range for ", C, " classes (ignore_index ", ignore_index, ")");
  auto lse = std::make_shared<std::vector<double>>(N);
  Tensor out = Tensor::empty({N}, x.dtype(), x.device());
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
#pragma omp parallel for schedule(static) if (N * C > kGrain)
    for (int64_t i = 0; i < N; ++i) {
      const T* r = px + i * C;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < C; ++c) m = std::max(m, static_cast<double>(r[c]));
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += std::exp(static_cast<double>(r[c]) - m);
      const double l = m + std::log(s);
      (*lse)[i] = l;
      po[i] = pl[i] == ignore_index ? T(0) : static_cast<T>(l - static_cast<double>(r[pl[i]]));
    }
  });
  return record(op, out, {&logits}, [x, lab, lse, N, C, ignore_index](const Tensor& gin, Grads& gr) {
    const Tensor g = gin.contiguous();
    Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
    dispatch_float(x.dtype(), "cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      const T* pg = g.data<T>();
      const int64_t* pl = lab.data<int64_t>();
      T* po = gx.data<T>();
#pragma omp parallel for schedule(static) if (N * C > kGrain)
      for (int64_t i = 0; i < N; ++i) {
        T* o = po + i * C;
        if (pl[i] == ignore_index) {
          for (int64_t c = 0; c < C; ++c) o[c] = T(0);
          continue;
        }
        const T* r = px + i * C;
        const double gv = pg[i], l = (*lse)[i];
        for (int64_t c = 0; c < C; ++c) o[c] = static_cast<T>(gv * std::exp(static_cast<double>(r[c]) - l));
        o[pl[i]] = static_cast<T>(static_cast<double>(o[pl[i]]) - gv);
      }
    });
    gr.accumulate(0, gx);
  });
}

}  // namespace kdet
