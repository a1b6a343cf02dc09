#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "data/coco.h"

using namespace kdet;
using namespace kdet::data;

namespace {
const char* kGood = R"({"info": {"year": 2017}, "licenses": [{"id": 1}],
  "images": [{"id": 7, "file_name": "x/7.jpg", "width": 640, "height": 480},
             {"id": 3, "file_name": "3.jpg", "width": 100, "height": 50},
             {"id": 9, "file_name": "9.jpg", "width": 20, "height": 20}],
  "annotations": [
    {"segmentation": [[1, 2, 3, 4, 5, 6]], "area": 1234.5, "iscrowd": 0, "image_id": 7, "bbox": [10.5, 20.25, 100.1, 50.3], "category_id": 18, "id": 100},
    {"segmentation": {"counts": [1, 2], "size": [480, 640]}, "area": 300, "iscrowd": 1, "image_id": 7, "bbox": [0, 0, 30, 20], "category_id": 1, "id": 101},
    {"area": 10, "iscrowd": 0, "image_id": 3, "bbox": [1, 1, 0.5, 20], "category_id": 90, "id": 102},
    {"area": 10, "iscrowd": 0, "image_id": 3, "bbox": [200, 1, 5, 5], "category_id": 1, "id": 103}],
  "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]})";

Dataset parse(const std::string& s, LoadReport* r = nullptr) {
  CocoLoadOptions o;
  o.verbose = false;
  return parse_coco(s, "t.json", o, r);
}
std::string error_of(const std::string& s) {
  try {
    parse(s);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("coco: instances JSON into typed records (labels, crowd, xywh -> xyxy, empty images)") {
  LoadReport rep;
  Dataset ds = parse(kGood, &rep);
  REQUIRE(ds.images.size() == 3);
  REQUIRE(ds.categories.size() == 3);
  CHECK(ds.categories[0].id == 1);
  CHECK(ds.categories[1].id == 18);
  CHECK(ds.categories[2].name == "toothbrush");
  CHECK(ds.cat_to_label.at(90) == 2);
  const ImageRecord& im = ds.image_by_id(7);
  CHECK(im.file == "x/7.jpg");
  CHECK(ds.image_path(im) == "./x/7.jpg");
  REQUIRE(im.anns.size() == 2);
  const BoxAnn& a = im.anns[0];
  CHECK(a.label == 1);
  CHECK(a.x1 == 10.5f);
  CHECK(a.x2 == static_cast<float>(10.5 + 100.1));  // mmdet: x + w, no -1
  CHECK(a.y2 == static_cast<float>(20.25 + 50.3));
  CHECK(a.xywh[2] == 100.1);
  CHECK(a.area == 1234.5);
  CHECK_FALSE(a.ignore);
  CHECK(im.anns[1].iscrowd);
  CHECK(im.anns[1].ignore);
  CHECK(ds.image_by_id(9).anns.empty());  // kept for evaluation
  CHECK(rep.outside_image == 1);          // ann 103
  CHECK(rep.skipped() == 0);
  // training rules: crowd kept as ignore region; w < 1 dropped; outside dropped
  CHECK(train_targets(im).size() == 2);
  CHECK(train_targets(ds.image_by_id(3)).empty());
  auto idx = train_image_indices(ds);  // image 9 is < 32 px and empty
  CHECK(idx.size() == 2);
  // round trip through the writer
  Dataset back = parse(coco_to_string(ds));
  REQUIRE(back.num_annotations() == ds.num_annotations());
  CHECK(back.image_by_id(7).anns[0].xywh == a.xywh);
  CHECK(back.image_by_id(7).anns[1].iscrowd);
  CHECK(coco_to_string(back) == coco_to_string(ds));
}

TEST_CASE("coco: bad input gives errors naming the file and the id") {
  CHECK(error_of("").find("empty") != std::string::npos);
  auto trunc = std::string(kGood).substr(0, 400);
  auto e = error_of(trunc);
  CHECK(e.find("t.json: malformed JSON at byte") != std::string::npos);
  CHECK(e.find("annotations[") != std::string::npos);
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}], "annotations": [
      {"id": 5, "image_id": 1, "category_id": 1, "bbox": [NaN, 0, 1, 1]}], "categories": [{"id": 1}]})");
  CHECK(e.find("NaN") != std::string::npos);
  CHECK(e.find("annotations[0]") != std::string::npos);
  // numbers too large for a double are errors too (never silently infinite)
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}], "annotations": [
      {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1e999, 0, 1, 1]}], "categories": [{"id": 1}]})");
  CHECK(e.find("annotations[0]") != std::string::npos);
  CHECK(e.find("overflow") != std::string::npos);
  CHECK(error_of("[1, 2]").find("must be a JSON object") != std::string::npos);
  CHECK(error_of(R"({"annotations": [], "categories": []})").find("missing required key 'images'") != std::string::npos);
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}], "annotations": [
      {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "id": 42, "area": "big"}], "categories": [{"id": 1}]})");
  CHECK(e.find("annotations[0] (id 42)") != std::string::npos);
  CHECK(e.find("'area' must be a number") != std::string::npos);
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}], "annotations": [
      {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "id": 43}], "categories": [{"id": 1}]})");
  CHECK(e.find("(id 43): 'bbox' must be an array of 4 numbers") != std::string::npos);
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}], "annotations": [
      {"image_id": 1, "category_id": 1, "id": 44}], "categories": [{"id": 1}]})");
  CHECK(e.find("(id 44): missing required key 'bbox'") != std::string::npos);
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "height": 1}], "categories": []})");
  CHECK(e.find("images[0] (id 1): missing required key 'width'") != std::string::npos);
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}], "annotations": [
      {"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "id": 45}], "categories": [{"id": 1}]})");
  CHECK(e.find("annotation id 45: image_id 2 is not an image") != std::string::npos);
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}, {"id": 1, "file_name": "b", "width": 1, "height": 1}], "categories": []})");
  CHECK(e.find("duplicate image id 1") != std::string::npos);
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}], "annotations": [
      {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "id": 4}, {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "id": 4}], "categories": [{"id": 1}]})");
  CHECK(e.find("duplicate annotation id 4") != std::string::npos);
  e = error_of(R"({"images": [{"id": 1, "file_name": "a", "width": 0, "height": 1}], "categories": []})");
  CHECK(e.find("bad image size") != std::string::npos);
  CHECK(error_of(R"({"images": {}, "categories": []})").find("'images' must be an array") != std::string::npos);
  CHECK_THROWS_WITH_AS(load_coco("/nonexistent/file.json"), doctest::Contains("/nonexistent/file.json: cannot open"), Error);
}

TEST_CASE("coco: skip-and-count for unknown categories, negative sizes, non-finite boxes") {
  LoadReport rep;
  Dataset ds = parse(R"({"images": [{"id": 1, "file_name": "a", "width": 100, "height": 100}], "annotations": [
      {"image_id": 1, "category_id": 77, "bbox": [0, 0, 10, 10], "id": 1, "area": 100},
      {"image_id": 1, "category_id": 1, "bbox": [0, 0, -10, 10], "id": 2, "area": 100},
      {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "id": 4},
      {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "id": 5, "area": -3}]
      , "categories": [{"id": 1}]})", &rep);
  CHECK(rep.unknown_category == 1);
  CHECK(rep.negative_size == 1);
  CHECK(rep.nonfinite_bbox == 0);
  CHECK(rep.bad_area == 1);
  CHECK(rep.area_missing == 1);
  REQUIRE(ds.images[0].anns.size() == 1);
  CHECK(ds.images[0].anns[0].area == 100.0);
  CHECK(rep.examples[0].find("annotation id 1") != std::string::npos);
  // no 'annotations' key: an image-info file (test-dev) loads with no ground truth
  LoadReport r2;
  Dataset info = parse(R"({"images": [{"id": 1, "file_name": "a", "width": 100, "height": 100}], "categories": [{"id": 1}]})", &r2);
  CHECK(r2.no_annotations_key);
  CHECK(info.images.size() == 1);
}

TEST_CASE("coco: results files") {
  Dataset gt = parse(kGood);
  ResultsReport rep;
  auto dets = parse_coco_results(R"([{"image_id": 7, "category_id": 18, "bbox": [1, 2, 3, 4], "score": 0.5},
      {"image_id": 7, "category_id": 55, "bbox": [1, 2, 3, 4], "score": 0.5},
      {"image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.25}])", "r.json", gt, &rep, false);
  REQUIRE(dets.size() == 2);
  CHECK(dets[0].bbox[3] == 4.0);
  CHECK(rep.unknown_category == 1);
  CHECK(rep.nonfinite == 0);
  CHECK_THROWS_WITH_AS(parse_coco_results(R"([{"image_id": 8, "category_id": 18, "bbox": [1, 2, 3, 4], "score": 0.5}])",
                                          "r.json", gt, nullptr, false),
                       doctest::Contains("r.json: results[0]: image_id 8 is not an image"), Error);
  CHECK_THROWS_WITH_AS(parse_coco_results(R"({"a": 1})", "r.json", gt, nullptr, false),
                       doctest::Contains("must be a JSON array"), Error);
  CHECK_THROWS_WITH_AS(parse_coco_results(R"([{"image_id": 7, "bbox": [1, 2, 3, 4], "score": 0.5}])", "r.json", gt,
                                          nullptr, false),
                       doctest::Contains("results[0] (image_id 7): missing required key 'category_id'"), Error);
  // writer round trip, and mmdet's xyxy -> xywh conversion from float32 boxes
  Detection d = make_detection(gt, 7, 1, 10.1f, 20.2f, 30.3f, 40.4f, 0.7f);
  CHECK(d.category_id == 18);
  CHECK(d.bbox[2] == double(30.3f) - double(10.1f));
  std::string path = "/tmp/kdet_test_results.json";
  write_coco_results({d}, path);
  auto back = load_coco_results(path, gt, nullptr, false);
  REQUIRE(back.size() == 1);
  CHECK(back[0].bbox == d.bbox);
  CHECK(back[0].score == d.score);
  std::remove(path.c_str());
}

TEST_CASE("coco: every truncation and many single-byte corruptions give an Error, never a crash") {
  std::string good = kGood;
  int errors = 0;
  for (size_t n = 0; n < good.size(); ++n) {
    try {
      parse(good.substr(0, n));
    } catch (const Error& e) {
      ++errors;
      CHECK(std::string(e.what()).rfind("t.json: ", 0) == 0);
    }
  }
  CHECK(errors == static_cast<int>(good.size()));
  uint64_t x = 12345;
  const char repl[] = "{}[]\",:0-.eN ";
  for (int k = 0; k < 400; ++k) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    std::string bad = good;
    bad[(x >> 33) % bad.size()] = repl[(x >> 13) % (sizeof(repl) - 1)];
    try {
      parse(bad);  // some corruptions are still valid COCO (e.g. a digit changed)
    } catch (const Error& e) {
      CHECK(std::string(e.what()).rfind("t.json", 0) == 0);
    }
  }
}
