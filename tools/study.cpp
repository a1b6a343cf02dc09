// tools/study.cpp — see tools/study.h.
#include "tools/study.h"
#include "tools/font5x7.h"

#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "data/coco_eval.h"
#include "engine/check.h"
#include "engine/config.h"

namespace kdet::study {

namespace fs = std::filesystem;

namespace {

// ---- small utilities --------------------------------------------------------------------------------
std::string slurp(const std::string& p) {
  std::ifstream f(p);
  if (!f.good()) return "";
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

void write_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    KDET_CHECK(f.good(), "study: cannot write ", tmp);
    f << text;
  }
  fs::rename(tmp, path);
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::string shq(const std::string& s) {  // shell single-quoting
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// "a.b=1; c.d = 2, 3" -> {{"a.b","1"}, {"c.d","2, 3"}}
std::vector<std::pair<std::string, std::string>> parse_sets(const std::string& s, const std::string& what) {
  std::vector<std::pair<std::string, std::string>> r;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ';')) {
    item = trim(item);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    KDET_CHECK(eq != std::string::npos, "study: ", what, ": '", item, "' is not section.key=value");
    std::string k = trim(item.substr(0, eq));
    KDET_CHECK(k.find('.') != std::string::npos && k.front() != '.' && k.back() != '.', "study: ", what, ": key '", k,
               "' is not section.key");
    r.push_back({k, trim(item.substr(eq + 1))});
  }
  return r;
}

std::string abs_path(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

std::string resolve_rel(const std::string& study_cfg, const std::string& p) {
  if (!p.empty() && p.front() == '/') return p;
  fs::path rel = fs::path(study_cfg).parent_path() / p;
  if (fs::exists(rel)) return abs_path(rel.string());
  KDET_CHECK(fs::exists(p), "study: config '", p, "' not found (relative to ", study_cfg, " or the working directory)");
  return abs_path(p);
}

// run.cfg: `base = <config>` + the overrides grouped by section (later ones win).
std::string make_run_cfg(const std::string& base, const std::vector<std::pair<std::string, std::string>>& sets) {
  std::map<std::string, std::map<std::string, std::string>> by_section;
  for (const auto& [k, v] : sets) {
    size_t dot = k.find('.');
    by_section[k.substr(0, dot)][k.substr(dot + 1)] = v;
  }
  std::string s = "base = " + base + "\n";
  for (const auto& [sec, kv] : by_section) {
    s += "[" + sec + "]\n";
    for (const auto& [k, v] : kv) s += k + " = " + v + "\n";
  }
  return s;
}

const std::array<const char*, 6> kCsvKeys = {"AP", "AP50", "AP75", "APs", "APm", "APl"};

std::string pct(double v) { return v < 0 ? std::string("-1") : fmt("%.2f", 100.0 * v); }

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / v.size();
}

// The detector's own loss terms: the loss_* keys of the baseline's first training log line (loss_cls +
// loss_bbox for RetinaNet; + loss_rpn_cls, loss_rpn_bbox for Faster R-CNN; RepPoints' loss_pts_*), so that a
// KD run's detection loss leaves out exactly its KD terms.
std::set<std::string> detection_terms(const std::string& baseline_dir) {
  std::ifstream f(baseline_dir + "/log.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("mode", "") != "train") continue;
    std::set<std::string> keys;
    for (auto& [k, v] : j.items())
      if (k.rfind("loss_", 0) == 0 && v.is_number()) keys.insert(k);
    return keys;
  }
  return {"loss_cls", "loss_bbox"};
}

// Loss curves from a run's log.jsonl: (iter, detection loss = the sum of `det_terms`, total loss).
struct Curve {
  std::vector<double> it, det, total;
};
Curve read_curve(const std::string& dir, const std::set<std::string>& det_terms) {
  Curve c;
  std::ifstream f(dir + "/log.jsonl");
  std::string line;
  std::map<double, std::pair<double, double>> by_iter;  // a resumed run may log an iteration twice
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("mode", "") != "train" || !j.contains("iter") ||
        !j.contains("loss"))
      continue;
    double det = 0;
    bool any = false;
    for (const auto& k : det_terms)
      if (j.contains(k) && j[k].is_number()) det += j[k].get<double>(), any = true;
    double tot = j["loss"].get<double>();
    by_iter[j["iter"].get<double>()] = {any ? det : tot, tot};
  }
  for (auto& [i, v] : by_iter) c.it.push_back(i), c.det.push_back(v.first), c.total.push_back(v.second);
  return c;
}

}  // namespace

// ---- run results ----------------------------------------------------------------------------------
bool read_run_result(const std::string& dir, const std::string& expect_cfg, RunResult* r) {
  std::string text = slurp(dir + "/study_run.json");
  if (text.empty()) return false;
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  if (!j.contains("metrics") || !j["metrics"].is_object() || !j.contains("run_cfg") || !j.contains("weights") ||
      !j.contains("method") || !j.contains("seed") || !j.contains("train_seconds"))
    return false;
  if (!expect_cfg.empty() && j["run_cfg"].get<std::string>() != expect_cfg) return false;
  RunResult x;
  for (int i = 0; i < 12; ++i) {
    const char* k = data::CocoMetrics::keys()[i];
    if (!j["metrics"].contains(k) || !j["metrics"][k].is_number()) return false;
    x.stats[i] = j["metrics"][k].get<double>();
    if (!std::isfinite(x.stats[i])) return false;
  }
  x.method = j["method"].get<std::string>();
  x.seed = j["seed"].get<int64_t>();
  x.train_seconds = j["train_seconds"].get<double>();
  if (j.contains("cpu_seconds") && j["cpu_seconds"].is_number()) x.cpu_seconds = j["cpu_seconds"].get<double>();
  x.weights = j["weights"].get<std::string>();
  x.dir = dir;
  if (!fs::exists(x.weights)) return false;
  *r = x;
  return true;
}

namespace {

using Sets = std::vector<std::pair<std::string, std::string>>;

// One run of the matrix: `kdet <kind> DIR/run.cfg` as a child process.
struct Job {
  std::string kind, method;  // kind: train | distill
  int64_t seed = 0;
  std::string base;
  Sets sets;
  bool needs_teacher = false;  // a KD run: its sets get teacher.weights when it starts
  // while running
  std::string name, dir, cfg;
  bool resume = false;
  int run_no = 0;
  pid_t pid = -1;
  std::chrono::steady_clock::time_point t0;
};

struct Study {
  StudyOptions o;
  std::string teacher_cfg, student_cfg;
  std::vector<std::string> methods;
  std::set<std::string> controls;  // methods that are controls (e.g. inheritance alone): never `best`
  std::map<std::string, std::string> method_cfg;
  std::vector<int64_t> seeds, extra_seeds;
  std::vector<std::string> extra_runs;
  int64_t teacher_seed = 0;
  Sets set_all, set_teacher, set_student;
  bool viz = true;
  int jobs = 1;     // runs at once
  int threads = 0;  // OMP_NUM_THREADS of every run (0: inherited from the environment)
  std::string out;  // absolute
  int total_runs = 0, run_no = 0;

  // Fills the job's run directory and config. Returns true (and *r) when the run finished earlier with
  // the same run.cfg; otherwise prepares the directory (resume or fresh) for launch().
  bool prepare(Job& j, RunResult* r) {
    j.name = j.method + "_s" + std::to_string(j.seed);
    j.dir = out + "/" + j.name;
    Sets sets = j.sets;
    sets.insert(sets.begin(), {"data.synth_dir", out + "/synth"});
    sets.push_back({"train.seed", std::to_string(j.seed)});
    j.cfg = make_run_cfg(j.base, sets);
    // The thread count is part of a run's identity: results are bit-identical only for a fixed one.
    if (threads > 0) j.cfg = "# kdet study: OMP_NUM_THREADS=" + std::to_string(threads) + "\n" + j.cfg;
    j.run_no = ++run_no;
    if (read_run_result(j.dir, j.cfg, r)) {
      r->reused = true;
      if (!o.quiet)
        std::printf("[%2d/%d] %-9s seed %lld  done earlier: AP %s  (%s)\n", j.run_no, total_runs, j.method.c_str(),
                    (long long)j.seed, pct(r->stats[0]).c_str(), j.dir.c_str());
      std::fflush(stdout);
      return true;
    }
    // A run.cfg that changed invalidates the old run; an unchanged one with a checkpoint is resumed.
    j.resume = false;
    if (fs::exists(j.dir)) {
      if (slurp(j.dir + "/run.cfg") == j.cfg && fs::exists(j.dir + "/last_checkpoint")) j.resume = true;
      else fs::remove_all(j.dir);
    }
    fs::create_directories(j.dir);
    write_atomic(j.dir + "/run.cfg", j.cfg);
    return false;
  }

  void launch(Job& j) {
    if (!o.quiet) {
      std::printf("[%2d/%d] %-9s seed %lld  %s... (log: %s/stdout.txt)\n", j.run_no, total_runs, j.method.c_str(),
                  (long long)j.seed, j.resume ? "resuming" : "running", j.dir.c_str());
      std::fflush(stdout);
    }
    std::string cmd = "exec " + shq(o.kdet_bin) + " " + j.kind + " " + shq(j.dir + "/run.cfg") + " --work-dir " + shq(j.dir);
    if (j.resume) cmd += " --resume " + shq(j.dir);
    cmd += (j.resume ? " >> " : " > ") + shq(j.dir + "/stdout.txt") + " 2>&1";
    const std::string nthreads = std::to_string(threads);
    j.t0 = std::chrono::steady_clock::now();
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    KDET_CHECK(pid >= 0, "study: fork failed (", std::strerror(errno), ")");
    if (pid == 0) {
      if (threads > 0) ::setenv("OMP_NUM_THREADS", nthreads.c_str(), 1);
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    j.pid = pid;
  }

  // After the child exited: metrics, weights and study_run.json (train_seconds = wall clock,
  // cpu_seconds = user + system CPU time of the child).
  RunResult finish(const Job& j, int status, const struct rusage& ru) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - j.t0).count();
    const double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::string log = slurp(j.dir + "/stdout.txt");
      if (log.size() > 3000) log = "[...]\n" + log.substr(log.size() - 3000);
      const std::string how = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                                : "signal " + std::to_string(WIFSIGNALED(status) ? WTERMSIG(status) : 0);
      KDET_FAIL("study: run ", j.name, " failed (", j.kind, " ", j.dir, "/run.cfg, ", how, "); its output:\n", log);
    }
    auto mj = nlohmann::json::parse(slurp(j.dir + "/metrics.json"), nullptr, false);
    KDET_CHECK(!mj.is_discarded() && mj.is_object(), "study: run ", j.name, ": no valid ", j.dir,
               "/metrics.json (train.eval_at_end must be true)");
    const std::string weights = j.kind == "distill" ? j.dir + "/student.safetensors"
                                                    : j.dir + "/" + trim(slurp(j.dir + "/last_checkpoint"));
    KDET_CHECK(fs::exists(weights), "study: run ", j.name, ": weights ", weights, " missing");
    nlohmann::json js;
    js["method"] = j.method;
    js["seed"] = j.seed;
    nlohmann::json m;
    for (int i = 0; i < 12; ++i) m[data::CocoMetrics::keys()[i]] = mj.value(data::CocoMetrics::keys()[i], -1.0);
    js["metrics"] = m;
    js["train_seconds"] = secs;
    js["cpu_seconds"] = cpu;
    js["weights"] = weights;
    js["run_cfg"] = j.cfg;
    js["resumed"] = j.resume;
    write_atomic(j.dir + "/study_run.json", js.dump(2) + "\n");
    RunResult r;
    KDET_CHECK(read_run_result(j.dir, j.cfg, &r), "study: run ", j.name, ": could not read back ", j.dir,
               "/study_run.json");
    if (!o.quiet) {
      std::printf("[%2d/%d] %-9s seed %lld  AP %s  AP50 %s  in %.0f s (CPU %.0f s)\n", j.run_no, total_runs,
                  j.method.c_str(), (long long)j.seed, pct(r.stats[0]).c_str(), pct(r.stats[1]).c_str(), secs, cpu);
      std::fflush(stdout);
    }
    return r;
  }

  // Runs `queue` with up to `jobs` children at once, in queue order as far as dependencies allow (a KD
  // run starts once the teacher has finished). Every run is its own process with a fixed thread
  // count, so running several at once changes no result. Appends the results to *runs. A failed run
  // lets the others finish (their results are kept for the next invocation) and then throws.
  void run_queue(std::vector<Job> queue, std::vector<RunResult>* runs) {
    std::vector<Job> running;
    std::string failure;
    auto teacher_weights = [&]() -> std::string {
      for (const auto& r : *runs)
        if (r.method == "teacher") return r.weights;
      return "";
    };
    size_t next = 0;
    std::vector<bool> started(queue.size(), false);
    for (;;) {
      // Start what can start.
      while (failure.empty() && static_cast<int>(running.size()) < jobs) {
        size_t pick = queue.size();
        for (size_t i = next; i < queue.size(); ++i)
          if (!started[i] && (!queue[i].needs_teacher || !teacher_weights().empty())) {
            pick = i;
            break;
          }
        if (pick == queue.size()) break;
        started[pick] = true;
        while (next < queue.size() && started[next]) ++next;
        Job j = queue[pick];
        if (j.needs_teacher) j.sets.push_back({"teacher.weights", teacher_weights()});
        try {
          RunResult r;
          if (prepare(j, &r)) {
            runs->push_back(r);
            continue;
          }
          launch(j);
          running.push_back(j);
        } catch (const Error& e) {  // wait for the runs already started, then report
          failure = e.what();
        }
      }
      if (running.empty()) break;
      int status = 0;
      struct rusage ru {};
      pid_t pid = ::wait4(-1, &status, 0, &ru);
      if (pid < 0 && errno == EINTR) continue;
      KDET_CHECK(pid > 0, "study: wait4 failed (", std::strerror(errno), ")");
      auto it = std::find_if(running.begin(), running.end(), [&](const Job& j) { return j.pid == pid; });
      if (it == running.end()) continue;  // not one of ours
      Job j = *it;
      running.erase(it);
      try {
        runs->push_back(finish(j, status, ru));
      } catch (const Error& e) {
        if (failure.empty()) failure = e.what();
      }
    }
    KDET_CHECK(failure.empty(), failure);
    for (size_t i = 0; i < queue.size(); ++i)
      KDET_CHECK(started[i], "study: run ", queue[i].method, "_s", queue[i].seed, " could not start (no teacher)");
  }
};

const uint8_t kWhite[3] = {255, 255, 255}, kBlack[3] = {0, 0, 0}, kGrey[3] = {150, 150, 150},
              kLight[3] = {225, 225, 225};
const uint8_t kPalette[][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
                               {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
                               {57, 59, 121},  {99, 121, 57}};
const int kMethodColors[10] = {1, 2, 3, 4, 5, 6, 8, 9, 10, 11};  // 0: baseline, 7: teacher
const uint8_t* pal(int i) { return kPalette[((i % 12) + 12) % 12]; }

}  // namespace

// ---- the study ----------------------------------------------------------------------------------
std::vector<RunResult> run_study(const StudyOptions& opts) {
  Study s;
  s.o = opts;
  if (s.o.kdet_bin.empty()) s.o.kdet_bin = fs::read_symlink("/proc/self/exe").string();
  Config c = Config::load(opts.config);
  s.teacher_cfg = resolve_rel(opts.config, c.get_string("study.teacher"));
  s.student_cfg = resolve_rel(opts.config, c.get_string("study.student"));
  s.methods = c.get_strings("study.methods");
  for (const auto& m : s.methods) {
    KDET_CHECK(m != "baseline" && m != "teacher" && m != "best", "study: '", m, "' is reserved, not a method name");
    s.method_cfg[m] = resolve_rel(opts.config, c.get_string("methods." + m));
  }
  for (const auto& k : c.keys("methods")) c.get_string("methods." + k);  // unused entries are allowed
  for (const auto& m : c.has("study.controls") ? c.get_strings("study.controls") : std::vector<std::string>{}) {
    KDET_CHECK(s.method_cfg.count(m), "study: study.controls: '", m, "' is not one of study.methods");
    s.controls.insert(m);
  }
  s.seeds = c.get_ints("study.seeds", {0});
  KDET_CHECK(!s.seeds.empty(), "study: study.seeds is empty");
  s.extra_seeds = c.get_ints("study.extra_seeds", {});
  s.extra_runs = c.has("study.extra_seed_runs") ? c.get_strings("study.extra_seed_runs") : std::vector<std::string>{};
  s.teacher_seed = c.get_int("study.teacher_seed", s.seeds.front());
  s.set_all = parse_sets(c.get_string("study.set_all", ""), "study.set_all");
  s.set_teacher = parse_sets(c.get_string("study.set_teacher", ""), "study.set_teacher");
  s.set_student = parse_sets(c.get_string("study.set_student", ""), "study.set_student");
  s.viz = c.get_bool("study.viz", true);
  s.jobs = static_cast<int>(c.get_int("study.jobs", 1));
  s.threads = static_cast<int>(c.get_int("study.threads", 0));
  KDET_CHECK(s.jobs >= 1 && s.jobs <= 64, "study: study.jobs must be in [1, 64], got ", s.jobs);
  KDET_CHECK(s.threads >= 0 && s.threads <= 1024, "study: study.threads must be in [0, 1024], got ", s.threads);
  c.check_all_used();
  for (const auto& e : s.extra_runs)
    KDET_CHECK(e == "baseline" || e == "best" || s.method_cfg.count(e), "study: extra_seed_runs: unknown run '", e, "'");

  fs::create_directories(opts.out);
  s.out = abs_path(opts.out);
  {
    std::set<std::string> extra(s.extra_runs.begin(), s.extra_runs.end());
    s.total_runs = 1 + static_cast<int>(s.seeds.size() * (1 + s.methods.size()) + s.extra_seeds.size() * extra.size());
  }
  if (!opts.quiet) {
    std::printf("study: %s -> %s | teacher %s | student %s | %zu KD methods | seeds", opts.config.c_str(),
                s.out.c_str(), s.teacher_cfg.c_str(), s.student_cfg.c_str(), s.methods.size());
    for (auto x : s.seeds) std::printf(" %lld", (long long)x);
    if (!s.extra_seeds.empty()) {
      std::printf(" (+");
      for (auto x : s.extra_seeds) std::printf(" %lld", (long long)x);
      std::printf(" for");
      for (auto& e : s.extra_runs) std::printf(" %s", e.c_str());
      std::printf(")");
    }
    std::printf(" | %d runs, %d at once", s.total_runs, s.jobs);
    if (s.threads > 0) std::printf(", %d thread(s) each", s.threads);
    std::printf("\n");
    std::fflush(stdout);
  }

  std::vector<RunResult> runs;
  const auto study_t0 = std::chrono::steady_clock::now();
  auto student_sets = [&] {
    auto v = s.set_all;
    v.insert(v.end(), s.set_student.begin(), s.set_student.end());
    return v;
  };
  // A KD run = the student's config (its run.cfg base: same model, data, schedule and seed handling as
  // the baseline) + the method config's [distill] section + the study's teacher as [teacher] (its
  // [model] keys, the study's model overrides of the teacher, and teacher.weights, added when the run
  // starts). The method config's own [model], [data], [train] and [teacher] sections are not used.
  Config teacher_c = Config::load(s.teacher_cfg);
  Sets teacher_model;
  for (const auto& k : teacher_c.keys("model")) teacher_model.push_back({"teacher." + k, teacher_c.get_string("model." + k)});
  auto kd_sets = [&](const std::string& m) {
    Config mc = Config::load(s.method_cfg.at(m));
    Sets v;
    for (const auto& k : mc.keys("distill")) v.push_back({"distill." + k, mc.get_string("distill." + k)});
    v.insert(v.end(), teacher_model.begin(), teacher_model.end());
    for (const auto& kv : student_sets()) v.push_back(kv);
    for (const auto& src : {s.set_all, s.set_teacher})
      for (const auto& [k, val] : src)
        if (k.rfind("model.", 0) == 0) v.push_back({"teacher." + k.substr(6), val});
    return v;
  };
  auto baseline_job = [&](int64_t seed) {
    Job j;
    j.kind = "train", j.method = "baseline", j.seed = seed, j.base = s.student_cfg, j.sets = student_sets();
    return j;
  };
  auto method_job = [&](const std::string& m, int64_t seed) {
    Job j;
    j.kind = "distill", j.method = m, j.seed = seed, j.base = s.student_cfg, j.sets = kd_sets(m);
    j.needs_teacher = true;
    return j;
  };
  auto is_extra = [&](const std::string& name) {
    return std::find(s.extra_runs.begin(), s.extra_runs.end(), name) != s.extra_runs.end();
  };
  auto in_seeds = [&](int64_t seed) { return std::find(s.seeds.begin(), s.seeds.end(), seed) != s.seeds.end(); };
  // 1. the teacher, the baseline (every seed, the extra seeds too: they do not need the teacher, so they
  //    can run beside it), every KD method for `seeds`.
  {
    std::vector<Job> q;
    Job t;
    t.kind = "train", t.method = "teacher", t.seed = s.teacher_seed, t.base = s.teacher_cfg, t.sets = s.set_all;
    t.sets.insert(t.sets.end(), s.set_teacher.begin(), s.set_teacher.end());
    q.push_back(t);
    for (int64_t seed : s.seeds) q.push_back(baseline_job(seed));
    if (is_extra("baseline"))
      for (int64_t seed : s.extra_seeds)
        if (!in_seeds(seed)) q.push_back(baseline_job(seed));
    for (int64_t seed : s.seeds)
      for (const auto& m : s.methods) q.push_back(method_job(m, seed));
    s.run_queue(q, &runs);
  }
  // 2. extra seeds for the named KD runs (`best`: the KD method with the best mean AP over `seeds`)
  auto method_mean = [&](const std::string& m) {
    std::vector<double> v;
    for (const auto& r : runs)
      if (r.method == m) v.push_back(r.stats[0]);
    return mean(v);
  };
  std::string best;
  for (const auto& m : s.methods)
    if (!s.controls.count(m) && (best.empty() || method_mean(m) > method_mean(best))) best = m;
  {
    std::vector<std::string> extra;
    for (auto e : s.extra_runs) {
      if (e == "best") e = best;
      if (!e.empty() && e != "baseline" && std::find(extra.begin(), extra.end(), e) == extra.end()) extra.push_back(e);
    }
    std::vector<Job> q;
    for (int64_t seed : s.extra_seeds)
      for (const auto& e : extra) {
        bool have = false;
        for (const auto& r : runs) have |= r.method == e && r.seed == seed;
        if (!have) q.push_back(method_job(e, seed));
      }
    s.run_queue(q, &runs);
  }
  const double study_wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - study_t0).count();

  // ---- table ------------------------------------------------------------------------------------
  std::map<int64_t, double> base_ap;
  std::vector<double> base_all;
  for (const auto& r : runs)
    if (r.method == "baseline") base_ap[r.seed] = r.stats[0], base_all.push_back(r.stats[0]);
  const double base_mean = mean(base_all);
  auto delta = [&](const RunResult& r) {
    auto it = base_ap.find(r.seed);
    return r.stats[0] - (it != base_ap.end() ? it->second : base_mean);
  };
  // Order: teacher, baseline, methods in config order; seeds ascending.
  std::vector<std::string> order = {"teacher", "baseline"};
  order.insert(order.end(), s.methods.begin(), s.methods.end());
  std::vector<RunResult> table;
  for (const auto& m : order) {
    std::vector<RunResult> rs;
    for (const auto& r : runs)
      if (r.method == m) rs.push_back(r);
    std::sort(rs.begin(), rs.end(), [](const RunResult& a, const RunResult& b) { return a.seed < b.seed; });
    table.insert(table.end(), rs.begin(), rs.end());
  }
  {
    std::string csv = "method,seed,AP,AP50,AP75,APs,APm,APl,delta_AP,train_seconds\n";
    for (const auto& r : table) {
      csv += r.method + "," + std::to_string(r.seed);
      for (int i = 0; i < 6; ++i) csv.append(",").append(pct(r.stats[i]));
      csv.append(",").append(fmt("%.2f", 100.0 * delta(r))).append(",").append(fmt("%.1f", r.train_seconds)).append("\n");
    }
    write_atomic(s.out + "/results.csv", csv);
  }
  // Per method: mean, spread (max - min) over seeds.
  struct Agg {
    std::vector<double> ap;
    double mean = 0, spread = 0;
  };
  std::map<std::string, Agg> agg;
  for (const auto& r : table) agg[r.method].ap.push_back(r.stats[0]);
  for (auto& [m, a] : agg) {
    a.mean = mean(a.ap);
    a.spread = *std::max_element(a.ap.begin(), a.ap.end()) - *std::min_element(a.ap.begin(), a.ap.end());
  }
  std::string md = "# KD study: " + opts.config + "\n\n";
  md += "Teacher `" + s.teacher_cfg + "`, student `" + s.student_cfg + "`, held-out split: the synthetic val set "
        "(COCO bbox metrics, percent). delta_AP = AP - the baseline student's AP with the same seed. "
        "train_seconds = wall-clock time of the run (training + final evaluation); cpu_seconds = its user + system "
        "CPU time.\n\n";
  md += "| method | seed | AP | AP50 | AP75 | APs | APm | APl | delta_AP | train_seconds | cpu_seconds |\n";
  md += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  double cpu_total = 0;
  for (const auto& r : table) {
    md += "| " + r.method + " | " + std::to_string(r.seed);
    for (int i = 0; i < 6; ++i) md += " | " + pct(r.stats[i]);
    md += " | " + fmt("%+.2f", 100.0 * delta(r)) + " | " + fmt("%.1f", r.train_seconds) + " | " +
          fmt("%.1f", r.cpu_seconds) + " |\n";
    cpu_total += r.cpu_seconds;
  }
  md += "\nCPU time of all runs: " + fmt("%.0f", cpu_total) + " s (runs done in earlier invocations included); " +
        "this invocation: " + fmt("%.0f", study_wall) + " s wall clock, " + std::to_string(s.jobs) + " run(s) at once, " +
        (s.threads > 0 ? std::to_string(s.threads) + " thread(s) each" : std::string("threads from OMP_NUM_THREADS")) +
        ".\n";
  md += "\n## Mean over seeds\n\n| method | seeds | mean AP | spread (max-min) | mean delta_AP |\n|---|---:|---:|---:|---:|\n";
  for (const auto& m : order) {
    if (!agg.count(m)) continue;
    const auto& a = agg[m];
    md += "| " + m + " | " + std::to_string(a.ap.size()) + " | " + fmt("%.2f", 100 * a.mean) + " | " +
          (a.ap.size() > 1 ? fmt("%.2f", 100 * a.spread) : std::string("-")) + " | " +
          fmt("%+.2f", 100 * (a.mean - base_mean)) + " |\n";
  }
  std::string verdict;
  if (!best.empty() && agg.count("baseline")) {
    const auto& b = agg["baseline"];
    const auto& k = agg[best];
    const double margin = k.mean - b.mean;
    const double spread = std::max(b.spread, k.spread);
    verdict = "Best KD method by mean AP: **" + best + "** (" + fmt("%.2f", 100 * k.mean) + ", " +
              std::to_string(k.ap.size()) + " seed(s)) vs baseline " + fmt("%.2f", 100 * b.mean) + " (" +
              std::to_string(b.ap.size()) + " seed(s)): margin " + fmt("%+.2f", 100 * margin) + " AP. ";
    if (b.ap.size() < 2 || k.ap.size() < 2)
      verdict += "Fewer than 2 seeds for the baseline or the best method: the seed-to-seed spread is unknown, so "
                 "this study cannot say whether the margin is an effect (add extra_seeds).";
    else if (margin > spread)
      verdict += "The margin is larger than the seed-to-seed spread (" + fmt("%.2f", 100 * spread) +
                 " AP, the larger of the two runs' max-min): an effect beyond seed noise at this number of seeds.";
    else
      verdict += "The margin is NOT larger than the seed-to-seed spread (" + fmt("%.2f", 100 * spread) +
                 " AP): no effect shown beyond seed noise.";
    md += "\n" + verdict + "\n";
  }
  {
    // Inheritance (student neck + head initialised from the teacher) is part of a method's config and
    // helps by itself: say which runs had it, so a gain is not read as the KD loss's alone.
    std::string inh;
    for (const auto& m : s.methods) {
      Config mc = Config::load(s.method_cfg.at(m));
      if (mc.get_bool("distill.inherit", false)) inh += (inh.empty() ? "" : ", ") + m;
    }
    md += "\nKD methods whose student starts with the teacher's neck and head (distill.inherit = true): " +
          (inh.empty() ? std::string("none") : inh) + ".\n";
    // A control with inheritance and no KD loss: what each inheriting method adds beyond inheritance.
    for (const auto& ctl : s.controls) {
      if (!agg.count(ctl) || !Config::load(s.method_cfg.at(ctl)).get_bool("distill.inherit", false)) continue;
      const auto& a = agg[ctl];
      std::string line;
      for (const auto& m : s.methods) {
        if (s.controls.count(m) || !agg.count(m) || !Config::load(s.method_cfg.at(m)).get_bool("distill.inherit", false))
          continue;
        line += (line.empty() ? "" : ", ") + m + " " + fmt("%+.2f", 100 * (agg[m].mean - a.mean));
      }
      md += "\nControl `" + ctl + "` (inheritance alone, no KD loss): mean AP " + fmt("%.2f", 100 * a.mean) + " over " +
            std::to_string(a.ap.size()) + " seed(s) (" + fmt("%+.2f", 100 * (a.mean - base_mean)) + " vs the baseline). What the KD loss adds on top of inheritance " +
            "(mean AP minus the control's): " + (line.empty() ? std::string("no inheriting KD method ran") : line) +
            ".\n";
    }
  }
  md += "\nFiles: results.csv, ap_per_method.png, loss_curves.png" + std::string(s.viz ? ", viz_kd/" : "") +
        "; every run's directory (<method>_s<seed>/) holds run.cfg, log.jsonl, metrics.json, stdout.txt.\n";
  write_atomic(s.out + "/results.md", md);

  // ---- bar chart ---------------------------------------------------------------------------------
  {
    std::vector<Bar> bars;
    int ci = 0;
    for (const auto& m : order) {
      if (!agg.count(m)) continue;
      Bar b;
      b.label = m;
      b.value = 100 * agg[m].mean;
      for (double x : agg[m].ap) b.points.push_back(100 * x);
      b.color = m == "teacher" ? 7 : m == "baseline" ? 0 : kMethodColors[ci++ % 10];
      bars.push_back(b);
    }
    data::write_png(s.out + "/ap_per_method.png",
                    bar_chart("COCO AP on the held-out split (bar: mean over seeds, dots: seeds)", "AP", bars,
                              agg.count("baseline") ? 100 * base_mean : -1));
  }
  // ---- loss curves (first seed: baseline and every method) ----------------------------------------
  {
    std::vector<Series> det, tot;
    int ci = 0;
    std::set<std::string> det_terms = {"loss_cls", "loss_bbox"};
    for (const auto& r : table)
      if (r.method == "baseline" && r.seed == s.seeds.front()) det_terms = detection_terms(r.dir);
    std::string det_names;
    for (const auto& k : det_terms) det_names += (det_names.empty() ? "" : " + ") + k.substr(5);
    for (const auto& m : order) {
      if (m == "teacher") continue;
      for (const auto& r : table)
        if (r.method == m && r.seed == s.seeds.front()) {
          Curve cv = read_curve(r.dir, det_terms);
          if (cv.it.empty()) continue;
          const int col = m == "baseline" ? 0 : kMethodColors[ci++ % 10];
          det.push_back({m, cv.it, cv.det, col});
          tot.push_back({m, cv.it, cv.total, col});
        }
    }
    data::Image a = line_chart("detection loss (" + det_names + "), seed " + std::to_string(s.seeds.front()), "iteration",
                               "loss", det);
    data::Image b = line_chart("total loss (detection + KD terms)", "iteration", "loss", tot);
    data::Image both(a.w, a.h + b.h);
    std::copy(a.px.begin(), a.px.end(), both.px.begin());
    std::copy(b.px.begin(), b.px.end(), both.px.begin() + a.px.size());
    data::write_png(s.out + "/loss_curves.png", both);
  }
  // ---- viz-kd on the first held-out image --------------------------------------------------------
  std::string viz_note;
  if (s.viz) {
    static const std::set<std::string> kVizMethods = {"fgd", "mgd", "amd", "dmkd", "fbkd", "ssim", "aid"};
    std::string vm, run_dir_cfg, student_w;
    for (const auto& m : s.methods)
      if (kVizMethods.count(m)) vm += (vm.empty() ? "" : ",") + m;
    // The run of the best method with a picture (else the first such method), first seed.
    std::string pick;
    if (kVizMethods.count(best)) pick = best;
    else
      for (const auto& m : s.methods)
        if (kVizMethods.count(m) && pick.empty()) pick = m;
    std::string val_img;
    for (const auto& e : fs::directory_iterator(s.out + "/synth")) {
      const std::string n = e.path().filename().string();
      if (n.rfind("val_", 0) != 0 || n.find(".tmp") != std::string::npos) continue;
      auto j = nlohmann::json::parse(slurp(e.path().string() + "/annotations.json"), nullptr, false);
      if (!j.is_discarded() && j.contains("images") && !j["images"].empty())
        val_img = e.path().string() + "/" + j["images"][0]["file_name"].get<std::string>();
    }
    if (!pick.empty() && !val_img.empty()) {
      for (const auto& r : table)
        if (r.method == pick && r.seed == s.seeds.front()) run_dir_cfg = r.dir + "/run.cfg", student_w = r.weights;
      const std::string vdir = s.out + "/viz_kd";
      fs::create_directories(vdir);
      std::string cmd = shq(s.o.kdet_bin) + " viz-kd " + shq(run_dir_cfg) + " " + shq(val_img) + " --out " + shq(vdir) +
                        " --student " + shq(student_w) + " --methods " + vm + " > " + shq(vdir + "/stdout.txt") +
                        " 2>&1";
      int rc = std::system(cmd.c_str());
      KDET_CHECK(rc == 0, "study: viz-kd failed (", cmd, "); see ", vdir, "/stdout.txt:\n", slurp(vdir + "/stdout.txt"));
      viz_note = "viz-kd pictures of " + val_img + " (teacher + the " + pick + " student): " + vdir + "/";
    }
  }

  if (!opts.quiet) {
    std::printf("\n%s", md.c_str());
    std::printf("\nresults: %s/results.md, %s/results.csv\nAP chart: %s/ap_per_method.png\nloss curves: "
                "%s/loss_curves.png\n",
                s.out.c_str(), s.out.c_str(), s.out.c_str(), s.out.c_str());
    if (!viz_note.empty()) std::printf("%s\n", viz_note.c_str());
    std::fflush(stdout);
  }
  return table;
}

// ---- drawing ----------------------------------------------------------------------------------------
namespace {

void put(data::Image& im, int x, int y, const uint8_t* c) {
  if (x < 0 || y < 0 || x >= im.w || y >= im.h) return;
  uint8_t* p = im.row(y) + 3 * x;
  p[0] = c[0], p[1] = c[1], p[2] = c[2];
}

std::string tick(double v, double step) {
  if (step >= 1) return fmt("%.0f", v);
  if (step >= 0.1) return fmt("%.1f", v);
  if (step >= 0.01) return fmt("%.2f", v);
  return fmt("%.3g", v);
}

// A "nice" axis step for [lo, hi] with about n ticks.
double nice_step(double span, int n) {
  if (!(span > 0)) return 1;
  double raw = span / n, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * p) return m * p;
  return 10 * p;
}
}  // namespace

void fill_rect(data::Image& im, int x0, int y0, int x1, int y1, const uint8_t rgb[3]) {
  for (int y = std::max(0, y0); y < std::min(im.h, y1); ++y)
    for (int x = std::max(0, x0); x < std::min(im.w, x1); ++x) put(im, x, y, rgb);
}

void draw_line(data::Image& im, int x0, int y0, int x1, int y1, const uint8_t rgb[3]) {
  // Bresenham
  int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1, err = dx + dy;
  for (;;) {
    put(im, x0, y0, rgb);
    if (x0 == x1 && y0 == y1) break;
    int e2 = 2 * err;
    if (e2 >= dy) err += dy, x0 += sx;
    if (e2 <= dx) err += dx, y0 += sy;
  }
}

int text_width(const std::string& s, int scale) { return static_cast<int>(s.size()) * 6 * scale; }

int draw_text(data::Image& im, int x, int y, const std::string& s, const uint8_t rgb[3], int scale) {
  for (size_t i = 0; i < s.size(); ++i) {
    const uint8_t* g = cli::font5x7_glyph(s[i]);
    for (int col = 0; col < 5; ++col)
      for (int row = 0; row < 7; ++row)
        if (g[col] >> row & 1)
          fill_rect(im, x + (static_cast<int>(i) * 6 + col) * scale, y + row * scale,
                    x + (static_cast<int>(i) * 6 + col + 1) * scale, y + (row + 1) * scale, rgb);
  }
  return text_width(s, scale);
}

data::Image bar_chart(const std::string& title, const std::string& ylabel, const std::vector<Bar>& bars, double ref) {
  const int bw = 44, gap = 20, left = 60, right = 20, top = 40, plot_h = 300, bottom = 60;
  const int n = std::max<int>(1, static_cast<int>(bars.size()));
  const int W = std::max(left + n * (bw + gap) + right, text_width(title, 1) + 40), H = top + plot_h + bottom;
  data::Image im(W, H);
  fill_rect(im, 0, 0, W, H, kWhite);
  draw_text(im, 10, 12, title, kBlack, 1);
  double vmax = 0;
  for (const auto& b : bars) {
    vmax = std::max(vmax, b.value);
    for (double p : b.points) vmax = std::max(vmax, p);
  }
  vmax = std::max(vmax, ref);
  const double step = nice_step(vmax, 5);
  const double ymax = std::max(step, std::ceil(vmax / step) * step);
  auto Y = [&](double v) { return top + plot_h - static_cast<int>(std::lround(v / ymax * plot_h)); };
  for (double t = 0; t <= ymax + 1e-9; t += step) {
    int y = Y(t);
    draw_line(im, left, y, W - right, y, kLight);
    std::string lab = tick(t, step);
    draw_text(im, left - 6 - text_width(lab), y - 3, lab, kBlack, 1);
  }
  draw_text(im, 8, top - 14, ylabel, kBlack, 1);
  for (int i = 0; i < static_cast<int>(bars.size()); ++i) {
    const auto& b = bars[i];
    int x0 = left + gap / 2 + i * (bw + gap);
    fill_rect(im, x0, Y(std::max(0.0, b.value)), x0 + bw, top + plot_h, pal(b.color));
    std::string v = fmt("%.1f", b.value);
    draw_text(im, x0 + (bw - text_width(v)) / 2, Y(std::max(0.0, b.value)) - 10, v, kBlack, 1);
    for (double p : b.points) fill_rect(im, x0 + bw / 2 - 2, Y(p) - 2, x0 + bw / 2 + 3, Y(p) + 3, kBlack);
    // label under the bar, split in two lines if it is wider than the slot
    std::string l1 = b.label, l2;
    if (text_width(l1) > bw + gap - 2 && l1.find('_') != std::string::npos) {
      l2 = l1.substr(l1.find('_') + 1);
      l1 = l1.substr(0, l1.find('_'));
    }
    draw_text(im, x0 + (bw - text_width(l1)) / 2, top + plot_h + 8, l1, kBlack, 1);
    if (!l2.empty()) draw_text(im, x0 + (bw - text_width(l2)) / 2, top + plot_h + 18, l2, kBlack, 1);
  }
  if (ref >= 0)
    for (int x = left; x < W - right; x += 8) draw_line(im, x, Y(ref), std::min(x + 4, W - right), Y(ref), kBlack);
  draw_line(im, left, top, left, top + plot_h, kBlack);
  draw_line(im, left, top + plot_h, W - right, top + plot_h, kBlack);
  if (ref >= 0) draw_text(im, left, H - 16, "dashed: baseline student mean AP", kGrey, 1);
  return im;
}

data::Image line_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                       const std::vector<Series>& series) {
  const int left = 60, top = 40, plot_w = 560, plot_h = 300, legend_w = 110, bottom = 40;
  const int W = left + plot_w + 20 + legend_w, H = top + plot_h + bottom;
  data::Image im(W, H);
  fill_rect(im, 0, 0, W, H, kWhite);
  draw_text(im, 10, 12, title, kBlack, 1);
  double xmin = 1e300, xmax = -1e300, ymin = 0, ymax = -1e300;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.y[i])) {
        xmin = std::min(xmin, s.x[i]), xmax = std::max(xmax, s.x[i]);
        ymin = std::min(ymin, s.y[i]), ymax = std::max(ymax, s.y[i]);
      }
  if (!(xmax > xmin)) xmin = 0, xmax = std::max(1.0, xmax);
  if (!(ymax > ymin)) ymax = ymin + 1;
  const double ys = nice_step(ymax - ymin, 5), xs = nice_step(xmax - xmin, 6);
  ymax = std::ceil(ymax / ys) * ys;
  ymin = std::floor(ymin / ys) * ys;
  auto X = [&](double v) { return left + static_cast<int>(std::lround((v - xmin) / (xmax - xmin) * plot_w)); };
  auto Y = [&](double v) { return top + plot_h - static_cast<int>(std::lround((v - ymin) / (ymax - ymin) * plot_h)); };
  for (double t = ymin; t <= ymax + 1e-9 * ys; t += ys) {
    draw_line(im, left, Y(t), left + plot_w, Y(t), kLight);
    std::string lab = tick(t, ys);
    draw_text(im, left - 6 - text_width(lab), Y(t) - 3, lab, kBlack, 1);
  }
  for (double t = std::ceil(xmin / xs) * xs; t <= xmax + 1e-9 * xs; t += xs) {
    std::string lab = tick(t, xs);
    draw_line(im, X(t), top + plot_h, X(t), top + plot_h + 3, kBlack);
    draw_text(im, X(t) - text_width(lab) / 2, top + plot_h + 6, lab, kBlack, 1);
  }
  draw_text(im, left + plot_w / 2 - text_width(xlabel) / 2, top + plot_h + 22, xlabel, kBlack, 1);
  draw_text(im, 8, top - 14, ylabel, kBlack, 1);
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    for (size_t i = 1; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i]) || !std::isfinite(s.y[i - 1])) continue;
      draw_line(im, X(s.x[i - 1]), Y(s.y[i - 1]), X(s.x[i]), Y(s.y[i]), pal(s.color));
      draw_line(im, X(s.x[i - 1]), Y(s.y[i - 1]) + 1, X(s.x[i]), Y(s.y[i]) + 1, pal(s.color));
    }
    const int ly = top + 4 + static_cast<int>(k) * 14;
    fill_rect(im, left + plot_w + 20, ly + 2, left + plot_w + 34, ly + 5, pal(s.color));
    draw_text(im, left + plot_w + 38, ly, s.label, kBlack, 1);
  }
  draw_line(im, left, top, left, top + plot_h, kBlack);
  draw_line(im, left, top + plot_h, left + plot_w, top + plot_h, kBlack);
  return im;
}

}  // namespace kdet::study
