#include "distill/kd_common.h"

#include <algorithm>
#include <cmath>

#include "distill/kd_common_cuda.h"
#include "engine/backend.h"
#include "engine/ops/compare.h"
#include "engine/ops/cpu_map.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/masked_conv2d.h"
#include "engine/ops/matmul.h"
#include "engine/ops/norm.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/softmax.h"
#include "engine/ops/unary.h"
#include "layers/init.h"

namespace kdet::kd {

void KdResult::accumulate(const std::string& name, const Var& v) {
  auto it = terms.find(name);
  if (it == terms.end())
    terms[name] = v;
  else
    it->second = it->second + v;
}

// ---- fused |f| means -------------------------------------------------------------------------

namespace {

constexpr int64_t kChanBlocks = 8;  // fixed channel blocks per image: partial sums independent of threads

// Means of f contiguous [N, C, HW], each computed only when its output is non-null:
//   asp [N, HW] = mean_c |f|,  ach [N, C] = mean_hw |f|,  ssp [N, HW] = mean_c f,  sch [N, C] = mean_hw f.
// One pass over f. Fixed summation orders (8 interleaved lanes along a plane; fixed channel blocks whose
// partial rows are added in order), so every output is the same whichever other outputs are asked for,
// and independent of the thread count.
template <class T>
void plane_stats_cpu(const T* f, int64_t N, int64_t C, int64_t HW, T* asp, T* ach, T* ssp, T* sch) {
  const int64_t B = std::min(C, kChanBlocks), R = N * B * HW;
  Tensor part_t = Tensor::empty({std::max<int64_t>(1, ((asp != nullptr) + (ssp != nullptr)) * R)}, DType::F64);
  double* pa = asp ? part_t.data<double>() : nullptr;  // caching allocator: no page faults per call
  double* ps = ssp ? part_t.data<double>() + (asp ? R : 0) : nullptr;
  auto lane_sum = [HW](const T* x, auto&& val) {
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t p = 0;
    for (; p + 8 <= HW; p += 8)
      for (int j = 0; j < 8; ++j) lane[j] += val(x[p + j]);
    for (int j = 0; p + j < HW; ++j) lane[j] += val(x[p + j]);
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  };
  auto absd = [](T v) { return std::abs(static_cast<double>(v)); };
  auto idd = [](T v) { return static_cast<double>(v); };
#pragma omp parallel for schedule(static) if (N * C * HW > cpu::kParallelGrain)
  for (int64_t nb = 0; nb < N * B; ++nb) {
    const int64_t n = nb / B, b = nb % B, c0 = C * b / B, c1 = C * (b + 1) / B;
    double* ra = pa ? pa + nb * HW : nullptr;
    double* rs = ps ? ps + nb * HW : nullptr;
    if (ra) std::fill(ra, ra + HW, 0.0);
    if (rs) std::fill(rs, rs + HW, 0.0);
    for (int64_t c = c0; c < c1; ++c) {
      const T* x = f + (n * C + c) * HW;
      if (ach) ach[n * C + c] = static_cast<T>(lane_sum(x, absd) / static_cast<double>(HW));
      if (sch) sch[n * C + c] = static_cast<T>(lane_sum(x, idd) / static_cast<double>(HW));
      if (ra) {
#pragma omp simd
        for (int64_t q = 0; q < HW; ++q) ra[q] += std::abs(static_cast<double>(x[q]));
      }
      if (rs) {
#pragma omp simd
        for (int64_t q = 0; q < HW; ++q) rs[q] += static_cast<double>(x[q]);
      }
    }
  }
  for (auto [part, out] : {std::pair<double*, T*>{pa, asp}, std::pair<double*, T*>{ps, ssp}}) {
    if (!out) continue;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t p = 0; p < HW; ++p) {
        double acc = 0;
        for (int64_t b = 0; b < B; ++b) acc += part[(n * B + b) * HW + p];
        out[n * HW + p] = static_cast<T>(acc / static_cast<double>(C));
      }
  }
}

// {sp, ch} (each only when asked for) of f [N, C, H, W].
std::pair<Tensor, Tensor> abs_means_impl(const Tensor& f, bool want_sp, bool want_ch, const char* who) {
  KDET_CHECK(f.ndim() == 4, who, ": expects [N, C, H, W], got ", f.desc());
  const Tensor fc = f.contiguous();
  const int64_t N = f.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  Tensor sp = want_sp ? Tensor::empty({N, H, W}, f.dtype(), f.device()) : Tensor();
  Tensor ch = want_ch ? Tensor::empty({N, C}, f.dtype(), f.device()) : Tensor();
  if (!f.device().is_cpu()) {
    if (!(KDET_CUDA && f.device().is_cuda())) no_kernel(who, f.device());
#if KDET_CUDA
    Tensor sp2 = want_sp ? sp.view({N, H * W}) : Tensor(), none;
    cuda::kd_plane_stats(fc, sp2, ch, none, none);
#endif
    return {sp, ch};
  }
  dispatch_float(f.dtype(), who, [&](auto tag) {
    using T = decltype(tag);
    plane_stats_cpu<T>(fc.data<T>(), N, C, H * W, want_sp ? sp.data<T>() : nullptr, want_ch ? ch.data<T>() : nullptr,
                       nullptr, nullptr);
  });
  return {sp, ch};
}

// dx = sign(f)·g/n with g [N, HW] (over_c) or [N, C] broadcast over the plane.
Tensor abs_mean_backward(const Tensor& f, const Tensor& g, bool over_c) {
  const int64_t N = f.size(0), C = f.size(1), HW = f.size(2) * f.size(3);
  const Tensor gc = g.contiguous();
  Tensor dx = Tensor::empty(f.shape(), f.dtype(), f.device());
  if (!f.device().is_cpu()) {
    if (!(KDET_CUDA && f.device().is_cuda())) no_kernel("kd_abs_mean backward", f.device());
#if KDET_CUDA
    cuda::kd_abs_mean_backward(f, gc, over_c, dx);
#endif
    return dx;
  }
  dispatch_float(f.dtype(), "kd_abs_mean backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pf = f.data<T>();
    const T* pg = gc.data<T>();
    T* pd = dx.data<T>();
    const T inv = T(1) / static_cast<T>(over_c ? C : HW);
#pragma omp parallel for schedule(static) if (N * C * HW > cpu::kParallelGrain)
    for (int64_t nc = 0; nc < N * C; ++nc) {
      const T* x = pf + nc * HW;
      T* d = pd + nc * HW;
      if (over_c) {
        const T* gr = pg + (nc / C) * HW;
#pragma omp simd
        for (int64_t p = 0; p < HW; ++p) d[p] = x[p] > T(0) ? gr[p] * inv : x[p] < T(0) ? -gr[p] * inv : T(0);
      } else {
        const T gv = pg[nc] * inv;
#pragma omp simd
        for (int64_t p = 0; p < HW; ++p) d[p] = x[p] > T(0) ? gv : x[p] < T(0) ? -gv : T(0);
      }
    }
  });
  return dx;
}

Var spatial_from_mean(const Var& g, double tau) {  // g [N, H, W] -> H·W·softmax(g/τ)
  const int64_t N = g.size(0), H = g.size(1), W = g.size(2);
  Var p = softmax(reshape(g / tau, {N, H * W}), 1);
  return reshape(p * static_cast<double>(H * W), {N, H, W});
}

Var channel_from_mean(const Var& g, double tau) { return softmax(g / tau, 1) * static_cast<double>(g.size(1)); }

}  // namespace

Var abs_mean_channels(const Var& f) {
  Tensor y = abs_means_impl(f.data(), true, false, "kd_abs_mean_c").first;
  return record("kd_abs_mean_c", y, {&f}, [fd = f.data().contiguous()](const Tensor& g, Grads& gr) {
    gr.accumulate(0, abs_mean_backward(fd, g, true));
  });
}

Var abs_mean_spatial(const Var& f) {
  Tensor y = abs_means_impl(f.data(), false, true, "kd_abs_mean_hw").second;
  return record("kd_abs_mean_hw", y, {&f}, [fd = f.data().contiguous()](const Tensor& g, Grads& gr) {
    gr.accumulate(0, abs_mean_backward(fd, g, false));
  });
}

std::pair<Tensor, Tensor> abs_means(const Tensor& f) { return abs_means_impl(f, true, true, "kd_abs_means"); }

std::pair<Var, Var> signed_means(const Var& f, std::pair<Tensor, Tensor>* abs_out) {
  KDET_CHECK(f.ndim() == 4, "kd_signed_means: expects an [N, C, H, W] input, got ", f.data().desc());
  const Tensor fc = f.data().contiguous();
  const int64_t N = f.size(0), C = f.size(1), H = f.size(2), W = f.size(3), HW = H * W;
  const Device dev = f.device();
  Tensor packed = Tensor::empty({N, C + HW}, f.dtype(), dev);  // [mean_hw f | mean_c f] per image
  Tensor asp = abs_out ? Tensor::empty({N, H, W}, f.dtype(), dev) : Tensor();
  Tensor ach = abs_out ? Tensor::empty({N, C}, f.dtype(), dev) : Tensor();
  if (!dev.is_cpu()) {
    if (!(KDET_CUDA && dev.is_cuda())) no_kernel("kd_signed_means", dev);
#if KDET_CUDA
    Tensor sch = packed.slice(1, 0, C), ssp = packed.slice(1, C, C + HW);  // written in place
    Tensor asp2 = abs_out ? asp.view({N, HW}) : Tensor();
    cuda::kd_plane_stats(fc, asp2, ach, ssp, sch);
#endif
  } else {
    Tensor sch = Tensor::empty({N, C}, f.dtype()), ssp = Tensor::empty({N, HW}, f.dtype());
    dispatch_float(f.dtype(), "kd_signed_means", [&](auto tag) {
      using T = decltype(tag);
      plane_stats_cpu<T>(fc.data<T>(), N, C, HW, abs_out ? asp.data<T>() : nullptr, abs_out ? ach.data<T>() : nullptr,
                         ssp.data<T>(), sch.data<T>());
      T* pk = packed.data<T>();
      for (int64_t n = 0; n < N; ++n) {
        std::copy_n(sch.data<T>() + n * C, C, pk + n * (C + HW));
        std::copy_n(ssp.data<T>() + n * HW, HW, pk + n * (C + HW) + C);
      }
    });
  }
  if (abs_out) *abs_out = {asp, ach};
  Var all = record("kd_signed_means", packed, {&f}, [shape = f.shape()](const Tensor& g, Grads& gr) {
    const int64_t N = shape[0], C = shape[1], HW = shape[2] * shape[3];
    const Tensor gc = g.contiguous();
    Tensor dx = Tensor::empty(shape, g.dtype(), g.device());
    if (!g.device().is_cpu()) {
      if (!(KDET_CUDA && g.device().is_cuda())) no_kernel("kd_signed_means backward", g.device());
#if KDET_CUDA
      cuda::kd_signed_means_backward(gc, dx);
#endif
      gr.accumulate(0, dx);
      return;
    }
    dispatch_float(g.dtype(), "kd_signed_means backward", [&](auto tag) {
      using T = decltype(tag);
      const T* pg = gc.data<T>();
      T* pd = dx.data<T>();
      const T ic = T(1) / static_cast<T>(C), ihw = T(1) / static_cast<T>(HW);
#pragma omp parallel for schedule(static) if (N * C * HW > cpu::kParallelGrain)
      for (int64_t nc = 0; nc < N * C; ++nc) {
        const T* gi = pg + (nc / C) * (C + HW);
        const T a = gi[nc % C] * ihw;
        const T* gp = gi + C;
        T* d = pd + nc * HW;
#pragma omp simd
        for (int64_t p = 0; p < HW; ++p) d[p] = a + gp[p] * ic;
      }
    });
    gr.accumulate(0, dx);
  });
  return {slice(all, 1, 0, C), reshape(slice(all, 1, C, C + HW), {N, 1, H, W})};
}

std::pair<Tensor, Tensor> attention_from_abs_means(const std::pair<Tensor, Tensor>& m, double tau_s, double tau_c) {
  NoGradGuard ng;
  return {spatial_from_mean(Var(m.first), tau_s).data(), channel_from_mean(Var(m.second), tau_c).data()};
}

std::pair<Tensor, Tensor> attention_maps(const Tensor& f, double tau_s, double tau_c) {
  return attention_from_abs_means(abs_means(f), tau_s, tau_c);
}

Var spatial_attention(const Var& f, double tau) {
  KDET_CHECK(f.ndim() == 4, "spatial_attention: expects [N, C, H, W], got ", f.data().desc());
  return spatial_from_mean(abs_mean_channels(f), tau);
}

Var channel_attention(const Var& f, double tau) {
  KDET_CHECK(f.ndim() == 4, "channel_attention: expects [N, C, H, W], got ", f.data().desc());
  return channel_from_mean(abs_mean_spatial(f), tau);
}

// ---- fused Σ w·(a − b)² ---------------------------------------------------------------------------

namespace {

// a, b (and the weights) viewed as [N, C, L]: SqGeom (distill/kd_common_cuda.h, shared with the CUDA kernels).

SqGeom sq_geom(const Tensor& a, const Tensor& b, const Tensor& w, const Tensor& w2) {
  KDET_CHECK(a.ndim() >= 1 && a.shape() == b.shape() && a.dtype() == b.dtype(), "kd_sq_dist_sum: a ", a.desc(),
             " and b ", b.desc(), " must have one shape and dtype");
  KDET_CHECK(a.device() == b.device(), "kd_sq_dist_sum: a ", a.desc(), " and b ", b.desc(), " on different devices");
  if (!a.device().is_cpu() && !(KDET_CUDA && a.device().is_cuda())) no_kernel("kd_sq_dist_sum", a.device());
  SqGeom g;
  g.N = a.size(0);
  const bool four = a.ndim() == 4;
  g.C = four ? a.size(1) : 1;
  g.L = g.N * g.C == 0 ? 0 : a.numel() / (g.N * g.C);
  KDET_CHECK(w.defined() || !w2.defined(), "kd_sq_dist_sum: second weight without a first");
  for (const Tensor* wt : {&w, &w2}) {
    if (!wt->defined()) break;
    KDET_CHECK(wt->dtype() == a.dtype() && wt->device() == a.device(), "kd_sq_dist_sum: weight ", wt->desc(), " vs ",
               a.desc());
    const int k = g.nw++;
    if (wt->shape() == a.shape()) {
      g.wn[k] = g.C * g.L, g.wc[k] = g.L, g.wp[k] = 1;
    } else if (four && wt->shape() == Shape{g.N, 1, a.size(2), a.size(3)}) {
      g.wn[k] = g.L, g.wc[k] = 0, g.wp[k] = 1;
    } else if (four && wt->shape() == Shape{g.N, g.C, 1, 1}) {
      g.wn[k] = g.C, g.wc[k] = 1, g.wp[k] = 0;
    } else {
      KDET_FAIL("kd_sq_dist_sum: weight ", wt->desc(), " must have the shape of ", a.desc(),
                four ? " or [N, 1, H, W] or [N, C, 1, 1]" : "");
    }
  }
  return g;
}

// The combined weight of plane (n, c) along p: row[p] = Π_k w_k[n, c, p] (the weights are constants).
template <class T, class R>
void sq_weight_row(const T* const* w, const SqGeom& g, int64_t n, int64_t c, R* row) {
  std::fill(row, row + g.L, R(1));
  for (int k = 0; k < g.nw; ++k) {
    const T* wk = w[k] + n * g.wn[k] + c * g.wc[k];
    for (int64_t p = 0; p < g.L; ++p) row[p] *= static_cast<R>(wk[p * g.wp[k]]);
  }
}

// Per-image sums [N] (double).
template <class T>
std::vector<double> sq_dist_cpu(const T* a, const T* b, const T* const* w, const SqGeom& g) {
  std::vector<double> part(g.N * g.C);
#pragma omp parallel if (g.N * g.C * g.L > cpu::kParallelGrain)
  {
    std::vector<double> row(g.nw > 0 ? g.L : 0);
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < g.N * g.C; ++nc) {
      const T* x = a + nc * g.L;
      const T* y = b + nc * g.L;
      double acc = 0;
      if (g.nw > 0) {
        sq_weight_row(w, g, nc / g.C, nc % g.C, row.data());
        const double* r = row.data();
#pragma omp simd reduction(+ : acc)
        for (int64_t p = 0; p < g.L; ++p) {
          const double d = static_cast<double>(x[p]) - static_cast<double>(y[p]);
          acc += r[p] * (d * d);
        }
      } else {
#pragma omp simd reduction(+ : acc)
        for (int64_t p = 0; p < g.L; ++p) {
          const double d = static_cast<double>(x[p]) - static_cast<double>(y[p]);
          acc += d * d;
        }
      }
      part[nc] = acc;
    }
  }
  std::vector<double> per(g.N, 0.0);
  for (int64_t nc = 0; nc < g.N * g.C; ++nc) per[nc / g.C] += part[nc];
  return per;
}

// da = 2·gs[n]·w·(a − b) (and db = −da), each written when its pointer is non-null.
template <class T>
void sq_dist_backward_cpu(const T* a, const T* b, const T* const* w, const SqGeom& g, const std::vector<double>& gs,
                          T* da, T* db) {
#pragma omp parallel if (g.N * g.C * g.L > cpu::kParallelGrain)
  {
    std::vector<T> row(g.L);
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < g.N * g.C; ++nc) {
      const T s = static_cast<T>(2.0 * gs[nc / g.C]);
      const T* x = a + nc * g.L;
      const T* y = b + nc * g.L;
      T* r = row.data();
      if (g.nw > 0) {
        sq_weight_row(w, g, nc / g.C, nc % g.C, r);
#pragma omp simd
        for (int64_t p = 0; p < g.L; ++p) r[p] *= s;
      } else {
        std::fill(r, r + g.L, s);
      }
      T* pa = da ? da + nc * g.L : (db ? db + nc * g.L : nullptr);  // where the first write goes
      if (!pa) continue;
#pragma omp simd
      for (int64_t p = 0; p < g.L; ++p) pa[p] = r[p] * (x[p] - y[p]);
      if (da && db) {
        T* pb = db + nc * g.L;
#pragma omp simd
        for (int64_t p = 0; p < g.L; ++p) pb[p] = -pa[p];
      } else if (db) {
#pragma omp simd
        for (int64_t p = 0; p < g.L; ++p) pa[p] = -pa[p];
      }
    }
  }
}

}  // namespace

Var sq_dist_sum(const Var& a, const Var& b, const Tensor& w, bool per_image, const Tensor& w2) {
  const Tensor ac = a.data().contiguous(), bc = b.data().contiguous();
  const Tensor wc = w.defined() ? w.contiguous() : w, wc2 = w2.defined() ? w2.contiguous() : w2;
  const SqGeom geo = sq_geom(ac, bc, wc, wc2);
  const Device dev = ac.device();
  std::vector<double> per;
  Tensor out;
  if (dev.is_cuda()) {
#if KDET_CUDA
    Tensor sums = Tensor::empty({geo.N + 1}, DType::F64, dev);  // per image, then the total (f64, on the device)
    cuda::kd_sq_dist(ac, bc, wc, wc2, geo, sums);
    out = (per_image ? sums.slice(0, 0, geo.N) : sums.slice(0, geo.N, geo.N + 1).reshape({})).to(ac.dtype());
#endif
  } else {
    dispatch_float(ac.dtype(), "kd_sq_dist_sum", [&](auto tag) {
      using T = decltype(tag);
      const T* ws[2] = {geo.nw > 0 ? wc.data<T>() : nullptr, geo.nw > 1 ? wc2.data<T>() : nullptr};
      per = sq_dist_cpu<T>(ac.data<T>(), bc.data<T>(), ws, geo);
    });
    if (per_image) {
      out = Tensor::from_vector(per).to(ac.dtype());
    } else {
      double tot = 0;
      for (double v : per) tot += v;
      out = Tensor::scalar(tot, ac.dtype());
    }
  }
  return record("kd_sq_dist_sum", out, {&a, &b}, [ac, bc, wc, wc2, geo, per_image](const Tensor& g, Grads& gr) {
    const std::vector<double> gv = g.to_vector<double>();
    const std::vector<double> gs = per_image ? gv : std::vector<double>(geo.N, gv[0]);
    const Device dev = ac.device();
    Tensor da = gr.wants(0) ? Tensor::empty(ac.shape(), ac.dtype(), dev) : Tensor();
    Tensor db = gr.wants(1) ? Tensor::empty(ac.shape(), ac.dtype(), dev) : Tensor();
    if (dev.is_cuda()) {
#if KDET_CUDA
      cuda::kd_sq_dist_backward(ac, bc, wc, wc2, geo, Tensor::from_vector(gs).to(dev), da, db);
#endif
    } else {
      dispatch_float(ac.dtype(), "kd_sq_dist_sum backward", [&](auto tag) {
        using T = decltype(tag);
        const T* ws[2] = {geo.nw > 0 ? wc.data<T>() : nullptr, geo.nw > 1 ? wc2.data<T>() : nullptr};
        sq_dist_backward_cpu<T>(ac.data<T>(), bc.data<T>(), ws, geo, gs, da.defined() ? da.data<T>() : nullptr,
                                db.defined() ? db.data<T>() : nullptr);
      });
    }
    if (da.defined()) gr.accumulate(0, da);
    if (db.defined()) gr.accumulate(1, db);
  });
}

Var safe_sqrt(const Var& q) {
  Tensor y = ops::sqrt(q.data());
  return record("kd_safe_sqrt", y, {&q}, [y](const Tensor& g, Grads& gr) {
    const Tensor pos = ops::gt_scalar(y, 0.0);
    const Tensor d = ops::div(g, ops::mul_scalar(ops::where(pos, y, 1.0), 2.0));
    gr.accumulate(0, ops::where(pos, d, 0.0));
  });
}

Var frobenius_distance(const Var& a, const Var& b) {
  Var d = a - b;
  return safe_sqrt(sum(d * d));
}

int64_t topk_count(double ratio, int64_t len) {
  KDET_CHECK(ratio >= 0.0 && ratio <= 1.0, "topk_count: ratio ", ratio, " outside [0, 1]");
  return static_cast<int64_t>(std::floor(ratio * static_cast<double>(len)));
}

Tensor topk_keep_mask(const Tensor& scores, int64_t k) {
  KDET_CHECK(scores.ndim() == 2, "topk_keep_mask: expects [N, L] scores, got ", scores.desc());
  const int64_t N = scores.size(0), L = scores.size(1);
  KDET_CHECK(k >= 0 && k <= L, "topk_keep_mask: k = ", k, " for rows of length ", L);
  const Tensor hs = scores.to(Device::cpu());  // the mask is built on the host (device scores are copied)
  Tensor keep = Tensor::ones({N, L}, DType::F64);
  double* pk = keep.data<double>();
  for (int64_t n = 0; n < N; ++n) {
    Tensor idx = ops::topk_indices(hs.select(0, n), k);  // descending, ties -> lower index first
    const int64_t* pi = idx.data<int64_t>();
    for (int64_t j = 0; j < k; ++j) pk[n * L + pi[j]] = 0.0;
  }
  return keep.to(scores.dtype()).to(scores.device());
}

void check_levels(const char* who, const std::vector<Var>& S, const std::vector<Tensor>& T, bool same_channels) {
  KDET_CHECK(!S.empty() && S.size() == T.size(), who, ": ", S.size(), " student levels vs ", T.size(),
             " teacher levels");
  for (size_t i = 0; i < S.size(); ++i) {
    const Shape& s = S[i].shape();
    const Shape& t = T[i].shape();
    KDET_CHECK(s.ndim() == 4 && t.ndim() == 4 && s[0] == t[0] && s[2] == t[2] && s[3] == t[3] &&
                   (!same_channels || s[1] == t[1]) && s[0] == S[0].shape()[0],
               who, ": level ", i, " student ", S[i].data().desc(), " and teacher ", T[i].desc(),
               " do not match (N, H, W", same_channels ? ", C" : "", " must agree)");
    KDET_CHECK(S[i].dtype() == T[i].dtype(), who, ": level ", i, " dtype mismatch ", S[i].data().desc(), " vs ",
               T[i].desc());
  }
}

// --- small modules ----------------------------------------------------------------------------

Linear::Linear(int64_t in, int64_t out, bool bias) {
  KDET_CHECK(in > 0 && out > 0, "Linear: bad sizes ", in, " -> ", out);
  w_ = &register_parameter("weight", Tensor::zeros({out, in}));
  if (bias) b_ = &register_parameter("bias", Tensor::zeros({out}));
}

Var Linear::forward(const Var& x) { return linear(x, *w_, b_ ? *b_ : Var()); }

void Linear::init_weights(Generator& g) { torch_default_init_(w_->data(), b_ ? &b_->data() : nullptr, g); }

LayerNorm::LayerNorm(const Shape& normalized_shape, double eps) : shape_(normalized_shape), eps_(eps) {
  w_ = &register_parameter("weight", Tensor::ones(normalized_shape));
  b_ = &register_parameter("bias", Tensor::zeros(normalized_shape));
}

Var LayerNorm::forward(const Var& x) { return layer_norm(x, shape_, *w_, *b_, eps_); }

void LayerNorm::init_weights(Generator&) {
  w_->data().fill_(1.0);
  b_->data().fill_(0.0);
}

Var ReLU::forward(const Var& x) { return relu(x); }

GeneratorBlock::GeneratorBlock(int64_t c) {
  emplace_back<Conv2d>(c, c, 3, 1, 1);
  emplace_back<ReLU>();
  emplace_back<Conv2d>(c, c, 3, 1, 1);
}

Var GeneratorBlock::forward_masked(const Var& x, const Tensor& m) {
  auto& c0 = static_cast<Conv2d&>((*this)[0]);
  const ConvSpec& sp = c0.spec();
  Var h = relu(masked_conv2d(x, m, c0.weight(), c0.bias(), Conv2dArgs::make(sp.stride, sp.padding, sp.dilation, sp.groups)));
  return (*this)[2].forward(h);
}

std::unique_ptr<Conv2d> make_align(int64_t cs, int64_t ct) { return std::make_unique<Conv2d>(cs, ct, 1, 1, 0); }

}  // namespace kdet::kd
