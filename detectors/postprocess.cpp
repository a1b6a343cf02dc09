#include "detectors/postprocess.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "detectors/nms.h"

namespace kdet {

namespace {
inline float sigmoid1(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

Tensor dense_to_rows(const Tensor& map_in, int64_t k) {
  KDET_CHECK(map_in.ndim() == 3 && k > 0 && map_in.size(0) % k == 0, "dense_to_rows: expects [A*", k,
             ", H, W], got ", map_in.desc());
  Tensor m = map_in.to(Device::cpu()).to(DType::F32).contiguous();  // a CPU result whatever the map's device
  const int64_t A = m.size(0) / k, H = m.size(1), W = m.size(2);
  Tensor out = Tensor::empty({H * W * A, k});
  const float* p = m.data<float>();
  float* o = out.data<float>();
  for (int64_t a = 0; a < A; ++a)
    for (int64_t c = 0; c < k; ++c) {
      const float* src = p + (a * k + c) * H * W;
      for (int64_t hw = 0; hw < H * W; ++hw) o[(hw * A + a) * k + c] = src[hw];
    }
  return out;
}

namespace {

// decode(level, rows) -> f32 [rows.size(), 4] boxes of those rows of the level, clipped to img_shape.
using RowDecoder = std::function<Tensor(size_t, const std::vector<int64_t>&)>;

// The selection / rescale / NMS of dense_postprocess, boxes of the selected rows from `decode`.
Detections postprocess_rows(const std::vector<Tensor>& cls_logits, const std::vector<int64_t>& box_rows, int64_t C,
                            const ImageGeometry& geo, const DenseTestConfig& cfg, const RowDecoder& decode) {
  std::vector<float> all_boxes, all_scores;  // variant a: [M,4],[M]; variant b: [M,4],[M,C]
  std::vector<int64_t> all_labels;
  for (size_t l = 0; l < cls_logits.size(); ++l) {
    Tensor logits = dense_to_rows(cls_logits[l], C);
    const int64_t n = logits.size(0);
    KDET_CHECK(box_rows[l] == n, "dense_postprocess: level ", l, " has ", n, " score rows and ", box_rows[l],
               " box rows");
    const float* pl = logits.data<float>();
    std::vector<float> sc;  // legacy: all scores [n, C]
    if (cfg.legacy) {
      sc.resize(n * C);
      for (int64_t i = 0; i < n * C; ++i) sc[i] = sigmoid1(pl[i]);
    }
    if (!cfg.legacy) {
      // (prior, class) pairs with score > score_thr, row-major; a logit prefilter skips most sigmoids
      // (the exact test is on the f32 sigmoid, so the result is that of thresholding every score).
      const float thr = static_cast<float>(cfg.score_thr);
      const float lthr = (cfg.score_thr > 0 && cfg.score_thr < 1)
                             ? static_cast<float>(std::log(cfg.score_thr / (1 - cfg.score_thr)) - 1e-2)
                             : -INFINITY;
      std::vector<int64_t> cand;
      std::vector<float> cs;
      for (int64_t i = 0; i < n * C; ++i) {
        if (!(pl[i] > lthr)) continue;
        const float s = sigmoid1(pl[i]);
        if (s > thr) cand.push_back(i), cs.push_back(s);
      }
      // the nms_pre best under (score desc, index asc) = a stable descending sort, truncated
      std::vector<int64_t> order(cand.size());
      std::iota(order.begin(), order.end(), 0);
      auto better = [&](int64_t a, int64_t b) { return cs[a] > cs[b] || (cs[a] == cs[b] && a < b); };
      const int64_t k_all = static_cast<int64_t>(cand.size());
      const int64_t k = cfg.nms_pre > 0 ? std::min<int64_t>(cfg.nms_pre, k_all) : k_all;
      if (k < k_all) std::nth_element(order.begin(), order.begin() + k, order.end(), better);
      std::sort(order.begin(), order.begin() + k, better);
      if (k == 0) continue;
      std::vector<int64_t> rows(k);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t idx = cand[order[j]];
        rows[j] = idx / C;
        all_scores.push_back(cs[order[j]]);
        all_labels.push_back(idx % C);
      }
      Tensor dec = decode(l, rows);
      all_boxes.insert(all_boxes.end(), dec.data<float>(), dec.data<float>() + k * 4);
    } else {
      std::vector<int64_t> rows(n);
      std::iota(rows.begin(), rows.end(), 0);
      if (cfg.nms_pre > 0 && n > cfg.nms_pre) {
        std::vector<float> mx(n);
        for (int64_t i = 0; i < n; ++i) mx[i] = *std::max_element(sc.begin() + i * C, sc.begin() + (i + 1) * C);
        std::stable_sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) { return mx[a] > mx[b]; });
        rows.resize(cfg.nms_pre);
      }
      const int64_t k = static_cast<int64_t>(rows.size());
      if (k == 0) continue;
      for (int64_t j = 0; j < k; ++j)
        all_scores.insert(all_scores.end(), sc.begin() + rows[j] * C, sc.begin() + (rows[j] + 1) * C);
      Tensor dec = decode(l, rows);
      all_boxes.insert(all_boxes.end(), dec.data<float>(), dec.data<float>() + k * 4);
    }
  }
  const int64_t m = static_cast<int64_t>(all_boxes.size() / 4);
  if (m == 0) return Detections::empty();
  if (cfg.rescale)
    for (int64_t i = 0; i < m; ++i)
      for (int k = 0; k < 4; ++k) all_boxes[i * 4 + k] /= static_cast<float>(geo.scale_factor[k]);
  if (cfg.legacy) {
    std::vector<float> s2(m * (C + 1), 0.f);
    for (int64_t i = 0; i < m; ++i) std::copy(&all_scores[i * C], &all_scores[i * C] + C, &s2[i * (C + 1)]);
    return multiclass_nms(Tensor::from_vector(all_boxes, Shape{m, 4}), Tensor::from_vector(s2, Shape{m, C + 1}),
                          cfg.score_thr, cfg.nms_iou, cfg.max_per_img);
  }
  if (cfg.drop_empty_boxes) {
    std::vector<float> b2, s2;
    std::vector<int64_t> l2;
    for (int64_t i = 0; i < m; ++i) {
      const float* b = &all_boxes[i * 4];
      if (b[2] - b[0] > 0 && b[3] - b[1] > 0) {
        b2.insert(b2.end(), b, b + 4);
        s2.push_back(all_scores[i]);
        l2.push_back(all_labels[i]);
      }
    }
    all_boxes.swap(b2), all_scores.swap(s2), all_labels.swap(l2);
  }
  const int64_t m2 = static_cast<int64_t>(all_scores.size());
  if (m2 == 0) return Detections::empty();
  auto r = batched_nms(Tensor::from_vector(all_boxes, Shape{m2, 4}), Tensor::from_vector(all_scores, Shape{m2}),
                       Tensor::from_vector(all_labels, Shape{m2}), cfg.nms_iou);
  const int64_t k = std::min<int64_t>(r.keep.numel(), cfg.max_per_img);
  auto keep = r.keep.to_vector<int64_t>();
  std::vector<int64_t> lab(k);
  for (int64_t i = 0; i < k; ++i) lab[i] = all_labels[keep[i]];
  Detections d;
  d.boxes = r.boxes.slice(0, 0, k).contiguous();
  d.scores = r.scores.slice(0, 0, k).contiguous();
  d.labels = Tensor::from_vector(lab, Shape{k});
  return d;
}

}  // namespace

Detections dense_postprocess(const std::vector<Tensor>& cls_logits, const std::vector<Tensor>& bbox_preds,
                             const std::vector<Tensor>& priors, int64_t C, const DeltaXYWHBBoxCoder& coder,
                             const ImageGeometry& geo, const DenseTestConfig& cfg) {
  KDET_CHECK(cls_logits.size() == bbox_preds.size() && cls_logits.size() == priors.size(),
             "dense_postprocess: ", cls_logits.size(), " cls maps, ", bbox_preds.size(), " box maps, ",
             priors.size(), " prior sets");
  const std::pair<int64_t, int64_t> max_shape{geo.img_h, geo.img_w};
  std::vector<Tensor> deltas, pri;
  std::vector<int64_t> nrows;
  for (size_t l = 0; l < bbox_preds.size(); ++l) {
    deltas.push_back(dense_to_rows(bbox_preds[l], 4));
    pri.push_back(priors[l].to(DType::F32).contiguous());
    KDET_CHECK(pri[l].size(0) == deltas[l].size(0), "dense_postprocess: level ", l, " has ", deltas[l].size(0),
               " box rows and ", pri[l].size(0), " priors");
    nrows.push_back(deltas[l].size(0));
  }
  return postprocess_rows(cls_logits, nrows, C, geo, cfg, [&](size_t l, const std::vector<int64_t>& rows) {
    const int64_t k = static_cast<int64_t>(rows.size());
    Tensor kp = Tensor::empty({k, 4}), kd = Tensor::empty({k, 4});
    const float* pp = pri[l].data<float>();
    const float* pd = deltas[l].data<float>();
    for (int64_t j = 0; j < k; ++j) {
      std::copy(pp + rows[j] * 4, pp + rows[j] * 4 + 4, kp.data<float>() + j * 4);
      std::copy(pd + rows[j] * 4, pd + rows[j] * 4 + 4, kd.data<float>() + j * 4);
    }
    return coder.decode(kp, kd, max_shape);
  });
}

Detections dense_postprocess_boxes(const std::vector<Tensor>& cls_logits, const std::vector<Tensor>& boxes,
                                   int64_t C, const ImageGeometry& geo, const DenseTestConfig& cfg) {
  KDET_CHECK(cls_logits.size() == boxes.size(), "dense_postprocess_boxes: ", cls_logits.size(), " cls maps, ",
             boxes.size(), " box sets");
  std::vector<Tensor> bx;
  std::vector<int64_t> nrows;
  for (const Tensor& b : boxes) {
    KDET_CHECK(b.ndim() == 2 && b.size(1) == 4, "dense_postprocess_boxes: boxes ", b.desc(), " must be [n, 4]");
    bx.push_back(b.to(DType::F32).contiguous());
    nrows.push_back(b.size(0));
  }
  return postprocess_rows(cls_logits, nrows, C, geo, cfg, [&](size_t l, const std::vector<int64_t>& rows) {
    const int64_t k = static_cast<int64_t>(rows.size());
    Tensor out = Tensor::empty({k, 4});
    const float* pb = bx[l].data<float>();
    for (int64_t j = 0; j < k; ++j) std::copy(pb + rows[j] * 4, pb + rows[j] * 4 + 4, out.data<float>() + j * 4);
    return out;
  });
}

}  // namespace kdet
