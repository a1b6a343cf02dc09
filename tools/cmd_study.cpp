// kdet study CONFIG [--out DIR] [--quiet]
//
// A KD experiment matrix from one config (teacher x student x methods x seeds): synthetic data, the
// teacher, the baseline student and one student per KD method, all evaluated on the held-out split;
// results.md / results.csv, an AP bar chart, loss curves and viz-kd pictures (tools/study.h).
// Resumable: run it again and finished runs are not redone.
#include <cstdio>
#include <string>

#include "engine/check.h"
#include "tools/commands.h"
#include "tools/study.h"

namespace kdet::cli {

namespace {
const char* kStudyUsage =
    "usage: kdet study CONFIG [--out DIR] [--quiet]\n"
    "Runs the teacher x student x KD methods x seeds matrix of CONFIG (see configs/demo.cfg, tools/study.h):\n"
    "each run in DIR/<method>_s<seed>/; DIR/results.md, results.csv, ap_per_method.png, loss_curves.png,\n"
    "viz_kd/. Finished runs (valid study_run.json, same run.cfg) are reused; interrupted ones resume.\n"
    "  --out DIR   output directory (default runs/<config name>)\n"
    "  --quiet     no progress lines or table\n";
}  // namespace

int cmd_study(int argc, char** argv) {
  study::StudyOptions o;
  o.out.clear();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf("%s", kStudyUsage);
      return 0;
    } else if (a == "--out") {
      KDET_CHECK(i + 1 < argc, "study: --out needs a value");
      o.out = argv[++i];
    } else if (a == "--quiet") o.quiet = true;
    else if (!a.empty() && a[0] == '-') KDET_FAIL("study: unknown option '", a, "'\n", kStudyUsage);
    else if (o.config.empty()) o.config = a;
    else KDET_FAIL("study: unexpected argument '", a, "'\n", kStudyUsage);
  }
  KDET_CHECK(!o.config.empty(), "study: CONFIG is required\n", kStudyUsage);
  if (o.out.empty()) {
    std::string n = o.config.substr(o.config.find_last_of('/') + 1);
    o.out = "runs/" + n.substr(0, n.rfind('.'));
  }
  study::run_study(o);
  return 0;
}

}  // namespace kdet::cli
