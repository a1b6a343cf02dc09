// engine/ops/norm_cuda.cu — batch / group / layer norm on the GPU (CPU: norm.cpp, same math).
//
// Structure (as the CPU): partial sums in double per segment (a (n, c) plane for batch norm, a row or a
// (row, channel) piece for the grouped norms), then one thread per channel / row combines its partials
// in a fixed order, then an elementwise pass. Segments up to kShortSeg elements are summed by one
// thread, longer ones by one block with a fixed tree: deterministic, no atomics.
#include "engine/cuda/pointwise.cuh"
#include "engine/ops/norm_cuda.h"

namespace kdet::cuda {

namespace {

constexpr int64_t kShortSeg = 64;

// Segment t covers elements [t*S, t*S + S) of a (and b).
//   mode 0: o0[t] = Σ a                 mode 1: o0[t] = Σ (a - m)²
//   mode 2: o0[t] = Σ a,  o1[t] = Σ a (b - m)   (b null: o1[t] = 0)
// with m = mean[(t / div) % mod] in modes 1 and 2.
template <class T>
__device__ inline void seg_terms(int mode, const T* a, const T* b, int64_t i, double m, double& s0, double& s1) {
  const double av = static_cast<double>(a[i]);
  if (mode == 0) {
    s0 += av;
  } else if (mode == 1) {
    const double d = av - m;
    s0 += d * d;
  } else {
    s0 += av;
    if (b) s1 += av * (static_cast<double>(b[i]) - m);
  }
}

template <class T>
__global__ void seg_sums_thread(int mode, int64_t nseg, int64_t S, const T* a, const T* b, const double* mean,
                                int64_t div, int64_t mod, double* o0, double* o1) {
  KDET_GRID_STRIDE(t, nseg) {
    const double m = mean ? mean[(t / div) % mod] : 0.0;
    double s0 = 0, s1 = 0;
    for (int64_t s = 0; s < S; ++s) seg_terms(mode, a, b, t * S + s, m, s0, s1);
    o0[t] = s0;
    if (o1) o1[t] = s1;
  }
}

template <class T>
__global__ void seg_sums_block(int mode, int64_t nseg, int64_t S, const T* a, const T* b, const double* mean,
                               int64_t div, int64_t mod, double* o0, double* o1) {
  __shared__ double sh[kThreads];
  for (int64_t t = blockIdx.x; t < nseg; t += gridDim.x) {
    const double m = mean ? mean[(t / div) % mod] : 0.0;
    double s0 = 0, s1 = 0;
    for (int64_t s = threadIdx.x; s < S; s += kThreads) seg_terms(mode, a, b, t * S + s, m, s0, s1);
    const double r0 = block_sum(s0, sh);
    const double r1 = mode == 2 ? block_sum(s1, sh) : 0.0;
    if (threadIdx.x == 0) {
      o0[t] = r0;
      if (o1) o1[t] = r1;
    }
  }
}

template <class T>
void seg_sums(Context& ctx, const char* op, int mode, int64_t nseg, int64_t S, const T* a, const T* b,
              const double* mean, int64_t div, int64_t mod, double* o0, double* o1) {
  if (nseg == 0) return;
  if (S <= kShortSeg)
    seg_sums_thread<T><<<grid_for(nseg), kThreads, 0, ctx.stream()>>>(mode, nseg, S, a, b, mean, div, mod, o0, o1);
  else
    seg_sums_block<T><<<static_cast<unsigned>(std::min<int64_t>(nseg, 65535)), kThreads, 0, ctx.stream()>>>(
        mode, nseg, S, a, b, mean, div, mod, o0, o1);
  check_launch(ctx, op);
}

// out[c] = Σ_n part[n*C + c] (n in order) / M; with invstd: out[c] = 1 / sqrt(that + eps).
__global__ void chan_mean(int64_t N, int64_t C, const double* part, double M, double* out) {
  KDET_GRID_STRIDE(c, C) {
    double acc = 0;
    for (int64_t n = 0; n < N; ++n) acc += part[n * C + c];
    out[c] = acc / M;
  }
}

// Batch-norm variance: invstd[c], and the running statistics update of torch (unbiased variance).
template <class T>
__global__ void bn_var(int64_t N, int64_t C, const double* part, double M, double eps, const double* mean,
                       double* invstd, T* rm, T* rv, double momentum) {
  KDET_GRID_STRIDE(c, C) {
    double acc = 0;
    for (int64_t n = 0; n < N; ++n) acc += part[n * C + c];
    const double var = acc / M;
    invstd[c] = 1.0 / ::sqrt(var + eps);
    if (rm) {
      rm[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(rm[c]) + momentum * mean[c]);
      rv[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(rv[c]) + momentum * var * M / (M - 1.0));
    }
  }
}

template <class T>
__global__ void bn_eval_stats(int64_t C, const T* rm, const T* rv, double eps, double* mean, double* invstd) {
  KDET_GRID_STRIDE(c, C) {
    mean[c] = static_cast<double>(rm[c]);
    invstd[c] = 1.0 / ::sqrt(static_cast<double>(rv[c]) + eps);
  }
}

template <class T>
__global__ void bn_apply(int64_t n, int64_t C, int64_t S, const T* x, const T* w, const T* b, const double* mean,
                         const double* invstd, T* y) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t c = (i / S) % C;
    const double a = (w ? static_cast<double>(w[c]) : 1.0) * invstd[c];
    const double sh = (b ? static_cast<double>(b[c]) : 0.0) - mean[c] * a;
    y[i] = x[i] * static_cast<T>(a) + static_cast<T>(sh);
  }
}

// sg[c] = Σ_n psg, sgxhat[c] = Σ_n psgx · invstd[c]; written to gw / gb (if wanted) and kept in double.
template <class T>
__global__ void bn_chan_grads(int64_t N, int64_t C, const double* psg, const double* psgx, const double* invstd,
                              double* sg, double* sgxhat, T* gw, T* gb) {
  KDET_GRID_STRIDE(c, C) {
    double a0 = 0, a1 = 0;
    for (int64_t n = 0; n < N; ++n) {
      a0 += psg[n * C + c];
      a1 += psgx[n * C + c];
    }
    sg[c] = a0;
    sgxhat[c] = a1 * invstd[c];
    if (gw) gw[c] = static_cast<T>(sgxhat[c]);
    if (gb) gb[c] = static_cast<T>(a0);
  }
}

// dx = w·invstd·(g − Σg/M − x̂·Σ(g x̂)/M) with batch statistics, dx = g·w·invstd otherwise.
template <class T>
__global__ void bn_grad_input(int64_t n, int64_t C, int64_t S, double M, const T* g, const T* x, const T* w,
                              const double* mean, const double* invstd, const double* sg, const double* sgxhat,
                              bool batch_stats, T* gx) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t c = (i / S) % C;
    const double wi = (w ? static_cast<double>(w[c]) : 1.0) * invstd[c];
    if (!batch_stats) {
      gx[i] = g[i] * static_cast<T>(wi);
    } else {
      const double k1 = wi, k0 = -wi * sg[c] / M, kx = -wi * sgxhat[c] * invstd[c] / M;
      gx[i] = static_cast<T>(k1 * g[i] + k0 + kx * (static_cast<double>(x[i]) - mean[c]));
    }
  }
}

// Grouped norm statistics: mean[r] = s0[r] / M, or invstd[r] = 1 / sqrt(s1[r] / M + eps).
__global__ void row_mean(int64_t R, const double* s, double M, double* mean) {
  KDET_GRID_STRIDE(r, R) { mean[r] = s[r] / M; }
}
__global__ void row_invstd(int64_t R, const double* s, double M, double eps, double* invstd) {
  KDET_GRID_STRIDE(r, R) { invstd[r] = 1.0 / ::sqrt(s[r] / M + eps); }
}

template <class T>
__global__ void gn_apply(int64_t n, int64_t M, int64_t G, int64_t Cg, int64_t S, const T* x, const T* w, const T* b,
                         const double* mean, const double* invstd, T* y) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t r = i / M, j = i % M;
    const int64_t c = (r % G) * Cg + j / S;
    const double a = (w ? static_cast<double>(w[c]) : 1.0) * invstd[r];
    const double sh = (b ? static_cast<double>(b[c]) : 0.0) - mean[r] * a;
    y[i] = x[i] * static_cast<T>(a) + static_cast<T>(sh);
  }
}

// Per row: k0 = −is·Σ_k w_k psg / M, kx = −is³·Σ_k w_k psgx / M.
template <class T>
__global__ void gn_row_terms(int64_t R, int64_t G, int64_t Cg, double M, const double* psg, const double* psgx,
                             const T* w, const double* invstd, double* k0, double* kx) {
  KDET_GRID_STRIDE(r, R) {
    const int64_t c0 = (r % G) * Cg;
    double sdh = 0, sdhx = 0;
    for (int64_t k = 0; k < Cg; ++k) {
      const double wc = w ? static_cast<double>(w[c0 + k]) : 1.0;
      sdh += wc * psg[r * Cg + k];
      sdhx += wc * psgx[r * Cg + k];
    }
    const double is = invstd[r];
    k0[r] = -is * sdh / M;
    kx[r] = -is * is * is * sdhx / M;
  }
}

template <class T>
__global__ void gn_grad_input(int64_t n, int64_t M, int64_t G, int64_t Cg, int64_t S, const T* g, const T* x,
                              const T* w, const double* mean, const double* invstd, const double* k0, const double* kx,
                              T* gx) {
  KDET_GRID_STRIDE(i, n) {
    const int64_t r = i / M, j = i % M;
    const int64_t c = (r % G) * Cg + j / S;
    const double wi = (w ? static_cast<double>(w[c]) : 1.0) * invstd[r];
    gx[i] = static_cast<T>(wi * g[i] + k0[r] + kx[r] * (static_cast<double>(x[i]) - mean[r]));
  }
}

template <class T>
__global__ void gn_param_grads(int64_t C, int64_t N, int64_t G, int64_t Cg, const double* psg, const double* psgx,
                               const double* invstd, T* gw, T* gb) {
  KDET_GRID_STRIDE(c, C) {
    const int64_t grp = c / Cg, k = c % Cg;
    double a0 = 0, a1 = 0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t r = n * G + grp;
      a0 += psg[r * Cg + k];
      a1 += psgx[r * Cg + k] * invstd[r];
    }
    if (gw) gw[c] = static_cast<T>(a1);
    if (gb) gb[c] = static_cast<T>(a0);
  }
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

Tensor f64(int64_t n, Device d) { return Tensor::empty({n}, DType::F64, d); }

}  // namespace

Var batch_norm(const Var& xv, const Var& weight, const Var& bias, const Tensor& x, const Tensor& w, const Tensor& b,
               Tensor& running_mean, Tensor& running_var, bool training, bool track, double momentum, double eps,
               int64_t N, int64_t C, int64_t S, const Shape& param_shape) {
  const char* op = "batch_norm";
  Context& ctx = activate(x, op);
  const Device dev = x.device();
  const bool batch_stats = training || !track;
  const double M = static_cast<double>(N * S);
  Tensor mean = f64(C, dev), invstd = f64(C, dev);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), dev);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (batch_stats) {
      Tensor part = f64(N * C, dev);
      seg_sums<T>(ctx, op, 0, N * C, S, x.data<T>(), nullptr, nullptr, 1, 1, part.data<double>(), nullptr);
      chan_mean<<<grid_for(C), kThreads, 0, ctx.stream()>>>(N, C, part.data<double>(), M, mean.data<double>());
      check_launch(ctx, op);
      seg_sums<T>(ctx, op, 1, N * C, S, x.data<T>(), nullptr, mean.data<double>(), 1, C, part.data<double>(), nullptr);
      const bool update = training && track;
      if (update)
        KDET_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(), op,
                   ": running stats must be contiguous");
      bn_var<T><<<grid_for(C), kThreads, 0, ctx.stream()>>>(N, C, part.data<double>(), M, eps, mean.data<double>(),
                                                            invstd.data<double>(),
                                                            update ? running_mean.data<T>() : nullptr,
                                                            update ? running_var.data<T>() : nullptr, momentum);
      check_launch(ctx, op);
    } else {
      const Tensor rm = running_mean.contiguous(), rv = running_var.contiguous();
      bn_eval_stats<T><<<grid_for(C), kThreads, 0, ctx.stream()>>>(C, rm.data<T>(), rv.data<T>(), eps,
                                                                   mean.data<double>(), invstd.data<double>());
      check_launch(ctx, op);
    }
    const int64_t n = x.numel();
    if (n > 0) {
      bn_apply<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, C, S, x.data<T>(), ptr_or_null<T>(w),
                                                              ptr_or_null<T>(b), mean.data<double>(),
                                                              invstd.data<double>(), out.data<T>());
      check_launch(ctx, op);
    }
  });
  const bool need_x = (batch_stats && xv.requires_grad()) || weight.requires_grad();
  return record(op, out, {&xv, weight.defined() ? &weight : nullptr, bias.defined() ? &bias : nullptr},
                [x = need_x ? x : Tensor(), w, mean, invstd, N, C, S, batch_stats, param_shape](const Tensor& go,
                                                                                               Grads& gr) {
                  const char* op = "batch_norm_backward";
                  const Tensor g = go.contiguous();
                  Context& ctx = activate(g, op);
                  const Device dev = g.device();
                  const bool want_x = gr.wants(0), want_w = gr.wants(1), want_b = gr.wants(2);
                  const bool reduce = batch_stats || want_w || want_b;
                  Tensor gx, gw, gb;
                  if (want_w) gw = Tensor::empty({C}, g.dtype(), dev);
                  if (want_b) gb = Tensor::empty({C}, g.dtype(), dev);
                  if (want_x) gx = Tensor::empty(g.shape(), g.dtype(), dev);
                  const double M = static_cast<double>(N * S);
                  dispatch_float(g.dtype(), op, [&](auto tag) {
                    using T = decltype(tag);
                    Tensor sg = f64(C, dev), sgxhat = f64(C, dev);
                    if (reduce) {
                      Tensor psg = f64(N * C, dev), psgx = f64(N * C, dev);
                      seg_sums<T>(ctx, op, 2, N * C, S, g.data<T>(), ptr_or_null<T>(x), mean.data<double>(), 1, C,
                                  psg.data<double>(), psgx.data<double>());
                      bn_chan_grads<T><<<grid_for(C), kThreads, 0, ctx.stream()>>>(
                          N, C, psg.data<double>(), psgx.data<double>(), invstd.data<double>(), sg.data<double>(),
                          sgxhat.data<double>(), want_w ? gw.data<T>() : nullptr, want_b ? gb.data<T>() : nullptr);
                      check_launch(ctx, op);
                    }
                    const int64_t n = g.numel();
                    if (want_x && n > 0) {
                      bn_grad_input<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(
                          n, C, S, M, g.data<T>(), ptr_or_null<T>(x), ptr_or_null<T>(w), mean.data<double>(),
                          invstd.data<double>(), sg.data<double>(), sgxhat.data<double>(), batch_stats,
                          gx.data<T>());
                      check_launch(ctx, op);
                    }
                  });
                  if (want_x) gr.accumulate(0, gx);
                  if (want_w) gr.accumulate(1, gw.view(param_shape));
                  if (want_b) gr.accumulate(2, gb.view(param_shape));
                });
}

Var grouped_norm(const char* op, const Var& xv, const Var& weight, const Var& bias, const Tensor& x, const Tensor& w,
                 const Tensor& b, int64_t R, int64_t G, int64_t Cg, int64_t S, double eps, const Shape& param_shape) {
  Context& ctx = activate(x, op);
  const Device dev = x.device();
  const int64_t M = Cg * S;
  Tensor mean = f64(R, dev), invstd = f64(R, dev);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), dev);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    Tensor s = f64(R, dev);
    const double Md = static_cast<double>(M);
    seg_sums<T>(ctx, op, 0, R, M, x.data<T>(), nullptr, nullptr, 1, 1, s.data<double>(), nullptr);
    if (R > 0) {
      row_mean<<<grid_for(R), kThreads, 0, ctx.stream()>>>(R, s.data<double>(), Md, mean.data<double>());
      check_launch(ctx, op);
    }
    seg_sums<T>(ctx, op, 1, R, M, x.data<T>(), nullptr, mean.data<double>(), 1, R, s.data<double>(), nullptr);
    if (R > 0) {
      row_invstd<<<grid_for(R), kThreads, 0, ctx.stream()>>>(R, s.data<double>(), Md, eps, invstd.data<double>());
      check_launch(ctx, op);
    }
    const int64_t n = x.numel();
    if (n > 0) {
      gn_apply<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, M, G, Cg, S, x.data<T>(), ptr_or_null<T>(w),
                                                              ptr_or_null<T>(b), mean.data<double>(),
                                                              invstd.data<double>(), out.data<T>());
      check_launch(ctx, op);
    }
  });
  const bool need_x = xv.requires_grad() || weight.requires_grad();
  return record(op, out, {&xv, weight.defined() ? &weight : nullptr, bias.defined() ? &bias : nullptr},
                [op, x = need_x ? x : Tensor(), xshape = x.shape(), w, mean, invstd, R, G, Cg, S,
                 param_shape](const Tensor& go, Grads& gr) {
                  const Tensor g = go.contiguous();
                  Context& ctx = activate(g, op);
                  const Device dev = g.device();
                  const Tensor xx = x.defined() ? x : Tensor::zeros(xshape, g.dtype(), dev);
                  const int64_t M = Cg * S, C = G * Cg, N = R / G;
                  const bool want_x = gr.wants(0), want_w = gr.wants(1), want_b = gr.wants(2);
                  Tensor gx, gw, gb;
                  dispatch_float(g.dtype(), op, [&](auto tag) {
                    using T = decltype(tag);
                    Tensor psg = f64(R * Cg, dev), psgx = f64(R * Cg, dev);
                    seg_sums<T>(ctx, op, 2, R * Cg, S, g.data<T>(), xx.data<T>(), mean.data<double>(), Cg, R,
                                psg.data<double>(), psgx.data<double>());
                    if (want_x) {
                      gx = Tensor::empty(xshape, g.dtype(), dev);
                      Tensor k0 = f64(R, dev), kx = f64(R, dev);
                      if (R > 0) {
                        gn_row_terms<T><<<grid_for(R), kThreads, 0, ctx.stream()>>>(
                            R, G, Cg, static_cast<double>(M), psg.data<double>(), psgx.data<double>(),
                            ptr_or_null<T>(w), invstd.data<double>(), k0.data<double>(), kx.data<double>());
                        check_launch(ctx, op);
                      }
                      const int64_t n = g.numel();
                      if (n > 0) {
                        gn_grad_input<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(
                            n, M, G, Cg, S, g.data<T>(), xx.data<T>(), ptr_or_null<T>(w), mean.data<double>(),
                            invstd.data<double>(), k0.data<double>(), kx.data<double>(), gx.data<T>());
                        check_launch(ctx, op);
                      }
                    }
                    if (want_w || want_b) {
                      if (want_w) gw = Tensor::empty({C}, g.dtype(), dev);
                      if (want_b) gb = Tensor::empty({C}, g.dtype(), dev);
                      if (C > 0) {
                        gn_param_grads<T><<<grid_for(C), kThreads, 0, ctx.stream()>>>(
                            C, N, G, Cg, psg.data<double>(), psgx.data<double>(), invstd.data<double>(),
                            want_w ? gw.data<T>() : nullptr, want_b ? gb.data<T>() : nullptr);
                        check_launch(ctx, op);
                      }
                    }
                  });
                  if (want_x) gr.accumulate(0, gx);
                  if (want_w) gr.accumulate(1, gw.view(param_shape));
                  if (want_b) gr.accumulate(2, gb.view(param_shape));
                });
}

}  // namespace kdet::cuda
