// engine/ops/conv2d_cpu.cpp — CPU conv2d kernels: im2col / col2im + the packed GEMM (engine/gemm.h).
//
// Per image n and group g (Og = O/groups output channels, Cg = C/groups input channels, KK = KH·KW,
// P = Ho·Wo output pixels):
//   forward         y[n,g]  (Og × P)    = W[g] (Og × Cg·KK) · col[g] (Cg·KK × P)
//   backward input  dcol[g] (Cg·KK × P) = W[g]ᵀ · dy[n,g]  ; dx[n] = col2im(dcol)
//   backward weight dW[g]  (Og × Cg·KK) += dy[n,g] · col[g]ᵀ  (n in order: deterministic)
// A 1×1 stride-1 unpadded conv is a plain GEMM on x (col == x[n]). Scratch comes from Tensor::empty
// (the caching allocator), so repeated calls do not page-fault fresh buffers.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include <omp.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "engine/gemm.h"
#include "engine/ops/conv2d.h"
#include "engine/ops/conv2d_winograd.h"

namespace kdet::cpu {

namespace {

struct Geom {
  int64_t N, C, H, W, O, KH, KW, Ho, Wo, G, Cg, Og, KK, P, HW;
  bool direct;  // 1×1, stride 1, no padding: col == x
};

Geom geom(const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dArgs& a) {
  Geom g;
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  g.O = ws[0], g.KH = ws[2], g.KW = ws[3];
  g.Ho = ys[2], g.Wo = ys[3];
  g.G = a.groups, g.Cg = g.C / g.G, g.Og = g.O / g.G;
  g.KK = g.KH * g.KW, g.P = g.Ho * g.Wo, g.HW = g.H * g.W;
  g.direct = g.KH == 1 && g.KW == 1 && a.stride_h == 1 && a.stride_w == 1 && a.pad_h == 0 && a.pad_w == 0;
  return g;
}

// [lo, hi) of output positions o with 0 <= o*s - p + k*d < L.
inline void valid_range(int64_t L, int64_t O, int64_t s, int64_t p, int64_t kd, int64_t& lo, int64_t& hi) {
  // o*s >= p - kd  and  o*s <= L - 1 + p - kd
  const int64_t a = p - kd, b = L - 1 + p - kd;
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  hi = b < 0 ? 0 : b / s + 1;
  lo = std::min(lo, O);
  hi = std::max(lo, std::min(hi, O));
}

// Output-pixel chunk [j0, j0+jn) of im2col for one image x [C, H, W]: col [C·KK, jn] (row stride jn).
// Row r = (c, kh, kw) of im2col for output pixels [j0, j0+jn) of one image: dst[0, jn).
template <class T>
inline void im2col_row(const T* x, int64_t r, T* dst_row, int64_t j0, int64_t jn, const Geom& g, const Conv2dArgs& a) {
  const int64_t j1 = j0 + jn;
  {
    const int64_t c = r / g.KK, kh = (r / g.KW) % g.KH, kw = r % g.KW;
    const T* xc = x + c * g.HW;
    T* dst = dst_row - j0;  // dst[p] for p in [j0, j1)
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    valid_range(g.H, g.Ho, a.stride_h, a.pad_h, kh * a.dilation_h, oh_lo, oh_hi);
    valid_range(g.W, g.Wo, a.stride_w, a.pad_w, kw * a.dilation_w, ow_lo, ow_hi);
    for (int64_t oh = j0 / g.Wo; oh * g.Wo < j1; ++oh) {
      const int64_t pa = std::max(j0, oh * g.Wo), pb = std::min(j1, (oh + 1) * g.Wo);  // pixels of this row
      T* d = dst + oh * g.Wo;  // d[ow]
      const int64_t a0 = pa - oh * g.Wo, a1 = pb - oh * g.Wo;
      if (oh < oh_lo || oh >= oh_hi) {
        std::fill(d + a0, d + a1, T(0));
        continue;
      }
      const T* src = xc + (oh * a.stride_h - a.pad_h + kh * a.dilation_h) * g.W - a.pad_w + kw * a.dilation_w;
      const int64_t lo = std::clamp(ow_lo, a0, a1), hi = std::clamp(ow_hi, lo, a1);
      for (int64_t ow = a0; ow < lo; ++ow) d[ow] = T(0);
      if (a.stride_w == 1) {
        if (hi > lo) std::memcpy(d + lo, src + lo, (hi - lo) * sizeof(T));
      } else {
        const int64_t s = a.stride_w;
        int64_t ow = lo;
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float>) {
          if (s == 2) {  // even elements of two vectors; the last one read is src[2*(hi-1)-1]: in bounds
            const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            for (; ow + 16 < hi; ow += 16) {
              const float* q = src + 2 * ow;
              _mm512_storeu_ps(d + ow, _mm512_permutex2var_ps(_mm512_loadu_ps(q), even, _mm512_loadu_ps(q + 16)));
            }
          }
        }
#endif
        for (; ow < hi; ++ow) d[ow] = src[ow * s];
      }
      for (int64_t ow = hi; ow < a1; ++ow) d[ow] = T(0);
    }
  }
}

// Output-pixel chunk [j0, j0+jn) of im2col for one image x [C, H, W]: col [C·KK, jn] (row stride jn).
template <class T>
void im2col(const T* x, T* col, int64_t j0, int64_t jn, const Geom& g, const Conv2dArgs& a) {
  const int64_t rows = g.C * g.KK;
#pragma omp parallel for schedule(static) if (rows * jn > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) im2col_row(x, r, col + r * jn, j0, jn, g, a);
}

// The GEMM's B packer straight from the image (no column buffer): im2col rows [k0, k0+kc) of group gi,
// pixels [j0, j0+nc), as NR-column panels (sgemm_packed); tmp holds nc floats.
void pack_im2col(const float* x, int64_t gi, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* dst, float* tmp,
                 const Geom& g, const Conv2dArgs& a) {
  const int64_t NR = sgemm_nr(), K = g.Cg * g.KK;
  for (int64_t r = 0; r < kc; ++r) {
    im2col_row(x, gi * K + k0 + r, tmp, j0, nc, g, a);
    for (int64_t p = 0; p < nc; p += NR) {
      const int64_t w = std::min(NR, nc - p);
      float* d = dst + p * kc + r * NR;
      std::memcpy(d, tmp + p, w * sizeof(float));
      std::fill(d + w, d + NR, 0.f);
    }
  }
}

// dx [C, H, W] += col2im of the chunk col [C·KK, jn] (pixels [j0, j0+jn)); threads own channels and add
// the taps in a fixed order, so the result is deterministic.
template <class T>
void col2im_add(const T* col, T* dx, int64_t j0, int64_t jn, const Geom& g, const Conv2dArgs& a) {
  const int64_t j1 = j0 + jn;
#pragma omp parallel for schedule(static) if (g.C * g.KK * jn > (1 << 15))
  for (int64_t c = 0; c < g.C; ++c) {
    T* xc = dx + c * g.HW;
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const T* src = col + ((c * g.KH + kh) * g.KW + kw) * jn - j0;
        int64_t oh_lo, oh_hi, ow_lo, ow_hi;
        valid_range(g.H, g.Ho, a.stride_h, a.pad_h, kh * a.dilation_h, oh_lo, oh_hi);
        valid_range(g.W, g.Wo, a.stride_w, a.pad_w, kw * a.dilation_w, ow_lo, ow_hi);
        const int64_t oh_a = std::max(oh_lo, j0 / g.Wo);
        for (int64_t oh = oh_a; oh < oh_hi && oh * g.Wo < j1; ++oh) {
          const int64_t a0 = std::max(j0, oh * g.Wo) - oh * g.Wo, a1 = std::min(j1, (oh + 1) * g.Wo) - oh * g.Wo;
          const int64_t lo = std::clamp(ow_lo, a0, a1), hi = std::clamp(ow_hi, lo, a1);
          const T* s = src + oh * g.Wo;
          T* d = xc + (oh * a.stride_h - a.pad_h + kh * a.dilation_h) * g.W - a.pad_w + kw * a.dilation_w;
          if (a.stride_w == 1) {
#pragma omp simd
            for (int64_t ow = lo; ow < hi; ++ow) d[ow] += s[ow];
          } else {
            const int64_t st = a.stride_w;
            for (int64_t ow = lo; ow < hi; ++ow) d[ow * st] += s[ow];
          }
        }
      }
  }
}

// Pixels per im2col chunk: the chunk (C·KK × jn) is sized to stay in a core's L2 while the GEMM packs
// it, instead of streaming a whole-image col matrix through DRAM. A multiple of 256 (the GEMM's K block
// for the weight gradient, and of every micro-kernel width).
int64_t g_chunk_bytes = int64_t(1) << 20;

int64_t chunk_pixels(const Geom& g, size_t elem) {
  if (g.direct) return std::min<int64_t>(g.P, 256);
  int64_t jn = g_chunk_bytes / std::max<int64_t>(1, g.C * g.KK * static_cast<int64_t>(elem));
  jn = g_chunk_bytes >= (int64_t(1) << 19) ? std::max<int64_t>(256, jn / 256 * 256) : std::max<int64_t>(1, jn);
  return std::min(jn, g.P);
}

int threads_available() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

// Work is split into items (image n, pixel chunk). With enough items, each thread takes a contiguous run
// of whole items (its own im2col buffer, single-threaded GEMMs: one fork/join per call and the chunk
// stays in that core's cache). Otherwise the items run in order with threads inside im2col and GEMM.
bool per_thread_items(int64_t items, int nth) { return nth > 1 && (items % nth == 0 || items >= 4 * nth); }

// f32 with one thread per work item: the weights (op(W) per group) are packed once per call into the
// GEMM's A-panel layout (sgemm_pack_a) instead of once per pixel chunk, and each item runs
// sgemm_packed on its own packing buffer. Bit-identical to the sgemm path (same blocking and K order).
struct PackedW {
  Tensor buf;
  int64_t per = 0;  // floats per group
  const float* group(int64_t gi) const { return buf.data<float>() + gi * per; }
};

PackedW pack_weights(bool trans, const float* w, int64_t G, int64_t Og, int64_t K) {
  PackedW p;
  const int64_t M = trans ? K : Og, KK = trans ? Og : K;
  p.per = (sgemm_packed_a_size(M, KK) + 15) / 16 * 16;
  p.buf = Tensor::empty({G * p.per}, DType::F32);
  float* d = p.buf.data<float>();
#pragma omp parallel for schedule(static) if (G > 1)
  for (int64_t gi = 0; gi < G; ++gi) sgemm_pack_a(trans, M, KK, w + gi * Og * K, K, d + gi * p.per);
  return p;
}

// Floats of one thread's B packing buffer for chunks of at most `cols` columns.
int64_t bufb_floats(int64_t cols) {
  const int64_t nr = sgemm_nr();
  return (std::min(sgemm_nc(), cols) + nr - 1) / nr * nr * 256;
}

}  // namespace

void set_conv2d_chunk_bytes(int64_t bytes) { g_chunk_bytes = bytes > 0 ? bytes : int64_t(1) << 20; }

template <class T>
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const Conv2dArgs& a) {
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_applies(x.shape(), w.shape(), a)) return winograd_forward(x, w, b, y);
  }
  const Geom g = geom(x.shape(), w.shape(), y.shape(), a);
  const T* px = x.data<T>();
  const T* pw = w.data<T>();
  T* py = y.data<T>();
  const int64_t K = g.Cg * g.KK;
  const int64_t CH = chunk_pixels(g, sizeof(T)), nch = (g.P + CH - 1) / CH, items = g.N * nch;
  const int nth = threads_available();
  const bool split = per_thread_items(items, nth);
  const int nbuf = split ? nth : 1;
  // The f32 packed path packs im2col rows straight into the GEMM panels: one row (CH floats) of scratch.
  const bool packed = std::is_same_v<T, float> && (split || nth == 1);
  const int64_t col_sz = packed ? CH : g.C * g.KK * CH;
  Tensor col;
  if (!g.direct) col = Tensor::empty({nbuf * col_sz}, x.dtype());
  const T* pb = b.defined() ? b.data<T>() : nullptr;
  if constexpr (std::is_same_v<T, float>) {
    if (packed) {
      const PackedW pw_p = pack_weights(false, pw, g.G, g.Og, K);
      const int64_t bsz = bufb_floats(CH);
      Tensor bb = Tensor::empty({nbuf * bsz}, DType::F32);
      T* cb = g.direct ? nullptr : col.data<T>();
      auto pitem = [&](int64_t it, T* cbuf, float* bufB) {
        const int64_t n = it / nch, j0 = (it % nch) * CH, jn = std::min(CH, g.P - j0);
        const T* xn = px + n * g.C * g.HW;
        T* yn = py + n * g.O * g.P + j0;
        if (pb)
          for (int64_t o = 0; o < g.O; ++o) std::fill(yn + o * g.P, yn + o * g.P + jn, pb[o]);
        for (int64_t gi = 0; gi < g.G; ++gi) {
          const float* sg = xn + j0 + gi * K * g.P;  // 1×1: op(B) is x itself
          sgemm_packed(
              g.Og, jn, K, 1.f, pw_p.group(gi),
              [&](int64_t k0, int64_t kc, int64_t c0, int64_t nc, float* dst) {
                if (g.direct)
                  sgemm_pack_b(false, sg + k0 * g.P + c0, g.P, kc, nc, dst);
                else
                  pack_im2col(xn, gi, k0, kc, j0 + c0, nc, dst, cbuf, g, a);
              },
              pb ? 1.f : 0.f, yn + gi * g.Og * g.P, g.P, bufB);
        }
      };
      if (split) {
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int64_t it = 0; it < items; ++it) {
          const int t = omp_get_thread_num();
          pitem(it, cb ? cb + t * col_sz : nullptr, bb.data<float>() + t * bsz);
        }
      } else {
        for (int64_t it = 0; it < items; ++it) pitem(it, cb, bb.data<float>());
      }
      return;
    }
  }
  auto item = [&](int64_t it, T* cbuf) {
    const int64_t n = it / nch, j0 = (it % nch) * CH, jn = std::min(CH, g.P - j0);
    const T* xn = px + n * g.C * g.HW;
    T* yn = py + n * g.O * g.P + j0;
    if (pb)
      for (int64_t o = 0; o < g.O; ++o) std::fill(yn + o * g.P, yn + o * g.P + jn, pb[o]);
    const T* src = xn + j0;
    int64_t ld = g.P;
    if (!g.direct) {
      im2col<T>(xn, cbuf, j0, jn, g, a);
      src = cbuf;
      ld = jn;
    }
    for (int64_t gi = 0; gi < g.G; ++gi)
      gemm(false, false, g.Og, jn, K, T(1), pw + gi * g.Og * K, K, src + gi * K * ld, ld, pb ? T(1) : T(0),
           yn + gi * g.Og * g.P, g.P);
  };
  T* cb = g.direct ? nullptr : col.data<T>();
  if (split) {
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int64_t it = 0; it < items; ++it) item(it, cb ? cb + omp_get_thread_num() * col_sz : nullptr);
  } else {
    for (int64_t it = 0; it < items; ++it) item(it, cb);
  }
}

template <class T>
void conv2d_backward_input(const Tensor& gy, const Tensor& w, Tensor& gx, const Conv2dArgs& a) {
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_applies(gx.shape(), w.shape(), a)) return winograd_backward_input(gy, w, gx);
  }
  const Geom g = geom(gx.shape(), w.shape(), gy.shape(), a);
  const T* pgy = gy.data<T>();
  const T* pw = w.data<T>();
  T* pgx = gx.data<T>();
  const int64_t K = g.Cg * g.KK;
  const int64_t CH = chunk_pixels(g, sizeof(T));
  const int nth = threads_available();
  // col2im of neighbouring pixel chunks overlaps in dx, so threads split whole images here.
  const bool split = nth > 1 && g.N % nth == 0;
  const int nbuf = split ? nth : 1;
  const int64_t col_sz = g.C * g.KK * CH;
  Tensor col;
  if (!g.direct) col = Tensor::empty({nbuf * col_sz}, gy.dtype());
  if constexpr (std::is_same_v<T, float>) {
    if (!g.direct && (split || nth == 1)) {
      const PackedW pw_p = pack_weights(true, pw, g.G, g.Og, K);
      const int64_t bsz = bufb_floats(CH);
      Tensor bb = Tensor::empty({nbuf * bsz}, DType::F32);
      auto pimage = [&](int64_t n, T* cbuf, float* bufB) {
        const T* gyn = pgy + n * g.O * g.P;
        T* gxn = pgx + n * g.C * g.HW;
        std::fill(gxn, gxn + g.C * g.HW, T(0));
        for (int64_t j0 = 0; j0 < g.P; j0 += CH) {
          const int64_t jn = std::min(CH, g.P - j0);
          for (int64_t gi = 0; gi < g.G; ++gi) {
            const float* sg = gyn + gi * g.Og * g.P + j0;
            sgemm_packed(
                K, jn, g.Og, 1.f, pw_p.group(gi),
                [&](int64_t k0, int64_t kc, int64_t c0, int64_t nc, float* dst) {
                  sgemm_pack_b(false, sg + k0 * g.P + c0, g.P, kc, nc, dst);
                },
                0.f, cbuf + gi * K * jn, jn, bufB);
          }
          col2im_add<T>(cbuf, gxn, j0, jn, g, a);
        }
      };
      T* cb = col.data<T>();
      if (split) {
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int64_t n = 0; n < g.N; ++n) {
          const int t = omp_get_thread_num();
          pimage(n, cb + t * col_sz, bb.data<float>() + t * bsz);
        }
      } else {
        for (int64_t n = 0; n < g.N; ++n) pimage(n, cb, bb.data<float>());
      }
      return;
    }
  }
  auto image = [&](int64_t n, T* cbuf) {
    const T* gyn = pgy + n * g.O * g.P;
    T* gxn = pgx + n * g.C * g.HW;
    if (g.direct) {
      for (int64_t gi = 0; gi < g.G; ++gi)
        gemm(true, false, K, g.P, g.Og, T(1), pw + gi * g.Og * K, K, gyn + gi * g.Og * g.P, g.P, T(0),
             gxn + gi * K * g.P, g.P);
      return;
    }
#pragma omp parallel for schedule(static) if (g.C * g.HW > (1 << 16))
    for (int64_t c = 0; c < g.C; ++c) std::fill(gxn + c * g.HW, gxn + (c + 1) * g.HW, T(0));
    for (int64_t j0 = 0; j0 < g.P; j0 += CH) {
      const int64_t jn = std::min(CH, g.P - j0);
      for (int64_t gi = 0; gi < g.G; ++gi)
        gemm(true, false, K, jn, g.Og, T(1), pw + gi * g.Og * K, K, gyn + gi * g.Og * g.P + j0, g.P, T(0),
             cbuf + gi * K * jn, jn);
      col2im_add<T>(cbuf, gxn, j0, jn, g, a);
    }
  };
  T* cb = g.direct ? nullptr : col.data<T>();
  if (split) {
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int64_t n = 0; n < g.N; ++n) image(n, cb ? cb + omp_get_thread_num() * col_sz : nullptr);
  } else {
    for (int64_t n = 0; n < g.N; ++n) image(n, cb);
  }
}

template <class T>
void conv2d_backward_weight(const Tensor& gy, const Tensor& x, Tensor& gw, const Conv2dArgs& a) {
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_applies(x.shape(), gw.shape(), a, true)) return winograd_backward_weight(gy, x, gw);
  }
  const Geom g = geom(x.shape(), gw.shape(), gy.shape(), a);
  const T* pgy = gy.data<T>();
  const T* px = x.data<T>();
  const int64_t K = g.Cg * g.KK, wsz = gw.numel();
  const int64_t CH = chunk_pixels(g, sizeof(T)), nch = (g.P + CH - 1) / CH, items = g.N * nch;
  const int nth = threads_available();
  const bool split = per_thread_items(items, nth);
  const int nbuf = split ? nth : 1;
  const int64_t col_sz = g.C * g.KK * CH;
  Tensor col, part;
  if (!g.direct) col = Tensor::empty({nbuf * col_sz}, x.dtype());
  if (split) part = Tensor::empty({(nbuf - 1) * wsz}, x.dtype());  // thread t > 0 accumulates here
  // Accumulates items [i0, i1) (in order) into acc.
  auto run = [&](int64_t i0, int64_t i1, T* cbuf, T* acc) {
    if (i0 >= i1) std::fill(acc, acc + wsz, T(0));
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t n = it / nch, j0 = (it % nch) * CH, jn = std::min(CH, g.P - j0);
      const T* xn = px + n * g.C * g.HW;
      const T* gyn = pgy + n * g.O * g.P;
      const T* src = xn + j0;
      int64_t ld = g.P;
      if (!g.direct) {
        im2col<T>(xn, cbuf, j0, jn, g, a);
        src = cbuf;
        ld = jn;
      }
      for (int64_t gi = 0; gi < g.G; ++gi)
        gemm(false, true, g.Og, K, jn, T(1), gyn + gi * g.Og * g.P + j0, g.P, src + gi * K * ld, ld,
             it == i0 ? T(0) : T(1), acc + gi * g.Og * K, K);
    }
  };
  T* cb = g.direct ? nullptr : col.data<T>();
  T* out = gw.data<T>();
  if (!split) {
    run(0, items, cb, out);
    return;
  }
#pragma omp parallel num_threads(nth)
  {
    const int t = omp_get_thread_num();
    const int64_t i0 = items * t / nth, i1 = items * (t + 1) / nth;
    run(i0, i1, cb ? cb + t * col_sz : nullptr, t == 0 ? out : part.data<T>() + (t - 1) * wsz);
#pragma omp barrier
    // out += partials of threads 1..nth-1, in thread order (deterministic).
    const T* pp = part.data<T>();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < wsz; ++i) {
      T acc = out[i];
      for (int u = 1; u < nth; ++u) acc += pp[(u - 1) * wsz + i];
      out[i] = acc;
    }
  }
}

template <class T>
void conv2d_backward_bias(const Tensor& gy, Tensor& gb) {
  const int64_t N = gy.size(0), O = gy.size(1), P = gy.numel() / std::max<int64_t>(1, N * O);
  const T* p = gy.data<T>();
  T* out = gb.data<T>();
#pragma omp parallel for schedule(static) if (gy.numel() > (1 << 16))
  for (int64_t o = 0; o < O; ++o) {
    T acc = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* s = p + (n * O + o) * P;
      T part = 0;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < P; ++i) part += s[i];
      acc += part;
    }
    out[o] = acc;
  }
}

#define KDET_CONV_INST(T)                                                                                 \
  template void conv2d_forward<T>(const Tensor&, const Tensor&, const Tensor&, Tensor&, const Conv2dArgs&); \
  template void conv2d_backward_input<T>(const Tensor&, const Tensor&, Tensor&, const Conv2dArgs&);         \
  template void conv2d_backward_weight<T>(const Tensor&, const Tensor&, Tensor&, const Conv2dArgs&);        \
  template void conv2d_backward_bias<T>(const Tensor&, Tensor&);
KDET_CONV_INST(float)
KDET_CONV_INST(double)
#undef KDET_CONV_INST

}  // namespace kdet::cpu
