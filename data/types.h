// data/types.h — the typed in-memory form of a detection data set, of a training batch, and of
// detections in COCO terms. No meta dicts: every field is named here.
//
// Box convention (mmdet >= 2.0, specs/detectors.md): (x1, y1, x2, y2) float32 pixels, x2 = x + w
// (no "+1"). The COCO file's own numbers (bbox as x, y, w, h in double, `area`, `iscrowd`) are kept
// next to it because the evaluator needs them bit-exactly (pycocotools works in double).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kdet::data {

struct BoxAnn {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;  // float32(x), float32(y), float32(x + w), float32(y + h)
  int64_t label = -1;                    // contiguous label 0..C-1 (categories sorted by id)
  bool ignore = false;   // ignore region: COCO iscrowd (or "ignore": 1), KITTI DontCare
  bool iscrowd = false;  // the file's iscrowd flag (evaluation: crowd IoU, ignored GT)
  int64_t ann_id = 0;
  double area = 0;                     // the file's `area` (segmentation area for COCO); area ranges
  std::array<double, 4> xywh{};        // the file's bbox, double, as pycocotools sees it
};

struct Category {
  int64_t id = 0;
  std::string name;
  std::string supercategory;
};

struct ImageRecord {
  int64_t id = 0;
  std::string file;  // as in the file (relative to Dataset::image_root unless absolute)
  int width = 0, height = 0;
  std::vector<BoxAnn> anns;  // every valid annotation of the image, file order (eval uses them all)
};

struct Dataset {
  std::string source;      // the file (or directory) it was read from, for messages
  std::string image_root;  // prefix for ImageRecord::file
  std::vector<ImageRecord> images;         // file order
  std::vector<Category> categories;        // sorted by id: categories[label].id
  std::map<int64_t, int64_t> cat_to_label;  // category id -> label
  std::map<int64_t, size_t> image_index;    // image id -> index into images

  int64_t num_classes() const { return static_cast<int64_t>(categories.size()); }
  size_t num_annotations() const;
  std::string image_path(const ImageRecord& im) const;  // image_root + "/" + file (unless absolute)
  const ImageRecord& image_by_id(int64_t id) const;     // throws naming the id and the source
  // Rebuilds cat_to_label and image_index from categories/images (sorting categories by id).
  void reindex();
};

// What happened to an image on its way into a batch (kept so results map back to the original).
struct ImageMeta {
  int64_t image_id = 0;
  size_t index = 0;          // index into Dataset::images
  int ori_h = 0, ori_w = 0;  // original image size
  int img_h = 0, img_w = 0;  // after resize (mmdet img_shape), unpadded
  int pad_h = 0, pad_w = 0;  // padded to the size divisor (mmdet pad_shape); the batch may be larger
  float scale_w = 1, scale_h = 1;  // new_w / ori_w, new_h / ori_h (float32, mmdet scale_factor)
  bool flip = false;               // horizontally flipped (after resize)
};

// Maps a box in network-input coordinates (resized, possibly flipped) back to the original image:
// un-flip, then divide by the scale factor (mmdet rescale=True; no clipping afterwards).
void box_to_original(const ImageMeta& m, float& x1, float& y1, float& x2, float& y2);

struct Batch {
  Tensor images;  // f32 [N, 3, H, W], normalized, zero-padded bottom/right to the batch max (H, W % 32 == 0)
  std::vector<ImageMeta> metas;
  std::vector<std::vector<BoxAnn>> gts;  // per image, network-input coordinates (ignore regions flagged)
  size_t size() const { return metas.size(); }
};

// One detection in COCO results terms (image id, category id, bbox x y w h in original pixels, score).
struct Detection {
  int64_t image_id = 0;
  int64_t category_id = 0;
  std::array<double, 4> bbox{};  // x, y, w, h
  double score = 0;
};

// mmdet's xyxy2xywh for one box of a detector's output (float32, original coordinates, label):
// bbox = [x1, y1, x2 - x1, y2 - y1] computed in double from the float32 values.
Detection make_detection(const Dataset& ds, int64_t image_id, int64_t label, float x1, float y1,
                         float x2, float y2, float score);

}  // namespace kdet::data
