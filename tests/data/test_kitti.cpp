#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "data/coco.h"
#include "data/coco_eval.h"
#include "data/image.h"
#include "data/kitti.h"

using namespace kdet;
using namespace kdet::data;

namespace {
std::string make_tree(const std::string& tag, const std::vector<std::pair<std::string, std::string>>& labels) {
  std::string root = "/tmp/kdet_test_kitti_" + tag + "_" + std::to_string(::getpid());
  std::system(("rm -rf '" + root + "'").c_str());
  ::mkdir(root.c_str(), 0755);
  ::mkdir((root + "/image_2").c_str(), 0755);
  ::mkdir((root + "/label_2").c_str(), 0755);
  for (auto& [stem, text] : labels) {
    write_png(root + "/image_2/" + stem + ".png", Image(124, 37));
    std::ofstream(root + "/label_2/" + stem + ".txt") << text;
  }
  return root;
}
}  // namespace

TEST_CASE("kitti: labels into the COCO in-memory form; DontCare -> crowd regions; convert round trip") {
  std::string root = make_tree("ok", {
      {"000000", "Pedestrian 0.00 0 -0.20 71.29 8.37 90.51 30.81 1.89 0.48 1.20 1.84 1.47 8.41 0.01\n"
                 "DontCare -1 -1 -10 100.03 2.08 110.54 12.31 -1 -1 -1 -1000 -1000 -1000 -10\n"},
      {"000007", "Car 0.00 0 -1.56 20.00 5.00 60.50 30.25 1.57 1.65 3.35 -3.58 1.64 43.04 -1.65\r\n"
                 "Misc 0.00 1 1.0 1 1 5 5 1 1 1 1 1 1 1\n\n"},
  });
  KittiOptions opt;
  opt.classes = {"Car", "Pedestrian", "Cyclist"};
  LoadReport rep;
  Dataset ds = load_kitti(root, opt, &rep, false);
  REQUIRE(ds.images.size() == 2);
  CHECK(ds.images[1].id == 7);
  CHECK(ds.images[1].width == 124);
  CHECK(ds.images[1].height == 37);
  CHECK(rep.unknown_category == 1);  // Misc not listed
  const auto& a0 = ds.images[0].anns;
  REQUIRE(a0.size() == 1 + 3);  // pedestrian + DontCare for each of the 3 classes
  CHECK(a0[0].label == 1);
  CHECK(a0[0].x1 == 71.29f);
  CHECK(a0[0].x2 == static_cast<float>(71.29 + (90.51 - 71.29)));
  CHECK(a0[0].xywh[2] == doctest::Approx(90.51 - 71.29));
  CHECK_FALSE(a0[0].ignore);
  for (int k = 1; k < 4; ++k) {
    CHECK(a0[k].iscrowd);
    CHECK(a0[k].ignore);
  }
  // write COCO JSON and load it back: same data
  std::string js = root + "/kitti.json";
  write_coco(ds, js);
  CocoLoadOptions o;
  o.verbose = false;
  Dataset back = load_coco(js, o);
  CHECK(back.num_annotations() == ds.num_annotations());
  CHECK(back.categories[1].name == "Pedestrian");
  CHECK(back.image_by_id(7).anns[0].xywh == ds.images[1].anns[0].xywh);
  CHECK(load_image(back.image_path(back.image_by_id(7))).w == 124);
  // a detection inside the DontCare region is not a false positive
  std::vector<Detection> dets = {{0, 2, {71.29, 8.37, 90.51 - 71.29, 30.81 - 8.37}, 0.9},
                                 {7, 1, {20.0, 5.0, 40.5, 25.25}, 0.8},
                                 {0, 1, {101, 3, 8, 8}, 0.95}};
  CHECK(coco_evaluate(back, dets).AP50 == doctest::Approx(1.0).epsilon(1e-9));
  std::system(("rm -rf '" + root + "'").c_str());
}

TEST_CASE("kitti: malformed labels name the file and line") {
  std::string root = make_tree("bad", {{"000001", "Car 0 0 0 1 2 3\n"}});
  CHECK_THROWS_WITH_AS(load_kitti(root, {}, nullptr, false), doctest::Contains("000001.txt:1: expected at least 15 fields"),
                       Error);
  std::ofstream(root + "/label_2/000001.txt") << "Car 0 0 0 1 2 3 4 1 1 1 1 1 1 1\nCar 0 0 0 1 2 x 4 1 1 1 1 1 1 1\n";
  CHECK_THROWS_WITH_AS(load_kitti(root, {}, nullptr, false), doctest::Contains("000001.txt:2: field 7 'x' is not a finite number"),
                       Error);
  std::remove((root + "/image_2/000001.png").c_str());
  std::ofstream(root + "/label_2/000001.txt") << "Car 0 0 0 1 2 3 4 1 1 1 1 1 1 1\n";
  CHECK_THROWS_WITH_AS(load_kitti(root, {}, nullptr, false), doctest::Contains("image_2/000001.png: cannot open image"), Error);
  std::system(("rm -rf '" + root + "'").c_str());
}
