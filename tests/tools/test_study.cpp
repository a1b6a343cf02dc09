// kdet study end to end through build/kdet (KDET_BIN, set by `make test`): a micro study (64-px
// synthetic images, 8-channel RetinaNets, 4 iterations, teacher + baseline + 2 KD methods) run twice
// from scratch with the same seed must give bit-identical metrics and weights; a third invocation on a
// finished directory must redo nothing; a changed config redoes only the affected runs.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/image.h"
#include "engine/safetensors.h"
#include <nlohmann/json.hpp>

#include "tests/cli_util.h"

using namespace kdet;

namespace {

using test::kbin;
using test::kdet_run;
using test::slurp;
using test::TmpDir;

std::string abs(const std::string& p) { return std::filesystem::absolute(p).string(); }

// The micro study: everything small enough for a few seconds per run. `jobs` runs at once (each run
// is one process with 1 thread, so the results must not depend on it).
std::string micro_study(const std::string& iters = "4", int jobs = 1) {
  return "[study]\n"
         "jobs = " + std::to_string(jobs) + "\n"
         "threads = 1\n"
         "teacher = " + abs("configs/kd_teacher_r34_tiny_synth.cfg") + "\n"
         "student = " + abs("configs/retinanet_r18_tiny_synth.cfg") + "\n"
         "methods = logit_kd, mgd\n"
         "seeds = 0\n"
         "extra_seeds = 1\n"
         "extra_seed_runs = baseline\n"
         "set_all = model.base_channels=8; model.neck_channels=16; model.stacked_convs=1; data.synth_train_images=6; "
         "data.synth_val_images=4; data.synth_size=64; data.img_scale=64, 64; data.batch_size=2; data.eval_batch_size=4; "
         "data.workers=0; train.lr_base_batch=2; train.max_iters=" + iters + "; train.warmup_iters=2; "
         "train.log_interval=2; train.checkpoint_interval=0\n"
         "set_teacher = train.max_iters=6\n"
         "viz = true\n"
         "[methods]\n"
         "logit_kd = " + abs("configs/kd_logit_r34_r18_tiny_synth.cfg") + "\n"
         "mgd = " + abs("configs/kd_mgd_r34_r18_tiny_synth.cfg") + "\n";
}

const char* kRuns[] = {"teacher_s0", "baseline_s0", "logit_kd_s0", "mgd_s0", "baseline_s1"};

// A run's study_run.json (tools/study.h): its 12 COCO stats and its weights file; false when missing/invalid.
struct Run {
  std::vector<double> stats;
  std::string weights;
};
bool read_run(const std::string& dir, Run* r) {
  auto j = nlohmann::json::parse(slurp(dir + "/study_run.json"), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("metrics") || !j.contains("weights")) return false;
  r->stats.clear();
  for (const char* k : {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}) {
    if (!j["metrics"].contains(k)) return false;
    r->stats.push_back(j["metrics"][k].get<double>());
  }
  r->weights = j["weights"].get<std::string>();
  return std::filesystem::exists(r->weights);
}

bool same_file(const std::string& a, const std::string& b) {
  std::string x = slurp(a), y = slurp(b);
  return !x.empty() && x == y;
}

}  // namespace

TEST_CASE("study: same seed -> bit-identical metrics and weights; resume skips finished runs") {
  if (!kbin()) {
    MESSAGE("KDET_BIN not set: kdet study test skipped (make test sets it)");
    return;
  }
  TmpDir t("study");
  const std::string cfg = t.path + "/study.cfg", cfg2 = t.path + "/study2.cfg";
  std::ofstream(cfg) << micro_study();
  std::ofstream(cfg2) << micro_study("4", 2);  // same runs, two at a time
  const std::string a = t.path + "/a", b = t.path + "/b";
  REQUIRE_MESSAGE(kdet_run("study " + cfg + " --out " + a, t.path) == 0, slurp(t.path + "/stderr.txt"));
  REQUIRE_MESSAGE(kdet_run("study " + cfg2 + " --out " + b, t.path) == 0, slurp(t.path + "/stderr.txt"));
  CHECK(slurp(t.path + "/stdout.txt").find("2 at once, 1 thread(s) each") != std::string::npos);

  // Outputs.
  const std::string csv = slurp(a + "/results.csv");
  CHECK(csv.rfind("method,seed,AP,AP50,AP75,APs,APm,APl,delta_AP,train_seconds\n", 0) == 0);
  for (const char* m : {"\nteacher,0,", "\nbaseline,0,", "\nbaseline,1,", "\nlogit_kd,0,", "\nmgd,0,"})
    CHECK_MESSAGE(csv.find(m) != std::string::npos, m);
  CHECK(slurp(a + "/results.md").find("| baseline | 0 |") != std::string::npos);
  for (const char* png : {"/ap_per_method.png", "/loss_curves.png"}) {
    data::Image im = data::load_image(a + png);
    CHECK(im.w > 200);
    CHECK(im.h > 200);
  }
  CHECK(std::filesystem::exists(a + "/viz_kd/mgd_keep_P3.png"));

  // Every run is timed: wall clock and CPU seconds of its process.
  {
    auto j = nlohmann::json::parse(slurp(a + "/teacher_s0/study_run.json"));
    CHECK(j["cpu_seconds"].get<double>() > 0);
    CHECK(j["train_seconds"].get<double>() > 0);
    CHECK(slurp(a + "/teacher_s0/run.cfg").rfind("# kdet study: OMP_NUM_THREADS=1\n", 0) == 0);
  }
  // Reproducible, whether runs ran one or two at a time: the same metrics (full precision) and the
  // same weight bytes in both directories.
  for (const char* r : kRuns) {
    Run ra, rb;
    REQUIRE_MESSAGE(read_run(a + "/" + r, &ra), r);
    REQUIRE_MESSAGE(read_run(b + "/" + r, &rb), r);
    CHECK_MESSAGE(ra.stats == rb.stats, r);
    CHECK_MESSAGE(same_file(a + "/" + r + "/metrics.json", b + "/" + r + "/metrics.json"), r);
    SafetensorsFile fa = load_safetensors(ra.weights), fb = load_safetensors(rb.weights);
    REQUIRE(fa.tensors.size() == fb.tensors.size());
    REQUIRE(!fa.tensors.empty());
    for (const auto& [k, ta] : fa.tensors) {
      REQUIRE_MESSAGE(fb.tensors.count(k), k);
      const Tensor& tb = fb.tensors.at(k);
      CHECK_MESSAGE((ta.shape() == tb.shape() &&
                     std::memcmp(ta.contiguous().raw_data(), tb.contiguous().raw_data(), ta.nbytes()) == 0),
                    r, " ", k);
    }
  }
  // Different seeds are different runs (not a copy): the baseline's seed-1 weights differ.
  {
    Run s0, s1;
    REQUIRE(read_run(a + "/baseline_s0", &s0));
    REQUIRE(read_run(a + "/baseline_s1", &s1));
    SafetensorsFile f0 = load_safetensors(s0.weights), f1 = load_safetensors(s1.weights);
    int differ = 0;
    for (const auto& [k, w0] : f0.tensors) {
      const Tensor& w1 = f1.tensors.at(k);
      differ += std::memcmp(w0.contiguous().raw_data(), w1.contiguous().raw_data(), w0.nbytes()) != 0;
    }
    CHECK(differ > 10);
  }

  // Resume: a second invocation on `a` redoes nothing (no run's study_run.json or log is rewritten).
  auto mtime = [&](const std::string& r) { return std::filesystem::last_write_time(a + "/" + r + "/study_run.json"); };
  auto before = mtime("mgd_s0");
  const std::string log_before = slurp(a + "/mgd_s0/log.jsonl");
  REQUIRE(kdet_run("study " + cfg + " --out " + a, t.path) == 0);
  const std::string out = slurp(t.path + "/stdout.txt");
  CHECK(out.find("running") == std::string::npos);
  CHECK(out.find("done earlier") != std::string::npos);
  CHECK(mtime("mgd_s0") == before);
  CHECK(slurp(a + "/mgd_s0/log.jsonl") == log_before);

  // A finished run whose study_run.json is damaged is redone (resumed from its final checkpoint, so only
  // evaluated again); the others are not.
  std::ofstream(a + "/logit_kd_s0/study_run.json") << "{ not json";
  REQUIRE(kdet_run("study " + cfg + " --out " + a, t.path) == 0);
  const std::string out2 = slurp(t.path + "/stdout.txt");
  CHECK(out2.find("logit_kd  seed 0  resuming") != std::string::npos);  // from its final checkpoint: evaluated again
  CHECK(out2.find("mgd       seed 0  done earlier") != std::string::npos);
  Run redone, orig;
  REQUIRE(read_run(a + "/logit_kd_s0", &redone));
  REQUIRE(read_run(b + "/logit_kd_s0", &orig));
  CHECK(redone.stats == orig.stats);

  // A changed student schedule redoes the students but keeps the teacher.
  std::ofstream(cfg) << micro_study("2");
  REQUIRE(kdet_run("study " + cfg + " --out " + a, t.path) == 0);
  const std::string out3 = slurp(t.path + "/stdout.txt");
  CHECK(out3.find("teacher   seed 0  done earlier") != std::string::npos);
  CHECK(out3.find("baseline  seed 0  running") != std::string::npos);
}

TEST_CASE("study: bad configs fail with a clear message") {
  if (!kbin()) return;
  TmpDir t("study_bad");
  const std::string cfg = t.path + "/study.cfg";
  std::ofstream(cfg) << "[study]\nteacher = " << abs("configs/kd_teacher_r34_tiny_synth.cfg")
                     << "\nstudent = " << abs("configs/retinanet_r18_tiny_synth.cfg")
                     << "\nmethods = fgd\n[methods]\nmgd = " << abs("configs/kd_mgd_r34_r18_tiny_synth.cfg") << "\n";
  CHECK(kdet_run("study " + cfg + " --out " + t.path + "/o", t.path) == 1);
  CHECK(slurp(t.path + "/stderr.txt").find("methods.fgd") != std::string::npos);
  std::ofstream(cfg) << "[study]\nteacher = " << abs("configs/kd_teacher_r34_tiny_synth.cfg")
                     << "\nstudent = " << abs("configs/retinanet_r18_tiny_synth.cfg")
                     << "\nmethods = mgd\ncontrols = inherit\n[methods]\nmgd = " << abs("configs/kd_mgd_r34_r18_tiny_synth.cfg")
                     << "\n";
  CHECK(kdet_run("study " + cfg + " --out " + t.path + "/o", t.path) == 1);
  CHECK(slurp(t.path + "/stderr.txt").find("study.controls: 'inherit' is not one of study.methods") != std::string::npos);
  std::ofstream(cfg) << "[study]\nteacher = x.cfg\n";
  CHECK(kdet_run("study " + cfg + " --out " + t.path + "/o", t.path) == 1);
  CHECK(slurp(t.path + "/stderr.txt").find("x.cfg") != std::string::npos);
}
