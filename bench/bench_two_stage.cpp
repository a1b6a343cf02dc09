// bench/bench_two_stage.cpp — Faster R-CNN R50-FPN (mmdet semantics, built by build_detector from
// configs/faster_rcnn_r50_fpn_1x.cfg, random weights) training step and inference, beside torchvision's
// FasterRCNN configured like mmdet's (bench/torch_faster_rcnn.py), each case in its own process.
//
//   train: model.train(), batch of 2 random N(0,1) images of size x size with 4 random boxes each (side size/16..
//          size/2, labels 0..79; bench/random_batch.h, the RetinaNet section's batch); loss (RPN + R-CNN with their
//          samplers) -> backward -> SGD step (lr 0.01, momentum 0.9, weight decay 1e-4) -> zero_grad.
//   infer: model.eval(), 1 image, predict under NoGradGuard (RPN test proposals -> RoI head -> NMS, rescale).
//
// Per case: wall-clock median / min of the timed reps, the median per-rep CPU time of the process (user + sys,
// all threads: on a loaded machine it is the figure that other processes disturb least), the process's peak RSS
// (VmHWM), the peak RSS of the warm-up + timed reps over the RSS they started from (VmHWM reset through
// /proc/self/clear_refs), and the kdet allocator's peak of live tensor bytes during the reps.
// (VmHWM, not ru_maxrss: see max_rss_mib in bench/bench_util.h.)
#include "bench/bench_two_stage.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "bench/bench_detector.h"
#include "bench/bench_util.h"
#include "bench/random_batch.h"
#include "detectors/build.h"
#include "detectors/two_stage.h"
#include "engine/allocator.h"
#include "engine/check.h"
#include "engine/config.h"
#include "engine/optim.h"
#include "engine/random.h"

namespace kdet {
namespace {

using namespace kdet::bench;
using nlohmann::json;

std::unique_ptr<Detector> build_two_stage(const TwoStageBenchOptions& o, bool all_trainable) {
  KDET_CHECK(access(o.config.c_str(), R_OK) == 0, "bench frcnn: cannot read ", o.config,
             " (run from the repository root or pass --frcnn-config)");
  Config c = Config::load(o.config);
  if (all_trainable) c.set("model.frozen_stages", "-1");  // FLOP counting needs every conv's weight slot
  std::unique_ptr<Detector> m;
  if (o.frozen_bn && !all_trainable) {  // no config key freezes the BN affine: edit the built config
    KDET_CHECK(c.get_string("model.type", "") == "faster_rcnn", "bench frcnn: --frcnn-frozen-bn needs a faster_rcnn "
               "config, ", o.config, " has model.type = ", c.get_string("model.type", ""));
    TwoStageConfig tc = TwoStageConfig::from_config(c);
    tc.backbone.norm.requires_grad = false;
    m = std::make_unique<FasterRCNN>(tc);
  } else {
    m = build_detector(c);
  }
  KDET_CHECK(m->two_stage(), "bench frcnn: ", o.config, " builds a ", m->arch(), ", not a two-stage detector");
  return m;
}

data::Batch bench_batch(int n, int size, int64_t classes, Generator& g) {
  return random_detection_batch(n, size, size, size, size, classes, 4, g);
}

std::vector<std::string> passes_of(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, ','))
    if (!t.empty()) {
      KDET_CHECK(t == "train" || t == "infer", "bench frcnn: --frcnn-passes takes train,infer; got '", t, "'");
      out.push_back(t);
    }
  return out;
}

void check_options(const TwoStageBenchOptions& o) {
  KDET_CHECK(o.size % 32 == 0 && o.size >= 64, "bench frcnn: --frcnn-size must be a multiple of 32, >= 64; got ",
             o.size);
  KDET_CHECK(o.reps >= 1 && o.warmup >= 0, "bench frcnn: needs reps >= 1, warmup >= 0");
}

// Forward GFLOP (conv + linear, 2 x MACs) of the pass on its batch, and the number of RoIs the R-CNN head ran on.
struct PassCount {
  double gflop = 0;
  int64_t rois = 0;
};

// RSS growth during the reps: their peak over the RSS they started from (-1 when VmHWM could not be reset).
double reps_rss_mib(const json& j) {
  return j.value("hwm_reset", false) ? j["hwm_reps_mib"].get<double>() - j["rss_start_mib"].get<double>() : -1;
}

PassCount count_pass(const TwoStageBenchOptions& o, const std::string& pass) {
  std::unique_ptr<Detector> m = build_two_stage(o, /*all_trainable=*/true);
  Generator g(0);
  m->init_weights(g);
  data::Batch b = bench_batch(pass == "train" ? 2 : 1, o.size, m->num_classes(), g);
  DetectorTaps t;
  std::vector<Var> roots;
  if (pass == "train") {
    m->train();
    LossList l = m->loss(b, &t);
    roots.push_back(total_loss(l));
  } else {
    m->eval();
    m->predict(b, true, &t);
    roots = t.head.cls_scores;
    roots.insert(roots.end(), t.head.bbox_preds.begin(), t.head.bbox_preds.end());
    roots.push_back(t.roi_cls_score);
    roots.push_back(t.roi_bbox_pred);
  }
  PassCount r;
  r.gflop = graph_flops(roots) / 1e9;
  r.rois = t.rois.defined() ? t.rois.size(0) : 0;
  return r;
}

}  // namespace

int run_two_stage_case(const std::string& pass, const TwoStageBenchOptions& o) {
  KDET_CHECK(pass == "train" || pass == "infer", "bench frcnn: case must be train or infer, got '", pass, "'");
  check_options(o);
  std::unique_ptr<Detector> model = build_two_stage(o, false);
  Generator g(0);
  model->init_weights(g);
  data::Batch b = bench_batch(pass == "train" ? 2 : 1, o.size, model->num_classes(), g);

  json j;
  j["name"] = pass;
  j["arch"] = model->arch();
  j["hwm_built_mib"] = proc_status_mib("VmHWM");  // peak while building the model and the batch
  j["live_built_mib"] = static_cast<double>(alloc_stats().current_bytes) / (1024.0 * 1024.0);

  std::function<void()> step;
  std::unique_ptr<SGD> opt;
  json first;
  int64_t ndet = -1;
  if (pass == "train") {
    model->train();
    opt = std::make_unique<SGD>(model->named_parameters("", true), 0.01, 0.9, 1e-4);
    step = [&] { bench::train_step(*model, b, *opt, &first); };
  } else {
    model->eval();
    step = [&] {
      NoGradGuard ng;
      ndet = model->predict(b, true).at(0).size();
    };
  }
  alloc_reset_peak();
  j["hwm_reset"] = reset_peak_rss();
  j["rss_start_mib"] = proc_status_mib("VmRSS");
  const double b0 = machine_busy_s(), s0 = self_cpu_s(), t0 = now_s();
  for (int i = 0; i < o.warmup; ++i) step();
  std::vector<double> wall, cpu;
  for (int i = 0; i < o.reps; ++i) {
    const double w0 = now_s(), c0 = self_cpu_s();
    step();
    wall.push_back((now_s() - w0) * 1e3);
    cpu.push_back((self_cpu_s() - c0) * 1e3);
  }
  j["load"] = ((machine_busy_s() - b0) - (self_cpu_s() - s0)) / (now_s() - t0);
  j["ms"] = median(wall);
  j["min_ms"] = *std::min_element(wall.begin(), wall.end());
  j["max_ms"] = *std::max_element(wall.begin(), wall.end());
  j["all_ms"] = wall;
  j["cpu_ms"] = median(cpu);
  j["alloc_peak_mib"] = static_cast<double>(alloc_stats().peak_bytes) / (1024.0 * 1024.0);
  j["hwm_reps_mib"] = proc_status_mib("VmHWM");  // since the reset: the reps' peak (else the process's)
  j["peak_rss_mib"] = std::max(j["hwm_built_mib"].get<double>(), j["hwm_reps_mib"].get<double>());
  j["threads"] = omp_get_max_threads();
  if (pass == "train") j["first_losses"] = first;
  else j["detections"] = ndet;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
  return 0;
}

void run_two_stage_section(const TwoStageBenchOptions& o, const char* argv0) {
  check_options(o);
  const std::vector<std::string> passes = passes_of(o.passes);
  const int nth = omp_get_max_threads();
  const std::string exe = self_exe(argv0);
  const bool torch_script = access("bench/torch_faster_rcnn.py", R_OK) == 0;
  const bool torch_rows = o.torch && torch_script && python_has_torch(o.python);
  std::string arch;
  int64_t classes = 0;
  {
    auto m = build_two_stage(o, false);
    arch = m->arch();
    classes = m->num_classes();
  }
  std::printf("Two-stage detector (%s from %s, %lld classes, random weights), input %dx%d, %d OpenMP threads; "
              "median / min of %d timed reps after %d warm-up, each case in its own process\n",
              arch.c_str(), o.config.c_str(), static_cast<long long>(classes), o.size, o.size, nth, o.reps, o.warmup);
  const char* bn_k = o.frozen_bn ? "BN eval with frozen affine (--frcnn-frozen-bn)" : "BN eval with trainable affine";
  const char* bn_t = o.frozen_bn ? "FrozenBatchNorm2d" : "BatchNorm2d in eval mode";
  std::printf("  kdet: mmdet semantics (stem + layer1 frozen, %s, FPN P2-P6, RPN proposals train 2000/level -> NMS "
              "0.7 -> 1000, test 1000 -> 1000; R-CNN 512 RoIs @ 25%% positive, RoIAlign 7x7 aligned, adaptive "
              "sampling; L1 box losses)\n"
              "  torch: torchvision FasterRCNN, same numbers where it has the knob (%s, trainable_layers 3, mmdet's "
              "init; MultiScaleRoIAlign sampling_ratio 0 but aligned=False; smooth-L1 box losses; its transform "
              "normalises and resizes 1.0x inside the timed step)\n",
              bn_k, bn_t);

  struct Row {
    std::string pass;
    PassCount count;
    ChildResult k, t;
  };
  std::vector<Row> rows;
  for (const auto& p : passes) {
    Row r;
    r.pass = p;
    r.count = count_pass(o, p);
    alloc_release_cache();
    wait_idle(o.wait_s);
    std::vector<std::string> kargs = {exe, "--frcnn-case", p, "--frcnn-config", o.config, "--frcnn-size",
                                      std::to_string(o.size), "--frcnn-reps", std::to_string(o.reps),
                                      "--frcnn-warmup", std::to_string(o.warmup)};
    if (o.frozen_bn) kargs.push_back("--frcnn-frozen-bn");
    r.k = run_child(kargs);
    if (!r.k.ok) std::fprintf(stderr, "kdet_bench: kdet frcnn case %s failed: %s\n", p.c_str(), r.k.error.c_str());
    if (torch_rows) {
      wait_idle(o.wait_s);
      r.t = run_child({o.python, "bench/torch_faster_rcnn.py", "--case", p, "--size", std::to_string(o.size),
                       "--reps", std::to_string(o.reps), "--warmup", std::to_string(o.warmup), "--threads",
                       std::to_string(nth), "--classes", std::to_string(classes), "--norm",
                       o.frozen_bn ? "frozen" : "eval"});
      if (!r.t.ok) std::fprintf(stderr, "kdet_bench: torch frcnn case %s failed: %s\n", p.c_str(), r.t.error.c_str());
    }
    rows.push_back(std::move(r));
  }
  if (o.torch && !torch_rows)
    std::printf("(PyTorch peer skipped: %s)\n", torch_script ? (o.python + " has no torch/torchvision").c_str()
                                                             : "bench/torch_faster_rcnn.py not found (run from the "
                                                               "repository root)");
  for (const Row& r : rows)
    if (r.t.ok && r.t.j.contains("torch")) {
      std::printf("PyTorch peer: torch %s, torchvision %s, %d threads\n", r.t.j["torch"].get<std::string>().c_str(),
                  r.t.j["torchvision"].get<std::string>().c_str(), r.t.j.value("threads", 0));
      break;
    }
  std::printf("%-21s %6s %17s %7s %7s %7s %6s %9s %5s", "pass", "GFLOP", "kdet ms med/min", "GFLOP/s", "CPU ms",
              "RSS MiB", "+reps", "alloc MiB", "load");
  if (torch_rows)
    std::printf(" | %6s %17s %7s %7s %7s %6s %5s | %6s %6s %6s %6s", "t.GFLOP", "torch ms med/min", "GFLOP/s", "CPU ms",
                "RSS MiB", "+reps", "load", "wall", "CPU", "RSS", "+reps");
  std::printf("\n");
  for (const Row& r : rows) {
    const double gf = r.count.gflop * (r.pass == "train" ? 3 : 1);
    std::printf("%-21s %6.1f", r.pass == "train" ? "train step, batch 2" : "inference, 1 image", gf);
    double kms = 0, kcpu = 0, krss = 0, kd = 0;
    if (r.k.ok) {
      const json& j = r.k.j;
      kms = j["ms"].get<double>(), kcpu = j["cpu_ms"].get<double>(), krss = j["peak_rss_mib"].get<double>();
      kd = reps_rss_mib(j);
      std::printf(" %8.1f/%8.1f %7.1f %7.0f %7.0f %6.0f %9.0f %5.2f", kms, j["min_ms"].get<double>(),
                  gf / (kms * 1e-3), kcpu, krss, kd, j["alloc_peak_mib"].get<double>(), j["load"].get<double>());
    } else {
      std::printf(" %-70s", ("FAILED: " + r.k.error).c_str());
    }
    if (torch_rows) {
      if (r.t.ok) {
        const json& j = r.t.j;
        const double tms = j["ms"].get<double>(), tcpu = j["cpu_ms"].get<double>(),
                     trss = j["peak_rss_mib"].get<double>(), td = reps_rss_mib(j);
        std::printf(" | %6.1f %8.1f/%8.1f %7.1f %7.0f %7.0f %6.0f %5.2f", j["gflop"].get<double>() *
                    (r.pass == "train" ? 3 : 1), tms, j["min_ms"].get<double>(), gf / (tms * 1e-3), tcpu, trss, td,
                    j["load"].get<double>());
        if (r.k.ok) {
          std::printf(" | %5.2fx %5.2fx %5.2fx", tms / kms, tcpu / kcpu, trss / krss);
          if (kd > 0 && td > 0) std::printf(" %5.2fx", td / kd);
        }
      } else {
        std::printf(" | FAILED: %s", r.t.error.c_str());
      }
    }
    std::printf("\n");
  }
  std::printf("GFLOP: conv + linear, 2 x MACs, of the pass's forward on its batch (train: x3 for backward; RoI head on "
              "the sampled RoIs), counted by each side on its own model; GFLOP/s uses kdet's count for both.\n"
              "CPU ms = median per-rep CPU time (user + sys, all threads; OpenMP spin-waiting included). RSS = peak "
              "RSS "
              "(VmHWM) of the case's process, model building included (torch's includes the interpreter and imports); "
              "+reps = peak RSS during warm-up + reps minus the RSS they started from; alloc = kdet allocator peak of "
              "live tensor bytes.\n"
              "Ratios torch/kdet (>1: kdet faster / smaller). load = cores used by other processes while the case ran "
              "(>0.15: wall-clock figures are not representative; compare CPU ms).\n");
  for (const Row& r : rows) {
    std::string k = r.k.ok ? (r.k.j.contains("first_losses") ? "first-step losses " + r.k.j["first_losses"].dump()
                                                              : std::to_string(r.k.j.value("detections", -1)) +
                                                                    " detections")
                           : "failed";
    std::string t;
    if (r.t.ok)
      t = "; torch " + std::to_string(r.t.j.value("rois", -1)) + " RoIs, " +
          (r.t.j.contains("first_losses") ? "first-step losses " + r.t.j["first_losses"].dump()
                                          : std::to_string(r.t.j.value("detections", -1)) + " detections");
    std::printf("  %s: kdet %lld RoIs, %s%s\n", r.pass.c_str(), static_cast<long long>(r.count.rois), k.c_str(),
                t.c_str());
  }
}

}  // namespace kdet
