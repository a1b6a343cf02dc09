// engine/ops/conv2d_winograd.cpp — Winograd F(2×2, 3×3) conv2d kernels (f32); see conv2d_winograd.h.
//
// Transforms (Lavin & Gray 2016), d a 4×4 input tile, g a 3×3 filter, Y a 2×2 output tile:
//   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]   Aᵀ = [1 1 1 0; 0 1 -1 -1]
//   Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A
// Tiles are numbered row-major (Th × Tw per image, Th = ⌈Ho/2⌉); work goes in chunks of whole tile rows.
#include "engine/ops/conv2d_winograd.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/gemm.h"

namespace kdet::cpu {

namespace {

int g_mode = 0;
constexpr int64_t XI = 16;

int64_t round16(int64_t v) { return (v + 15) / 16 * 16; }
// Distance between the 16 per-ξ matrices: padded by 5 cache lines so that the 16 streams a transform
// reads or writes at once do not all map to the same cache sets (sizes are often multiples of 4 KiB).
int64_t xstride(int64_t n) { return round16(n) + 80; }

// (G g Gᵀ)_ξ for ξ = 0..15 of one 3×3 filter g (row-major).
inline void filter_transform(const float* g, float* u) {
  float t[4][3];
  for (int j = 0; j < 3; ++j) {
    t[0][j] = g[j];
    t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
    t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
    t[3][j] = g[6 + j];
  }
  for (int i = 0; i < 4; ++i) {
    u[i * 4 + 0] = t[i][0];
    u[i * 4 + 1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
    u[i * 4 + 2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
    u[i * 4 + 3] = t[i][2];
  }
}

struct Tiling {
  int64_t H, W, Th, Tw;
};

// V[(ξ - 4·i0)][c][ldv] for tile rows [th0, th1) (tile t = (th - th0)·Tw + tw) and transform rows i in
// [i0, i1) (ξ = 4i + j) of the C planes x [C, H, W] (pad 1). rowbuf: 8·(2·Tw + 2) floats.
void input_transform(const float* x, int64_t C, const Tiling& tl, int64_t th0, int64_t th1, int i0, int i1, float* V,
                     int64_t ldv, int64_t xs, float* rowbuf, int64_t c_lo = 0, int64_t c_hi = -1) {
  if (c_hi < 0) c_hi = C;
  const int64_t Wp = 2 * tl.Tw + 2, nw = std::min(tl.W, Wp - 1);
  float* xr = rowbuf;           // 4 padded input rows; column q is iw = q - 1
  float* R = rowbuf + 4 * Wp;   // Bᵀ d, per column
  for (int64_t c = c_lo; c < c_hi; ++c) {
    const float* xc = x + c * tl.H * tl.W;
    for (int64_t th = th0; th < th1; ++th) {
      for (int r = 0; r < 4; ++r) {
        float* d = xr + r * Wp;
        const int64_t ih = 2 * th - 1 + r;
        if (ih < 0 || ih >= tl.H) {
          std::fill(d, d + Wp, 0.f);
          continue;
        }
        d[0] = 0.f;
        std::memcpy(d + 1, xc + ih * tl.W, nw * sizeof(float));
        std::fill(d + 1 + nw, d + Wp, 0.f);
      }
      const float *x0 = xr, *x1 = xr + Wp, *x2 = xr + 2 * Wp, *x3 = xr + 3 * Wp;
#pragma omp simd
      for (int64_t q = 0; q < Wp; ++q) {
        R[q] = x0[q] - x2[q];
        R[Wp + q] = x1[q] + x2[q];
        R[2 * Wp + q] = x2[q] - x1[q];
        R[3 * Wp + q] = x1[q] - x3[q];
      }
      const int64_t base = (th - th0) * tl.Tw;
      for (int i = i0; i < i1; ++i) {
        const float* Ri = R + i * Wp;
        float* v0 = V + (i - i0) * 4 * xs + c * ldv + base;
        float* v1 = v0 + xs;
        float* v2 = v1 + xs;
        float* v3 = v2 + xs;
#pragma omp simd
        for (int64_t tw = 0; tw < tl.Tw; ++tw) {
          const float a = Ri[2 * tw], b = Ri[2 * tw + 1], cc = Ri[2 * tw + 2], d = Ri[2 * tw + 3];
          v0[tw] = a - cc;
          v1[tw] = b + cc;
          v2[tw] = cc - b;
          v3[tw] = b - d;
        }
      }
    }
  }
}

// y [O, Ho, Wo] rows of tile rows [th0, th1) = Aᵀ M A (+ bias); M[ξ][o][ldm]. rowbuf: 4·Tw floats.
void output_transform(const float* M, int64_t O, int64_t ldm, int64_t xs, const Tiling& tl, int64_t th0, int64_t th1,
                      const float* bias, float* y, float* rowbuf, int64_t o_lo = 0, int64_t o_hi = -1) {
  const int64_t Ho = tl.H, Wo = tl.W, Tw = tl.Tw, XS = xs;
  float* r0 = rowbuf;
  float* r1 = rowbuf + 2 * Tw;
  if (o_hi < 0) o_hi = O;
  for (int64_t o = o_lo; o < o_hi; ++o) {
    const float bo = bias ? bias[o] : 0.f;
    float* yo = y + o * Ho * Wo;
    for (int64_t th = th0; th < th1; ++th) {
      const float* m = M + o * ldm + (th - th0) * Tw;
#pragma omp simd
      for (int64_t tw = 0; tw < Tw; ++tw) {
        float s0[4], s1[4];
        for (int j = 0; j < 4; ++j) {
          const float m0 = m[j * XS + tw], m1 = m[(4 + j) * XS + tw], m2 = m[(8 + j) * XS + tw], m3 = m[(12 + j) * XS + tw];
          s0[j] = m0 + m1 + m2;
          s1[j] = m1 - m2 - m3;
        }
        r0[2 * tw] = s0[0] + s0[1] + s0[2] + bo;
        r0[2 * tw + 1] = s0[1] - s0[2] - s0[3] + bo;
        r1[2 * tw] = s1[0] + s1[1] + s1[2] + bo;
        r1[2 * tw + 1] = s1[1] - s1[2] - s1[3] + bo;
      }
      std::memcpy(yo + 2 * th * Wo, r0, Wo * sizeof(float));
      if (2 * th + 1 < Ho) std::memcpy(yo + (2 * th + 1) * Wo, r1, Wo * sizeof(float));
    }
  }
}

// dM[(ξ - 4·i0)][o][ldm] = (A dY Aᵀ)_ξ for tile rows [th0, th1) of gy [O, Ho, Wo] (zero outside).
// rowbuf: 4·Tw + 4 floats.
void grad_transform(const float* gy, int64_t O, const Tiling& tl, int64_t th0, int64_t th1, int i0, int i1, float* dM,
                    int64_t ldm, int64_t xs, float* rowbuf) {
  const int64_t Ho = tl.H, Wo = tl.W, Tw = tl.Tw;
  float* r0 = rowbuf;
  float* r1 = rowbuf + 2 * Tw + 2;
  for (int64_t o = 0; o < O; ++o) {
    const float* go = gy + o * Ho * Wo;
    for (int64_t th = th0; th < th1; ++th) {
      std::memcpy(r0, go + 2 * th * Wo, Wo * sizeof(float));
      std::fill(r0 + Wo, r0 + 2 * Tw, 0.f);
      if (2 * th + 1 < Ho) {
        std::memcpy(r1, go + (2 * th + 1) * Wo, Wo * sizeof(float));
        std::fill(r1 + Wo, r1 + 2 * Tw, 0.f);
      } else {
        std::fill(r1, r1 + 2 * Tw, 0.f);
      }
      const int64_t base = (th - th0) * Tw;
      for (int i = i0; i < i1; ++i) {
        float* d0 = dM + (i - i0) * 4 * xs + o * ldm + base;
        float* d1 = d0 + xs;
        float* d2 = d1 + xs;
        float* d3 = d2 + xs;
#pragma omp simd
        for (int64_t tw = 0; tw < Tw; ++tw) {
          // X = A dY (row i of A: [1 0], [1 1], [1 -1], [0 -1]); dM[i][j] = X[i] · A[j].
          const float a = r0[2 * tw], b = r0[2 * tw + 1], c = r1[2 * tw], d = r1[2 * tw + 1];
          float x0, x1;
          if (i == 0) x0 = a, x1 = b;
          else if (i == 1) x0 = a + c, x1 = b + d;
          else if (i == 2) x0 = a - c, x1 = b - d;
          else x0 = -c, x1 = -d;
          d0[tw] = x0;
          d1[tw] = x0 + x1;
          d2[tw] = x0 - x1;
          d3[tw] = -x1;
        }
      }
    }
  }
}

// Tile rows per chunk: about `target` tiles (at least one row, at most the image).
int64_t chunk_rows(const Tiling& tl, int64_t target) {
  return std::clamp<int64_t>((target + tl.Tw - 1) / tl.Tw, 1, tl.Th);
}

// M_ξ (Oout × nt, row stride nt) = U_ξ (packed) · V_ξ (Cin × nt, row stride nt).
void gemm_xi(int64_t Oout, int64_t nt, int64_t Cin, const float* Ux, const float* Vx, float* Mx, float* bufB) {
  sgemm_packed(
      Oout, nt, Cin, 1.f, Ux,
      [&](int64_t k0, int64_t kc, int64_t c0, int64_t nc, float* dst) {
        sgemm_pack_b(false, Vx + k0 * nt + c0, nt, kc, nc, dst);
      },
      0.f, Mx, nt, bufB);
}

// Small images (few tiles in all): the whole batch in one pass, so every U_ξ is reused across all tiles.
// Transforms run in parallel over (image, channel); the 16 GEMMs are split over threads by ξ.
void winograd_conv_batch(const float* x, int64_t N, int64_t Cin, int64_t H, int64_t W, const float* Up, int64_t uper,
                         int64_t Oout, const float* bias, float* y) {
  const Tiling tl{H, W, (H + 1) / 2, (W + 1) / 2};
  const int64_t T = tl.Th * tl.Tw, NT = N * T;
  const int maxth = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t bsz = (std::min(sgemm_nc(), NT) + sgemm_nr() - 1) / sgemm_nr() * sgemm_nr() * 256;
  const int64_t rsz = round16(8 * (2 * tl.Tw + 2));
  const int64_t xsv = xstride(Cin * NT), xsm = xstride(Oout * NT);
  Tensor Vt = Tensor::empty({XI * xsv}, DType::F32), Mt = Tensor::empty({XI * xsm}, DType::F32);
  Tensor scratch = Tensor::empty({maxth * (bsz + rsz)}, DType::F32);
  float *V = Vt.data<float>(), *M = Mt.data<float>(), *sc = scratch.data<float>();
  const int64_t cb = 16;  // channels per transform task
  const int64_t ncb = (Cin + cb - 1) / cb, nob = (Oout + cb - 1) / cb;
#pragma omp parallel num_threads(maxth)
  {
    float* bufB = sc + omp_get_thread_num() * (bsz + rsz);
    float* rb = bufB + bsz;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < N * ncb; ++task) {
      const int64_t n = task / ncb, c0 = (task % ncb) * cb;
      input_transform(x + n * Cin * H * W, Cin, tl, 0, tl.Th, 0, 4, V + n * T, NT, xsv, rb, c0,
                      std::min(Cin, c0 + cb));
    }
#pragma omp for schedule(static)
    for (int64_t xi = 0; xi < XI; ++xi) gemm_xi(Oout, NT, Cin, Up + xi * uper, V + xi * xsv, M + xi * xsm, bufB);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < N * nob; ++task) {
      const int64_t n = task / nob, o0 = (task % nob) * cb;
      output_transform(M + n * T, Oout, NT, xsm, tl, 0, tl.Th, bias, y + n * Oout * H * W, rb, o0,
                       std::min(Oout, o0 + cb));
    }
  }
}

// The convolution y = conv(x, g) with pre-packed U (Oout × Cin per ξ), pad 1, stride 1 (Ho = H).
void winograd_conv(const float* x, int64_t N, int64_t Cin, int64_t H, int64_t W, const float* Up, int64_t uper,
                   int64_t Oout, const float* bias, float* y) {
  const Tiling tl{H, W, (H + 1) / 2, (W + 1) / 2};
  if (N * tl.Th * tl.Tw <= 512) return winograd_conv_batch(x, N, Cin, H, W, Up, uper, Oout, bias, y);
  // Chunk: V (16·Cin·tc) and M (16·Oout·tc) near 2 MiB together, at least 64 tiles.
  const int64_t tgt = std::max<int64_t>(64, (int64_t(2) << 20) / (4 * XI * (Cin + Oout)));
  const int maxth = omp_in_parallel() ? 1 : omp_get_max_threads();
  int64_t R = chunk_rows(tl, tgt);
  while (R > 1 && N * ((tl.Th + R - 1) / R) < maxth) R = (R + 1) / 2;  // enough items for the threads
  const int64_t nch = (tl.Th + R - 1) / R, items = N * nch;
  const int64_t tcap = R * tl.Tw;
  const int nth = static_cast<int>(std::min<int64_t>(maxth, items));
  const int64_t xsv = xstride(Cin * tcap), xsm = xstride(Oout * tcap), vsz = XI * xsv, msz = XI * xsm;
  const int64_t bsz = (std::min(sgemm_nc(), tcap) + sgemm_nr() - 1) / sgemm_nr() * sgemm_nr() * 256;
  const int64_t rsz = round16(8 * (2 * tl.Tw + 2));
  const int64_t per = vsz + msz + bsz + rsz;
  Tensor scratch = Tensor::empty({nth * per}, DType::F32);
  auto item = [&](int64_t it, float* buf) {
    float *V = buf, *M = buf + vsz, *bufB = M + msz, *rb = bufB + bsz;
    const int64_t n = it / nch, th0 = (it % nch) * R, th1 = std::min(tl.Th, th0 + R), tc = (th1 - th0) * tl.Tw;
    input_transform(x + n * Cin * H * W, Cin, tl, th0, th1, 0, 4, V, tc, xsv, rb);
    for (int64_t xi = 0; xi < XI; ++xi) gemm_xi(Oout, tc, Cin, Up + xi * uper, V + xi * xsv, M + xi * xsm, bufB);
    output_transform(M, Oout, tc, xsm, tl, th0, th1, bias, y + n * Oout * H * W, rb);
  };
  float* s = scratch.data<float>();
  if (nth == 1) {
    for (int64_t it = 0; it < items; ++it) item(it, s);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nth)
  for (int64_t it = 0; it < items; ++it) item(it, s + omp_get_thread_num() * per);
}

// U_ξ (Oout × Cin) for the 16 ξ, written straight into the GEMM's packed-A layout (sgemm_pack_a: K blocks
// of 256 at pc·Mp, MR-row panels of MR·kc, zero rows past Oout). flip: g(oo, ci) = w[ci, oo] rotated by
// 180° (the backward-input convolution), else g(oo, ci) = w[oo, ci]; w is [O, C, 3, 3].
Tensor pack_u(const float* w, int64_t O, int64_t C, bool flip, int64_t& uper) {
  const int64_t Oout = flip ? C : O, Cin = flip ? O : C;
  const int64_t MR = sgemm_mr(), np = (Oout + MR - 1) / MR, Mp = np * MR;
  uper = xstride(sgemm_packed_a_size(Oout, Cin));
  Tensor Up = Tensor::empty({XI * uper}, DType::F32);
  float* dst = Up.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < np; ++p)
    for (int64_t ci = 0; ci < Cin; ++ci) {
      const int64_t pc = ci / 256 * 256, kc = std::min<int64_t>(256, Cin - pc);
      float* d = dst + pc * Mp + p * MR * kc + (ci - pc) * MR;
      for (int64_t r = 0; r < MR; ++r) {
        const int64_t oo = p * MR + r;
        float u[XI] = {};
        if (oo < Oout) {
          float g[9];
          const float* src = flip ? w + (ci * C + oo) * 9 : w + (oo * C + ci) * 9;
          for (int k = 0; k < 9; ++k) g[k] = flip ? src[8 - k] : src[k];
          filter_transform(g, u);
        }
        for (int64_t xi = 0; xi < XI; ++xi) d[xi * uper + r] = u[xi];
      }
    }
  return Up;
}

}  // namespace

void set_conv2d_winograd(int mode) { g_mode = mode; }

bool winograd_applies(const Shape& x, const Shape& w, const Conv2dArgs& a, bool weight_grad) {
  if (g_mode < 0) return false;
  const bool shape = w[2] == 3 && w[3] == 3 && a.stride_h == 1 && a.stride_w == 1 && a.pad_h == 1 && a.pad_w == 1 &&
                     a.dilation_h == 1 && a.dilation_w == 1 && a.groups == 1;
  if (!shape) return false;
  if (g_mode > 0) return true;
  // Forward / backward input transform all 16·O·C weights per call (about as costly as 64 tiles of GEMM
  // work per weight): below 512 output pixels in the batch im2col wins.
  const int64_t pixels = x[0] * x[2] * x[3];
  return x[1] >= 64 && w[0] >= 64 && (weight_grad || pixels >= 512);
}

void winograd_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = w.size(0);
  int64_t uper = 0;
  const Tensor Up = pack_u(w.data<float>(), O, C, false, uper);
  winograd_conv(x.data<float>(), N, C, H, W, Up.data<float>(), uper, O, b.defined() ? b.data<float>() : nullptr,
                y.data<float>());
}

void winograd_backward_input(const Tensor& gy, const Tensor& w, Tensor& gx) {
  const int64_t N = gx.size(0), C = gx.size(1), H = gx.size(2), W = gx.size(3), O = w.size(0);
  int64_t uper = 0;
  const Tensor Up = pack_u(w.data<float>(), O, C, true, uper);
  winograd_conv(gy.data<float>(), N, O, H, W, Up.data<float>(), uper, C, nullptr, gx.data<float>());
}

void winograd_backward_weight(const Tensor& gy, const Tensor& x, Tensor& gw) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = gw.size(0);
  const Tiling tl{H, W, (H + 1) / 2, (W + 1) / 2};
  // Threads own transform rows i (ξ = 4i + j): no reduction across threads. K of each GEMM = tiles per
  // chunk, so chunks are large (the dU_ξ accumulators are re-read once per chunk).
  const int nth = omp_in_parallel() ? 1 : std::min(4, omp_get_max_threads());
  const int rows_per = (4 + nth - 1) / nth;
  const int64_t tgt = std::max<int64_t>(128, (int64_t(2) << 20) / (4 * 4 * rows_per * (C + O)));
  const int64_t R = chunk_rows(tl, tgt), nch = (tl.Th + R - 1) / R;
  const int64_t tcap = R * tl.Tw;
  const int64_t xl = 4 * rows_per;  // ξ per thread
  const int64_t xsv = xstride(C * tcap), xsm = xstride(O * tcap), xsu = xstride(O * C);
  const int64_t vsz = xl * xsv, msz = xl * xsm, rsz = round16(8 * (2 * tl.Tw + 2));
  const int64_t per = vsz + msz + rsz;
  Tensor scratch = Tensor::empty({nth * per}, DType::F32);
  Tensor dU = Tensor::empty({XI * xsu}, DType::F32);
  const float* px = x.data<float>();
  const float* pg = gy.data<float>();
  float* du = dU.data<float>();
  auto run = [&](int t) {
    const int i0 = std::min(4, t * rows_per), i1 = std::min(4, i0 + rows_per);
    if (i0 >= i1) return;
    float *V = scratch.data<float>() + t * per, *dM = V + vsz, *rb = dM + msz;
    bool first = true;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t ch = 0; ch < nch; ++ch) {
        const int64_t th0 = ch * R, th1 = std::min(tl.Th, th0 + R), tc = (th1 - th0) * tl.Tw;
        input_transform(px + n * C * H * W, C, tl, th0, th1, i0, i1, V, tc, xsv, rb);
        grad_transform(pg + n * O * H * W, O, tl, th0, th1, i0, i1, dM, tc, xsm, rb);
        for (int64_t l = 0; l < 4 * (i1 - i0); ++l)
          sgemm(false, true, O, C, tc, 1.f, dM + l * xsm, tc, V + l * xsv, tc, first ? 0.f : 1.f,
                du + (4 * i0 + l) * xsu, C);
        first = false;
      }
  };
  if (nth == 1) {
    run(0);
  } else {
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int t = 0; t < nth; ++t) run(t);
  }
  // dW = Gᵀ dU G.
  float* out = gw.data<float>();
  const int64_t XS = xsu;
#pragma omp parallel for schedule(static) if (O * C > 4096)
  for (int64_t oc = 0; oc < O * C; ++oc) {
    float u[4][4], t[3][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) u[i][j] = du[(i * 4 + j) * XS + oc];
    for (int j = 0; j < 4; ++j) {
      t[0][j] = u[0][j] + 0.5f * (u[1][j] + u[2][j]);
      t[1][j] = 0.5f * (u[1][j] - u[2][j]);
      t[2][j] = 0.5f * (u[1][j] + u[2][j]) + u[3][j];
    }
    float* o = out + oc * 9;
    for (int k = 0; k < 3; ++k) {
      o[k * 3 + 0] = t[k][0] + 0.5f * (t[k][1] + t[k][2]);
      o[k * 3 + 1] = 0.5f * (t[k][1] - t[k][2]);
      o[k * 3 + 2] = 0.5f * (t[k][1] + t[k][2]) + t[k][3];
    }
  }
}

}  // namespace kdet::cpu
