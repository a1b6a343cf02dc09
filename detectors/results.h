// detectors/results.h — detector outputs -> COCO results (data::Detection), for evaluation and JSON.
//
// Detections must already be in original-image coordinates (RetinaNet::predict with rescale=true).
// category_id = ds.categories[label].id; bbox = [x1, y1, x2 - x1, y2 - y1] (mmdet xyxy2xywh).
#pragma once
#include <vector>

#include "data/types.h"
#include "detectors/types.h"

namespace kdet {

std::vector<data::Detection> to_coco_results(const data::Dataset& ds, int64_t image_id, const Detections& d);
std::vector<data::Detection> to_coco_results(const data::Dataset& ds, const data::Batch& batch,
                                             const std::vector<Detections>& dets);

}  // namespace kdet
