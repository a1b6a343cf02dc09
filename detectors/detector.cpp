#include "detectors/detector.h"

#include "engine/check.h"

namespace kdet {

const std::vector<Var>& DetectorTaps::of(TapKind k) const {
  switch (k) {
    case TapKind::Backbone: return backbone;
    case TapKind::Neck: return neck;
    case TapKind::ClsScore: return head.cls_scores;
    case TapKind::BboxPred: return head.bbox_preds;
    case TapKind::ClsFeat: return head.cls_feats;
    case TapKind::RegFeat: return head.reg_feats;
    case TapKind::NeckConv: return neck_conv;
  }
  KDET_FAIL("DetectorTaps::of: unknown tap kind ", static_cast<int>(k));
}

std::map<std::string, Var> DetectorTaps::named() const {
  std::map<std::string, Var> m;
  for (size_t i = 0; i < backbone.size(); ++i) m["backbone.layer" + std::to_string(i + 1)] = backbone[i];
  for (size_t i = 0; i < neck.size(); ++i) m["neck.out." + std::to_string(i)] = neck[i];
  for (size_t i = 0; i < neck_conv.size(); ++i) m["neck.fpn_convs." + std::to_string(i) + ".conv"] = neck_conv[i];
  const std::string h = head_name + ".";
  for (size_t l = 0; l < head.num_levels(); ++l) {
    const std::string s = std::to_string(l);
    m[h + cls_name + "." + s] = head.cls_scores[l];
    if (l < head.bbox_preds.size()) m[h + reg_name + "." + s] = head.bbox_preds[l];
    if (l < head.cls_feats.size()) m[h + "cls_feat." + s] = head.cls_feats[l];
    if (l < head.reg_feats.size()) m[h + "reg_feat." + s] = head.reg_feats[l];
  }
  if (roi_cls_score.defined()) m["roi_head.cls_score"] = roi_cls_score;
  if (roi_bbox_pred.defined()) m["roi_head.bbox_pred"] = roi_bbox_pred;
  return m;
}

std::vector<GtInstances> Detector::gt_instances(const data::Batch& batch) {
  std::vector<GtInstances> out;
  for (const auto& anns : batch.gts) {
    std::vector<float> b, ig;
    std::vector<int64_t> l;
    for (const auto& a : anns) {
      if (a.ignore) {
        ig.insert(ig.end(), {a.x1, a.y1, a.x2, a.y2});
      } else {
        b.insert(b.end(), {a.x1, a.y1, a.x2, a.y2});
        l.push_back(a.label);
      }
    }
    const int64_t g = static_cast<int64_t>(l.size()), k = static_cast<int64_t>(ig.size() / 4);
    out.push_back({Tensor::from_vector(b, Shape{g, 4}), Tensor::from_vector(l, Shape{g}),
                   Tensor::from_vector(ig, Shape{k, 4})});
  }
  return out;
}

std::vector<ImageGeometry> Detector::geometry(const data::Batch& batch) {
  std::vector<ImageGeometry> out;
  for (const auto& m : batch.metas) {
    ImageGeometry g;
    g.img_h = m.img_h, g.img_w = m.img_w;
    g.pad_h = m.pad_h, g.pad_w = m.pad_w;
    g.scale_factor = {m.scale_w, m.scale_h, m.scale_w, m.scale_h};
    out.push_back(g);
  }
  return out;
}

void unflip_detections(std::vector<Detections>& d, const data::Batch& batch, bool rescale) {
  KDET_CHECK(d.size() == batch.size(), "unflip_detections: ", d.size(), " detection lists for ", batch.size(), " images");
  for (size_t n = 0; n < d.size(); ++n) {
    const auto& m = batch.metas[n];
    if (!m.flip || d[n].size() == 0) continue;
    const float W = rescale ? static_cast<float>(m.img_w) / m.scale_w : static_cast<float>(m.img_w);
    float* b = d[n].boxes.data<float>();
    for (int64_t i = 0; i < d[n].size(); ++i) {
      const float x1 = b[i * 4], x2 = b[i * 4 + 2];
      b[i * 4] = W - x2;
      b[i * 4 + 2] = W - x1;
    }
  }
}

data::Batch slice_batch(const data::Batch& b, int64_t i0, int64_t i1) {
  const int64_t n = static_cast<int64_t>(b.size());
  KDET_CHECK(0 <= i0 && i0 < i1 && i1 <= n, "slice_batch: images [", i0, ", ", i1, ") of a batch of ", n);
  data::Batch s;
  s.images = b.images.slice(0, i0, i1).contiguous();
  s.metas.assign(b.metas.begin() + i0, b.metas.begin() + i1);
  if (!b.gts.empty()) s.gts.assign(b.gts.begin() + i0, b.gts.begin() + i1);
  return s;
}

Tensor Detector::per_image_loss(const data::Batch& batch, const DetectorTaps&) {
  NoGradGuard ng;
  const int64_t N = static_cast<int64_t>(batch.size());
  std::vector<float> out(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    double s = 0;
    for (const auto& [name, v] : loss(slice_batch(batch, i, i + 1))) s += v.item();
    out[static_cast<size_t>(i)] = static_cast<float>(s);
  }
  return Tensor::from_vector(out, {N});
}

}  // namespace kdet
