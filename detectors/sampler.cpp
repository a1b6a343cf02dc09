#include "detectors/sampler.h"

#include <algorithm>
#include <numeric>

#include "engine/ops/index_ops.h"
#include "engine/ops/shape_ops.h"

namespace kdet {

namespace {

Tensor gt_boxes_f32(const GtInstances& gt) {
  return gt.boxes.defined() ? gt.boxes.to(DType::F32).contiguous().reshape({-1, 4}) : Tensor::zeros({0, 4});
}

// A uniformly random subset of `k` of `gallery` (partial Fisher-Yates), or all of it when it is smaller.
std::vector<int64_t> random_choice(std::vector<int64_t> gallery, int64_t k, Generator& g) {
  const int64_t n = static_cast<int64_t>(gallery.size());
  if (n <= k) return gallery;
  for (int64_t i = 0; i < k; ++i) std::swap(gallery[i], gallery[g.randint(i, n)]);
  gallery.resize(static_cast<size_t>(k));
  return gallery;
}

}  // namespace

Tensor RandomSamplingResult::pos_bboxes() const { return bboxes.slice(0, 0, num_pos()); }
Tensor RandomSamplingResult::neg_bboxes() const { return bboxes.slice(0, num_pos(), num_pos() + num_neg()); }

AssignResult add_gt_to_assign(const AssignResult& a, const Tensor& gt_labels, int64_t G) {
  KDET_CHECK(G >= 0 && (!gt_labels.defined() || gt_labels.numel() == G), "add_gt_to_assign: labels ",
             gt_labels.defined() ? gt_labels.desc() : std::string("undefined"), " for ", G, " gts");
  AssignResult r;
  r.num_gts = a.num_gts;
  Tensor self = Tensor::empty({G}, DType::I64);
  for (int64_t i = 0; i < G; ++i) self.data<int64_t>()[i] = i + 1;
  r.gt_inds = ops::concat({self, a.gt_inds.contiguous()}, 0);
  r.max_overlaps = ops::concat({Tensor::ones({G}), a.max_overlaps.to(DType::F32).contiguous()}, 0);
  Tensor lab = gt_labels.defined() ? gt_labels.to(DType::I64).contiguous().reshape({G})
                                   : Tensor::full({G}, -1, DType::I64);
  r.labels = ops::concat({lab, a.labels.contiguous()}, 0);
  return r;
}

AssignResult RandomSampler::with_gts(const AssignResult& a, const GtInstances& gt, int64_t* num_added) const {
  const int64_t G = gt.size();
  if (num_added) *num_added = 0;
  if (!add_gt_as_proposals || G == 0) return a;
  if (num_added) *num_added = G;
  return add_gt_to_assign(a, gt.labels, G);
}

Tensor RandomSampler::candidates_with_gts(const Tensor& candidates, const GtInstances& gt) const {
  Tensor c = candidates.to(DType::F32).contiguous();
  if (c.ndim() == 2 && c.size(1) > 4) c = c.slice(1, 0, 4).contiguous();  // proposals with a score column
  if (!add_gt_as_proposals || gt.size() == 0) return c;
  return ops::concat({gt_boxes_f32(gt), c}, 0);
}

RandomSamplingResult sampling_result_from_indices(const AssignResult& a, const Tensor& candidates,
                                                  const Tensor& gt_boxes, const std::vector<int64_t>& pos,
                                                  const std::vector<int64_t>& neg, int64_t num_gts_added) {
  KDET_CHECK(candidates.ndim() == 2 && candidates.size(1) == 4 && candidates.size(0) == a.gt_inds.numel(),
             "RandomSampler: candidates ", candidates.desc(), " for an assignment of ", a.gt_inds.numel(), " boxes");
  const int64_t N = candidates.size(0), P = static_cast<int64_t>(pos.size()), Ng = static_cast<int64_t>(neg.size());
  Tensor gi = a.gt_inds.contiguous(), lab = a.labels.contiguous();
  const int64_t* pgi = gi.data<int64_t>();
  const int64_t* pl = lab.data<int64_t>();
  Tensor gtb = gt_boxes.defined() ? gt_boxes.to(DType::F32).contiguous().reshape({-1, 4}) : Tensor::zeros({0, 4});
  RandomSamplingResult r;
  r.num_gts_added = num_gts_added;
  r.pos_inds = Tensor::from_vector(pos, Shape{P});
  r.neg_inds = Tensor::from_vector(neg, Shape{Ng});
  r.pos_assigned_gt_inds = Tensor::empty({P}, DType::I64);
  r.pos_gt_labels = Tensor::empty({P}, DType::I64);
  r.pos_is_gt = Tensor::empty({P}, DType::Bool);
  for (int64_t i = 0; i < P; ++i) {
    const int64_t k = pos[i];
    KDET_CHECK(k >= 0 && k < N && pgi[k] > 0 && pgi[k] <= gtb.size(0), "RandomSampler: index ", k,
               " is not a positive (gt_inds ", (k >= 0 && k < N ? pgi[k] : -2), ", ", gtb.size(0), " gts)");
    r.pos_assigned_gt_inds.data<int64_t>()[i] = pgi[k] - 1;
    r.pos_gt_labels.data<int64_t>()[i] = pl[k];
    r.pos_is_gt.data<bool>()[i] = k < num_gts_added;
  }
  for (int64_t k : neg)
    KDET_CHECK(k >= 0 && k < N && pgi[k] == 0, "RandomSampler: index ", k, " is not a negative");
  std::vector<int64_t> all(pos);
  all.insert(all.end(), neg.begin(), neg.end());
  r.bboxes = ops::index_select(candidates, 0, Tensor::from_vector(all, Shape{P + Ng}));
  r.pos_gt_bboxes = ops::index_select(gtb, 0, r.pos_assigned_gt_inds);
  return r;
}

RandomSamplingResult RandomSampler::sample(const AssignResult& a_in, const Tensor& candidates_in,
                                           const GtInstances& gt, Generator& g) const {
  KDET_CHECK(num > 0 && pos_fraction >= 0 && pos_fraction <= 1, "RandomSampler: bad config (num ", num,
             ", pos_fraction ", pos_fraction, ")");
  KDET_CHECK(candidates_in.ndim() == 2 && candidates_in.size(1) >= 4 &&
                 candidates_in.size(0) == a_in.gt_inds.numel(),
             "RandomSampler::sample: candidates ", candidates_in.desc(), " for an assignment of ",
             a_in.gt_inds.numel(), " boxes");
  int64_t added = 0;
  AssignResult a = with_gts(a_in, gt, &added);
  Tensor cand = candidates_with_gts(candidates_in, gt);
  Tensor gi = a.gt_inds.contiguous();
  const int64_t* p = gi.data<int64_t>();
  std::vector<int64_t> pos_all, neg_all;
  for (int64_t i = 0; i < gi.numel(); ++i) {
    if (p[i] > 0) pos_all.push_back(i);
    else if (p[i] == 0) neg_all.push_back(i);
  }
  const int64_t expected_pos = static_cast<int64_t>(static_cast<double>(num) * pos_fraction);
  std::vector<int64_t> pos = random_choice(std::move(pos_all), expected_pos, g);
  std::sort(pos.begin(), pos.end());
  const int64_t num_pos = static_cast<int64_t>(pos.size());
  int64_t expected_neg = num - num_pos;
  if (neg_pos_ub >= 0) {
    const int64_t ub = static_cast<int64_t>(static_cast<double>(neg_pos_ub) * std::max<int64_t>(num_pos, 1));
    expected_neg = std::min(expected_neg, ub);
  }
  std::vector<int64_t> neg = random_choice(std::move(neg_all), std::max<int64_t>(expected_neg, 0), g);
  std::sort(neg.begin(), neg.end());
  return sampling_result_from_indices(a, cand, gt.boxes, pos, neg, added);
}

}  // namespace kdet
