#include <doctest/doctest.h>

#include <fstream>

#include "engine/check.h"
#include "engine/config.h"

using namespace kdet;

TEST_CASE("config: sections, types, base, overrides, unknown keys") {
  {
    std::ofstream b("/tmp/kdet_cfg_base.cfg");
    b << "# base\n[model]\ndepth = 50\nimg_scale = (1333, 800)\n[train]\nlr = 0.01\nflip = true\n";
    std::ofstream c("/tmp/kdet_cfg_child.cfg");
    c << "base = kdet_cfg_base.cfg\n[model]\ndepth = 18  # smaller\n";
  }
  Config c = Config::load("/tmp/kdet_cfg_child.cfg");
  CHECK(c.get_int("model.depth") == 18);
  CHECK(c.get_ints("model.img_scale") == std::vector<int64_t>{1333, 800});
  CHECK(c.get_double("train.lr") == 0.01);
  CHECK(c.get_bool("train.flip"));
  CHECK(c.get_int("train.missing", 7) == 7);
  CHECK_THROWS_WITH_AS(c.get_int("train.nothere"), doctest::Contains("missing key 'train.nothere'"), Error);
  c.apply_override("train.lr=0.02");
  CHECK(c.get_double("train.lr") == 0.02);
  CHECK_THROWS_WITH_AS(c.apply_override("train.lrr=1"), doctest::Contains("unknown key 'train.lrr'"), Error);
  CHECK_NOTHROW(c.check_all_used());
  c.set("train.extra", "1");
  CHECK_THROWS_WITH_AS(c.check_all_used(), doctest::Contains("unknown key 'train.extra'"), Error);
}

TEST_CASE("config: bad values name file and line") {
  Config c = Config::parse("[a]\nx = abc\ny = 1, two\n", "t.cfg");
  CHECK_THROWS_WITH_AS(c.get_int("a.x"), doctest::Contains("t.cfg:2"), Error);
  CHECK_THROWS_WITH_AS(c.get_ints("a.y"), doctest::Contains("t.cfg:3"), Error);
  CHECK_THROWS_WITH_AS(Config::parse("[a\n", "u.cfg"), doctest::Contains("u.cfg:1"), Error);
  CHECK_THROWS_WITH_AS(Config::parse("novalue\n", "v.cfg"), doctest::Contains("v.cfg:1"), Error);
  CHECK_THROWS_WITH_AS(Config::load("/nonexistent.cfg"), doctest::Contains("cannot open"), Error);
}
