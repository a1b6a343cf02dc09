#include "detectors/nms.h"

#include <algorithm>
#include <numeric>

#if KDET_CUDA
#include "detectors/nms_cuda.h"
#include "engine/ops/index_ops.h"
#endif

namespace kdet {

namespace {
// NMS over rows of p (stride 4) restricted to `order` (already score-sorted); returns kept rows.
std::vector<int64_t> nms_sorted(const float* p, const std::vector<int64_t>& order, float thr) {
  const size_t n = order.size();
  std::vector<float> area(n);
  for (size_t k = 0; k < n; ++k) {
    const float* b = p + order[k] * 4;
    area[k] = (b[2] - b[0]) * (b[3] - b[1]);
  }
  std::vector<char> sup(n, 0);
  std::vector<int64_t> keep;
  for (size_t i = 0; i < n; ++i) {
    if (sup[i]) continue;
    keep.push_back(order[i]);
    const float* a = p + order[i] * 4;
    for (size_t j = i + 1; j < n; ++j) {
      if (sup[j]) continue;
      const float* b = p + order[j] * 4;
      const float w = std::max(0.f, std::min(a[2], b[2]) - std::max(a[0], b[0]));
      const float h = std::max(0.f, std::min(a[3], b[3]) - std::max(a[1], b[1]));
      const float inter = w * h;
      const float ovr = inter / (area[i] + area[j] - inter);
      if (ovr > thr) sup[j] = 1;
    }
  }
  return keep;
}

std::vector<int64_t> sort_desc(const float* s, const std::vector<int64_t>& idx) {
  std::vector<int64_t> o = idx;
  std::stable_sort(o.begin(), o.end(), [s](int64_t a, int64_t b) { return s[a] > s[b]; });
  return o;
}

void check_inputs(const Tensor& boxes, const Tensor& scores, const char* op) {
  KDET_CHECK(boxes.ndim() == 2 && boxes.size(1) == 4 && scores.ndim() == 1 && scores.size(0) == boxes.size(0) &&
                 boxes.device().is_cpu() && scores.device().is_cpu(),
             op, ": expects CPU boxes [N, 4] and scores [N], got ", boxes.desc(), " and ", scores.desc());
}


#if KDET_CUDA
// CUDA boxes: the score sort (stable, as the CPU) and the greedy scan run on the host; the IoU bitmask of
// every sorted pair comes from the GPU (detectors/nms_cuda.h). Returns the kept indices on the device.
Tensor nms_cuda(const Tensor& boxes_in, const Tensor& scores_in, double iou_thr) {
  KDET_CHECK(boxes_in.ndim() == 2 && boxes_in.size(1) == 4 && scores_in.ndim() == 1 &&
                 scores_in.size(0) == boxes_in.size(0) && scores_in.device() == boxes_in.device(),
             "nms: expects boxes [N, 4] and scores [N] on one device, got ", boxes_in.desc(), " and ", scores_in.desc());
  const Device dev = boxes_in.device();
  const Tensor s = scores_in.to(DType::F32).to(Device::cpu()).contiguous();
  const int64_t n = boxes_in.size(0);
  std::vector<int64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  const std::vector<int64_t> order = sort_desc(s.data<float>(), all);
  const Tensor sorted =
      ops::index_select(boxes_in.to(DType::F32), 0, Tensor::from_vector(order, Shape{n})).contiguous();
  const int64_t words = (n + 63) / 64;
  Tensor mask = Tensor::empty({n, words}, DType::I64, dev);
  cuda::nms_mask(sorted, static_cast<float>(iou_thr), mask);
  const Tensor hm = mask.to(Device::cpu());
  const uint64_t* pm = reinterpret_cast<const uint64_t*>(hm.data<int64_t>());
  std::vector<uint64_t> removed(static_cast<size_t>(words), 0);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i) {
    if (removed[i / 64] >> (i % 64) & 1) continue;
    keep.push_back(order[i]);
    for (int64_t w = 0; w < words; ++w) removed[w] |= pm[i * words + w];
  }
  return Tensor::from_vector(keep, Shape{static_cast<int64_t>(keep.size())}).to(dev);
}
#endif

}  // namespace

Tensor nms(const Tensor& boxes_in, const Tensor& scores_in, double iou_thr) {
#if KDET_CUDA
  if (boxes_in.device().is_cuda()) return nms_cuda(boxes_in, scores_in, iou_thr);
#endif
  check_inputs(boxes_in, scores_in, "nms");
  Tensor b = boxes_in.to(DType::F32).contiguous(), s = scores_in.to(DType::F32).contiguous();
  std::vector<int64_t> all(b.size(0));
  std::iota(all.begin(), all.end(), 0);
  auto keep = nms_sorted(b.data<float>(), sort_desc(s.data<float>(), all), static_cast<float>(iou_thr));
  return Tensor::from_vector(keep);
}

BatchedNmsResult batched_nms(const Tensor& boxes_in, const Tensor& scores_in, const Tensor& idxs_in, double iou_thr,
                             bool class_agnostic, int64_t split_thr) {
  check_inputs(boxes_in, scores_in, "batched_nms");
  KDET_CHECK(idxs_in.numel() == boxes_in.size(0), "batched_nms: ", idxs_in.desc(), " class ids for ",
             boxes_in.desc(), " boxes");
  Tensor b = boxes_in.to(DType::F32).contiguous(), s = scores_in.to(DType::F32).contiguous();
  auto idxs = idxs_in.to_vector<int64_t>();
  const int64_t n = b.size(0);
  const float* pb = b.data<float>();
  const float* ps = s.data<float>();
  const float thr = static_cast<float>(iou_thr);
  std::vector<int64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  std::vector<int64_t> keep;
  if (n == 0) {
  } else if (class_agnostic) {
    keep = nms_sorted(pb, sort_desc(ps, all), thr);
  } else {
    // mmdet: boxes shifted by idx * (max_coordinate + 1); the per-class path (n >= split_thr) also runs on
    // the shifted boxes (so both paths give mmdet's exact float IoUs).
    float mx = pb[0];
    for (int64_t i = 1; i < n * 4; ++i) mx = std::max(mx, pb[i]);
    const float off1 = mx + 1.0f;
    std::vector<float> shifted(n * 4);
    for (int64_t i = 0; i < n; ++i) {
      const float off = static_cast<float>(idxs[i]) * off1;
      for (int k = 0; k < 4; ++k) shifted[i * 4 + k] = pb[i * 4 + k] + off;
    }
    if (n < split_thr) {
      keep = nms_sorted(shifted.data(), sort_desc(ps, all), thr);
    } else {
      std::vector<int64_t> classes = idxs;
      std::sort(classes.begin(), classes.end());
      classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
      std::vector<std::vector<int64_t>> members(classes.size());
      for (int64_t i = 0; i < n; ++i)
        members[std::lower_bound(classes.begin(), classes.end(), idxs[i]) - classes.begin()].push_back(i);
      std::vector<char> mask(n, 0);
      for (auto& mem : members)
        for (int64_t k : nms_sorted(shifted.data(), sort_desc(ps, mem), thr)) mask[k] = 1;
      std::vector<int64_t> kept;
      for (int64_t i = 0; i < n; ++i)
        if (mask[i]) kept.push_back(i);
      keep = sort_desc(ps, kept);
    }
  }
  BatchedNmsResult r;
  const int64_t k = static_cast<int64_t>(keep.size());
  r.keep = Tensor::from_vector(keep, Shape{k});
  r.boxes = Tensor::empty({k, 4});
  r.scores = Tensor::empty({k});
  float* ob = r.boxes.data<float>();
  float* os = r.scores.data<float>();
  for (int64_t i = 0; i < k; ++i) {
    for (int c = 0; c < 4; ++c) ob[i * 4 + c] = pb[keep[i] * 4 + c];
    os[i] = ps[keep[i]];
  }
  return r;
}

Detections multiclass_nms(const Tensor& bboxes_in, const Tensor& scores_in, double score_thr, double iou_thr,
                          int64_t max_num) {
  KDET_CHECK(scores_in.ndim() == 2 && scores_in.size(1) >= 2 && bboxes_in.ndim() == 2 &&
                 bboxes_in.size(0) == scores_in.size(0),
             "multiclass_nms: expects bboxes [N, 4 or 4C] and scores [N, C+1], got ", bboxes_in.desc(), " and ",
             scores_in.desc());
  const int64_t n = scores_in.size(0), C = scores_in.size(1) - 1;
  KDET_CHECK(bboxes_in.size(1) == 4 || bboxes_in.size(1) == 4 * C, "multiclass_nms: ", bboxes_in.desc(),
             " boxes for ", C, " classes");
  Tensor b = bboxes_in.to(DType::F32).contiguous(), s = scores_in.to(DType::F32).contiguous();
  const bool shared = b.size(1) == 4;
  const float* pb = b.data<float>();
  const float* ps = s.data<float>();
  const float thr = static_cast<float>(score_thr);
  // (prior, class) pairs in row-major order of the [N, C] matrix, as mmdet's boolean masking.
  std::vector<float> vb, vs;
  std::vector<int64_t> vl;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const float sc = ps[i * (C + 1) + c];
      if (!(sc > thr)) continue;
      const float* q = shared ? pb + i * 4 : pb + i * 4 * C + c * 4;
      vb.insert(vb.end(), q, q + 4);
      vs.push_back(sc);
      vl.push_back(c);
    }
  const int64_t m = static_cast<int64_t>(vs.size());
  if (m == 0) return Detections::empty();
  Tensor tb = Tensor::from_vector(vb, Shape{m, 4}), ts = Tensor::from_vector(vs, Shape{m});
  Tensor tl = Tensor::from_vector(vl, Shape{m});
  auto r = batched_nms(tb, ts, tl, iou_thr);
  int64_t k = r.keep.numel();
  if (max_num >= 0) k = std::min(k, max_num);
  Detections d;
  d.boxes = r.boxes.slice(0, 0, k).contiguous();
  d.scores = r.scores.slice(0, 0, k).contiguous();
  auto keep = r.keep.to_vector<int64_t>();
  std::vector<int64_t> lab(k);
  for (int64_t i = 0; i < k; ++i) lab[i] = vl[keep[i]];
  d.labels = Tensor::from_vector(lab, Shape{k});
  return d;
}

}  // namespace kdet
