// The synthetic set's optional knobs (data/synth.h: min_radius, max_radius_frac, num_classes, clutter,
// noise_max) do what they say; the defaults are covered by tests/data/test_loader.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "data/synth.h"
#include "engine/check.h"

using namespace kdet;
using namespace kdet::data;

namespace {
SynthConfig cfg64() {
  SynthConfig c;
  c.images = 40;
  c.size = 64;
  c.seed = 3;
  return c;
}

// Largest jump between horizontally adjacent pixels (any channel) outside every annotated box
// (grown by one pixel) of image `i`.
int max_jump_outside_boxes(const SynthImage& s) {
  const Image& im = s.image;
  int worst = 0;
  for (int y = 0; y < im.h; ++y)
    for (int x = 0; x + 1 < im.w; ++x) {
      bool in = false;
      for (const auto& a : s.anns)
        in |= x + 1 >= a.x1 - 1 && x <= a.x2 && y >= a.y1 - 1 && y <= a.y2;
      if (in) continue;
      for (int c = 0; c < 3; ++c) worst = std::max(worst, std::abs(int(im.row(y)[x * 3 + c]) - int(im.row(y)[x * 3 + 3 + c])));
    }
  return worst;
}
}  // namespace

TEST_CASE("synth options: object sizes follow min_radius / max_radius_frac") {
  // One object per image: nothing occludes it, only the border clips it (its centre keeps at least
  // half of it inside), so its visible box is at least 0.85 * r * e^-0.2 wide and high.
  SynthConfig big = cfg64();
  big.max_objects = 1;
  big.min_radius = 10;
  SynthConfig small = big;
  small.images = 400;        // enough draws to reach the low end of [3, 12.8]
  small.min_radius = 3;      // the default
  small.max_radius_frac = 0.2;  // r <= 12.8: boxes <= 2 * 12.8 * e^0.2 + 1 = 32.3 px
  float big_min = 1e9f, small_min = 1e9f, small_max = 0;
  for (int i = 0; i < big.images; ++i)
    for (const auto& a : synth_image(i, big).anns) big_min = std::min({big_min, a.x2 - a.x1, a.y2 - a.y1});
  for (int i = 0; i < small.images; ++i) {
    for (const auto& a : synth_image(i, small).anns) {
      small_min = std::min({small_min, a.x2 - a.x1, a.y2 - a.y1});
      small_max = std::max({small_max, a.x2 - a.x1, a.y2 - a.y1});
    }
  }
  CHECK(big_min >= 6.0f);
  CHECK(small_min < 6.0f);  // the default lower bound does give smaller objects
  CHECK(small_max <= 33.0f);
  SynthConfig bad = cfg64();
  bad.min_radius = 0.5;
  CHECK_THROWS_AS(synth_image(0, bad), Error);
}

TEST_CASE("synth options: num_classes keeps the first classes, in the labels and the category list") {
  SynthConfig c = cfg64();
  c.num_classes = 2;
  Dataset ds = synth_dataset(c);
  REQUIRE(ds.categories.size() == 2);
  CHECK(ds.categories[0].name == "circle");
  CHECK(ds.categories[1].name == "square");
  std::set<int64_t> labels;
  for (const auto& r : ds.images)
    for (const auto& a : r.anns) labels.insert(a.label);
  CHECK(labels == std::set<int64_t>{0, 1});
  Dataset all = synth_dataset(cfg64());
  CHECK(all.categories.size() == 6);
  c.num_classes = 7;
  CHECK_THROWS_AS(synth_image(0, c), Error);
}

TEST_CASE("synth options: clutter = false and noise_max = 0 leave a smooth background") {
  // The background is a linear gradient: neighbouring pixels differ by at most ~2 at 64 px.
  SynthConfig clean = cfg64();
  clean.max_objects = 1;
  clean.clutter = false;
  clean.noise_max = 0;
  SynthConfig cluttered = clean;
  cluttered.clutter = true;
  int clean_worst = 0, cluttered_worst = 0;
  for (int i = 0; i < 20; ++i) {
    clean_worst = std::max(clean_worst, max_jump_outside_boxes(synth_image(i, clean)));
    cluttered_worst = std::max(cluttered_worst, max_jump_outside_boxes(synth_image(i, cluttered)));
  }
  CHECK(clean_worst <= 3);
  CHECK(cluttered_worst > 20);  // lines and specks
}
