// engine/ops/deform_conv_cpu.cpp — CPU deformable convolution kernels: deformable im2col + the packed GEMM.
//
// Per image n and chunk of output pixels [j0, j0+jn) (Og = O/groups, Cg = C/groups, KK = KH·KW):
//   table            per (deform group d, tap k, pixel p): the four corner indices into an input plane, the
//                    bilinear weights (0 for corners outside the map / samples outside (−1,H)×(−1,W)), the
//                    mask value, and for backward the derivatives of the weights w.r.t. h and w
//   forward          col (C·KK × jn) = mask · bilinear sample;  y[n,g] = W[g] · col[g]
//   backward weight  dW[g] += dy[n,g] · col[g]ᵀ  (images in order; per-thread partials added in thread order)
//   backward col     dcol[g] = W[g]ᵀ · dy[n,g]
//   d input          per input plane c (threads own planes): dx[c][corner] += dcol·mask·weight, taps and
//                    pixels in a fixed order (no atomics)
//   d offset / mask  per (d, k, pixel): Σ_c∈d (channel order) dcol · (∂sample/∂h, ∂sample/∂w, sample)
// Deterministic for a fixed thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <omp.h>

#include "engine/gemm.h"
#include "engine/ops/deform_conv.h"
#include "engine/ops/deform_conv_geom.h"

namespace kdet::cpu {

namespace {

using Geom = DeformGeom;

Geom geom(const Shape& xs, const Shape& ws, const Shape& ys, const DeformConvArgs& a) {
  return deform_geom(xs, ws, ys, a);
}

int64_t g_chunk_bytes = int64_t(1) << 20;

// Pixels per chunk: the column block (C·KK × jn) stays in a core's L2 while the GEMM packs it; a multiple of
// 256 (the GEMM's K block for the weight gradient) unless a test shrank the chunk size.
int64_t chunk_pixels(const Geom& g, size_t elem) {
  int64_t jn = g_chunk_bytes / std::max<int64_t>(1, g.C * g.KK * static_cast<int64_t>(elem));
  jn = g_chunk_bytes >= (int64_t(1) << 19) ? std::max<int64_t>(256, jn / 256 * 256) : std::max<int64_t>(1, jn);
  return std::min(jn, g.P);
}

// Threads for the whole op: one for small problems (a fork/join costs more than the work, and far more on a
// shared machine), else all that are available outside a parallel region.
int threads_for(const Geom& g) {
  if (omp_in_parallel() || g.N * g.C * g.KK * g.P < (int64_t(1) << 16)) return 1;
  return omp_get_max_threads();
}

// Sampling table of one chunk, structure of arrays over S = DG·KK·jn samples (index (d·KK + k)·jn + p).
template <class T>
struct Table {
  int64_t S = 0;
  bool grad = false;
  const int32_t* idx[4];
  int32_t* idx_w[4];
  T* wt[4];  // bilinear weights (mask not included)
  T* gh[4];  // ∂weight/∂h (backward only)
  T* gw[4];  // ∂weight/∂w (backward only)
  T* m;      // mask (1 for v1)

  static int64_t elems(int64_t S, bool grad) {  // in units of T
    const int64_t nt = (grad ? 12 : 4) + 1;
    return nt * S + (4 * S * int64_t(sizeof(int32_t)) + int64_t(sizeof(T)) - 1) / int64_t(sizeof(T));
  }
  void bind(T* buf, int64_t s, bool g) {
    S = s, grad = g;
    T* q = buf;
    for (int i = 0; i < 4; ++i) wt[i] = q, q += S;
    for (int i = 0; i < 4; ++i) gh[i] = g ? q : nullptr, q += g ? S : 0;
    for (int i = 0; i < 4; ++i) gw[i] = g ? q : nullptr, q += g ? S : 0;
    m = q, q += S;
    auto* ip = reinterpret_cast<int32_t*>(q);
    for (int i = 0; i < 4; ++i) idx[i] = idx_w[i] = ip + i * S;
  }
};

template <class T>
void build_table(Table<T>& t, const Geom& g, const T* off_n, const T* mask_n, int64_t j0, int64_t jn, bool par) {
  const int64_t S = g.DG * g.KK * jn;
  const T H = T(g.H), W = T(g.W);
#pragma omp parallel for schedule(static) if (par && S > 4096)
  for (int64_t e = 0; e < S; ++e) {
    const int64_t dk = e / jn, p = e % jn, d = dk / g.KK, k = dk % g.KK, i = k / g.KW, j = k % g.KW;
    const int64_t pix = j0 + p, ho = pix / g.Wo, wo = pix % g.Wo;
    const T oy = off_n[(d * 2 * g.KK + 2 * k) * g.P + pix], ox = off_n[(d * 2 * g.KK + 2 * k + 1) * g.P + pix];
    const T h = T(ho * g.sh - g.ph + i * g.dh) + oy, w = T(wo * g.sw - g.pw + j * g.dw) + ox;
    t.m[e] = mask_n ? mask_n[dk * g.P + pix] : T(1);
    if (!(h > T(-1) && h < H && w > T(-1) && w < W)) {
      // Outside the map: sample 0, derivatives 0. A NaN offset gives a NaN sample (and NaN gradients), so a
      // diverging offset branch shows up in the output instead of being silently read as "outside".
      const T fill = (h == h && w == w) ? T(0) : std::numeric_limits<T>::quiet_NaN();
      for (int c = 0; c < 4; ++c) {
        t.idx_w[c][e] = 0;
        t.wt[c][e] = fill;
        if (t.grad) t.gh[c][e] = t.gw[c][e] = fill;
      }
      continue;
    }
    const T fh = std::floor(h), fw = std::floor(w);
    const int64_t h0 = int64_t(fh), w0 = int64_t(fw);
    const T lh = h - fh, lw = w - fw, hh = T(1) - lh, hw = T(1) - lw;
    const bool r0 = h0 >= 0, r1 = h0 + 1 < g.H, c0 = w0 >= 0, c1 = w0 + 1 < g.W;
    const bool v[4] = {r0 && c0, r0 && c1, r1 && c0, r1 && c1};
    const int64_t ix[4] = {h0 * g.W + w0, h0 * g.W + w0 + 1, (h0 + 1) * g.W + w0, (h0 + 1) * g.W + w0 + 1};
    const T wv[4] = {hh * hw, hh * lw, lh * hw, lh * lw};
    const T dhv[4] = {-hw, -lw, hw, lw};
    const T dwv[4] = {-hh, hh, -lh, lh};
    for (int c = 0; c < 4; ++c) {
      t.idx_w[c][e] = v[c] ? int32_t(ix[c]) : 0;
      t.wt[c][e] = v[c] ? wv[c] : T(0);
      if (t.grad) {
        t.gh[c][e] = v[c] ? dhv[c] : T(0);
        t.gw[c][e] = v[c] ? dwv[c] : T(0);
      }
    }
  }
}

// col [C·KK, jn] of one image x [C, H, W] from the chunk's table.
template <class T>
void fill_columns(const Table<T>& t, const Geom& g, const T* x_n, T* col, int64_t jn, bool par) {
  const int64_t rows = g.C * g.KK;
#pragma omp parallel for schedule(static) if (par && rows * jn > (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / g.KK, k = r % g.KK, base = ((c / g.Cd) * g.KK + k) * jn;
    const T* xc = x_n + c * g.HW;
    const int32_t *i0 = t.idx[0] + base, *i1 = t.idx[1] + base, *i2 = t.idx[2] + base, *i3 = t.idx[3] + base;
    const T *w0 = t.wt[0] + base, *w1 = t.wt[1] + base, *w2 = t.wt[2] + base, *w3 = t.wt[3] + base;
    const T* m = t.m + base;
    T* dst = col + r * jn;
#pragma omp simd
    for (int64_t p = 0; p < jn; ++p)
      dst[p] = m[p] * (w0[p] * xc[i0[p]] + w1[p] * xc[i1[p]] + w2[p] * xc[i2[p]] + w3[p] * xc[i3[p]]);
  }
}

// dx_n [C, H, W] += scatter of dcol [C·KK, jn]; threads own input planes.
template <class T>
void scatter_input_grad(const Table<T>& t, const Geom& g, const T* dcol, T* dx_n, int64_t jn, bool par) {
#pragma omp parallel for schedule(static) if (par && g.C * g.KK * jn > (1 << 14))
  for (int64_t c = 0; c < g.C; ++c) {
    T* xc = dx_n + c * g.HW;
    for (int64_t k = 0; k < g.KK; ++k) {
      const int64_t base = ((c / g.Cd) * g.KK + k) * jn;
      const int32_t *i0 = t.idx[0] + base, *i1 = t.idx[1] + base, *i2 = t.idx[2] + base, *i3 = t.idx[3] + base;
      const T *w0 = t.wt[0] + base, *w1 = t.wt[1] + base, *w2 = t.wt[2] + base, *w3 = t.wt[3] + base;
      const T* m = t.m + base;
      const T* dc = dcol + (c * g.KK + k) * jn;
      for (int64_t p = 0; p < jn; ++p) {
        const T v = dc[p] * m[p];
        xc[i0[p]] += v * w0[p];
        xc[i1[p]] += v * w1[p];
        xc[i2[p]] += v * w2[p];
        xc[i3[p]] += v * w3[p];
      }
    }
  }
}

// Offset and mask gradients of the chunk: goff_n [2·DG·KK, P], gmask_n [DG·KK, P] (either may be null).
template <class T>
void offset_mask_grad(const Table<T>& t, const Geom& g, const T* x_n, const T* dcol, T* goff_n, T* gmask_n,
                      int64_t j0, int64_t jn, bool par) {
  constexpr int64_t B = 64;
  const int64_t nb = (jn + B - 1) / B, items = g.DG * g.KK * nb;
#pragma omp parallel for schedule(static) if (par && g.C * g.KK * jn > (1 << 14))
  for (int64_t it = 0; it < items; ++it) {
    const int64_t dk = it / nb, p0 = (it % nb) * B, pn = std::min(B, jn - p0), d = dk / g.KK, k = dk % g.KK;
    const int64_t base = dk * jn + p0;
    const int32_t *i0 = t.idx[0] + base, *i1 = t.idx[1] + base, *i2 = t.idx[2] + base, *i3 = t.idx[3] + base;
    const T *w0 = t.wt[0] + base, *w1 = t.wt[1] + base, *w2 = t.wt[2] + base, *w3 = t.wt[3] + base;
    const T *h0 = t.gh[0] + base, *h1 = t.gh[1] + base, *h2 = t.gh[2] + base, *h3 = t.gh[3] + base;
    const T *x0 = t.gw[0] + base, *x1 = t.gw[1] + base, *x2 = t.gw[2] + base, *x3 = t.gw[3] + base;
    T ay[B], ax[B], am[B];
    std::fill(ay, ay + pn, T(0));
    std::fill(ax, ax + pn, T(0));
    std::fill(am, am + pn, T(0));
    for (int64_t c = d * g.Cd; c < (d + 1) * g.Cd; ++c) {
      const T* xc = x_n + c * g.HW;
      const T* dc = dcol + (c * g.KK + k) * jn + p0;
#pragma omp simd
      for (int64_t p = 0; p < pn; ++p) {
        const T v0 = xc[i0[p]], v1 = xc[i1[p]], v2 = xc[i2[p]], v3 = xc[i3[p]];
        const T gv = dc[p];
        ay[p] += gv * (h0[p] * v0 + h1[p] * v1 + h2[p] * v2 + h3[p] * v3);
        ax[p] += gv * (x0[p] * v0 + x1[p] * v1 + x2[p] * v2 + x3[p] * v3);
        am[p] += gv * (w0[p] * v0 + w1[p] * v1 + w2[p] * v2 + w3[p] * v3);
      }
    }
    const T* m = t.m + base;
    if (goff_n) {
      T* oy = goff_n + (d * 2 * g.KK + 2 * k) * g.P + j0 + p0;
      T* ox = oy + g.P;
      for (int64_t p = 0; p < pn; ++p) oy[p] = m[p] * ay[p], ox[p] = m[p] * ax[p];
    }
    if (gmask_n) std::copy(am, am + pn, gmask_n + dk * g.P + j0 + p0);
  }
}

}  // namespace

void set_deform_conv2d_chunk_bytes(int64_t bytes) { g_chunk_bytes = bytes > 0 ? bytes : int64_t(1) << 20; }

template <class T>
void deform_conv2d_forward(const Tensor& x, const Tensor& offset, const Tensor& mask, const Tensor& w,
                           const Tensor& b, Tensor& y, const DeformConvArgs& a) {
  const Geom g = geom(x.shape(), w.shape(), y.shape(), a);
  const T* px = x.data<T>();
  const T* po = offset.data<T>();
  const T* pm = mask.defined() ? mask.data<T>() : nullptr;
  const T* pw = w.data<T>();
  const T* pb = b.defined() ? b.data<T>() : nullptr;
  T* py = y.data<T>();
  const int64_t K = g.Cg * g.KK;
  const int64_t CH = chunk_pixels(g, sizeof(T)), nch = (g.P + CH - 1) / CH, items = g.N * nch;
  const int nth = threads_for(g);
  const bool split = nth > 1 && (items % nth == 0 || items >= 4 * nth);
  const bool par = nth > 1 && !split;  // threads inside the steps instead
  const int nbuf = split ? nth : 1;
  const int64_t col_sz = g.C * g.KK * CH, tab_sz = Table<T>::elems(g.DG * g.KK * CH, false);
  Tensor scratch = Tensor::empty({nbuf * (col_sz + tab_sz)}, x.dtype());
  auto item = [&](int64_t it, T* buf) {
    const int64_t n = it / nch, j0 = (it % nch) * CH, jn = std::min(CH, g.P - j0);
    T* col = buf;
    Table<T> t;
    t.bind(buf + col_sz, g.DG * g.KK * jn, false);
    build_table(t, g, po + n * 2 * g.DG * g.KK * g.P, pm ? pm + n * g.DG * g.KK * g.P : nullptr, j0, jn, par);
    fill_columns(t, g, px + n * g.C * g.HW, col, jn, par);
    T* yn = py + n * g.O * g.P + j0;
    if (pb)
      for (int64_t o = 0; o < g.O; ++o) std::fill(yn + o * g.P, yn + o * g.P + jn, pb[o]);
    for (int64_t gi = 0; gi < g.G; ++gi)
      gemm(false, false, g.Og, jn, K, T(1), pw + gi * g.Og * K, K, col + gi * K * jn, jn, pb ? T(1) : T(0),
           yn + gi * g.Og * g.P, g.P);
  };
  T* sb = scratch.data<T>();
  if (split) {
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int64_t it = 0; it < items; ++it) item(it, sb + omp_get_thread_num() * (col_sz + tab_sz));
  } else {
    for (int64_t it = 0; it < items; ++it) item(it, sb);
  }
}

template <class T>
void deform_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& offset, const Tensor& mask,
                            const Tensor& w, Tensor& gx, Tensor& goffset, Tensor& gmask, Tensor& gw,
                            const DeformConvArgs& a) {
  const Geom g = geom(x.shape(), w.shape(), gy.shape(), a);
  const T* pgy = gy.data<T>();
  const T* px = x.data<T>();
  const T* po = offset.data<T>();
  const T* pm = mask.defined() ? mask.data<T>() : nullptr;
  const T* pw = w.data<T>();
  T* pgx = gx.defined() ? gx.data<T>() : nullptr;
  T* pgo = goffset.defined() ? goffset.data<T>() : nullptr;
  T* pgm = gmask.defined() ? gmask.data<T>() : nullptr;
  T* pgw = gw.defined() ? gw.data<T>() : nullptr;
  const bool need_col = pgw != nullptr, need_dcol = pgx || pgo || pgm, need_grad_tab = pgo || pgm;
  const int64_t K = g.Cg * g.KK, wsz = w.numel();
  const int64_t CH = chunk_pixels(g, sizeof(T));
  const int nth = threads_for(g);
  // The input gradient of an image collects all its chunks, so threads split whole images.
  const bool split = nth > 1 && (g.N % nth == 0 || g.N >= 4 * nth);
  const bool par = nth > 1 && !split;  // threads inside the steps instead
  const int nbuf = split ? nth : 1;
  const int64_t col_sz = g.C * g.KK * CH;
  const int64_t per = (need_col ? col_sz : 0) + (need_dcol ? col_sz : 0) +
                      Table<T>::elems(g.DG * g.KK * CH, need_grad_tab);
  Tensor scratch = Tensor::empty({nbuf * per}, x.dtype());
  Tensor part;
  if (split && need_col) part = Tensor::empty({(nbuf - 1) * wsz}, x.dtype());  // thread t > 0 sums here
  const int64_t off_img = 2 * g.DG * g.KK * g.P, mask_img = g.DG * g.KK * g.P;

  // Images [n0, n1) in order; the weight gradient goes to acc (overwritten).
  auto run = [&](int64_t n0, int64_t n1, T* buf, T* acc) {
    T* col = need_col ? buf : nullptr;
    T* dcol = need_dcol ? buf + (need_col ? col_sz : 0) : nullptr;
    T* tab = buf + (need_col ? col_sz : 0) + (need_dcol ? col_sz : 0);
    if (acc && n0 >= n1) std::fill(acc, acc + wsz, T(0));
    for (int64_t n = n0; n < n1; ++n) {
      const T* xn = px + n * g.C * g.HW;
      const T* gyn = pgy + n * g.O * g.P;
      T* gxn = pgx ? pgx + n * g.C * g.HW : nullptr;
      if (gxn) {
#pragma omp parallel for schedule(static) if (par && g.C * g.HW > (1 << 16))
        for (int64_t c = 0; c < g.C; ++c) std::fill(gxn + c * g.HW, gxn + (c + 1) * g.HW, T(0));
      }
      for (int64_t j0 = 0; j0 < g.P; j0 += CH) {
        const int64_t jn = std::min(CH, g.P - j0);
        Table<T> t;
        t.bind(tab, g.DG * g.KK * jn, need_grad_tab);
        build_table(t, g, po + n * off_img, pm ? pm + n * mask_img : nullptr, j0, jn, par);
        if (need_col) {
          fill_columns(t, g, xn, col, jn, par);
          const T beta = (n == n0 && j0 == 0) ? T(0) : T(1);
          for (int64_t gi = 0; gi < g.G; ++gi)
            gemm(false, true, g.Og, K, jn, T(1), gyn + gi * g.Og * g.P + j0, g.P, col + gi * K * jn, jn, beta,
                 acc + gi * g.Og * K, K);
        }
        if (need_dcol) {
          for (int64_t gi = 0; gi < g.G; ++gi)
            gemm(true, false, K, jn, g.Og, T(1), pw + gi * g.Og * K, K, gyn + gi * g.Og * g.P + j0, g.P, T(0),
                 dcol + gi * K * jn, jn);
          if (gxn) scatter_input_grad(t, g, dcol, gxn, jn, par);
          if (pgo || pgm)
            offset_mask_grad(t, g, xn, dcol, pgo ? pgo + n * off_img : nullptr, pgm ? pgm + n * mask_img : nullptr,
                             j0, jn, par);
        }
      }
    }
  };
  T* sb = scratch.data<T>();
  if (!split) {
    run(0, g.N, sb, pgw);
    return;
  }
#pragma omp parallel num_threads(nth)
  {
    const int t = omp_get_thread_num();
    const int64_t n0 = g.N * t / nth, n1 = g.N * (t + 1) / nth;
    run(n0, n1, sb + t * per, !need_col ? nullptr : t == 0 ? pgw : part.data<T>() + (t - 1) * wsz);
    if (need_col) {
#pragma omp barrier
      const T* pp = part.data<T>();
#pragma omp for schedule(static)
      for (int64_t i = 0; i < wsz; ++i) {  // dW = thread 0's sum + partials of threads 1.. in order
        T s = pgw[i];
        for (int u = 1; u < nth; ++u) s += pp[(u - 1) * wsz + i];
        pgw[i] = s;
      }
    }
  }
}

#define KDET_DCN_INST(T)                                                                                      \
  template void deform_conv2d_forward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,           \
                                         const Tensor&, Tensor&, const DeformConvArgs&);                       \
  template void deform_conv2d_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,          \
                                          const Tensor&, Tensor&, Tensor&, Tensor&, Tensor&, const DeformConvArgs&);
KDET_DCN_INST(float)
KDET_DCN_INST(double)
#undef KDET_DCN_INST

}  // namespace kdet::cpu
