#include "engine/ops/norm.h"

#include <cmath>
#include <memory>
#include <vector>

#include "engine/backend.h"

#if KDET_CUDA
#include "engine/ops/norm_cuda.h"
#endif

namespace kdet {

namespace {

using Vec = std::shared_ptr<std::vector<double>>;

constexpr int64_t kGrain = 1 << 14;  // elements below which a normalisation stays on one thread

void check_affine(const char* op, const Var& p, const char* name, int64_t n, const Tensor& x) {
  if (!p.defined()) return;
  KDET_CHECK(p.dtype() == x.dtype() && p.device() == x.device(), op, ": ", name, " ", p.data().desc(),
             " must match input ", x.desc());
  KDET_CHECK(p.numel() == n, op, ": ", name, " ", p.data().desc(), " has ", p.numel(), " elements, expected ", n,
             " for input ", x.desc());
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Double-precision sums with a fixed (compile-time) vectorised order: deterministic and fast.
template <class T>
inline double vsum(const T* x, int64_t n) {
  double a = 0;
#pragma omp simd reduction(+ : a)
  for (int64_t i = 0; i < n; ++i) a += static_cast<double>(x[i]);
  return a;
}
template <class T>
inline double vsum_sqdev(const T* x, int64_t n, double m) {
  double a = 0;
#pragma omp simd reduction(+ : a)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - m;
    a += d * d;
  }
  return a;
}
// a0 = sum g, a1 = sum g * (x - m)
template <class T>
inline void vsum_g_gx(const T* g, const T* x, int64_t n, double m, double& a0, double& a1) {
  double s0 = 0, s1 = 0;
#pragma omp simd reduction(+ : s0, s1)
  for (int64_t i = 0; i < n; ++i) {
    const double gv = static_cast<double>(g[i]);
    s0 += gv;
    s1 += gv * (static_cast<double>(x[i]) - m);
  }
  a0 = s0;
  a1 = s1;
}

// ---------------------------------------------------------------------------------------------------
// Batch norm on x viewed as [N, C, S].

struct BNSaved {
  Vec mean, invstd;  // [C]
};

template <class T>
Tensor bn_forward(const Tensor& x, const Tensor& w, const Tensor& b, int64_t N, int64_t C, int64_t S,
                  const double* mean, const double* invstd) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const T* px = x.data<T>();
  T* po = out.data<T>();
  const T* pw = ptr_or_null<T>(w);
  const T* pb = ptr_or_null<T>(b);
  const int64_t planes = N * C;
#pragma omp parallel for schedule(static) if (planes * S > kGrain)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t c = p % C;
    const double a = (pw ? static_cast<double>(pw[c]) : 1.0) * invstd[c];
    const double sh = (pb ? static_cast<double>(pb[c]) : 0.0) - mean[c] * a;
    const T at = static_cast<T>(a), st = static_cast<T>(sh);
    const T* xi = px + p * S;
    T* yo = po + p * S;
    for (int64_t s = 0; s < S; ++s) yo[s] = xi[s] * at + st;
  }
  return out;
}

// Batch statistics: per-(n, c) partial sums in parallel, reduced over n in a fixed order.
template <class T>
void bn_batch_stats(const Tensor& x, int64_t N, int64_t C, int64_t S, std::vector<double>& mean,
                    std::vector<double>& var_biased) {
  const T* px = x.data<T>();
  const int64_t planes = N * C;
  std::vector<double> part(planes);
#pragma omp parallel for schedule(static) if (planes * S > kGrain)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xi = px + p * S;
    part[p] = vsum(xi, S);
  }
  const double M = static_cast<double>(N * S);
  mean.assign(C, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0;
    for (int64_t n = 0; n < N; ++n) acc += part[n * C + c];
    mean[c] = acc / M;
  }
#pragma omp parallel for schedule(static) if (planes * S > kGrain)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xi = px + p * S;
    part[p] = vsum_sqdev(xi, S, mean[p % C]);
  }
  var_biased.assign(C, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0;
    for (int64_t n = 0; n < N; ++n) acc += part[n * C + c];
    var_biased[c] = acc / M;
  }
}

// grads: gx (may be undefined when not wanted), gw, gb.
template <class T>
void bn_backward(const Tensor& g, const Tensor& x, const Tensor& w, int64_t N, int64_t C, int64_t S,
                 const double* mean, const double* invstd, bool batch_stats, Tensor* gx, Tensor* gw, Tensor* gb) {
  const T* pg = g.data<T>();
  const T* px = ptr_or_null<T>(x);  // null when neither the batch statistics nor gw need it
  const T* pw = ptr_or_null<T>(w);
  const int64_t planes = N * C;
  std::vector<double> sg(C, 0.0), sgxhat(C, 0.0);
  const bool reduce = batch_stats || gw || gb;  // frozen BN (eval, x only): no reduction at all
  std::vector<double> psg(reduce ? planes : 0), psgx(reduce ? planes : 0);
  if (reduce) {
#pragma omp parallel for schedule(static) if (planes * S > kGrain)
  for (int64_t p = 0; p < planes; ++p) {
    const T* gi = pg + p * S;
    const double m = mean[p % C];
    double a0 = 0, a1 = 0;
    if (px) {
      vsum_g_gx(gi, px + p * S, S, m, a0, a1);
    } else {
      a0 = vsum(gi, S);
    }
    psg[p] = a0;
    psgx[p] = a1;
  }
  }
  for (int64_t c = 0; reduce && c < C; ++c) {
    double a0 = 0, a1 = 0;
    for (int64_t n = 0; n < N; ++n) {
      a0 += psg[n * C + c];
      a1 += psgx[n * C + c];
    }
    sg[c] = a0;
    sgxhat[c] = a1 * invstd[c];
  }
  if (gw) {
    *gw = Tensor::empty({C}, g.dtype(), g.device());
    T* p = gw->data<T>();
    for (int64_t c = 0; c < C; ++c) p[c] = static_cast<T>(sgxhat[c]);
  }
  if (gb) {
    *gb = Tensor::empty({C}, g.dtype(), g.device());
    T* p = gb->data<T>();
    for (int64_t c = 0; c < C; ++c) p[c] = static_cast<T>(sg[c]);
  }
  if (gx) {
    *gx = Tensor::empty(g.shape(), g.dtype(), g.device());
    T* po = gx->data<T>();
    const double M = static_cast<double>(N * S);
#pragma omp parallel for schedule(static) if (planes * S > kGrain)
    for (int64_t p = 0; p < planes; ++p) {
      const int64_t c = p % C;
      const double wi = (pw ? static_cast<double>(pw[c]) : 1.0) * invstd[c];
      const T* gi = pg + p * S;
      T* o = po + p * S;
      if (!batch_stats) {
        const T k = static_cast<T>(wi);
        for (int64_t s = 0; s < S; ++s) o[s] = gi[s] * k;
      } else {
        // dx = w*invstd * (g - sum(g)/M - xhat * sum(g*xhat)/M), xhat = (x - mean)*invstd
        const T* xi = px + p * S;
        const double k1 = wi, k0 = -wi * sg[c] / M, kx = -wi * sgxhat[c] * invstd[c] / M;
        const double m = mean[c];
        for (int64_t s = 0; s < S; ++s)
          o[s] = static_cast<T>(k1 * gi[s] + k0 + kx * (static_cast<double>(xi[s]) - m));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Grouped norm: x viewed as [R rows = N*G, M = Cg*S]; channel of element j in row r is
// (r % G) * Cg + j / S (affine index). layer_norm is the case G = 1, Cg = M, S = 1.

template <class T>
Tensor gn_forward(const Tensor& x, const Tensor& w, const Tensor& b, int64_t R, int64_t G, int64_t Cg, int64_t S,
                  double eps, std::vector<double>& mean, std::vector<double>& invstd) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const T* px = x.data<T>();
  T* po = out.data<T>();
  const T* pw = ptr_or_null<T>(w);
  const T* pb = ptr_or_null<T>(b);
  const int64_t M = Cg * S;
  mean.assign(R, 0.0);
  invstd.assign(R, 0.0);
#pragma omp parallel for schedule(static) if (R * M > kGrain)
  for (int64_t r = 0; r < R; ++r) {
    const T* xi = px + r * M;
    const double m = vsum(xi, M) / static_cast<double>(M);
    const double v = vsum_sqdev(xi, M, m) / static_cast<double>(M);
    const double is = 1.0 / std::sqrt(v + eps);
    mean[r] = m;
    invstd[r] = is;
    const int64_t c0 = (r % G) * Cg;
    T* yo = po + r * M;
    for (int64_t k = 0; k < Cg; ++k) {
      const int64_t c = c0 + k;
      const double a = (pw ? static_cast<double>(pw[c]) : 1.0) * is;
      const double sh = (pb ? static_cast<double>(pb[c]) : 0.0) - m * a;
      const T at = static_cast<T>(a), st = static_cast<T>(sh);
      const T* xs = xi + k * S;
      T* ys = yo + k * S;
      for (int64_t s = 0; s < S; ++s) ys[s] = xs[s] * at + st;
    }
  }
  return out;
}

template <class T>
void gn_backward(const Tensor& g, const Tensor& x, const Tensor& w, int64_t R, int64_t G, int64_t Cg, int64_t S,
                 const double* mean, const double* invstd, Tensor* gx, Tensor* gw, Tensor* gb) {
  const T* pg = g.data<T>();
  const T* px = x.data<T>();
  const T* pw = ptr_or_null<T>(w);
  const int64_t M = Cg * S;
  const int64_t C = G * Cg;
  const int64_t N = R / G;
  // Per (row, channel-in-group) partial sums: sum g, sum g*(x - mean).
  std::vector<double> psg(R * Cg), psgx(R * Cg);
  if (gx) *gx = Tensor::empty(x.shape(), x.dtype(), x.device());
  T* pgx = gx ? gx->data<T>() : nullptr;
#pragma omp parallel for schedule(static) if (R * M > kGrain)
  for (int64_t r = 0; r < R; ++r) {
    const T* gi = pg + r * M;
    const T* xi = px + r * M;
    const double m = mean[r], is = invstd[r];
    const int64_t c0 = (r % G) * Cg;
    double sdh = 0, sdhx = 0;  // sum(dxhat), sum(dxhat * (x - mean))
    for (int64_t k = 0; k < Cg; ++k) {
      double a0, a1;
      vsum_g_gx(gi + k * S, xi + k * S, S, m, a0, a1);
      psg[r * Cg + k] = a0;
      psgx[r * Cg + k] = a1;
      const double wc = pw ? static_cast<double>(pw[c0 + k]) : 1.0;
      sdh += wc * a0;
      sdhx += wc * a1;
    }
    if (pgx) {
      // dx = invstd * (w*g - sdh/M - xhat * sum(dxhat*xhat)/M)
      const double k0 = -is * sdh / static_cast<double>(M);
      const double kx = -is * is * is * sdhx / static_cast<double>(M);
      T* o = pgx + r * M;
      for (int64_t k = 0; k < Cg; ++k) {
        const double wi = (pw ? static_cast<double>(pw[c0 + k]) : 1.0) * is;
        const T* gs = gi + k * S;
        const T* xs = xi + k * S;
        T* os = o + k * S;
        for (int64_t s = 0; s < S; ++s)
          os[s] = static_cast<T>(wi * gs[s] + k0 + kx * (static_cast<double>(xs[s]) - m));
      }
    }
  }
  if (gw || gb) {
    if (gw) *gw = Tensor::empty({C}, x.dtype(), x.device());
    if (gb) *gb = Tensor::empty({C}, x.dtype(), x.device());
    T* ow = gw ? gw->data<T>() : nullptr;
    T* ob = gb ? gb->data<T>() : nullptr;
#pragma omp parallel for schedule(static) if (N * C > kGrain)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t grp = c / Cg, k = c % Cg;
      double a0 = 0, a1 = 0;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t r = n * G + grp;
        a0 += psg[r * Cg + k];
        a1 += psgx[r * Cg + k] * invstd[r];
      }
      if (ow) ow[c] = static_cast<T>(a1);
      if (ob) ob[c] = static_cast<T>(a0);
    }
  }
}

Var grouped_norm(const char* op, const Var& xv, const Var& weight, const Var& bias, int64_t R, int64_t G,
                 int64_t Cg, int64_t S, double eps, const Shape& param_shape) {
  const Tensor x = xv.data().contiguous();
  const Tensor w = weight.defined() ? weight.data().contiguous() : Tensor();
  const Tensor b = bias.defined() ? bias.data().contiguous() : Tensor();
#if KDET_CUDA
  if (x.device().is_cuda()) return cuda::grouped_norm(op, xv, weight, bias, x, w, b, R, G, Cg, S, eps, param_shape);
#endif
  auto mean = std::make_shared<std::vector<double>>(), invstd = std::make_shared<std::vector<double>>();
  Tensor out;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    out = gn_forward<T>(x, w, b, R, G, Cg, S, eps, *mean, *invstd);
  });
  const bool need_x = xv.requires_grad() || weight.requires_grad();
  return record(op, out, {&xv, weight.defined() ? &weight : nullptr, bias.defined() ? &bias : nullptr},
                [op, x = need_x ? x : Tensor(), xshape = x.shape(), w, mean, invstd, R, G, Cg, S,
                 param_shape](const Tensor& go, Grads& gr) {
                  const Tensor g = go.contiguous();
                  Tensor gx, gw, gb;
                  Tensor xx = x.defined() ? x : Tensor::zeros(xshape, g.dtype(), g.device());
                  dispatch_float(g.dtype(), op, [&](auto tag) {
                    using T = decltype(tag);
                    gn_backward<T>(g, xx, w, R, G, Cg, S, mean->data(), invstd->data(), gr.wants(0) ? &gx : nullptr,
                                   gr.wants(1) ? &gw : nullptr, gr.wants(2) ? &gb : nullptr);
                  });
                  if (gr.wants(0)) gr.accumulate(0, gx);
                  if (gr.wants(1)) gr.accumulate(1, gw.view(param_shape));
                  if (gr.wants(2)) gr.accumulate(2, gb.view(param_shape));
                });
}

}  // namespace

Var batch_norm(const Var& xv, const Var& weight, const Var& bias, Tensor& running_mean, Tensor& running_var,
               bool training, double momentum, double eps) {
  const char* op = "batch_norm";
  KDET_CHECK(xv.defined(), op, ": undefined input");
  KDET_CHECK(xv.ndim() >= 2, op, ": expected input of shape [N, C, *], got ", xv.data().desc());
  if (!xv.device().is_cpu() && !(KDET_CUDA && xv.device().is_cuda())) no_kernel(op, xv.device());
  const int64_t N = xv.size(0), C = xv.size(1), S = xv.numel() / std::max<int64_t>(N * C, 1);
  check_affine(op, weight, "weight", C, xv.data());
  check_affine(op, bias, "bias", C, xv.data());
  const bool track = running_mean.defined() || running_var.defined();
  if (track) {
    KDET_CHECK(running_mean.defined() && running_var.defined(), op,
               ": running_mean and running_var must both be defined or both undefined");
    for (const Tensor* t : {&running_mean, &running_var}) {
      KDET_CHECK(t->numel() == C && t->dtype() == xv.dtype() && t->device() == xv.device(), op, ": running stat ",
                 t->desc(), " does not match input ", xv.data().desc(), " (expected ", C, " channels, same dtype)");
    }
  }
  const bool batch_stats = training || !track;
  if (batch_stats)
    KDET_CHECK(N * S > 1, op, ": expected more than 1 value per channel when training, got input ",
               xv.data().desc());
  const Tensor x = xv.data().contiguous();
  const Tensor w = weight.defined() ? weight.data().contiguous() : Tensor();
  const Tensor b = bias.defined() ? bias.data().contiguous() : Tensor();
#if KDET_CUDA
  if (x.device().is_cuda())
    return cuda::batch_norm(xv, weight, bias, x, w, b, running_mean, running_var, training, track, momentum, eps, N, C,
                            S, weight.defined() ? weight.shape() : bias.defined() ? bias.shape() : Shape{C});
#endif
  auto mean = std::make_shared<std::vector<double>>(C), invstd = std::make_shared<std::vector<double>>(C);
  Tensor out;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (batch_stats) {
      std::vector<double> var;
      bn_batch_stats<T>(x, N, C, S, *mean, var);
      for (int64_t c = 0; c < C; ++c) (*invstd)[c] = 1.0 / std::sqrt(var[c] + eps);
      if (training && track) {
        // In place, exactly like torch: unbiased variance for running_var.
        KDET_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(), op,
                   ": running stats must be contiguous");
        T* rm = running_mean.data<T>();
        T* rv = running_var.data<T>();
        const double n = static_cast<double>(N * S);
        for (int64_t c = 0; c < C; ++c) {
          rm[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(rm[c]) + momentum * (*mean)[c]);
          rv[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(rv[c]) + momentum * var[c] * n / (n - 1.0));
        }
      }
    } else {
      const Tensor rm = running_mean.contiguous(), rv = running_var.contiguous();
      const T* pm = rm.data<T>();
      const T* pv = rv.data<T>();
      for (int64_t c = 0; c < C; ++c) {
        (*mean)[c] = pm[c];
        (*invstd)[c] = 1.0 / std::sqrt(static_cast<double>(pv[c]) + eps);
      }
    }
    out = bn_forward<T>(x, w, b, N, C, S, mean->data(), invstd->data());
  });
  const bool need_x = (batch_stats && xv.requires_grad()) || weight.requires_grad();
  return record(op, out, {&xv, weight.defined() ? &weight : nullptr, bias.defined() ? &bias : nullptr},
                [x = need_x ? x : Tensor(), w, mean, invstd, N, C, S, batch_stats, pshape = weight.defined() ? weight.shape() : bias.defined() ? bias.shape() : Shape{C}](
                    const Tensor& go, Grads& gr) {
                  const Tensor g = go.contiguous();
                  Tensor gx, gw, gb;
                  dispatch_float(g.dtype(), "batch_norm", [&](auto tag) {
                    using T = decltype(tag);
                    bn_backward<T>(g, x, w, N, C, S, mean->data(), invstd->data(), batch_stats,
                                   gr.wants(0) ? &gx : nullptr, gr.wants(1) ? &gw : nullptr,
                                   gr.wants(2) ? &gb : nullptr);
                  });
                  if (gr.wants(0)) gr.accumulate(0, gx);
                  if (gr.wants(1)) gr.accumulate(1, gw.view(pshape));
                  if (gr.wants(2)) gr.accumulate(2, gb.view(pshape));
                });
}

Var group_norm(const Var& xv, int64_t num_groups, const Var& weight, const Var& bias, double eps) {
  const char* op = "group_norm";
  KDET_CHECK(xv.defined(), op, ": undefined input");
  KDET_CHECK(xv.ndim() >= 2, op, ": expected input of shape [N, C, *], got ", xv.data().desc());
  if (!xv.device().is_cpu() && !(KDET_CUDA && xv.device().is_cuda())) no_kernel(op, xv.device());
  const int64_t N = xv.size(0), C = xv.size(1);
  KDET_CHECK(num_groups > 0 && C % num_groups == 0, op, ": C=", C, " not divisible by num_groups=", num_groups,
             " (input ", xv.data().desc(), ")");
  check_affine(op, weight, "weight", C, xv.data());
  check_affine(op, bias, "bias", C, xv.data());
  const int64_t S = (N * C) != 0 ? xv.numel() / (N * C) : 0;
  const int64_t G = num_groups;
  return grouped_norm(op, xv, weight, bias, N * G, G, C / G, S, eps,
                      weight.defined() ? weight.shape() : bias.defined() ? bias.shape() : Shape{C});
}

Var layer_norm(const Var& xv, const Shape& normalized_shape, const Var& weight, const Var& bias, double eps) {
  const char* op = "layer_norm";
  KDET_CHECK(xv.defined(), op, ": undefined input");
  const int k = normalized_shape.ndim();
  bool ok = k >= 1 && k <= xv.ndim();
  for (int i = 0; ok && i < k; ++i) ok = xv.shape()[xv.ndim() - k + i] == normalized_shape[i];
  KDET_CHECK(ok, op, ": normalized_shape ", normalized_shape, " does not match the trailing dims of input ",
             xv.data().desc());
  if (!xv.device().is_cpu() && !(KDET_CUDA && xv.device().is_cuda())) no_kernel(op, xv.device());
  const int64_t M = normalized_shape.numel();
  for (const Var* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    KDET_CHECK(p->shape() == normalized_shape && p->dtype() == xv.dtype() && p->device() == xv.device(), op,
               ": ", (p == &weight ? "weight " : "bias "), p->data().desc(), " must have shape ", normalized_shape,
               " and the dtype of input ", xv.data().desc());
  }
  const int64_t R = M ? xv.numel() / M : 0;
  return grouped_norm(op, xv, weight, bias, R, 1, M, 1, eps, normalized_shape);
}

}  // namespace kdet
