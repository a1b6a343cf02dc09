#include "detectors/roi_head.h"

#include <optional>

#include "engine/ops/elementwise.h"
#include "engine/ops/shape_ops.h"

namespace kdet {

Tensor argmax_foreground(const Tensor& cls_score, int64_t num_classes) {
  Tensor cls = cls_score.to(Device::cpu()).to(DType::F32).contiguous();
  KDET_CHECK(cls.ndim() == 2 && cls.size(1) == num_classes + 1, "argmax_foreground: cls_score ", cls.desc(),
             " for ", num_classes, " classes");
  const int64_t K = cls.size(0), C = num_classes;
  Tensor out = Tensor::empty({K}, DType::I64);
  const float* pc = cls.data<float>();
  int64_t* po = out.data<int64_t>();
  for (int64_t k = 0; k < K; ++k) {
    int64_t best = 0;  // first maximum, as torch.argmax
    for (int64_t c = 1; c < C; ++c)
      if (pc[k * (C + 1) + c] > pc[k * (C + 1) + best]) best = c;
    po[k] = best;
  }
  return out;
}

MaxIoUAssigner RoIHeadConfig::rcnn_assigner(double iou) {
  MaxIoUAssigner a;
  a.pos_iou_thr = a.neg_iou_thr = a.min_pos_iou = iou;
  a.match_low_quality = false;
  a.ignore_iof_thr = -1;
  return a;
}

RoIHeadConfig RoIHeadConfig::faster(int64_t num_classes) {
  RoIHeadConfig c;
  RoIStageConfig s;
  s.head = BBoxHeadConfig::faster(num_classes);
  s.assigner = rcnn_assigner(0.5);
  c.stages.push_back(s);
  return c;
}

RoIHeadConfig RoIHeadConfig::cascade_rcnn(int64_t num_classes) {
  RoIHeadConfig c;
  c.cascade = true;
  const double iou[3] = {0.5, 0.6, 0.7}, w[3] = {1.0, 0.5, 0.25};
  for (int i = 0; i < 3; ++i) {
    RoIStageConfig s;
    s.head = BBoxHeadConfig::cascade_stage(i, num_classes);
    s.assigner = rcnn_assigner(iou[i]);
    s.loss_weight = w[i];
    c.stages.push_back(s);
  }
  return c;
}

void RoIHeadConfig::set_widths(int64_t in_channels, int64_t fc_out_channels) {
  for (auto& s : stages) {
    s.head.in_channels = in_channels;
    s.head.fc_out_channels = fc_out_channels;
    s.head.roi_feat_size = extractor.out_size;
  }
}

RoIHead::RoIHead(RoIHeadConfig cfg) : cfg_(std::move(cfg)), extractor_(cfg_.extractor) {
  KDET_CHECK(!cfg_.stages.empty(), "RoIHead: no stages");
  KDET_CHECK(cfg_.cascade || cfg_.stages.size() == 1, "RoIHead: a standard (non-cascade) RoI head has 1 stage, got ",
             cfg_.stages.size());
  for (size_t i = 0; i < cfg_.stages.size(); ++i)
    KDET_CHECK(cfg_.stages[i].head.roi_feat_size == cfg_.extractor.out_size &&
                   cfg_.stages[i].head.num_classes == cfg_.stages[0].head.num_classes,
               "RoIHead: stage ", i, " head expects ", cfg_.stages[i].head.roi_feat_size, "x",
               cfg_.stages[i].head.roi_feat_size, " RoI features of ", cfg_.stages[i].head.num_classes,
               " classes; the extractor gives ", cfg_.extractor.out_size, "x", cfg_.extractor.out_size,
               " and stage 0 has ", cfg_.stages[0].head.num_classes, " classes");
  if (!cfg_.cascade) {
    heads_.push_back(&register_module("bbox_head", std::make_unique<Shared2FCBBoxHead>(cfg_.stages[0].head)));
  } else {
    auto& list = register_module("bbox_head", std::make_unique<ModuleList<Shared2FCBBoxHead>>());
    for (const auto& s : cfg_.stages) heads_.push_back(&list.emplace_back<Shared2FCBBoxHead>(s.head));
  }
}

void RoIHead::init_weights(Generator& g) {
  for (auto* h : heads_) h->init_weights(g);
}

std::vector<RandomSamplingResult> RoIHead::sample(int stage, const std::vector<Tensor>& proposals,
                                                  const std::vector<GtInstances>& gts, Generator& g) const {
  KDET_CHECK(proposals.size() == gts.size(), "RoIHead::sample: ", proposals.size(), " proposal lists for ",
             gts.size(), " GT sets");
  const RoIStageConfig& sc = cfg_.stages.at(stage);
  std::vector<RandomSamplingResult> out;
  for (size_t i = 0; i < proposals.size(); ++i) {
    KDET_CHECK(proposals[i].ndim() == 2 && proposals[i].size(1) >= 4, "RoIHead::sample: image ", i,
               " proposals ", proposals[i].desc(), " are not [n, 4+]");
    Tensor boxes = proposals[i].slice(1, 0, 4).to(DType::F32).contiguous();
    const GtInstances& gt = gts[i];
    Tensor gb = gt.boxes.defined() ? gt.boxes.to(DType::F32).contiguous() : Tensor::zeros({0, 4});
    AssignResult a = sc.assigner.assign(boxes, gb, gt.labels, gt.ignore);
    out.push_back(sc.sampler.sample(a, boxes, gt, g));
  }
  return out;
}

BBoxHeadOutputs RoIHead::forward_stage(int stage, const std::vector<Var>& feats, const Tensor& rois) {
  return heads_.at(stage)->forward(extractor_.forward(feats, rois));
}

RoIStageResult RoIHead::stage_loss(int stage, const std::vector<Var>& feats,
                                   std::vector<RandomSamplingResult> samples) {
  RoIStageResult r;
  r.samples = std::move(samples);
  std::vector<Tensor> boxes;
  for (const auto& s : r.samples) boxes.push_back(s.bboxes.defined() ? s.bboxes : Tensor::zeros({0, 4}));
  r.rois = bbox2roi(boxes);
  r.out = forward_stage(stage, feats, r.rois);
  r.targets = heads_[stage]->get_targets(r.samples);
  r.losses = heads_[stage]->loss(r.out, r.targets);
  return r;
}

std::vector<Tensor> RoIHead::refine(int stage, const RoIStageResult& r, const std::vector<ImageGeometry>& geo) const {
  const Shared2FCBBoxHead& h = *heads_.at(stage);
  const int64_t C = h.num_classes(), R = r.targets.size();
  // labels: the targets', negatives replaced by the argmax of the C foreground logits
  Tensor labels = r.targets.labels.to(Device::cpu()).clone();
  Tensor best = argmax_foreground(r.out.cls_score.data(), C);
  int64_t* pl = labels.data<int64_t>();
  const int64_t* pb = best.data<int64_t>();
  for (int64_t k = 0; k < R; ++k)
    if (pl[k] == C) pl[k] = pb[k];
  std::vector<Tensor> is_gt;
  for (const auto& s : r.samples) is_gt.push_back(s.pos_is_gt);
  return h.refine_bboxes(r.rois, labels, r.out.bbox_pred.data(), is_gt, geo);
}

LossList RoIHead::loss(const std::vector<Var>& feats, const std::vector<Tensor>& proposals,
                       const std::vector<GtInstances>& gts, const std::vector<ImageGeometry>& geo, Generator& g,
                       std::vector<RoIStageResult>* stages) {
  KDET_CHECK(proposals.size() == geo.size(), "RoIHead::loss: ", proposals.size(), " proposal lists for ", geo.size(),
             " images");
  LossList out;
  std::vector<Tensor> props = proposals;
  if (stages) stages->clear();
  for (int s = 0; s < num_stages(); ++s) {
    RoIStageResult r = stage_loss(s, feats, sample(s, props, gts, g));
    for (auto& [name, v] : r.losses) {
      if (cfg_.cascade) {
        std::string key = "s";
        key += std::to_string(s);
        key += '.';
        key += name;
        out.emplace_back(key, v * cfg_.stages[s].loss_weight);
      }
      else
        out.emplace_back(name, v);
    }
    const bool last = s + 1 == num_stages();
    if (!last) {
      if (r.targets.size() == 0) {  // mmdet: no RoI at all -> stop refining (later stages add nothing)
        if (stages) stages->push_back(std::move(r));
        break;
      }
      NoGradGuard ng;
      props = refine(s, r, geo);
    }
    if (stages) stages->push_back(std::move(r));
  }
  return out;
}

RoIPredictResult RoIHead::forward_rois(const std::vector<Var>& feats, const Tensor& rois_in,
                                       const std::vector<ImageGeometry>& geo) {
  RoIPredictResult res;
  res.rois = rois_in.to(Device::cpu()).to(DType::F32).contiguous();  // RoIs live on the host (RoIAlign moves them)
  KDET_CHECK(res.rois.ndim() == 2 && res.rois.size(1) == 5, "RoIHead::forward_rois: rois must be [K, 5], got ",
             res.rois.desc());
  const int64_t K = res.rois.size(0), N = static_cast<int64_t>(geo.size());
  // rows per image (grouped by ascending batch index, as bbox2roi makes them)
  std::vector<int64_t> counts(N, 0);
  const float* pr = res.rois.data<float>();
  for (int64_t k = 0; k < K; ++k) {
    const int64_t b = static_cast<int64_t>(pr[k * 5]);
    KDET_CHECK(b >= 0 && b < N && (k == 0 || b >= static_cast<int64_t>(pr[(k - 1) * 5])),
               "RoIHead::forward_rois: RoI ", k, " has batch index ", b, " (", N,
               " images; rows must be grouped by ascending image)");
    ++counts[b];
  }
  Var logit_sum;
  BBoxHeadOutputs o;
  for (int s = 0; s < num_stages(); ++s) {
    o = forward_stage(s, feats, res.rois);
    logit_sum = s == 0 ? o.cls_score : logit_sum + o.cls_score;
    if (s + 1 < num_stages() && K > 0) {
      // regress every RoI with its argmax foreground class (image by image, order kept)
      const Shared2FCBBoxHead& h = *heads_[s];
      Tensor labels = argmax_foreground(o.cls_score.data(), h.num_classes());
      std::vector<Tensor> parts;
      int64_t start = 0;
      for (int64_t i = 0; i < N; ++i) {
        const int64_t n = counts[i];
        if (n > 0)
          parts.push_back(h.regress_by_class(res.rois.slice(0, start, start + n), labels.slice(0, start, start + n),
                                             o.bbox_pred.data().slice(0, start, start + n), geo[i]));
        start += n;
      }
      res.rois = ops::concat(parts, 0);
    }
  }
  res.cls_score = num_stages() == 1
                      ? logit_sum
                      : logit_sum / Var(Tensor::scalar(static_cast<double>(num_stages()), logit_sum.dtype())
                                            .to(logit_sum.device()));
  res.bbox_pred = o.bbox_pred;
  res.counts = counts;
  return res;
}

RoIPredictResult RoIHead::predict(const std::vector<Var>& feats, const std::vector<Tensor>& proposals,
                                  const std::vector<ImageGeometry>& geo, const RCNNTestConfig* test) {
  KDET_CHECK(proposals.size() == geo.size(), "RoIHead::predict: ", proposals.size(), " proposal lists for ",
             geo.size(), " images");
  const RCNNTestConfig& tc = test ? *test : cfg_.test;
  const int64_t N = static_cast<int64_t>(geo.size());
  Tensor rois = bbox2roi(proposals);
  if (rois.size(0) == 0) {
    RoIPredictResult res;
    res.rois = rois;
    res.counts.assign(N, 0);
    res.detections.assign(N, Detections::empty());
    return res;
  }
  RoIPredictResult res = forward_rois(feats, rois, geo);
  const Shared2FCBBoxHead& last = *heads_.back();
  int64_t start = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t n = res.counts[i];
    res.detections.push_back(last.get_bboxes(res.rois.slice(0, start, start + n),
                                             res.cls_score.data().slice(0, start, start + n),
                                             res.bbox_pred.data().slice(0, start, start + n), geo[i], tc));
    start += n;
  }
  return res;
}

}  // namespace kdet
