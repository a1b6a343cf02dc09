// detectors/sampler.h — mmdet RandomSampler (specs/detectors.md 4.6), f32 CPU.
//
// NOTE the name: detectors/assigner.h already has `SamplingResult` (the PseudoSampler's std::vector
// result), so the RandomSampler's tensor result is `RandomSamplingResult`.
//
// sample(assign, candidates [N,4], gt, g), mmdet RandomSampler.sample:
//   1. add_gt_as_proposals and G > 0: the G gt boxes are PREPENDED to the candidates and assigned to
//      themselves (gt_inds 1..G, overlap 1, their labels): see add_gt_to_assign. num_gts_added = G.
//   2. expected_pos = int(num * pos_fraction); positives (gt_inds > 0) are all kept if count <= expected,
//      else a uniformly random subset of expected_pos (random permutation, first k).
//   3. expected_neg = num - #pos (capped at int(neg_pos_ub * max(#pos, 1)) when neg_pos_ub >= 0);
//      negatives (gt_inds == 0) likewise.
//   4. Both index sets are sorted ascending (mmdet's .unique()); sampled order is positives, negatives.
// The random stream cannot match PyTorch's; only the distribution matters. `from_indices` builds the
// same result from explicitly given positive / negative indices (deterministic tests).
#pragma once
#include <vector>

#include "detectors/assigner.h"
#include "detectors/types.h"
#include "engine/random.h"

namespace kdet {

struct RandomSamplingResult {
  Tensor pos_inds, neg_inds;      // i64 [P], [Ng]: indices into the candidates (gt rows first when added)
  Tensor pos_assigned_gt_inds;    // i64 [P]: 0-based gt index of each positive
  Tensor pos_gt_labels;           // i64 [P]: assign.labels of each positive (-1 when no labels were given)
  Tensor pos_gt_bboxes;           // f32 [P, 4]: the assigned gt box of each positive
  Tensor pos_is_gt;               // bool [P]: the positive is an added gt box
  Tensor bboxes;                  // f32 [P+Ng, 4] sampled boxes, positives first
  int64_t num_gts_added = 0;
  int64_t num_pos() const { return pos_inds.defined() ? pos_inds.numel() : 0; }
  int64_t num_neg() const { return neg_inds.defined() ? neg_inds.numel() : 0; }
  Tensor pos_bboxes() const;      // f32 [P, 4] (first P rows of bboxes)
  Tensor neg_bboxes() const;      // f32 [Ng, 4]
};

struct RandomSampler {
  int64_t num = 512;
  double pos_fraction = 0.25;
  int64_t neg_pos_ub = -1;
  bool add_gt_as_proposals = true;

  static RandomSampler rcnn() { return {}; }                  // 512 @ 0.25, gt added
  static RandomSampler rpn() { return {256, 0.5, -1, false}; }  // 256 @ 0.5, no gt

  // assign: result of assigning `candidates` [N,4] (N rows) to gt.boxes (gt.labels give pos labels).
  RandomSamplingResult sample(const AssignResult& a, const Tensor& candidates, const GtInstances& gt,
                              Generator& g) const;
  // The candidate set and assignment after step 1 (unchanged when no gt is added): what `sample`
  // draws from. Exposed so that tests / callers can pick indices themselves.
  AssignResult with_gts(const AssignResult& a, const GtInstances& gt, int64_t* num_added) const;
  Tensor candidates_with_gts(const Tensor& candidates, const GtInstances& gt) const;
};

// mmdet AssignResult.add_gt_: gt_inds = [1..G, a.gt_inds], max_overlaps = [1 x G, ...],
// labels = [gt_labels, a.labels] (gt_labels undefined -> -1).
AssignResult add_gt_to_assign(const AssignResult& a, const Tensor& gt_labels, int64_t num_gts);

// Result for explicit indices into `candidates` (the set AFTER adding gts, i.e. candidates_with_gts):
// pos_inds must be positives of `a` (gt_inds > 0), neg_inds negatives; both are used in the given order.
RandomSamplingResult sampling_result_from_indices(const AssignResult& a, const Tensor& candidates,
                                                  const Tensor& gt_boxes, const std::vector<int64_t>& pos_inds,
                                                  const std::vector<int64_t>& neg_inds, int64_t num_gts_added);

}  // namespace kdet
