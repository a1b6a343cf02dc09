// `kdet study` on a two-stage pair (tools/study.h): configs/study_two_stage_synth.cfg's teacher, student and
// KD methods (Faster R34 -> Faster R18: baseline, FGD, MGD, RoI logit KD) at a 1-iteration scale, end to end:
// every run finishes, the results table lists them, the RoI logit KD run logs its loss, viz-kd draws P2..P5.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "engine/config.h"

#include "tests/cli_util.h"

using namespace kdet;
using kdet::test::slurp;

TEST_CASE("kdet study: two-stage pair (Faster R34 -> R18; baseline, fgd, mgd, RoI logit_kd) end to end, 1 iteration") {
  namespace fs = std::filesystem;
  const char* bin = kdet::test::kbin();
  if (!bin) {
    MESSAGE("KDET_BIN not set: two-stage study test skipped (make test sets it)");
    return;
  }
  const std::string study = "configs/study_two_stage_synth.cfg";
  REQUIRE(fs::exists(study));
  const kdet::test::TmpDir tmp("study2");
  const std::string& d = tmp.path;
  // The committed study's files, at a 1-iteration scale (absolute paths: the copy lives in d).
  Config s = Config::load(study);
  auto abs = [&](const std::string& key) { return fs::absolute("configs/" + s.get_string(key)).string(); };
  const std::vector<std::string> methods = s.get_strings("study.methods");
  {
    std::ofstream f(d + "/study.cfg");
    f << "[study]\nteacher = " << abs("study.teacher") << "\nstudent = " << abs("study.student") << "\nmethods = ";
    for (size_t i = 0; i < methods.size(); ++i) f << (i ? ", " : "") << methods[i];
    f << "\nseeds = 0\njobs = 1\nthreads = 1\nviz = true\n"
      << "set_all = train.max_iters=1; train.warmup_iters=1; data.synth_train_images=2; data.synth_val_images=1; "
         "data.batch_size=1; data.eval_batch_size=1; model.rpn_train_max_per_img=100; model.rpn_test_max_per_img=50; "
         "model.rcnn_sampler_num=64\n[methods]\n";
    for (const auto& m : methods) f << m << " = " << abs("methods." + m) << "\n";
  }
  const std::string cmd = std::string(bin) + " study " + d + "/study.cfg --out " + d + "/out --quiet > " + d +
                          "/out.txt 2>&1";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, slurp(d + "/out.txt"));
  const std::string csv = slurp(d + "/out/results.csv");
  for (const std::string m : {"teacher", "baseline", "fgd", "mgd", "logit_kd"}) CHECK_MESSAGE(csv.find("\n" + m + ",0,") != std::string::npos, m);
  CHECK(slurp(d + "/out/logit_kd_s0/log.jsonl").find("\"loss_logit_kd\"") != std::string::npos);
  CHECK(slurp(d + "/out/fgd_s0/log.jsonl").find("\"loss_fgd_fg\"") != std::string::npos);
  CHECK(slurp(d + "/out/logit_kd_s0/run.cfg").find("logit_kd_target = roi") != std::string::npos);
  CHECK(fs::exists(d + "/out/ap_per_method.png"));
  CHECK(fs::exists(d + "/out/loss_curves.png"));
  for (int p = 2; p <= 5; ++p) CHECK_MESSAGE(fs::exists(d + "/out/viz_kd/fgd_mask_fg_P" + std::to_string(p) + ".png"), p);
  CHECK_FALSE(fs::exists(d + "/out/viz_kd/fgd_mask_fg_P6.png"));
}
