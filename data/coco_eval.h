// data/coco_eval.h — COCO bbox mAP with pycocotools' COCOeval semantics (evaluate, accumulate,
// summarize; useCats = 1; specs/detectors.md §13), checked against pycocotools to 1e-9
// (tests/ref/gen_cocoeval.py).
//
// Ground truth: every annotation of `gt` (all images of the file are evaluated, in id order; an
// annotation's iscrowd makes it an ignore region with crowd IoU = inter / area(det); the
// annotation's `area` decides its area range). Detections: COCO results (a detection's area is
// w * h as in loadRes).
#pragma once
#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "data/types.h"

namespace kdet::data {

struct CocoEvalParams {
  std::vector<double> iou_thrs;  // default: numpy linspace(0.5, 0.95, 10), bit-identical
  std::vector<double> rec_thrs;  // default: numpy linspace(0, 1, 101)
  std::vector<int> max_dets{1, 10, 100};
  // all, small, medium, large (both ends inclusive)
  std::vector<std::array<double, 2>> area_rngs{{0.0, 1e10}, {0.0, 1024.0}, {1024.0, 9216.0}, {9216.0, 1e10}};
  CocoEvalParams();
};

struct CocoMetrics {
  // the 12 numbers of COCOeval.summarize() in its order; -1 where pycocotools gives -1
  double AP = -1, AP50 = -1, AP75 = -1, APs = -1, APm = -1, APl = -1;
  double AR1 = -1, AR10 = -1, AR100 = -1, ARs = -1, ARm = -1, ARl = -1;
  // per category (sorted by id): mean precision over IoU thresholds and recall thresholds, area
  // 'all', maxDets 100 (mmdet's classwise table); -1 when the category has no ground truth
  std::vector<double> per_class_ap;
  std::vector<int64_t> class_ids;
  std::vector<std::string> class_names;

  std::array<double, 12> stats() const { return {AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl}; }
  static const std::array<const char*, 12>& keys();  // "AP", "AP50", ..., "ARl"
  std::string to_json() const;  // {"AP": ..., ..., "per_class": {"name": ap, ...}}
  void print(FILE* f, bool per_class = false) const;  // pycocotools' summary lines
};

// Full precision/recall arrays as pycocotools' self.eval (for tests and plots):
// precision[t][r][k][a][m] flattened in that order, recall[t][k][a][m].
struct CocoEvalArrays {
  int T = 0, R = 0, K = 0, A = 0, M = 0;
  std::vector<double> precision, recall;
};

CocoMetrics coco_evaluate(const Dataset& gt, const std::vector<Detection>& dets,
                          const CocoEvalParams& params = {}, CocoEvalArrays* arrays = nullptr);

}  // namespace kdet::data
