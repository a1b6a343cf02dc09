// data/kitti.h — KITTI object labels (training/label_2/*.txt) into the same Dataset as COCO.
//
// A label line: type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score].
// Boxes (x1, y1, x2, y2) in pixels become xywh = (x1, y1, x2 - x1, y2 - y1), area = w * h.
// DontCare regions become crowd/ignore annotations, one per category (a COCO crowd region only
// ignores detections of its own category). Categories: `classes` in order, ids 1..C.
// Errors (file:line named): unreadable files, a line with fewer than 15 fields or a non-number
// where a number belongs. Skip-and-count (LoadReport): types not in `classes` (e.g. Misc when
// not listed), boxes with x2 < x1 or y2 < y1.
#pragma once
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/types.h"

namespace kdet::data {

struct KittiOptions {
  std::vector<std::string> classes{"Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc"};
  std::string image_dir = "image_2", label_dir = "label_2", image_ext = ".png";
};

struct KittiObject {
  std::string type;
  double truncated = 0, occluded = 0, alpha = 0;
  double x1 = 0, y1 = 0, x2 = 0, y2 = 0;
};
std::vector<KittiObject> parse_kitti_label(const std::string& text, const std::string& name);

// `root` holds image_dir/ and label_dir/ (e.g. KITTI/object/training). Image sizes come from the
// image headers. Image ids are the numeric file stems (000123 -> 123).
Dataset load_kitti(const std::string& root, const KittiOptions& opt = {}, LoadReport* report = nullptr,
                   bool verbose = true);

}  // namespace kdet::data
