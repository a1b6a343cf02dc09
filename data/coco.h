// data/coco.h — COCO instances JSON <-> Dataset, COCO results JSON <-> Detection, and the mmdet
// training-target rules (specs/detectors.md §1.1).
//
// The reader is a streaming (SAX) parse with nlohmann-json straight into the typed structs: the
// segmentation polygons are skipped, never materialised, so a file the size of instances_train2017
// loads in seconds and a few hundred MB (see `kdet bench-coco-load`).
//
// Bad input (every message names the file and the image / annotation id or the byte offset):
//   error (results would be wrong): malformed or truncated JSON (byte offset; NaN/Infinity hint),
//     top level not an object, "images"/"categories" missing or not arrays, a required key missing
//     or of the wrong type (images: id, file_name, width, height; annotations: id, image_id,
//     category_id, bbox = 4 numbers; categories: id), width/height <= 0, duplicate image /
//     annotation / category id, an annotation whose image_id is not an image of the file.
//   skip-and-count (printed by LoadReport::print; the run goes on):
//     unknown category id (pycocotools never evaluates it either), negative bbox width/height,
//     negative area. (NaN/Infinity are not JSON and numbers beyond double range are parse errors,
//     so non-finite values never get this far; the checks stay for in-memory data.)
//   note only: "annotations" missing (image-info files: no annotations), `area` missing (w*h
//     used), boxes lying entirely outside their image (kept for evaluation; dropped from training
//     by train_targets like mmdet).
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include "data/types.h"

namespace kdet::data {

struct LoadReport {
  // skipped annotations, by reason
  int64_t unknown_category = 0, nonfinite_bbox = 0, negative_size = 0, bad_area = 0;
  // kept, but worth knowing
  int64_t area_missing = 0, outside_image = 0;
  bool no_annotations_key = false;
  std::vector<std::string> examples;  // the first few skipped/noted annotations, with ids
  int64_t skipped() const { return unknown_category + nonfinite_bbox + negative_size + bad_area; }
  void note(const std::string& msg);
  void print(FILE* f, const std::string& source) const;  // nothing when there is nothing to say
};

struct CocoLoadOptions {
  std::string image_root;  // default: the directory of the JSON file
  bool verbose = true;     // print the LoadReport to stderr when something was skipped
};

Dataset load_coco(const std::string& path, const CocoLoadOptions& opt = {}, LoadReport* report = nullptr);
// Same, from JSON text in memory (`name` stands for the file in messages).
Dataset parse_coco(const std::string& text, const std::string& name, const CocoLoadOptions& opt = {},
                   LoadReport* report = nullptr);

// Writes the instances JSON (images, annotations with bbox/area/iscrowd, categories). Numbers are
// written as the shortest text that reads back to the same double, so load(write(ds)) == ds.
void write_coco(const Dataset& ds, const std::string& path);
std::string coco_to_string(const Dataset& ds);

// COCO results: [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...].
// Errors: malformed JSON, not an array, missing/mistyped keys, an image id not in `gt` (pycocotools
// asserts the same). Skip-and-count: category ids not in `gt` (pycocotools ignores them), non-finite
// score or bbox.
struct ResultsReport {
  int64_t unknown_category = 0, nonfinite = 0;
  std::vector<std::string> examples;
  void print(FILE* f, const std::string& source) const;
};
std::vector<Detection> load_coco_results(const std::string& path, const Dataset& gt,
                                         ResultsReport* report = nullptr, bool verbose = true);
std::vector<Detection> parse_coco_results(const std::string& text, const std::string& name,
                                          const Dataset& gt, ResultsReport* report = nullptr,
                                          bool verbose = true);
void write_coco_results(const std::vector<Detection>& dets, const std::string& path);

// mmdet CocoDataset._parse_ann_info: drops boxes with no overlap with the image, area <= 0,
// w < 1 or h < 1; keeps ignore regions flagged (gt_bboxes_ignore). File order.
std::vector<BoxAnn> train_targets(const ImageRecord& im);
// mmdet _filter_imgs: images with min(w, h) >= min_size that have at least one annotation of a
// known category (crowd included) when filter_empty; indices into ds.images.
std::vector<size_t> train_image_indices(const Dataset& ds, int min_size = 32, bool filter_empty = true);

// Shortest round-trip text of a double ("0.1", "12", "1e-07"), used by every JSON writer here.
std::string format_double(double v);

}  // namespace kdet::data
