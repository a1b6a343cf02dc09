#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <set>
#include <unistd.h>
#include <fstream>

#include "data/coco.h"
#include "data/coco_eval.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/synth.h"

using namespace kdet;
using namespace kdet::data;

namespace {
std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
std::string synth_dir(const std::string& tag, int n, int size, uint64_t seed) {
  std::string d = "/tmp/kdet_test_synth_" + tag + "_" + std::to_string(::getpid());
  SynthConfig c;
  c.images = n;
  c.size = size;
  c.seed = seed;
  write_synth(c, d);
  return d;
}
void rm_rf(const std::string& d) { std::system(("rm -rf '" + d + "'").c_str()); }
std::vector<Batch> drain(Loader& l) {
  std::vector<Batch> v;
  Batch b;
  while (l.next_batch(b)) v.push_back(std::move(b));
  return v;
}
bool same(const Batch& a, const Batch& b) {
  if (a.images.shape() != b.images.shape() || a.size() != b.size()) return false;
  if (std::memcmp(a.images.data<float>(), b.images.data<float>(), a.images.nbytes()) != 0) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a.metas[i].image_id != b.metas[i].image_id || a.metas[i].flip != b.metas[i].flip) return false;
    if (a.gts[i].size() != b.gts[i].size()) return false;
    for (size_t k = 0; k < a.gts[i].size(); ++k)
      if (a.gts[i][k].x1 != b.gts[i][k].x1 || a.gts[i][k].label != b.gts[i][k].label) return false;
  }
  return true;
}
}  // namespace

TEST_CASE("synth: deterministic per seed, sane annotations, same loading path as real data") {
  std::string d1 = synth_dir("a", 12, 96, 5), d2 = synth_dir("b", 12, 96, 5), d3 = synth_dir("c", 12, 96, 6);
  CHECK(read_all(d1 + "/annotations.json") == read_all(d2 + "/annotations.json"));
  CHECK(read_all(d1 + "/images/000007.png") == read_all(d2 + "/images/000007.png"));
  CHECK(read_all(d1 + "/images/000007.png") != read_all(d3 + "/images/000007.png"));
  CocoLoadOptions o;
  o.verbose = false;
  LoadReport rep;
  Dataset ds = load_coco(d1 + "/annotations.json", o, &rep);
  CHECK(rep.skipped() == 0);
  CHECK(rep.outside_image == 0);
  CHECK(ds.images.size() == 12);
  CHECK(ds.num_classes() == 6);
  std::set<int64_t> labels;
  double min_area = 1e9, max_area = 0;
  for (const auto& im : ds.images) {
    Image px = load_image(ds.image_path(im));
    CHECK(px.w == 96);
    for (const auto& a : im.anns) {
      labels.insert(a.label);
      CHECK(a.xywh[0] >= 0);
      CHECK(a.xywh[0] + a.xywh[2] <= 96);
      CHECK(a.area <= a.xywh[2] * a.xywh[3]);
      CHECK(a.area > 0);
      min_area = std::min(min_area, a.area), max_area = std::max(max_area, a.area);
    }
  }
  CHECK(labels.size() >= 4);
  CHECK(min_area < 100);    // tiny objects
  CHECK(max_area > 1000);   // large ones
  // the ground truth evaluated against itself is perfect
  std::vector<Detection> dets;
  for (const auto& im : ds.images)
    for (const auto& a : im.anns)
      if (!a.iscrowd) dets.push_back({im.id, ds.categories[a.label].id, a.xywh, 0.5 + 0.01 * (dets.size() % 40)});
  CHECK(coco_evaluate(ds, dets).AP50 == doctest::Approx(1.0).epsilon(1e-9));
  rm_rf(d1), rm_rf(d2), rm_rf(d3);
}

TEST_CASE("loader: synth -> load -> batches; same seed gives identical batches with 1 or 3 workers") {
  std::string d = synth_dir("l", 10, 64, 11);
  CocoLoadOptions o;
  o.verbose = false;
  Dataset ds = load_coco(d + "/annotations.json", o);
  LoaderConfig cfg;
  cfg.transform.scale_long = 96, cfg.transform.scale_short = 80;
  cfg.batch_size = 3;
  cfg.seed = 42;
  cfg.workers = 1;
  Loader l1(ds, train_image_indices(ds, 32), cfg);
  cfg.workers = 3;
  cfg.prefetch = 2;
  Loader l3(ds, train_image_indices(ds, 32), cfg);
  cfg.workers = 0;
  Loader l0(ds, train_image_indices(ds, 32), cfg);
  auto b1 = drain(l1), b3 = drain(l3), b0 = drain(l0);
  REQUIRE(b1.size() == static_cast<size_t>(l1.batches_per_epoch()));
  REQUIRE(b1.size() == b3.size());
  REQUIRE(b1.size() == b0.size());
  size_t n_images = 0, flips = 0;
  for (size_t i = 0; i < b1.size(); ++i) {
    CHECK(same(b1[i], b3[i]));
    CHECK(same(b1[i], b0[i]));
    CHECK(b1[i].images.size(2) % 32 == 0);
    CHECK(b1[i].images.size(3) % 32 == 0);
    n_images += b1[i].size();
    for (auto& m : b1[i].metas) flips += m.flip;
  }
  CHECK(n_images == train_image_indices(ds, 32).size());
  CHECK(flips > 0);
  CHECK(flips < n_images);
  // boxes follow the image: 80/64 scale
  const Batch& b = b1[0];
  const ImageRecord& rec = ds.image_by_id(b.metas[0].image_id);
  auto tt = train_targets(rec);
  REQUIRE(tt.size() == b.gts[0].size());
  if (!tt.empty()) {
    float x1 = b.gts[0][0].x1, y1 = b.gts[0][0].y1, x2 = b.gts[0][0].x2, y2 = b.gts[0][0].y2;
    box_to_original(b.metas[0], x1, y1, x2, y2);
    CHECK(x1 == doctest::Approx(tt[0].x1).epsilon(1e-5));
    CHECK(y2 == doctest::Approx(tt[0].y2).epsilon(1e-5));
  }
  // another epoch: a different order; the same epoch again: the same batches
  l1.set_epoch(1);
  auto e1 = drain(l1);
  bool differs = false;
  for (size_t i = 0; i < e1.size(); ++i) differs |= !same(e1[i], b1[i]);
  CHECK(differs);
  l3.set_epoch(0);
  auto again = drain(l3);
  REQUIRE(again.size() == b1.size());
  for (size_t i = 0; i < again.size(); ++i) CHECK(same(again[i], b1[i]));
  rm_rf(d);
}

TEST_CASE("loader: missing or corrupt images -> error naming the file, or skip-and-count") {
  std::string d = synth_dir("bad", 4, 48, 1);
  CocoLoadOptions o;
  o.verbose = false;
  Dataset ds = load_coco(d + "/annotations.json", o);
  std::remove((d + "/images/000001.png").c_str());
  { std::ofstream f(d + "/images/000002.png", std::ios::binary); f << "not a png"; }
  LoaderConfig cfg;
  cfg.transform.scale_long = 64, cfg.transform.scale_short = 48;
  cfg.batch_size = 1;
  cfg.shuffle = false;
  cfg.workers = 2;
  {
    Loader l(ds, cfg);
    Batch b;
    std::string err;
    try {
      while (l.next_batch(b)) {}
    } catch (const Error& e) {
      err = e.what();
    }
    CHECK(err.find("images/000001.png: cannot open image") != std::string::npos);
    CHECK(err.find("image id 2") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(Loader(ds, std::vector<size_t>{}, cfg), doctest::Contains("no images selected"), Error);
  cfg.on_bad_image = LoaderConfig::BadImage::Skip;
  Loader l(ds, cfg);
  auto all = drain(l);
  CHECK(all.size() == 2);
  CHECK(l.skipped_images() == 2);
  try {
    load_image(d + "/images/000002.png");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("000002.png: cannot decode image") != std::string::npos);
  }
  rm_rf(d);
}

TEST_CASE("loader: eval config keeps file order, all annotations, no flip; metas map back") {
  std::string d = synth_dir("e", 5, 40, 3);
  CocoLoadOptions o;
  o.verbose = false;
  Dataset ds = load_coco(d + "/annotations.json", o);
  LoaderConfig cfg = LoaderConfig::eval(2, 2);
  cfg.transform.scale_long = 100, cfg.transform.scale_short = 60;
  Loader l(ds, cfg);
  auto all = drain(l);
  REQUIRE(all.size() == 3);
  int64_t expect_id = 1;
  for (auto& b : all)
    for (size_t i = 0; i < b.size(); ++i) {
      CHECK(b.metas[i].image_id == expect_id);
      CHECK_FALSE(b.metas[i].flip);
      CHECK(b.metas[i].img_h == 60);
      CHECK(b.gts[i].size() == ds.image_by_id(expect_id).anns.size());
      ++expect_id;
    }
  rm_rf(d);
}
