// engine/ops/roi_align.cpp — RoIAlign forward and backward (CPU, f32/f64), mmcv / torchvision
// semantics (see roi_align.h). The arithmetic follows torchvision's CPU kernel term by term (sample
// positions, weights, summation order) so f32 results match it to rounding. Two layouts: per channel
// plane (few samples per feature element) and channels-last (vectorised over C, two transposes), chosen
// by the sample count; they give bit-identical results.
#include "engine/ops/roi_align.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/backend.h"

#if KDET_CUDA
#include "engine/ops/roi_align_cuda.h"
#endif

namespace kdet {

namespace {

void check_args(const char* op, const Tensor& rois, DType feat_dtype, const RoIAlignArgs& a) {
  KDET_CHECK(rois.ndim() == 2 && rois.size(1) == 5, op, ": rois must be [K, 5] (batch_idx, x1, y1, x2, y2), got ",
             rois.desc());
  KDET_CHECK(rois.dtype() == feat_dtype, op, ": rois ", rois.desc(), " must have the features' dtype ",
             dtype_name(feat_dtype));
  KDET_CHECK(a.out_h > 0 && a.out_w > 0 && a.sampling_ratio >= 0 && a.spatial_scale > 0, op, ": bad arguments (out ",
             a.out_h, "x", a.out_w, ", sampling_ratio ", a.sampling_ratio, ", spatial_scale ", a.spatial_scale, ")");
}

// Bilinear sample of one point: 4 flat plane offsets and weights (weights 0 outside the map).
template <class T>
struct Sample {
  int32_t p1, p2, p3, p4;  // plane offsets (H*W < 2^31 is checked)
  T w1, w2, w3, w4;
};

// The sample points of one RoI in (ph, pw, iy, ix) order, plus the per-bin count.
template <class T>
struct RoIGeom {
  int64_t batch = 0, grid_h = 0, grid_w = 0;
  T count = 1;
  std::vector<Sample<T>> samples;  // out_h*out_w*grid_h*grid_w
};

template <class T>
void roi_geometry(const T* r, int64_t H, int64_t W, const RoIAlignArgs& a, RoIGeom<T>& g) {
  g.batch = static_cast<int64_t>(r[0]);
  const T scale = static_cast<T>(a.spatial_scale);
  const T offset = a.aligned ? T(0.5) : T(0);
  const T start_w = r[1] * scale - offset, start_h = r[2] * scale - offset;
  const T end_w = r[3] * scale - offset, end_h = r[4] * scale - offset;
  T roi_w = end_w - start_w, roi_h = end_h - start_h;
  if (!a.aligned) {
    roi_w = std::max(roi_w, T(1));
    roi_h = std::max(roi_h, T(1));
  }
  const T bin_h = roi_h / static_cast<T>(a.out_h), bin_w = roi_w / static_cast<T>(a.out_w);
  g.grid_h = a.sampling_ratio > 0 ? a.sampling_ratio : static_cast<int64_t>(std::ceil(roi_h / static_cast<T>(a.out_h)));
  g.grid_w = a.sampling_ratio > 0 ? a.sampling_ratio : static_cast<int64_t>(std::ceil(roi_w / static_cast<T>(a.out_w)));
  const int64_t gh = std::max<int64_t>(g.grid_h, 0), gw = std::max<int64_t>(g.grid_w, 0);
  g.count = static_cast<T>(std::max<int64_t>(gh * gw, 1));
  g.samples.resize(static_cast<size_t>(a.out_h * a.out_w * gh * gw));
  size_t k = 0;
  for (int64_t ph = 0; ph < a.out_h; ++ph)
    for (int64_t pw = 0; pw < a.out_w; ++pw)
      for (int64_t iy = 0; iy < gh; ++iy) {
        const T yy = start_h + static_cast<T>(ph) * bin_h +
                     (static_cast<T>(iy) + T(0.5)) * bin_h / static_cast<T>(gh);
        for (int64_t ix = 0; ix < gw; ++ix) {
          const T xx = start_w + static_cast<T>(pw) * bin_w +
                       (static_cast<T>(ix) + T(0.5)) * bin_w / static_cast<T>(gw);
          Sample<T>& s = g.samples[k++];
          T x = xx, y = yy;
          if (y < T(-1) || y > static_cast<T>(H) || x < T(-1) || x > static_cast<T>(W)) {
            s = {0, 0, 0, 0, T(0), T(0), T(0), T(0)};
            continue;
          }
          if (y <= 0) y = 0;
          if (x <= 0) x = 0;
          int64_t y_low = static_cast<int64_t>(y), x_low = static_cast<int64_t>(x), y_high, x_high;
          if (y_low >= H - 1) {
            y_high = y_low = H - 1;
            y = static_cast<T>(y_low);
          } else {
            y_high = y_low + 1;
          }
          if (x_low >= W - 1) {
            x_high = x_low = W - 1;
            x = static_cast<T>(x_low);
          } else {
            x_high = x_low + 1;
          }
          const T ly = y - static_cast<T>(y_low), lx = x - static_cast<T>(x_low);
          const T hy = T(1) - ly, hx = T(1) - lx;
          s = {static_cast<int32_t>(y_low * W + x_low), static_cast<int32_t>(y_low * W + x_high),
               static_cast<int32_t>(y_high * W + x_low), static_cast<int32_t>(y_high * W + x_high),
               hy * hx, hy * lx, ly * hx, ly * lx};
        }
      }
}

template <class T>
void validate_batch_indices(const char* op, const T* r, int64_t K, int64_t N) {
  for (int64_t k = 0; k < K; ++k) {
    const T b = r[k * 5];
    KDET_CHECK(b >= 0 && b < static_cast<T>(N) && b == std::floor(b), op, ": RoI ", k, " has batch index ", b,
               " outside [0, ", N, ")");
  }
}

// [B, R, S] -> [B, S, R] in 32 x 32 tiles, parallel over B x tiles: [B, C, P] <-> [B, P, C] (channels last).
template <class T>
void transpose_last2(const T* src, T* dst, int64_t B, int64_t R, int64_t S) {
  const int64_t tr = (R + 31) / 32, ts = (S + 31) / 32;
#pragma omp parallel for schedule(static) if (B * R * S > (1 << 16))
  for (int64_t t = 0; t < B * tr * ts; ++t) {
    const int64_t b = t / (tr * ts), r0 = (t / ts) % tr * 32, s0 = t % ts * 32;
    const T* x = src + b * R * S;
    T* y = dst + b * R * S;
    for (int64_t i = s0; i < std::min(S, s0 + 32); ++i)
      for (int64_t r = r0; r < std::min(R, r0 + 32); ++r) y[i * R + r] = x[r * S + i];
  }
}

// Geometry of every RoI (parallel over RoIs) and the total number of bilinear samples.
template <class T>
int64_t all_geometry(const T* rois, int64_t K, int64_t H, int64_t W, const RoIAlignArgs& a, std::vector<RoIGeom<T>>& geo) {
  geo.resize(static_cast<size_t>(K));
#pragma omp parallel for schedule(static) if (K > 16)
  for (int64_t k = 0; k < K; ++k) roi_geometry(rois + k * 5, H, W, a, geo[k]);
  int64_t total = 0;
  for (const auto& g : geo) total += static_cast<int64_t>(g.samples.size());
  return total;
}

// The channels-last kernels vectorise over C (the 4 corners of a sample are contiguous C-vectors) and pay
// for two transposes: worth it when there are at least ~N*H*W/4 samples. Every output / gradient element
// sees the same operations in the same order on both paths, so the results are bit-identical.
bool use_channels_last(int64_t samples, int64_t N, int64_t C, int64_t H, int64_t W) {
  return C >= 8 && samples * 4 >= N * H * W;
}

#if KDET_CUDA
// CUDA: every RoI's samples come from roi_geometry on the host (the CPU's arithmetic) and are uploaded
// flat; the kernels of engine/ops/roi_align_cuda.h only gather and scatter with them.
template <class T>
cuda::RoISamples upload_samples(const std::vector<RoIGeom<T>>& geo, Device d) {
  const int64_t K = static_cast<int64_t>(geo.size());
  int64_t S = 0;
  for (const auto& g : geo) S += static_cast<int64_t>(g.samples.size());
  std::vector<int64_t> idx(static_cast<size_t>(S * 4)), roi(static_cast<size_t>(K * 3));
  std::vector<T> w(static_cast<size_t>(S * 4)), cnt(static_cast<size_t>(K));
  int64_t at = 0;
  for (int64_t k = 0; k < K; ++k) {
    const RoIGeom<T>& g = geo[k];
    roi[k * 3] = g.batch;
    roi[k * 3 + 1] = at;
    roi[k * 3 + 2] = std::max<int64_t>(g.grid_h, 0) * std::max<int64_t>(g.grid_w, 0);
    cnt[k] = g.count;
    for (const Sample<T>& sm : g.samples) {
      const int64_t p[4] = {sm.p1, sm.p2, sm.p3, sm.p4};
      const T ws[4] = {sm.w1, sm.w2, sm.w3, sm.w4};
      for (int j = 0; j < 4; ++j) {
        idx[at * 4 + j] = p[j];
        w[at * 4 + j] = ws[j];
      }
      ++at;
    }
  }
  return {Tensor::from_vector(idx, Shape{S, 4}).to(d), Tensor::from_vector(w, Shape{S, 4}).to(d),
          Tensor::from_vector(roi, Shape{K, 3}).to(d), Tensor::from_vector(cnt, Shape{K}).to(d)};
}

// The backward's gather map (roi_align_cuda.h): every (pixel, RoI, bin, corner weight) contribution in the
// CPU scatter's order — images, their RoIs in input order, bins, samples, corners; a sample whose four
// weights are all 0 (outside the map) is skipped, as on the CPU — then stably bucketed by pixel.
template <class T>
cuda::RoIBackwardMap backward_map(const std::vector<RoIGeom<T>>& geo, int64_t N, int64_t HW, int64_t PHW, Device d) {
  const int64_t K = static_cast<int64_t>(geo.size());
  std::vector<int64_t> pix, roi, bin;
  std::vector<T> w, cnt(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) cnt[k] = geo[k].count;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const RoIGeom<T>& g = geo[k];
      if (g.batch != n) continue;
      const int64_t per_bin = PHW > 0 ? static_cast<int64_t>(g.samples.size()) / PHW : 0;
      for (int64_t b = 0; b < PHW; ++b)
        for (int64_t j = 0; j < per_bin; ++j) {
          const Sample<T>& sm = g.samples[b * per_bin + j];
          if (sm.w1 == T(0) && sm.w2 == T(0) && sm.w3 == T(0) && sm.w4 == T(0)) continue;
          const int64_t ps[4] = {sm.p1, sm.p2, sm.p3, sm.p4};
          const T ws[4] = {sm.w1, sm.w2, sm.w3, sm.w4};
          for (int q = 0; q < 4; ++q) {
            pix.push_back(n * HW + ps[q]);
            roi.push_back(k);
            bin.push_back(b);
            w.push_back(ws[q]);
          }
        }
    }
  const int64_t E = static_cast<int64_t>(pix.size());
  std::vector<int64_t> off(static_cast<size_t>(N * HW + 1), 0);  // counting sort by pixel (stable)
  for (int64_t e = 0; e < E; ++e) ++off[pix[e] + 1];
  for (int64_t i = 0; i < N * HW; ++i) off[i + 1] += off[i];
  std::vector<int64_t> at(off.begin(), off.end() - 1), sroi(E), sbin(E);
  std::vector<T> sw(E);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t t = at[pix[e]]++;
    sroi[t] = roi[e];
    sbin[t] = bin[e];
    sw[t] = w[e];
  }
  return {Tensor::from_vector(off, Shape{N * HW + 1}).to(d), Tensor::from_vector(sroi, Shape{E}).to(d),
          Tensor::from_vector(sbin, Shape{E}).to(d), Tensor::from_vector(sw, Shape{E}).to(d),
          Tensor::from_vector(cnt, Shape{K}).to(d)};
}

Tensor roi_align_cuda(const Tensor& feat, const Tensor& rois, const RoIAlignArgs& a) {
  const int64_t N = feat.size(0), C = feat.size(1), H = feat.size(2), W = feat.size(3), K = rois.size(0);
  Tensor out = Tensor::zeros({K, C, a.out_h, a.out_w}, feat.dtype(), feat.device());
  if (K == 0 || C == 0) return out;
  KDET_CHECK(H > 0 && W > 0 && H * W < (int64_t{1} << 31), "roi_align: bad feature map size ", feat.desc());
  const Tensor rh = rois.to(Device::cpu()).contiguous();
  dispatch_float(feat.dtype(), "roi_align", [&](auto tag) {
    using T = decltype(tag);
    validate_batch_indices("roi_align", rh.data<T>(), K, N);
    std::vector<RoIGeom<T>> geo;
    all_geometry(rh.data<T>(), K, H, W, a, geo);
    cuda::roi_align_forward(feat.contiguous(), upload_samples(geo, feat.device()), a.out_h * a.out_w, out);
  });
  return out;
}

Tensor roi_align_backward_cuda(const Tensor& grad_out, const Tensor& rois, const Shape& fs, const RoIAlignArgs& a) {
  const int64_t N = fs[0], C = fs[1], H = fs[2], W = fs[3], K = rois.size(0);
  if (K == 0 || N * C * H * W == 0) return Tensor::zeros(fs, grad_out.dtype(), grad_out.device());
  Tensor gx = Tensor::empty(fs, grad_out.dtype(), grad_out.device());  // every element written
  KDET_CHECK(H * W < (int64_t{1} << 31), "roi_align_backward: feature map ", fs, " too large");
  const Tensor rh = rois.to(Device::cpu()).contiguous();
  dispatch_float(grad_out.dtype(), "roi_align_backward", [&](auto tag) {
    using T = decltype(tag);
    validate_batch_indices("roi_align_backward", rh.data<T>(), K, N);
    std::vector<RoIGeom<T>> geo;
    all_geometry(rh.data<T>(), K, H, W, a, geo);
    cuda::roi_align_backward(grad_out.contiguous(), backward_map(geo, N, H * W, a.out_h * a.out_w, grad_out.device()),
                             a.out_h * a.out_w, gx);
  });
  return gx;
}
#endif

}  // namespace

namespace ops {

Tensor roi_align(const Tensor& feat, const Tensor& rois, const RoIAlignArgs& a) {
  KDET_CHECK(feat.ndim() == 4, "roi_align: features must be [N, C, H, W], got ", feat.desc());
  check_args("roi_align", rois, feat.dtype(), a);
  KDET_CHECK(feat.device() == rois.device() || rois.device().is_cpu(), "roi_align: features ", feat.desc(),
             " and rois ", rois.desc(), " are on different devices");
  if (!feat.device().is_cpu()) {
#if KDET_CUDA
    if (feat.device().is_cuda()) return roi_align_cuda(feat, rois, a);
#endif
    no_kernel("roi_align", feat.device());
  }
  const int64_t N = feat.size(0), C = feat.size(1), H = feat.size(2), W = feat.size(3), K = rois.size(0);
  Tensor out = Tensor::zeros({K, C, a.out_h, a.out_w}, feat.dtype());
  if (K == 0 || C == 0) return out;
  KDET_CHECK(H > 0 && W > 0 && H * W < (int64_t{1} << 31), "roi_align: bad feature map size ", feat.desc());
  const Tensor fc = feat.contiguous(), rc = rois.contiguous();
  dispatch_float(feat.dtype(), "roi_align", [&](auto tag) {
    using T = decltype(tag);
    const T* pf = fc.data<T>();
    const T* pr = rc.data<T>();
    T* po = out.data<T>();
    validate_batch_indices("roi_align", pr, K, N);
    const int64_t PHW = a.out_h * a.out_w;
    std::vector<RoIGeom<T>> geo;
    const int64_t samples = all_geometry(pr, K, H, W, a, geo);
    if (!use_channels_last(samples, N, C, H, W)) {
#pragma omp parallel for schedule(static) if (K * C * PHW > 4096)
      for (int64_t k = 0; k < K; ++k) {
        const RoIGeom<T>& g = geo[k];
        const int64_t per_bin = std::max<int64_t>(g.grid_h, 0) * std::max<int64_t>(g.grid_w, 0);
        for (int64_t c = 0; c < C; ++c) {
          const T* plane = pf + (g.batch * C + c) * H * W;
          T* o = po + (k * C + c) * PHW;
          const Sample<T>* s = g.samples.data();
          for (int64_t b = 0; b < PHW; ++b) {
            T v = 0;
            for (int64_t i = 0; i < per_bin; ++i, ++s)
              v += s->w1 * plane[s->p1] + s->w2 * plane[s->p2] + s->w3 * plane[s->p3] + s->w4 * plane[s->p4];
            o[b] = v / g.count;
          }
        }
      }
      return;
    }
    std::vector<T> fl(static_cast<size_t>(N * C * H * W));
    transpose_last2(pf, fl.data(), N, C, H * W);
#pragma omp parallel
    {
      std::vector<T> acc(static_cast<size_t>(PHW * C));
#pragma omp for schedule(static)
      for (int64_t k = 0; k < K; ++k) {
        const RoIGeom<T>& g = geo[k];
        const int64_t per_bin = std::max<int64_t>(g.grid_h, 0) * std::max<int64_t>(g.grid_w, 0);
        const T* base = fl.data() + g.batch * H * W * C;
        const Sample<T>* s = g.samples.data();
        for (int64_t b = 0; b < PHW; ++b) {
          T* ob = acc.data() + b * C;
          std::fill(ob, ob + C, T(0));
          for (int64_t i = 0; i < per_bin; ++i, ++s) {
            const T *x1 = base + int64_t{s->p1} * C, *x2 = base + int64_t{s->p2} * C;
            const T *x3 = base + int64_t{s->p3} * C, *x4 = base + int64_t{s->p4} * C;
            const T w1 = s->w1, w2 = s->w2, w3 = s->w3, w4 = s->w4;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) ob[c] += w1 * x1[c] + w2 * x2[c] + w3 * x3[c] + w4 * x4[c];
          }
          for (int64_t c = 0; c < C; ++c) ob[c] = ob[c] / g.count;
        }
        transpose_last2(acc.data(), po + k * C * PHW, 1, PHW, C);
      }
    }
  });
  return out;
}

Tensor roi_align_backward(const Tensor& grad_out, const Tensor& rois, const Shape& fs, const RoIAlignArgs& a) {
  KDET_CHECK(fs.ndim() == 4, "roi_align_backward: feature shape must be [N, C, H, W], got ", fs);
  check_args("roi_align_backward", rois, grad_out.dtype(), a);
  const int64_t N = fs[0], C = fs[1], H = fs[2], W = fs[3], K = rois.size(0);
  KDET_CHECK(grad_out.shape() == Shape({K, C, a.out_h, a.out_w}), "roi_align_backward: grad ", grad_out.desc(),
             " does not match rois ", rois.desc(), " and features ", fs, " (expected [", K, ", ", C, ", ", a.out_h,
             ", ", a.out_w, "])");
  if (!grad_out.device().is_cpu()) {
#if KDET_CUDA
    if (grad_out.device().is_cuda()) {
      KDET_CHECK(rois.device() == grad_out.device() || rois.device().is_cpu(), "roi_align_backward: rois ",
                 rois.desc(), " and grad ", grad_out.desc(), " are on different devices");
      return roi_align_backward_cuda(grad_out, rois, fs, a);
    }
#endif
    no_kernel("roi_align_backward", grad_out.device());
  }
  Tensor gx = Tensor::zeros(fs, grad_out.dtype());
  if (K == 0 || N * C * H * W == 0) return gx;
  KDET_CHECK(H * W < (int64_t{1} << 31), "roi_align_backward: feature map ", fs, " too large");
  const Tensor gc = grad_out.contiguous(), rc = rois.contiguous();
  dispatch_float(grad_out.dtype(), "roi_align_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gc.data<T>();
    const T* pr = rc.data<T>();
    T* px = gx.data<T>();
    validate_batch_indices("roi_align_backward", pr, K, N);
    // Geometry once per RoI (shared by all channels); then every feature element is owned by one thread,
    // which adds its image's RoIs in input order: deterministic, no atomics.
    std::vector<RoIGeom<T>> geo;
    const int64_t samples = all_geometry(pr, K, H, W, a, geo);
    std::vector<std::vector<int64_t>> by_image(static_cast<size_t>(N));
    for (int64_t k = 0; k < K; ++k) by_image[geo[k].batch].push_back(k);
    const int64_t PHW = a.out_h * a.out_w;
    if (!use_channels_last(samples, N, C, H, W)) {
#pragma omp parallel for schedule(static) if (K * C * PHW > 4096)
      for (int64_t plane = 0; plane < N * C; ++plane) {
        const int64_t n = plane / C, c = plane % C;
        T* gp = px + plane * H * W;
        for (int64_t k : by_image[n]) {
          const RoIGeom<T>& g = geo[k];
          const int64_t per_bin = std::max<int64_t>(g.grid_h, 0) * std::max<int64_t>(g.grid_w, 0);
          const T* go = pg + (k * C + c) * PHW;
          const Sample<T>* s = g.samples.data();
          for (int64_t b = 0; b < PHW; ++b) {
            const T gb = go[b];
            for (int64_t i = 0; i < per_bin; ++i, ++s) {
              if (s->w1 == T(0) && s->w2 == T(0) && s->w3 == T(0) && s->w4 == T(0)) continue;
              gp[s->p1] += gb * s->w1 / g.count;
              gp[s->p2] += gb * s->w2 / g.count;
              gp[s->p3] += gb * s->w3 / g.count;
              gp[s->p4] += gb * s->w4 / g.count;
            }
          }
        }
      }
      return;
    }
    // channels last: grad_out -> [K, PHW, C], gradient [N, H*W, C]; threads own (image, 32-channel block)
    std::vector<T> gl(static_cast<size_t>(K * PHW * C)), xl(static_cast<size_t>(N * H * W * C), T(0));
    transpose_last2(pg, gl.data(), K, C, PHW);
    const int64_t CB = 32, nb = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < N * nb; ++task) {
      const int64_t n = task / nb, c0 = task % nb * CB, cn = std::min(C, c0 + CB) - c0;
      T* base = xl.data() + n * H * W * C + c0;
      for (int64_t k : by_image[n]) {
        const RoIGeom<T>& g = geo[k];
        const int64_t per_bin = std::max<int64_t>(g.grid_h, 0) * std::max<int64_t>(g.grid_w, 0);
        const Sample<T>* s = g.samples.data();
        for (int64_t b = 0; b < PHW; ++b) {
          const T* gb = gl.data() + (k * PHW + b) * C + c0;
          for (int64_t i = 0; i < per_bin; ++i, ++s) {
            if (s->w1 == T(0) && s->w2 == T(0) && s->w3 == T(0) && s->w4 == T(0)) continue;
            const T cnt = g.count;
            const int32_t ps[4] = {s->p1, s->p2, s->p3, s->p4};
            const T ws[4] = {s->w1, s->w2, s->w3, s->w4};
            for (int j = 0; j < 4; ++j) {  // corner by corner, as the plane kernel (corners may coincide)
              T* d = base + int64_t{ps[j]} * C;
              const T w = ws[j];
#pragma omp simd
              for (int64_t c = 0; c < cn; ++c) d[c] += gb[c] * w / cnt;
            }
          }
        }
      }
    }
    transpose_last2(xl.data(), px, N, H * W, C);
  });
  return gx;
}

}  // namespace ops

Var roi_align(const Var& feat, const Tensor& rois, const RoIAlignArgs& a) {
  Tensor out = ops::roi_align(feat.data(), rois, a);
  const Shape fs = feat.shape();
  return record("roi_align", out, {&feat}, [rois, fs, a](const Tensor& g, Grads& gr) {
    if (gr.wants(0)) gr.accumulate(0, ops::roi_align_backward(g, rois, fs, a));
  });
}

}  // namespace kdet
