// engine/ops/deform_conv_cuda.cu — deformable convolution v1 / v2 on the GPU (CPU: deform_conv_cpu.cpp; shapes
// and arguments are checked once in deform_conv.cpp). See deform_conv_cuda.h for the structure.
//
// Per chunk of nb images [n0, n0+nb) (Og = O/groups, Cg = C/groups, Cd = C/deform_groups, KK = KH·KW, P = Ho·Wo):
//   col  [nb, C·KK, P]   mask · bilinear sample (the CPU's table arithmetic, recomputed per element)
//   y[n] [G, Og, P]      = W[G, Og, Cg·KK] · col[n][G, Cg·KK, P]                   (cuBLAS, batched over groups)
//   dcol [nb, C·KK, P]   dcol[n] = W[g]ᵀ · dy[n, g]                                  (cuBLAS, batched over groups)
//   dW                   part[nb·G, Og, Cg·KK] = dy · colᵀ (one batched GEMM), then dW (+)= Σ over images in order
//   d offset / d mask    per (image, deform group d, tap k, pixel): Σ_{c ∈ d} in channel order, like the CPU
//   dx                   deterministic col2im. Every (image, d, k, pixel, corner) with a valid corner is an entry
//                        e = (((nl·DG + d)·KK + k)·P + p)·4 + corner keyed by its target (nl·DG + d)·H·W + h·W + w;
//                        a stable radix sort (cub) groups the entries by target while keeping e ascending, i.e.
//                        (tap, pixel, corner) order; one thread per input element (n, c, h, w) then sums
//                        (dcol · mask) · weight over its target's run. No floating-point atomics: bit-identical
//                        run to run. (An atomicAdd scatter would be simpler but its sums depend on timing.)
// The CPU scatters the same products per plane, chunk by chunk of pixels (tap-major inside a chunk), so the
// two devices agree to rounding, not bitwise (GEMMs and FMA contraction differ anyway). One deliberate
// difference: the CPU also adds (dcol · mask) · 0 to element 0 of the plane for every out-of-map corner; those
// terms are skipped here (they only matter when dcol · mask is ±inf or NaN). A NaN sample (NaN offset) keeps the
// CPU's rule: its corners point at element 0 with NaN weights, so the NaN reaches dx as on the CPU.
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>

#include <cub/device/device_radix_sort.cuh>

#include "engine/cuda/pointwise.cuh"
#include "engine/ops/deform_conv_cuda.h"
#include "engine/ops/deform_conv_geom.h"
#include "engine/ops/matmul_cuda.h"

namespace kdet::cuda {

namespace {

int64_t g_chunk_bytes = int64_t(256) << 20;

using Geom = DeformGeom;

Geom geom(const Shape& xs, const Shape& ws, const Shape& ys, const DeformConvArgs& a) {
  return deform_geom(xs, ws, ys, a, "deform_conv2d (cuda)");
}

// The per-element bodies below are __host__ __device__ so that their index arithmetic can be exercised on the
// host as well; the kernels only add the grid-stride loop.
__host__ __device__ inline float dfloor(float v) { return floorf(v); }
__host__ __device__ inline double dfloor(double v) { return floor(v); }

// The CPU's sampling table entry (deform_conv_cpu.cpp, build_table) of deform group d, tap k, output pixel pix
// of one image: corner indices into an input plane, bilinear weights, and (grad) their derivatives w.r.t. the
// sampling row h and column w. valid[q]: corner q lies inside the map. nan: the sample is NaN (NaN offset).
template <class T>
struct Sample {
  int64_t idx[4];
  T wt[4], gh[4], gw[4];
  bool valid[4];
  bool nan;
};

template <class T>
__host__ __device__ inline void sample_at(const Geom& g, const T* off_n, int64_t d, int64_t k, int64_t pix, bool grad,
                                 Sample<T>& s) {
  const int64_t i = k / g.KW, j = k % g.KW, ho = pix / g.Wo, wo = pix % g.Wo;
  const T oy = off_n[(d * 2 * g.KK + 2 * k) * g.P + pix], ox = off_n[(d * 2 * g.KK + 2 * k + 1) * g.P + pix];
  const T h = T(ho * g.sh - g.ph + i * g.dh) + oy, w = T(wo * g.sw - g.pw + j * g.dw) + ox;
  const T H = T(g.H), W = T(g.W);
  if (!(h > T(-1) && h < H && w > T(-1) && w < W)) {
    const bool nan = !(h == h && w == w);
    const T fill = nan ? std::numeric_limits<T>::quiet_NaN() : T(0);
    s.nan = nan;
    for (int c = 0; c < 4; ++c) {
      s.idx[c] = 0;
      s.valid[c] = false;
      s.wt[c] = fill;
      if (grad) s.gh[c] = s.gw[c] = fill;
    }
    return;
  }
  s.nan = false;
  const T fh = dfloor(h), fw = dfloor(w);
  const int64_t h0 = int64_t(fh), w0 = int64_t(fw);
  const T lh = h - fh, lw = w - fw, hh = T(1) - lh, hw = T(1) - lw;
  const bool r0 = h0 >= 0, r1 = h0 + 1 < g.H, c0 = w0 >= 0, c1 = w0 + 1 < g.W;
  s.valid[0] = r0 && c0, s.valid[1] = r0 && c1, s.valid[2] = r1 && c0, s.valid[3] = r1 && c1;
  const int64_t ix[4] = {h0 * g.W + w0, h0 * g.W + w0 + 1, (h0 + 1) * g.W + w0, (h0 + 1) * g.W + w0 + 1};
  const T wv[4] = {hh * hw, hh * lw, lh * hw, lh * lw};
  const T dhv[4] = {-hw, -lw, hw, lw};
  const T dwv[4] = {-hh, hh, -lh, lh};
  for (int c = 0; c < 4; ++c) {
    const bool v = s.valid[c];
    s.idx[c] = v ? ix[c] : 0;
    s.wt[c] = v ? wv[c] : T(0);
    if (grad) {
      s.gh[c] = v ? dhv[c] : T(0);
      s.gw[c] = v ? dwv[c] : T(0);
    }
  }
}

// col [nb, C·KK, P] of images n0.. : mask · sample (CPU: fill_columns). Element t.
template <class T>
__host__ __device__ inline void im2col_elem(int64_t t, const Geom& g, int64_t n0, const T* x, const T* off,
                                            const T* mask, T* col) {
  {
    const int64_t p = t % g.P, r = (t / g.P) % (g.C * g.KK), img = n0 + t / (g.P * g.C * g.KK);
    const int64_t c = r / g.KK, k = r % g.KK, d = c / g.Cd;
    Sample<T> s;
    sample_at(g, off + img * 2 * g.DG * g.KK * g.P, d, k, p, false, s);
    const T m = mask ? mask[((img * g.DG + d) * g.KK + k) * g.P + p] : T(1);
    const T* xc = x + (img * g.C + c) * g.HW;
    col[t] = m * (s.wt[0] * xc[s.idx[0]] + s.wt[1] * xc[s.idx[1]] + s.wt[2] * xc[s.idx[2]] + s.wt[3] * xc[s.idx[3]]);
  }
}

template <class T>
__global__ void im2col_kernel(int64_t n, Geom g, int64_t n0, const T* x, const T* off, const T* mask, T* col) {
  KDET_GRID_STRIDE(t, n) im2col_elem(t, g, n0, x, off, mask, col);
}

// y [nb, O, P] += b[o].
template <class T>
__global__ void add_bias_kernel(int64_t n, int64_t O, int64_t P, const T* b, T* y) {
  KDET_GRID_STRIDE(t, n) { y[t] += b[(t / P) % O]; }
}

// dw[i] = (first ? 0 : dw[i]) + Σ_{j < nb} part[j·ws + i], images in order.
template <class T>
__global__ void sum_parts_kernel(int64_t ws, int64_t nb, bool first, const T* part, T* dw) {
  KDET_GRID_STRIDE(i, ws) {
    T acc = first ? T(0) : dw[i];
    for (int64_t j = 0; j < nb; ++j) acc += part[j * ws + i];
    dw[i] = acc;
  }
}

// The col2im entries of images n0.. : one thread per (nl, d, k, p) writes its four corners. Element t.
template <class T>
__host__ __device__ inline void entries_elem(int64_t t, const Geom& g, int64_t n0, uint32_t sentinel, const T* off,
                                             uint32_t* keys, uint32_t* vals, T* wt) {
  {
    const int64_t p = t % g.P, k = (t / g.P) % g.KK, dn = t / (g.P * g.KK), d = dn % g.DG, img = n0 + dn / g.DG;
    Sample<T> s;
    sample_at(g, off + img * 2 * g.DG * g.KK * g.P, d, k, p, false, s);
    for (int q = 0; q < 4; ++q) {
      const int64_t e = t * 4 + q;
      keys[e] = (s.valid[q] || s.nan) ? static_cast<uint32_t>(dn * g.HW + s.idx[q]) : sentinel;
      vals[e] = static_cast<uint32_t>(e);
      wt[e] = s.wt[q];
    }
  }
}

template <class T>
__global__ void entries_kernel(int64_t n, Geom g, int64_t n0, uint32_t sentinel, const T* off, uint32_t* keys,
                               uint32_t* vals, T* wt) {
  KDET_GRID_STRIDE(t, n) entries_elem(t, g, n0, sentinel, off, keys, vals, wt);
}

// starts[t] = first position of key >= t in the sorted keys (t <= nb·DG·HW). Element t.
__host__ __device__ inline void run_start_elem(int64_t t, const uint32_t* keys, int64_t m, uint32_t* starts) {
  {
    int64_t lo = 0, hi = m;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (static_cast<int64_t>(keys[mid]) < t) lo = mid + 1;
      else hi = mid;
    }
    starts[t] = static_cast<uint32_t>(lo);
  }
}

__global__ void run_starts_kernel(int64_t n, const uint32_t* keys, int64_t m, uint32_t* starts) {
  KDET_GRID_STRIDE(t, n) run_start_elem(t, keys, m, starts);
}

// dx of images n0.. (overwritten): one thread per input element sums its run of sorted entries in order.
template <class T>
__host__ __device__ inline void gather_dx_elem(int64_t t, const Geom& g, int64_t n0, const uint32_t* starts,
                                               const uint32_t* vals, const T* wt, const T* mask, const T* dcol, T* gx) {
  {
    const int64_t pix = t % g.HW, c = (t / g.HW) % g.C, nl = t / (g.HW * g.C), d = c / g.Cd;
    const int64_t run = (nl * g.DG + d) * g.HW + pix;
    const T* dc = dcol + (nl * g.C + c) * g.KK * g.P;
    const T* m = mask ? mask + n0 * g.DG * g.KK * g.P : nullptr;
    T acc = T(0);
    for (uint32_t r = starts[run]; r < starts[run + 1]; ++r) {
      const int64_t e = vals[r], kp = e >> 2;  // kp = (nl·DG + d)·KK·P + k·P + p
      const int64_t p = kp % g.P, k = (kp / g.P) % g.KK;
      const T v = m ? dc[k * g.P + p] * m[kp] : dc[k * g.P + p];
      acc += v * wt[e];
    }
    gx[n0 * g.C * g.HW + t] = acc;
  }
}

template <class T>
__global__ void gather_dx_kernel(int64_t n, Geom g, int64_t n0, const uint32_t* starts, const uint32_t* vals,
                                 const T* wt, const T* mask, const T* dcol, T* gx) {
  KDET_GRID_STRIDE(t, n) gather_dx_elem(t, g, n0, starts, vals, wt, mask, dcol, gx);
}

// Offset / mask gradients of images n0.. (CPU: offset_mask_grad): one thread per (nl, d, k, p).
template <class T>
__host__ __device__ inline void offset_mask_grad_elem(int64_t t, const Geom& g, int64_t n0, const T* x, const T* off,
                                                      const T* mask, const T* dcol, T* goff, T* gmask) {
  {
    const int64_t p = t % g.P, k = (t / g.P) % g.KK, dn = t / (g.P * g.KK), d = dn % g.DG, nl = dn / g.DG;
    const int64_t img = n0 + nl;
    Sample<T> s;
    sample_at(g, off + img * 2 * g.DG * g.KK * g.P, d, k, p, true, s);
    T ay = T(0), ax = T(0), am = T(0);
    for (int64_t c = d * g.Cd; c < (d + 1) * g.Cd; ++c) {
      const T* xc = x + (img * g.C + c) * g.HW;
      const T v0 = xc[s.idx[0]], v1 = xc[s.idx[1]], v2 = xc[s.idx[2]], v3 = xc[s.idx[3]];
      const T gv = dcol[((nl * g.C + c) * g.KK + k) * g.P + p];
      ay += gv * (s.gh[0] * v0 + s.gh[1] * v1 + s.gh[2] * v2 + s.gh[3] * v3);
      ax += gv * (s.gw[0] * v0 + s.gw[1] * v1 + s.gw[2] * v2 + s.gw[3] * v3);
      am += gv * (s.wt[0] * v0 + s.wt[1] * v1 + s.wt[2] * v2 + s.wt[3] * v3);
    }
    const int64_t dk = (img * g.DG + d) * g.KK + k;
    const T m = mask ? mask[dk * g.P + p] : T(1);
    if (goff) {
      T* oy = goff + ((img * g.DG + d) * 2 * g.KK + 2 * k) * g.P + p;
      oy[0] = m * ay;
      oy[g.P] = m * ax;
    }
    if (gmask) gmask[dk * g.P + p] = am;
  }
}

template <class T>
__global__ void offset_mask_grad_kernel(int64_t n, Geom g, int64_t n0, const T* x, const T* off, const T* mask,
                                        const T* dcol, T* goff, T* gmask) {
  KDET_GRID_STRIDE(t, n) offset_mask_grad_elem(t, g, n0, x, off, mask, dcol, goff, gmask);
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <class T>
T* ptr_or_null(Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

uint32_t* u32(Tensor& t) { return static_cast<uint32_t*>(t.raw_data()); }

// Device bytes of 32-bit words.
Tensor words(int64_t n, Device d) { return Tensor::empty({std::max<int64_t>(1, n) * 4}, DType::U8, d); }

// Images per chunk: per_image bytes of working memory each, at least one.
int64_t images_per_chunk(const Geom& g, int64_t per_image) {
  return std::clamp<int64_t>(g_chunk_bytes / std::max<int64_t>(1, per_image), 1, std::max<int64_t>(1, g.N));
}

void check_layout(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    KDET_CHECK(!t->defined() || t->is_contiguous(), op, " (cuda): operand ", t->desc(), " must be contiguous");
}

}  // namespace

void set_deform_conv2d_chunk_bytes(int64_t bytes) { g_chunk_bytes = bytes > 0 ? bytes : int64_t(256) << 20; }

void deform_conv2d_forward(const Tensor& x, const Tensor& offset, const Tensor& mask, const Tensor& w,
                           const Tensor& b, Tensor& y, const DeformConvArgs& a) {
  const char* op = "deform_conv2d";
  check_layout(op, {&x, &offset, &mask, &w, &b, &y});
  Context& ctx = activate(x, op);
  const Geom g = geom(x.shape(), w.shape(), y.shape(), a);
  if (y.numel() == 0) return;
  const Device dev = x.device();
  const int64_t K = g.Cg * g.KK, rows = g.C * g.KK;
  const int64_t esz = static_cast<int64_t>(dtype_size(x.dtype()));
  const int64_t nb_max = images_per_chunk(g, rows * g.P * esz);
  Tensor col = Tensor::empty({nb_max, g.G, K, g.P}, x.dtype(), dev);
  const Tensor wv = w.view({g.G, g.Og, K});
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t n0 = 0; n0 < g.N; n0 += nb_max) {
      const int64_t nb = std::min(nb_max, g.N - n0), ne = nb * rows * g.P;
      im2col_kernel<T><<<grid_for(ne), kThreads, 0, ctx.stream()>>>(ne, g, n0, x.data<T>(), offset.data<T>(),
                                                                    ptr_or_null<T>(mask), col.data<T>());
      check_launch(ctx, op);
      for (int64_t j = 0; j < nb; ++j) {
        Tensor yn = y.select(0, n0 + j).view({g.G, g.Og, g.P});
        gemm(false, false, g.G, g.Og, g.P, K, wv, col.select(0, j), yn);
      }
      if (b.defined()) {
        const int64_t ny = nb * g.O * g.P;
        add_bias_kernel<T><<<grid_for(ny), kThreads, 0, ctx.stream()>>>(ny, g.O, g.P, b.data<T>(),
                                                                       y.data<T>() + n0 * g.O * g.P);
        check_launch(ctx, op);
      }
    }
  });
}

void deform_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& offset, const Tensor& mask,
                            const Tensor& w, Tensor& gx, Tensor& goffset, Tensor& gmask, Tensor& gw,
                            const DeformConvArgs& a) {
  const char* op = "deform_conv2d_backward";
  check_layout(op, {&gy, &x, &offset, &mask, &w, &gx, &goffset, &gmask, &gw});
  Context& ctx = activate(x, op);
  const Geom g = geom(x.shape(), w.shape(), gy.shape(), a);
  const Device dev = x.device();
  const bool need_col = gw.defined(), need_dcol = gx.defined() || goffset.defined() || gmask.defined();
  if (g.N == 0 || g.P == 0) {  // empty sums
    if (gw.defined()) gw.zero_();
    if (gx.defined()) gx.zero_();
    return;
  }
  if (!need_col && !need_dcol) return;
  const int64_t K = g.Cg * g.KK, rows = g.C * g.KK, wsz = w.numel();
  const int64_t esz = static_cast<int64_t>(dtype_size(x.dtype()));
  const int64_t ent_img = g.DG * g.KK * g.P * 4;  // col2im entries per image
  int64_t per_image = ((need_col ? 1 : 0) + (need_dcol ? 1 : 0)) * rows * g.P * esz + (need_col ? wsz * esz : 0);
  if (gx.defined()) per_image += ent_img * (4 * 4 + esz) + g.DG * g.HW * 4;
  int64_t nb_max = images_per_chunk(g, per_image);
  if (gx.defined()) {  // 32-bit keys, positions and entry ids; cub's item count is an int
    KDET_CHECK(ent_img < INT_MAX && g.DG * g.HW < INT_MAX, op, " (cuda): ", ent_img,
               " sampling entries per image exceed the 32-bit col2im index range (input ", x.desc(), ")");
    nb_max = std::min({nb_max, (INT_MAX - 1) / ent_img, (INT_MAX - 1) / (g.DG * g.HW)});
  }
  Tensor col, dcol, part, keys_in, keys_out, vals_in, vals_out, wt, starts, temp;
  if (need_col) {
    col = Tensor::empty({nb_max * g.G, K, g.P}, x.dtype(), dev);
    part = Tensor::empty({nb_max * g.G, g.Og, K}, x.dtype(), dev);
  }
  if (need_dcol) dcol = Tensor::empty({nb_max, g.G, K, g.P}, x.dtype(), dev);
  size_t temp_bytes = 0;
  if (gx.defined()) {
    const int64_t ne = nb_max * ent_img;
    keys_in = words(ne, dev), keys_out = words(ne, dev), vals_in = words(ne, dev), vals_out = words(ne, dev);
    wt = Tensor::empty({ne}, x.dtype(), dev);
    starts = words(nb_max * g.DG * g.HW + 1, dev);
    KDET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, u32(keys_in), u32(keys_out), u32(vals_in),
                                                    u32(vals_out), static_cast<int>(ne), 0, 32, ctx.stream()),
                    op);
    temp = Tensor::empty({static_cast<int64_t>(std::max<size_t>(temp_bytes, 1))}, DType::U8, dev);
  }
  const Tensor wv = w.view({g.G, g.Og, K});
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pm = ptr_or_null<T>(mask);
    for (int64_t n0 = 0; n0 < g.N; n0 += nb_max) {
      const int64_t nb = std::min(nb_max, g.N - n0);
      if (need_col) {
        const int64_t ne = nb * rows * g.P;
        im2col_kernel<T><<<grid_for(ne), kThreads, 0, ctx.stream()>>>(ne, g, n0, x.data<T>(), offset.data<T>(), pm,
                                                                      col.data<T>());
        check_launch(ctx, op);
        // part[j·G + gi] = dy[n0 + j, gi] · col[j, gi]ᵀ for every image of the chunk in one batched GEMM.
        const Tensor gyc = gy.slice(0, n0, n0 + nb).view({nb * g.G, g.Og, g.P});
        Tensor pc = part.slice(0, 0, nb * g.G);
        gemm(false, true, nb * g.G, g.Og, K, g.P, gyc, col.slice(0, 0, nb * g.G), pc);
        sum_parts_kernel<T><<<grid_for(wsz), kThreads, 0, ctx.stream()>>>(wsz, nb, n0 == 0, part.data<T>(),
                                                                          gw.data<T>());
        check_launch(ctx, op);
      }
      if (!need_dcol) continue;
      for (int64_t j = 0; j < nb; ++j) {
        Tensor dn = dcol.select(0, j);
        gemm(true, false, g.G, K, g.P, g.Og, wv, gy.select(0, n0 + j).view({g.G, g.Og, g.P}), dn);
      }
      if (goffset.defined() || gmask.defined()) {
        const int64_t ne = nb * g.DG * g.KK * g.P;
        offset_mask_grad_kernel<T><<<grid_for(ne), kThreads, 0, ctx.stream()>>>(
            ne, g, n0, x.data<T>(), offset.data<T>(), pm, dcol.data<T>(), ptr_or_null<T>(goffset),
            ptr_or_null<T>(gmask));
        check_launch(ctx, op);
      }
      if (gx.defined()) {
        const int64_t nt = nb * g.DG * g.KK * g.P, ne = nt * 4, runs = nb * g.DG * g.HW;
        const uint32_t sentinel = static_cast<uint32_t>(runs);
        entries_kernel<T><<<grid_for(nt), kThreads, 0, ctx.stream()>>>(nt, g, n0, sentinel, offset.data<T>(),
                                                                       u32(keys_in), u32(vals_in), wt.data<T>());
        check_launch(ctx, op);
        const int end_bit = std::max(1, static_cast<int>(std::bit_width(static_cast<uint32_t>(sentinel))));
        size_t tb = 0;  // this call's own requirement (at most the first query's; grown if ever not)
        KDET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, tb, u32(keys_in), u32(keys_out), u32(vals_in),
                                                        u32(vals_out), static_cast<int>(ne), 0, end_bit, ctx.stream()),
                        op);
        if (tb > temp_bytes) temp = Tensor::empty({static_cast<int64_t>(tb)}, DType::U8, dev), temp_bytes = tb;
        tb = temp_bytes;
        KDET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw_data(), tb, u32(keys_in), u32(keys_out),
                                                        u32(vals_in), u32(vals_out), static_cast<int>(ne), 0, end_bit,
                                                        ctx.stream()),
                        op);
        check_launch(ctx, op);
        run_starts_kernel<<<grid_for(runs + 1), kThreads, 0, ctx.stream()>>>(runs + 1, u32(keys_out), ne, u32(starts));
        check_launch(ctx, op);
        const int64_t nx = nb * g.C * g.HW;
        gather_dx_kernel<T><<<grid_for(nx), kThreads, 0, ctx.stream()>>>(nx, g, n0, u32(starts), u32(vals_out),
                                                                         wt.data<T>(), pm, dcol.data<T>(),
                                                                         gx.data<T>());
        check_launch(ctx, op);
      }
    }
  });
}

}  // namespace kdet::cuda
