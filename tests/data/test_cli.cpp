#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "data/coco.h"

using namespace kdet;
using namespace kdet::data;

// The data subcommands end to end through build/kdet (KDET_BIN is set by `make test`).
TEST_CASE("cli: kdet synth -> kdet coco-eval on its own ground truth writes the 12 metrics") {
  const char* bin = std::getenv("KDET_BIN");
  if (!bin) {
    MESSAGE("KDET_BIN not set: kdet subcommand test skipped (make test sets it)");
    return;
  }
  std::string d = "/tmp/kdet_test_cli_" + std::to_string(::getpid());
  std::string k = bin;
  REQUIRE(std::system((k + " synth --out " + d + " --images 6 --size 64 --seed 9 > /dev/null").c_str()) == 0);
  CocoLoadOptions o;
  o.verbose = false;
  Dataset ds = load_coco(d + "/annotations.json", o);
  std::vector<Detection> dets;
  for (const auto& im : ds.images)
    for (const auto& a : im.anns) dets.push_back({im.id, ds.categories[a.label].id, a.xywh, 0.9});
  write_coco_results(dets, d + "/results.json");
  REQUIRE(std::system((k + " coco-eval " + d + "/annotations.json " + d + "/results.json --out " + d +
                       "/metrics.json > /dev/null").c_str()) == 0);
  std::ifstream f(d + "/metrics.json");
  std::string js((std::istreambuf_iterator<char>(f)), {});
  auto pos = js.find("\"AP50\": ");
  REQUIRE(pos != std::string::npos);
  CHECK(std::stod(js.substr(pos + 8)) == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(js.find("\"per_class\"") != std::string::npos);
  // bad input: a clear error and a non-zero exit status, never a crash
  std::ofstream(d + "/broken.json") << "[{\"image_id\": 1, \"category_id\": ";
  int rc = std::system((k + " coco-eval " + d + "/annotations.json " + d + "/broken.json 2> " + d + "/err.txt").c_str());
  CHECK(WEXITSTATUS(rc) == 1);
  std::ifstream ef(d + "/err.txt");
  std::string err((std::istreambuf_iterator<char>(ef)), {});
  CHECK(err.find("broken.json: malformed JSON at byte") != std::string::npos);
  std::system(("rm -rf '" + d + "'").c_str());
}
