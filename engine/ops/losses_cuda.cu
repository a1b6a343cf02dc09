// engine/ops/losses_cuda.cu — fused detection losses on the GPU (CPU: losses.cpp; same formulas).
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/box_loss_math.h"
#include "engine/ops/losses_cuda.h"

namespace kdet::cuda {

namespace {

// ---- sigmoid focal loss: loss = alpha_t · BCE(x, t) · (1 - p_t)^gamma ---------------------------------
template <class T>
__device__ inline T focal_elem(T x, T t, double gamma_d, T ap, T an, bool grad) {
  const T e = dm::exp(-dm::fabs(x));                        // exp(-|x|)
  const T p = (x >= T(0) ? T(1) : e) / (T(1) + e);          // sigmoid(x)
  const T ce = dm::max(x, T(0)) - x * t + dm::log1p(e);     // BCE with logits
  const T q = p + t - T(2) * p * t;                         // 1 - p_t
  const T at = ap * t + an * (T(1) - t);
  const T gamma = static_cast<T>(gamma_d);
  T qg, dqg = T(0);  // q^gamma and its derivative
  if (gamma_d == 2.0) {
    qg = q * q;
    dqg = T(2) * q;
  } else {
    qg = dm::pow(q, gamma);
    if (gamma == T(0))
      dqg = T(0);
    else if (q > T(0))
      dqg = gamma * dm::pow(q, gamma - T(1));
    else
      dqg = gamma == T(1) ? T(1) : (gamma > T(1) ? T(0) : dm::inf<T>());
  }
  if (!grad) return at * ce * qg;
  // d/dx [ce · q^g] = (p - t) q^g + ce · dqg · (1 - 2t) p (1 - p)
  return at * ((p - t) * qg + ce * dqg * (T(1) - T(2) * t) * p * (T(1) - p));
}

template <class T>
__global__ void focal_kernel(int64_t n, const T* x, const T* t, const T* g, T* out, double gamma, T ap, T an) {
  KDET_GRID_STRIDE(i, n) {
    const T v = focal_elem(x[i], t[i], gamma, ap, an, g != nullptr);
    out[i] = g ? g[i] * v : v;
  }
}

// ---- element-wise losses ---------------------------------------------------------------------------------
template <class T>
__device__ inline T pointwise_fwd(int kind, T x, T t, T beta) {
  switch (kind) {
    case 0: {
      const T d = dm::fabs(x - t);
      return d < beta ? T(0.5) * d * d / beta : d - T(0.5) * beta;
    }
    case 1: return dm::fabs(x - t);
    case 2: {
      const T e = dm::exp(-dm::fabs(x));
      return dm::max(x, T(0)) - x * t + dm::log1p(e);
    }
    default:
      return (t - T(1)) * dm::max(dm::log1p(-x), T(-100)) - t * dm::max(dm::log(x), T(-100));
  }
}

template <class T>
__device__ inline T pointwise_bwd(int kind, T g, T x, T t, T beta) {
  switch (kind) {
    case 0: {
      const T d = x - t, ad = dm::fabs(d);
      const T s = d > T(0) ? T(1) : (d < T(0) ? T(-1) : T(0));
      return ad < beta ? g * d / beta : g * s;
    }
    case 1: {
      const T d = x - t;
      return d > T(0) ? g : (d < T(0) ? -g : T(0));
    }
    case 2: {
      const T e = dm::exp(-dm::fabs(x));
      return g * ((x >= T(0) ? T(1) : e) / (T(1) + e) - t);
    }
    default: return g * (x - t) / dm::max((T(1) - x) * x, static_cast<T>(1e-12));
  }
}

template <class T>
__global__ void pointwise_kernel(int kind, int64_t n, const T* x, const T* t, const T* g, T* out, T beta) {
  KDET_GRID_STRIDE(i, n) {
    out[i] = g ? pointwise_bwd(kind, g[i], x[i], t[i], beta) : pointwise_fwd(kind, x[i], t[i], beta);
  }
}

template <class T>
__global__ void unit_interval_kernel(int64_t n, const T* p, unsigned int* bad) {
  KDET_GRID_STRIDE(i, n) {
    if (!(p[i] >= T(0) && p[i] <= T(1))) atomicOr(bad, 1u);  // a flag, not a float sum: order-free
  }
}

// ---- box losses --------------------------------------------------------------------------------------------
template <class T>
__global__ void box_loss_kernel(int64_t N, const T* p, const T* t, const T* g, T* out, int kind, double eps) {
  KDET_GRID_STRIDE(i, N) {
    double a[4], b[4];
    for (int k = 0; k < 4; ++k) {
      a[k] = static_cast<double>(p[i * 4 + k]);
      b[k] = static_cast<double>(t[i * 4 + k]);
    }
    if (!g) {
      out[i] = static_cast<T>(box_loss_math::box_loss(a, b, kind, eps, false).loss);
    } else {
      const box_loss_math::BoxLossOut r = box_loss_math::box_loss(a, b, kind, eps, true);
      const double gv = static_cast<double>(g[i]);
      for (int k = 0; k < 4; ++k) out[i * 4 + k] = static_cast<T>(gv * r.d[k]);
    }
  }
}

// ---- cross entropy -------------------------------------------------------------------------------------
template <class T>
__global__ void ce_fwd_kernel(int64_t N, int64_t C, const T* x, const int64_t* lab, int64_t ignore, double* lse,
                              T* out) {
  KDET_GRID_STRIDE(i, N) {
    const T* r = x + i * C;
    double m = -dm::inf<double>();
    for (int64_t c = 0; c < C; ++c) m = dm::max(m, static_cast<double>(r[c]));
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += ::exp(static_cast<double>(r[c]) - m);
    const double l = m + ::log(s);
    lse[i] = l;
    out[i] = lab[i] == ignore ? T(0) : static_cast<T>(l - static_cast<double>(r[lab[i]]));
  }
}

template <class T>
__global__ void ce_bwd_kernel(int64_t N, int64_t C, const T* x, const int64_t* lab, int64_t ignore, const double* lse,
                              const T* g, T* gx) {
  KDET_GRID_STRIDE(k, N * C) {
    const int64_t i = k / C, c = k % C;
    if (lab[i] == ignore) {
      gx[k] = T(0);
      continue;
    }
    const double gv = static_cast<double>(g[i]);
    const T v = static_cast<T>(gv * ::exp(static_cast<double>(x[k]) - lse[i]));
    gx[k] = c == lab[i] ? static_cast<T>(static_cast<double>(v) - gv) : v;
  }
}

}  // namespace

namespace {

// A differentiable element-wise loss: launch(ctx, n, x, t, g, out) writes the loss (g undefined) or its
// gradient g ⊙ d loss / dx (g defined) into out, one element per thread.
template <class Launch>
Var elementwise_var(const char* op, const Var& pred, const Tensor& target, Launch launch) {
  const Tensor x = pred.data().contiguous(), t = target.contiguous();
  auto run = [op, launch](const Tensor& x, const Tensor& t, const Tensor& g) {
    Context& ctx = activate(x, op);
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    const int64_t n = x.numel();
    if (n > 0) {
      launch(ctx, n, x, t, g, out);
      check_launch(ctx, op);
    }
    return out;
  };
  return record(op, run(x, t, Tensor()), {&pred},
                [x, t, run](const Tensor& g, Grads& gr) { gr.accumulate(0, run(x, t, g.contiguous())); });
}

}  // namespace

Var sigmoid_focal_loss(const Var& logits, const Tensor& target, double gamma, double alpha) {
  const char* op = "sigmoid_focal_loss";
  return elementwise_var(op, logits, target,
                         [op, gamma, alpha](Context& ctx, int64_t n, const Tensor& x, const Tensor& t, const Tensor& g,
                                            Tensor& out) {
                           dispatch_float(x.dtype(), op, [&](auto tag) {
                             using T = decltype(tag);
                             const T ap = static_cast<T>(alpha >= 0 ? alpha : 1.0);
                             const T an = static_cast<T>(alpha >= 0 ? 1.0 - alpha : 1.0);
                             focal_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(
                                 n, x.data<T>(), t.data<T>(), g.defined() ? g.data<T>() : nullptr, out.data<T>(),
                                 gamma, ap, an);
                           });
                         });
}

Var pointwise_loss(int kind, const char* op, const Var& pred, const Tensor& target, double param) {
  KDET_CHECK(kind >= 0 && kind <= 3, op, " (cuda): bad loss kind ", kind);
  return elementwise_var(op, pred, target,
                         [op, kind, param](Context& ctx, int64_t n, const Tensor& x, const Tensor& t, const Tensor& g,
                                           Tensor& out) {
                           dispatch_float(x.dtype(), op, [&](auto tag) {
                             using T = decltype(tag);
                             pointwise_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(
                                 kind, n, x.data<T>(), t.data<T>(), g.defined() ? g.data<T>() : nullptr,
                                 out.data<T>(), static_cast<T>(param));
                           });
                         });
}

bool all_in_unit_interval(const Tensor& p) {
  const char* op = "binary_cross_entropy";
  Context& ctx = activate(p, op);
  const Tensor pc = p.contiguous();
  const int64_t n = pc.numel();
  if (n == 0) return true;
  Tensor flag = Tensor::zeros({1}, DType::I64, p.device());  // low 4 bytes used as the flag
  dispatch_float(p.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    unit_interval_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(
        n, pc.data<T>(), reinterpret_cast<unsigned int*>(flag.data<int64_t>()));
  });
  check_launch(ctx, op);
  return flag.item() == 0;
}

Var box_loss(const char* op, const Var& pred, const Tensor& target, int kind, double eps) {
  const int64_t N = pred.size(0);
  const Tensor p = pred.data().contiguous(), t = target.contiguous();
  // g undefined: loss [N]; defined: gradient [N, 4] = g[i] · d loss_i / d pred_i.
  auto run = [op, kind, eps, N](const Tensor& p, const Tensor& t, const Tensor& g) {
    Context& ctx = activate(p, op);
    Tensor out = Tensor::empty(g.defined() ? Shape{N, 4} : Shape{N}, p.dtype(), p.device());
    if (N == 0) return out;
    dispatch_float(p.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      box_loss_kernel<T><<<grid_for(N), kThreads, 0, ctx.stream()>>>(
          N, p.data<T>(), t.data<T>(), g.defined() ? g.data<T>() : nullptr, out.data<T>(), kind, eps);
    });
    check_launch(ctx, op);
    return out;
  };
  Tensor out = run(p, t, Tensor());
  return record(op, out, {&pred},
                [p, t, run](const Tensor& g, Grads& gr) { gr.accumulate(0, run(p, t, g.contiguous())); });
}

Var cross_entropy(const Var& logits, const Tensor& labels, int64_t ignore_index) {
  const char* op = "cross_entropy";
  Context& ctx = activate(logits.data(), op);
  const int64_t N = logits.size(0), C = logits.size(1);
  const Tensor x = logits.data().contiguous();
  const Tensor hl = labels.to(Device::cpu()).contiguous();  // checked on the host (no download for host labels)
  {  // with the CPU's message
    const int64_t* pl = hl.data<int64_t>();
    for (int64_t i = 0; i < N; ++i)
      KDET_CHECK(pl[i] == ignore_index || (pl[i] >= 0 && pl[i] < C), op, ": label ", pl[i], " at row ", i,
                 " out of range for ", C, " classes (ignore_index ", ignore_index, ")");
  }
  const Tensor lab = labels.device() == x.device() ? labels.contiguous() : hl.to(x.device());
  Tensor lse = Tensor::empty({N}, DType::F64, x.device());
  Tensor out = Tensor::empty({N}, x.dtype(), x.device());
  if (N > 0) {
    dispatch_float(x.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      ce_fwd_kernel<T><<<grid_for(N), kThreads, 0, ctx.stream()>>>(N, C, x.data<T>(), lab.data<int64_t>(),
                                                                   ignore_index, lse.data<double>(), out.data<T>());
    });
    check_launch(ctx, op);
  }
  return record(op, out, {&logits}, [x, lab, lse, N, C, ignore_index](const Tensor& gin, Grads& gr) {
    const char* op = "cross_entropy_backward";
    Context& ctx = activate(gin, op);
    const Tensor g = gin.contiguous();
    Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (N * C > 0) {
      dispatch_float(x.dtype(), op, [&](auto tag) {
        using T = decltype(tag);
        ce_bwd_kernel<T><<<grid_for(N * C), kThreads, 0, ctx.stream()>>>(N, C, x.data<T>(), lab.data<int64_t>(),
                                                                         ignore_index, lse.data<double>(), g.data<T>(),
                                                                         gx.data<T>());
      });
      check_launch(ctx, op);
    }
    gr.accumulate(0, gx);
  });
}

}  // namespace kdet::cuda
