#include <doctest/doctest.h>

#include <cmath>

#include "data/coco.h"
#include "data/coco_eval.h"
#include "tests/fixtures.h"

using namespace kdet;
using namespace kdet::data;

TEST_CASE("coco_eval: parity with pycocotools on many GT files and detection sets (1e-9)") {
  auto f = test::load_fixture("cocoeval");
  if (!f) return;
  std::string dir = test::fixture_dir() + "/cocoeval/";
  int n = std::stoi(f->metadata.at("num_cases"));
  REQUIRE(n >= 30);
  std::map<std::string, Dataset> gts;
  int minus_one_cases = 0, nontrivial = 0;
  for (int i = 0; i < n; ++i) {
    std::string c = f->metadata.at("case" + std::to_string(i));
    std::string gname = c.substr(0, c.find('|')), rname = c.substr(c.find('|') + 1);
    CAPTURE(rname);
    if (!gts.count(gname)) {
      CocoLoadOptions o;
      o.verbose = false;
      gts[gname] = load_coco(dir + gname, o);
    }
    const Dataset& gt = gts[gname];
    auto dets = load_coco_results(dir + rname, gt, nullptr, false);
    CocoMetrics m = coco_evaluate(gt, dets);
    auto want = f->at("case" + std::to_string(i) + ".stats").to_vector<double>();
    auto got = m.stats();
    REQUIRE(want.size() == 12);
    for (int k = 0; k < 12; ++k) {
      CAPTURE(k);
      CHECK(std::fabs(got[k] - want[k]) <= 1e-9);
    }
    auto pc = f->at("case" + std::to_string(i) + ".per_class").to_vector<double>();
    REQUIRE(pc.size() == m.per_class_ap.size());
    for (size_t k = 0; k < pc.size(); ++k) CHECK(std::fabs(m.per_class_ap[k] - pc[k]) <= 1e-9);
    if (want[0] == -1) ++minus_one_cases;
    if (want[0] > 0.05 && want[0] < 0.95) ++nontrivial;
  }
  CHECK(minus_one_cases > 0);  // the all-crowd ground truth
  CHECK(nontrivial >= 10);
}

TEST_CASE("coco_eval: perfect detections give AP 1, none give 0, crowd-only GT gives -1") {
  std::string gt_text = R"({"images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 100},
      {"id": 2, "file_name": "b.png", "width": 200, "height": 100}],
    "annotations": [
      {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0},
      {"id": 2, "image_id": 2, "category_id": 5, "bbox": [100, 10, 20, 20], "area": 400, "iscrowd": 0},
      {"id": 3, "image_id": 2, "category_id": 9, "bbox": [0, 0, 200, 100], "area": 20000, "iscrowd": 1}],
    "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]})";
  CocoLoadOptions o;
  o.verbose = false;
  Dataset gt = parse_coco(gt_text, "gt.json", o);
  std::vector<Detection> perfect = {{1, 5, {10, 10, 50, 40}, 0.9}, {2, 5, {100, 10, 20, 20}, 0.8}};
  CocoMetrics m = coco_evaluate(gt, perfect);
  CHECK(m.AP == 1.0);
  CHECK(m.AP50 == 1.0);
  CHECK(m.APs == doctest::Approx(1.0).epsilon(1e-12));  // tp / (tp + fp + eps): pycocotools' eps
  CHECK(m.APm == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(m.APl == -1.0);  // no large ground truth
  CHECK(m.per_class_ap[0] == 1.0);
  CHECK(m.per_class_ap[1] == -1.0);  // crowd only
  CocoMetrics z = coco_evaluate(gt, {});
  CHECK(z.AP == 0.0);
  CHECK(z.AR100 == 0.0);
  // a detection of class 9 inside the crowd region is ignored, not a false positive
  auto with_crowd = perfect;
  with_crowd.push_back({2, 9, {10, 10, 30, 30}, 0.99});
  CHECK(coco_evaluate(gt, with_crowd).AP == 1.0);
  // a false positive ranked first lowers AP
  auto fp = perfect;
  fp.push_back({1, 5, {150, 50, 40, 40}, 0.95});
  CHECK(coco_evaluate(gt, fp).AP < 1.0);
  // JSON out has the 12 keys
  std::string js = m.to_json();
  for (auto k : CocoMetrics::keys()) CHECK(js.find(std::string("\"") + k + "\"") != std::string::npos);
}
