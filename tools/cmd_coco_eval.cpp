// kdet coco-eval GT.json RESULTS.json [--out METRICS.json] [--per-class]
#include <cstdio>
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/coco_eval.h"
#include "engine/check.h"
#include "tools/commands.h"

namespace kdet::cli {

int cmd_coco_eval(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string out;
  bool per_class = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--out") {
      KDET_CHECK(i + 1 < argc, "coco-eval: --out needs a file");
      out = argv[++i];
    } else if (a == "--per-class") {
      per_class = true;
    } else if (a == "--help" || a == "-h") {
      std::printf("usage: kdet coco-eval GT.json RESULTS.json [--out METRICS.json] [--per-class]\n"
                  "COCO bbox evaluation with pycocotools semantics; prints the 12 metrics, writes them as JSON\n"
                  "(keys AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl, fractions, -1 = no ground truth,\n"
                  "plus per_class AP).\n");
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      KDET_FAIL("coco-eval: unknown option '", a, "'");
    } else {
      pos.push_back(a);
    }
  }
  KDET_CHECK(pos.size() == 2, "coco-eval: expected GT.json RESULTS.json (see kdet coco-eval --help)");
  data::Dataset gt = data::load_coco(pos[0]);
  auto dets = data::load_coco_results(pos[1], gt);
  std::printf("coco-eval: %zu images, %zu ground-truth boxes, %lld categories, %zu detections\n", gt.images.size(),
              gt.num_annotations(), (long long)gt.num_classes(), dets.size());
  data::CocoMetrics m = data::coco_evaluate(gt, dets);
  m.print(stdout, per_class);
  if (!out.empty()) {
    FILE* f = std::fopen(out.c_str(), "wb");
    KDET_CHECK(f, out, ": cannot open for writing");
    std::string js = m.to_json();
    std::fwrite(js.data(), 1, js.size(), f);
    KDET_CHECK(std::fclose(f) == 0, out, ": write failed");
    std::printf("coco-eval: metrics written to %s\n", out.c_str());
  }
  return 0;
}

}  // namespace kdet::cli
