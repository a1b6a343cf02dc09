// bench/bench_detector.cpp — the detector section of `make bench`: RetinaNet R18-FPN and R50-FPN (80 classes)
//   train step: batch 2 at SxS (default 512), 4 random boxes per image, loss (focal + L1) -> sum -> backward ->
//               SGD step (lr 0.01, momentum 0.9, weight decay 1e-4) -> zero_grad;
//   inference:  1 image at SxS, eval mode, no grad, including postprocess (score threshold, NMS, rescale);
// beside the same cases in torchvision (bench/torch_detectors.py) when the python has torch.
//
// Protocol (specs/cpu_peers.md §4): each case runs in a process of its own that builds the model, runs
// --detector-warmup untimed and --detector-reps timed reps and reports the median / min / max ms, the peak RSS
// (VmHWM, model building included) and, on the kdet side, the engine allocator's peak of live tensor bytes.
// Children are started with posix_spawn. Their peak RSS is read as VmHWM, not ru_maxrss: a spawned child's
// ru_maxrss starts at the parent's peak (bench_util.h max_rss_mib), and the parent has built a model to count FLOPs.
//
// GFLOP (conv + linear only, 2 x MACs) is counted, not assumed: the parent runs one forward of a 1-image batch
// with a gradient-requiring input and walks the autograd graph, adding 2 * numel(out) * Cin/g * kh * kw for
// every conv2d node (and 2 * numel(out) * in for linear). A train step counts 3 x the forward of its batch of 2
// (the cpu_peers convention, which ignores that frozen stages need no weight or input gradients); the torch
// side counts its own model with forward hooks, so the two GFLOP columns check that the architectures agree.
//
// Recipes (--detector-recipe):
//   mmdet (default): retinanet_r{18,50}_fpn_1x: frozen_stages 1 (stem + layer1 frozen), BatchNorm in eval mode
//       (norm_eval), FPN extra convs on the input (P6 from C5). torch side: resnet_fpn_backbone with
//       FrozenBatchNorm2d, trainable_layers 3, LastLevelP6P7(C5 channels, 256) (P6 from C5): the same network
//       (except that norm_eval keeps the BN affine parameters of layer2..4 trainable; FrozenBatchNorm2d has none).
//   torchvision: the cpu_peers §4 recipe: plain BatchNorm in train mode, all stages trainable, P6 from P5
//       (kdet: frozen_stages -1, norm_eval false, add_extra_convs on_output).
#include "bench/bench_detector.h"

#include <omp.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_set>
#include <vector>

#include "bench/bench_util.h"
#include "bench/random_batch.h"
#include "detectors/retinanet.h"
#include "engine/allocator.h"
#include "engine/check.h"
#include "engine/optim.h"
#include "engine/random.h"

extern char** environ;

namespace kdet {
namespace {

using namespace kdet::bench;
using nlohmann::json;

constexpr int64_t kNumClasses = 80;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, ','))
    if (!t.empty()) out.push_back(t);
  return out;
}

int depth_of(const std::string& model) {
  if (model == "r18") return 18;
  if (model == "r50") return 50;
  KDET_FAIL("bench detector: model must be r18 or r50, got '", model, "'");
}

RetinaNetConfig make_config(int depth, const std::string& recipe) {
  RetinaNetConfig c = RetinaNetConfig::mmdet(depth, kNumClasses);
  if (recipe == "torchvision") {
    c.backbone.frozen_stages = -1;
    c.backbone.norm_eval = false;
    c.neck.add_extra_convs = FPNCfg::Extra::OnOutput;
  } else {
    KDET_CHECK(recipe == "mmdet", "bench detector: --detector-recipe must be mmdet or torchvision, got '", recipe,
               "'");
  }
  return c;
}

// n random N(0,1) images of size x size, 4 random boxes each (side S/16..S/2, inside the image), labels 0..79.
data::Batch random_batch(int n, int size, Generator& g) {
  return random_detection_batch(n, size, size, size, size, kNumClasses, 4, g);
}

}  // namespace

// conv2d / linear FLOPs (2 x MACs) of the graph that produced `roots` (declared in bench_detector.h).
void bench::train_step(Detector& model, const data::Batch& b, Optimizer& opt, json* first) {
  LossList l = model.loss(b);
  Var total = total_loss(l);
  if (first->is_null())
    for (const auto& [k, v] : l) (*first)[k] = v.item();
  total.backward();
  opt.step();
  opt.zero_grad();
}

double bench::graph_flops(const std::vector<Var>& roots) {
  std::vector<const GradSlot*> stack;
  std::unordered_set<const Node*> seen;
  for (const Var& v : roots)
    if (v.slot()) stack.push_back(v.slot().get());
  double flops = 0;
  while (!stack.empty()) {
    const GradSlot* s = stack.back();
    stack.pop_back();
    const Node* n = s->grad_fn.get();
    if (!n || !seen.insert(n).second) continue;
    const bool conv = std::strcmp(n->op, "conv2d") == 0, lin = std::strcmp(n->op, "linear") == 0;
    if (conv || lin) {
      KDET_CHECK(n->inputs.size() >= 2 && n->inputs[1], "bench detector: ", n->op,
                 " node without a weight slot (count with every parameter trainable)");
      const Shape& w = n->inputs[1]->shape;
      double per_out = 1;
      for (int d = 1; d < w.ndim(); ++d) per_out *= static_cast<double>(w[d]);
      flops += 2.0 * static_cast<double>(s->shape.numel()) * per_out;
    }
    for (const auto& in : n->inputs)
      if (in) stack.push_back(in.get());
  }
  return flops;
}

namespace {

// Forward GFLOP of one size x size image (every parameter trainable and the input requiring a gradient, so
// that every conv leaves a node with its input and weight shapes).
double forward_gflop_per_image(int depth, const std::string& recipe, int size) {
  RetinaNetConfig c = make_config(depth, recipe);
  c.backbone.frozen_stages = -1;
  RetinaNet model(c);
  Generator g(0);
  model.init_weights(g);
  model.train();
  Var x(rand_normal({1, 3, size, size}, g), true);
  RetinaNetTaps t = model.forward(x);
  std::vector<Var> roots = t.head.cls_scores;
  roots.insert(roots.end(), t.head.bbox_preds.begin(), t.head.bbox_preds.end());
  return graph_flops(roots) / 1e9;
}

}  // namespace

// ---- child processes (declared in bench_detector.h) -----------------------------------------------------

// Runs argv (argv[0] = executable path), returns the last JSON line of its stdout.
bench::ChildResult bench::run_child(const std::vector<std::string>& args) {
  ChildResult r;
  int fd[2];
  if (pipe(fd) != 0) {
    r.error = "pipe failed";
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
  posix_spawn_file_actions_addclose(&fa, fd[0]);
  posix_spawn_file_actions_addclose(&fa, fd[1]);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fd[1]);
  if (rc != 0) {
    close(fd[0]);
    r.error = std::string("posix_spawn ") + args[0] + ": " + std::strerror(rc);
    return r;
  }
  std::string out;
  char buf[4096];
  ssize_t k;
  while ((k = read(fd[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(k));
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  std::stringstream ss(out);
  std::string line;
  while (std::getline(ss, line)) {
    if (line.empty() || line[0] != '{') continue;
    try {
      r.j = json::parse(line);
      r.ok = true;
    } catch (...) {
    }
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    r.ok = false;
    r.error = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                  : "exit status " + std::to_string(WEXITSTATUS(status));
  } else if (!r.ok) {
    r.error = "no result line";
  }
  return r;
}

bool bench::python_has_torch(const std::string& python) {
  if (access(python.c_str(), X_OK) != 0) return false;
  const std::string probe = python + " -c 'import torch, torchvision' >/dev/null 2>&1";
  return std::system(probe.c_str()) == 0;
}

std::string bench::self_exe(const char* argv0) {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) return std::string(buf, static_cast<size_t>(n));
  return argv0;
}

namespace {

const char* pass_title(const std::string& pass) {
  return pass == "train" ? "train step, batch 2" : "inference, 1 image";
}

}  // namespace

int run_detector_case(const std::string& name, const DetectorBenchOptions& o) {
  const auto us = name.find('_');
  KDET_CHECK(us != std::string::npos, "bench detector: case must be <model>_<train|infer>, got '", name, "'");
  const int depth = depth_of(name.substr(0, us));
  const std::string pass = name.substr(us + 1);
  KDET_CHECK(pass == "train" || pass == "infer", "bench detector: pass must be train or infer, got '", pass, "'");
  KDET_CHECK(o.size % 32 == 0 && o.size >= 64, "bench detector: --detector-size must be a multiple of 32, >= 64");
  KDET_CHECK(o.reps >= 1 && o.warmup >= 0, "bench detector: needs reps >= 1, warmup >= 0");

  RetinaNet model(make_config(depth, o.recipe));
  Generator g(0);
  model.init_weights(g);
  data::Batch b = random_batch(pass == "train" ? 2 : 1, o.size, g);

  json j;
  j["name"] = name;
  j["rss_built_mib"] = max_rss_mib();  // after building the model and the batch, before any rep
  {
    const AllocStats a = alloc_stats();
    j["live_built_mib"] = static_cast<double>(a.current_bytes) / (1024.0 * 1024.0);
    j["cached_built_mib"] = static_cast<double>(a.cached_bytes) / (1024.0 * 1024.0);
  }
  std::vector<double> all;
  Timing t{};
  alloc_reset_peak();
  const double b0 = machine_busy_s(), s0 = self_cpu_s(), t0 = now_s();
  if (pass == "train") {
    model.train();
    SGD opt(model.named_parameters("", true), 0.01, 0.9, 1e-4);
    json first;
    t = time_ms([&] { bench::train_step(model, b, opt, &first); }, o.warmup, o.reps, &all);
    j["first_losses"] = first;
  } else {
    model.eval();
    int64_t ndet = -1;
    t = time_ms(
        [&] {
          NoGradGuard ng;
          std::vector<Detections> d = model.predict(b, true);
          ndet = d.at(0).size();
        },
        o.warmup, o.reps, &all);
    j["detections"] = ndet;
  }
  const double load = ((machine_busy_s() - b0) - (self_cpu_s() - s0)) / (now_s() - t0);
  j["ms"] = t.med;
  j["min_ms"] = t.min;
  j["max_ms"] = *std::max_element(all.begin(), all.end());
  j["all_ms"] = all;
  j["load"] = load;
  j["alloc_peak_mib"] = static_cast<double>(alloc_stats().peak_bytes) / (1024.0 * 1024.0);
  j["maxrss_mib"] = max_rss_mib();
  j["threads"] = omp_get_max_threads();
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
  return 0;
}

void run_detector_section(const DetectorBenchOptions& o, const char* argv0) {
  const std::vector<std::string> models = split(o.models), passes = split(o.passes);
  for (const auto& m : models) depth_of(m);
  for (const auto& p : passes)
    KDET_CHECK(p == "train" || p == "infer", "bench detector: --detector-passes takes train,infer; got '", p, "'");
  (void)make_config(18, o.recipe);  // validates the recipe name
  const int nth = omp_get_max_threads();
  const std::string exe = self_exe(argv0);
  const bool have_torch = o.torch && python_has_torch(o.python);
  const bool torch_script = access("bench/torch_detectors.py", R_OK) == 0;

  std::printf("RetinaNet-FPN, %lld classes, recipe %s, input %dx%d, %d OpenMP threads; median / min of %d timed reps "
              "after %d warm-up, each case in its own process\n",
              static_cast<long long>(kNumClasses), o.recipe.c_str(), o.size, o.size, nth, o.reps, o.warmup);
  if (o.recipe == "mmdet")
    std::printf("  (mmdet recipe: stem + layer1 frozen, BatchNorm in eval mode, P6 from C5; torch: FrozenBatchNorm2d, "
                "trainable_layers 3, LastLevelP6P7 on C5)\n");
  else
    std::printf("  (torchvision recipe, specs/cpu_peers.md §4: plain BatchNorm in train mode, all stages trainable, "
                "P6 from P5)\n");

  struct Row {
    std::string model, pass;
    double gflop = 0;
    ChildResult k, t;
  };
  std::vector<Row> rows;
  for (const auto& m : models) {
    const double fwd = forward_gflop_per_image(depth_of(m), o.recipe, o.size);
    alloc_release_cache();
    for (const auto& p : passes) {
      Row r;
      r.model = m;
      r.pass = p;
      r.gflop = p == "train" ? 3 * 2 * fwd : fwd;
      const std::string name = m + "_" + p;
      wait_idle(o.wait_s);
      r.k = run_child({exe, "--detector-case", name, "--detector-size", std::to_string(o.size), "--detector-reps",
                       std::to_string(o.reps), "--detector-warmup", std::to_string(o.warmup), "--detector-recipe",
                       o.recipe});
      if (!r.k.ok) std::fprintf(stderr, "kdet_bench: kdet case %s failed: %s\n", name.c_str(), r.k.error.c_str());
      if (have_torch && torch_script) {
        wait_idle(o.wait_s);
        r.t = run_child({o.python, "bench/torch_detectors.py", "--case", name, "--size", std::to_string(o.size),
                         "--reps", std::to_string(o.reps), "--warmup", std::to_string(o.warmup), "--recipe", o.recipe,
                         "--threads", std::to_string(nth)});
        if (!r.t.ok) std::fprintf(stderr, "kdet_bench: torch case %s failed: %s\n", name.c_str(), r.t.error.c_str());
      }
      rows.push_back(std::move(r));
    }
  }
  const bool torch_rows = have_torch && torch_script;
  if (!o.torch) {
  } else if (!have_torch) {
    std::printf("(PyTorch peers skipped: %s has no torch/torchvision)\n", o.python.c_str());
  } else if (!torch_script) {
    std::printf("(PyTorch peers skipped: bench/torch_detectors.py not found; run from the repository root)\n");
  } else {
    for (const Row& r : rows)
      if (r.t.ok && r.t.j.contains("torch")) {
        std::printf("PyTorch peers: torch %s, torchvision %s, %d threads\n",
                    r.t.j["torch"].get<std::string>().c_str(), r.t.j["torchvision"].get<std::string>().c_str(),
                    r.t.j.value("threads", 0));
        break;
      }
  }
  std::printf("%-8s %-21s %7s %17s %7s %8s %9s %5s", "model", "pass", "GFLOP", "kdet ms med/min", "GFLOP/s",
              "RSS MiB", "alloc MiB", "load");
  if (torch_rows)
    std::printf(" | %7s %17s %7s %8s %5s | %10s %9s", "t.GFLOP", "torch ms med/min", "GFLOP/s", "RSS MiB", "load",
                "kdet/torch", "RSS t/k");
  std::printf("\n");
  for (const Row& r : rows) {
    const std::string label = (r.model == "r18" ? "R18-FPN" : "R50-FPN");
    std::printf("%-8s %-21s %7.1f", label.c_str(), pass_title(r.pass), r.gflop);
    double kms = 0, krss = 0;
    if (r.k.ok) {
      kms = r.k.j["ms"].get<double>();
      krss = r.k.j["maxrss_mib"].get<double>();
      std::printf(" %8.1f/%8.1f %7.1f %8.0f %9.0f %5.2f", kms, r.k.j["min_ms"].get<double>(), r.gflop / (kms * 1e-3),
                  krss, r.k.j["alloc_peak_mib"].get<double>(), r.k.j["load"].get<double>());
    } else {
      std::printf(" %-50s", ("FAILED: " + r.k.error).c_str());
    }
    if (torch_rows) {
      if (r.t.ok) {
        const double tms = r.t.j["ms"].get<double>(), trss = r.t.j["maxrss_mib"].get<double>();
        const double tg = r.t.j["gflop"].get<double>() * (r.pass == "train" ? 3 * 2 : 1);
        std::printf(" | %7.1f %8.1f/%8.1f %7.1f %8.0f %5.2f", tg, tms, r.t.j["min_ms"].get<double>(),
                    r.gflop / (tms * 1e-3), trss, r.t.j["load"].get<double>());
        if (r.k.ok) std::printf(" | %9.2fx %8.2fx", tms / kms, trss / krss);
      } else {
        std::printf(" | FAILED: %s", r.t.error.c_str());
      }
    }
    std::printf("\n");
  }
  std::printf("GFLOP: conv+linear, 2 x MACs, counted on the model (train = 3 x forward of 2 images; t.GFLOP = torch's "
              "own count). GFLOP/s uses kdet's count for both.\n"
              "RSS = peak RSS (VmHWM) of the case's process (model building included; torch's includes the interpreter and "
              "the torch import, ~0.27 GiB); alloc = kdet allocator peak of live tensor bytes.\n"
              "kdet/torch = torch time / kdet time (>1: kdet faster); RSS t/k = torch RSS / kdet RSS (>1: kdet "
              "smaller). load = cores used by other processes while the case ran (>0.15: not representative).\n");
  for (const Row& r : rows) {
    if (!r.k.ok) continue;
    std::string extra;
    if (r.k.j.contains("first_losses")) extra = "first-step losses " + r.k.j["first_losses"].dump();
    if (r.k.j.contains("detections")) extra = std::to_string(r.k.j["detections"].get<int64_t>()) + " detections";
    std::string textra;
    if (r.t.ok && r.t.j.contains("first_losses")) textra = "; torch " + r.t.j["first_losses"].dump();
    if (r.t.ok && r.t.j.contains("detections"))
      textra = "; torch " + std::to_string(r.t.j["detections"].get<int64_t>()) + " detections";
    std::printf("  %s %s: kdet %s (after building the model: RSS %.0f MiB, live tensors %.0f MiB, allocator cache "
                "%.0f MiB)%s\n",
                r.model.c_str(), r.pass.c_str(), extra.c_str(), r.k.j.value("rss_built_mib", 0.0),
                r.k.j.value("live_built_mib", 0.0), r.k.j.value("cached_built_mib", 0.0), textra.c_str());
  }
}

}  // namespace kdet
