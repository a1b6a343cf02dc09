// tools/study.h — `kdet study CONFIG [--out DIR]`: a knowledge-distillation experiment matrix
// (teacher x student x KD methods x seeds) run from one config, resumable, with a results table,
// a bar chart of AP per method, loss curves and the viz-kd pictures of one held-out image.
//
// Study config (configs/demo.cfg is the example; paths are relative to the study config's directory):
//   [study]
//   teacher = kd_teacher_r34_tiny_synth.cfg     # a `kdet train` config (the larger RetinaNet)
//   student = retinanet_r18_tiny_synth.cfg      # the baseline student (`kdet train`)
//   methods = fitnet, logit_kd, fgd, ...        # run order; each needs an entry in [methods]
//   controls = inherit                          # methods that are controls, not KD methods: never `best`;
//                                               # an inheriting control (distill.inherit, no KD loss) gets
//                                               # a results.md line: each inheriting method minus it
//   seeds = 0                                   # seeds of every student run (baseline and each method)
//   extra_seeds = 1                             # more seeds for `extra_seed_runs` (after the others)
//   extra_seed_runs = baseline, best            # names; `best` = best KD method by mean AP so far
//   teacher_seed = 0
//   set_all = train.max_iters=300; data.synth_train_images=200        # ';'-separated section.key=value
//   set_teacher = ...                           # teacher run only (model.* is also applied to the
//                                               # [teacher] section of every KD run)
//   set_student = ...                           # baseline and KD runs
//   viz = true                                  # viz-kd pictures of the first held-out image
//   jobs = 1                                    # runs at once (each a child process)
//   threads = 0                                 # OMP_NUM_THREADS of every run (0: inherited)
//   [methods]
//   fgd = kd_fgd_r34_r18_tiny_synth.cfg         # a `kdet distill` config per method: its [distill] section
//
// A KD run's config is built from the study, so that it differs from the baseline only by the KD:
// base = the student config (model, data, schedule), + the method config's [distill] section, + the
// teacher config's [model] keys as [teacher] (with teacher.weights = the teacher run's weights), + the
// overrides. The method config's own [model], [data], [train] and [teacher] sections are not used.
//
// Each run gets DIR/<name>_s<seed>/ with run.cfg (base = the run's config + the study's overrides; the
// data set is shared: data.synth_dir = DIR/synth), the train/distill outputs, stdout.txt and, when it
// finished, study_run.json (metrics, train seconds, weights, the run.cfg text). A run whose
// study_run.json is valid and whose run.cfg text is unchanged is not redone; an interrupted run is
// resumed from its newest valid checkpoint. Every run is a child process (`kdet train` / `kdet distill`),
// so a seed gives bit-identical weights and metrics on the CPU (fixed OMP_NUM_THREADS) whatever `jobs`
// is: runs share nothing but the read-only data set. With threads > 0 the thread count is written into
// run.cfg (a comment line), so a run is reused or resumed only with the same thread count.
// Order: the teacher, the baselines (all seeds, including extra_seeds when extra_seed_runs names
// `baseline`: they do not need the teacher, so with jobs >= 2 they run beside it), every KD method for
// `seeds` (each starts once the teacher has finished), then the extra seeds of the other named runs
// (`best` is known only when all KD runs of `seeds` have finished).
//
// Outputs: DIR/results.csv (method, seed, AP, AP50, AP75, APs, APm, APl, delta_AP, train_seconds;
// AP values in percent, delta_AP = AP - the baseline's AP of the same seed), DIR/results.md (table with
// each run's wall-clock and CPU seconds + mean/spread per method + the effect statement),
// DIR/ap_per_method.png, DIR/loss_curves.png, DIR/viz_kd/*.png.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace kdet::study {

struct RunResult {
  std::string method;  // teacher | baseline | <kd method>
  int64_t seed = 0;
  std::array<double, 12> stats{};  // COCO stats (fractions; -1 = no such objects)
  double train_seconds = 0;  // wall clock of the run (training + final evaluation)
  double cpu_seconds = 0;    // user + system CPU time of the run's process (0: not recorded)
  std::string dir;
  std::string weights;
  bool reused = false;  // finished in an earlier invocation
};

struct StudyOptions {
  std::string config;
  std::string out = "runs/study";
  std::string kdet_bin;  // default /proc/self/exe
  bool quiet = false;    // no per-run progress lines
};

// Runs (or resumes) the whole study; writes the outputs; returns the runs in table order.
std::vector<RunResult> run_study(const StudyOptions& o);

// A run directory's study_run.json: true and *r filled when it is complete and valid (and, when
// `expect_cfg` is not empty, made from that run.cfg text).
bool read_run_result(const std::string& dir, const std::string& expect_cfg, RunResult* r);

// ---- drawing (RGB buffer + a 5x7 bitmap font) ------------------------------------------------------
void fill_rect(data::Image& im, int x0, int y0, int x1, int y1, const uint8_t rgb[3]);
void draw_line(data::Image& im, int x0, int y0, int x1, int y1, const uint8_t rgb[3]);
// Text 7*scale pixels high, 6*scale per character; (x, y) = top-left. Returns the width drawn.
int draw_text(data::Image& im, int x, int y, const std::string& s, const uint8_t rgb[3], int scale = 1);
int text_width(const std::string& s, int scale = 1);

struct Bar {
  std::string label;
  double value = 0;               // bar height (mean)
  std::vector<double> points;     // individual values (seeds), drawn as dots
  int color = 0;                  // palette index
};
// Bar chart with y axis from 0 to the max (rounded up), value labels and a dashed reference line at
// `ref` (< 0: none).
data::Image bar_chart(const std::string& title, const std::string& ylabel, const std::vector<Bar>& bars, double ref);

struct Series {
  std::string label;
  std::vector<double> x, y;
  int color = 0;
};
// Line chart (shared axes, legend on the right).
data::Image line_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                       const std::vector<Series>& series);

}  // namespace kdet::study
