// tests/tools/test_hardening.cpp — issue 8, end to end through the kdet binary (KDET_BIN, set by
// `make test`): a training run SIGKILLed while it writes a checkpoint loses nothing. The run is made
// to block inside the write deterministically: its temp file iter_3.safetensors.tmp is a FIFO that
// this test reads a little of, then kills the writer mid-file. `--resume WORK_DIR` must then skip
// the damaged newest checkpoint, resume from the newest valid one, and end with weights and
// optimizer state bit-identical to an uninterrupted run.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/loader.h"
#include "detectors/retinanet.h"
#include "engine/checkpoint.h"
#include "engine/functional.h"
#include "engine/optim.h"
#include "engine/safetensors.h"
#include "tools/train_loop.h"

using namespace kdet;

namespace {

const char* hard_kbin() { return std::getenv("KDET_BIN"); }

std::string hard_slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

const std::string kMicroCfg = "configs/retinanet_r18_micro_synth.cfg";

// A fresh /tmp/kdet_hard_<tag>_<pid> directory, removed with everything in it when the test ends.
struct HardDir {
  std::string path;
  explicit HardDir(const std::string& tag) : path("/tmp/kdet_hard_" + tag + "_" + std::to_string(::getpid())) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~HardDir() { std::filesystem::remove_all(path); }
};

std::string train_cmd(const std::string& d, const std::string& work) {
  // 6 images, batch 2: 3 batches per epoch; a checkpoint after every iteration.
  return std::string(hard_kbin()) + " train " + kMicroCfg + " --work-dir " + work + " --quiet --set data.synth_dir=" + d +
         "/synth data.synth_train_images=6 train.max_iters=4 train.checkpoint_interval=1 train.eval_at_end=false";
}

}  // namespace

TEST_CASE("train: SIGKILL during a checkpoint write, --resume WORK_DIR is bit-identical to an uninterrupted run") {
  if (!hard_kbin()) {
    MESSAGE("KDET_BIN not set: kill/resume test skipped (make test sets it)");
    return;
  }
  REQUIRE(std::filesystem::exists(kMicroCfg));
  HardDir dir("kill");
  const std::string d = dir.path, a = d + "/a", b = d + "/b";
  std::filesystem::create_directories(b);

  // Uninterrupted reference run.
  REQUIRE(std::system((train_cmd(d, a) + " > " + d + "/a.out 2>&1").c_str()) == 0);
  REQUIRE(std::filesystem::exists(a + "/iter_4.safetensors"));

  // Interrupted run: blocks writing iteration 3's checkpoint.
  const std::string fifo = b + "/iter_3.safetensors.tmp";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const int rd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  REQUIRE(rd >= 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string cmd = "exec " + train_cmd(d, b) + " > " + d + "/b.out 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string got;  // the bytes of the checkpoint written before the kill
  bool exited_early = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (got.size() < 4096 && std::chrono::steady_clock::now() < deadline) {
    pollfd p{rd, POLLIN, 0};
    if (::poll(&p, 1, 200) > 0 && (p.revents & POLLIN)) {
      char buf[4096];
      const ssize_t n = ::read(rd, buf, sizeof buf);
      if (n > 0) got.append(buf, static_cast<size_t>(n));
    }
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      exited_early = true;
      break;
    }
  }
  if (!exited_early) {
    ::usleep(100 * 1000);  // the writer is now blocked on a full pipe, in the middle of the file
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    CHECK((WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL));
  }
  ::close(rd);
  REQUIRE_MESSAGE(!exited_early, hard_slurp(d + "/b.out"));
  REQUIRE(got.size() >= 8);
  // Killed inside the write: iteration 3's checkpoint never appeared, 1 and 2 are complete.
  CHECK_FALSE(std::filesystem::exists(b + "/iter_3.safetensors"));
  CHECK(std::filesystem::exists(b + "/iter_2.safetensors"));
  CHECK(hard_slurp(b + "/last_checkpoint") == "iter_2.safetensors\n");
  // What a killed writer leaves behind: a partial temp file (the FIFO replaced by the bytes it got).
  std::filesystem::remove(fifo);
  { std::ofstream(fifo, std::ios::binary) << got; }
  // And, as if a copy or the disk had damaged it, a truncated newest checkpoint.
  const std::string full3 = hard_slurp(a + "/iter_3.safetensors");
  { std::ofstream(b + "/iter_3.safetensors", std::ios::binary) << full3.substr(0, full3.size() / 2); }
  {
    // A truncated or corrupted checkpoint given by name is refused with a clear message.
    std::string e;
    try {
      load_verified_checkpoint(b + "/iter_3.safetensors");
    } catch (const Error& x) {
      e = x.what();
    }
    CHECK(e.find("iter_3.safetensors") != std::string::npos);
    CHECK(e.find("truncated") != std::string::npos);
  }

  REQUIRE_MESSAGE(std::system((train_cmd(d, b) + " --resume " + b + " > " + d + "/r.out 2>&1").c_str()) == 0,
                  hard_slurp(d + "/r.out"));
  const std::string rout = hard_slurp(d + "/r.out");
  CHECK_MESSAGE(rout.find("skipping") != std::string::npos, rout);
  CHECK_MESSAGE(rout.find("iter_3.safetensors") != std::string::npos, rout);

  SafetensorsFile fa = load_verified_checkpoint(a + "/iter_4.safetensors");
  SafetensorsFile fb = load_verified_checkpoint(b + "/iter_4.safetensors");
  CHECK(fb.metadata.at("iter") == "4");
  CHECK(fa.metadata.at("checksum") == fb.metadata.at("checksum"));
  REQUIRE(fa.tensors.size() == fb.tensors.size());
  int differ = 0, n_opt = 0;
  for (auto& [k, ta] : fa.tensors) {
    auto it = fb.tensors.find(k);
    REQUIRE_MESSAGE(it != fb.tensors.end(), k);
    const Tensor& tb = it->second;
    const bool same = ta.dtype() == tb.dtype() && ta.shape() == tb.shape() &&
                      std::memcmp(ta.raw_data(), tb.raw_data(), ta.nbytes()) == 0;
    if (!same) MESSAGE("differs: " << k);
    differ += !same;
    n_opt += k.rfind("optimizer.", 0) == 0;
  }
  CHECK(differ == 0);
  CHECK(n_opt > 0);
}

TEST_CASE("train: NaN/Inf guard stops naming term, iteration and last good checkpoint; or skips and counts") {
  if (!hard_kbin()) {
    MESSAGE("KDET_BIN not set: NaN guard test skipped (make test sets it)");
    return;
  }
  HardDir dir("nan");
  const std::string d = dir.path;
  // lr 1e30: iteration 1 is finite (initial weights), its update blows the weights up, iteration 2 is not.
  const std::string base = std::string(hard_kbin()) + " train " + kMicroCfg + " --quiet --set data.synth_dir=" + d +
                           "/synth data.synth_train_images=6 train.lr=1e30 train.grad_clip=0 train.warmup=none "
                           "train.max_iters=6 train.checkpoint_interval=1 train.eval_at_end=false";
  const int rc = std::system((base + " --work-dir " + d + "/stop > " + d + "/stop.out 2>&1").c_str());
  const std::string out = hard_slurp(d + "/stop.out");
  CHECK(WEXITSTATUS(rc) == 1);
  CHECK_MESSAGE((out.find("train: loss '") != std::string::npos || out.find("train: gradient of '") != std::string::npos),
                out);
  CHECK_MESSAGE(out.find("at iteration 2") != std::string::npos, out);
  CHECK_MESSAGE(out.find("Last good checkpoint: " + d + "/stop/iter_1.safetensors") != std::string::npos, out);
  CHECK(std::filesystem::exists(d + "/stop/iter_1.safetensors"));

  // skip: steps 2.. are dropped and counted in the log; with nothing but NaN left the run stops after
  // max_skips_in_a_row skips.
  // (--set only overrides keys the config has: the skip options go in a child config.)
  {
    std::ofstream f(d + "/skip.cfg");
    f << "base = " << std::filesystem::absolute(kMicroCfg).string() << "\n[train]\nnonfinite = skip\nmax_skips_in_a_row = 3\n";
  }
  std::string skip_cmd = base;
  skip_cmd.replace(skip_cmd.find(kMicroCfg), kMicroCfg.size(), d + "/skip.cfg");
  const int rc2 = std::system((skip_cmd + " --work-dir " + d + "/skip > " + d + "/skip.out 2>&1").c_str());
  const std::string out2 = hard_slurp(d + "/skip.out"), log = hard_slurp(d + "/skip/log.jsonl");
  CHECK(WEXITSTATUS(rc2) == 1);
  CHECK_MESSAGE(out2.find("after 3 skipped steps in a row") != std::string::npos, out2);
  int skips = 0;
  for (size_t p = log.find("\"mode\":\"skip\""); p != std::string::npos; p = log.find("\"mode\":\"skip\"", p + 1)) ++skips;
  CHECK_MESSAGE(skips == 3, log);
  CHECK(log.find("\"skipped_steps\":3") != std::string::npos);
}

TEST_CASE("train: a resize target too large for memory stops with an error naming the size, not a crash") {
  if (!hard_kbin()) {
    MESSAGE("KDET_BIN not set: out-of-memory test skipped (make test sets it)");
    return;
  }
#if defined(__SANITIZE_ADDRESS__)
  // KDET_BIN is the ASan build too: a failing operator new aborts there by design.
  MESSAGE("ASan build: out-of-memory in operator new cannot be caught, test skipped");
  return;
#endif
  HardDir dir("oom");
  const std::string d = dir.path;
  // img_scale 4194304: every 64x64 image is resized to 4194304 x 4194304 pixels = 48 TiB, more than any
  // machine's memory + swap (the resize's per-row tables stay small: 4194304 entries).
  const std::string cmd = std::string(hard_kbin()) + " train " + kMicroCfg + " --work-dir " + d +
                          "/w --quiet --set data.synth_dir=" + d +
                          "/synth data.synth_train_images=2 train.max_iters=1 train.eval_at_end=false "
                          "data.img_scale=4194304,4194304 > " + d + "/out 2>&1";
  const int rc = std::system(cmd.c_str());
  const std::string out = hard_slurp(d + "/out");
  CHECK_MESSAGE((WIFEXITED(rc) && WEXITSTATUS(rc) == 1), out);  // kdet::Error, not an abort or "internal error"
  CHECK_MESSAGE(out.find("out of memory: a 4194304x4194304 RGB image needs 52776558133248 bytes") != std::string::npos,
                out);
}

namespace {

// run_training on a 4-weight "model" whose loss ignores the batch (mean(w^2)); `inject(call)` returns
// what the loss callback does on its call-th call (1-based): 0 finite, 1 a NaN loss term, 2 a finite
// loss whose gradient is NaN, 3 a finite loss with finite gradients (1e200 each: use F64) whose global
// L2 norm overflows to Inf, 4 a finite loss whose gradient is +Inf. Returns the result; `w_out`
// receives the final weights, `iters_seen` the iteration passed to Trainable::set_iteration before
// each call.
struct NanRunOptions {
  bool skip = false;
  double grad_clip = 0;
  DType dtype = DType::F32;
  int64_t stop_at = -1;
  std::string resume;
};
train::TrainResult nan_run(const std::string& work, const NanRunOptions& no, const std::function<int(int)>& inject,
                           std::vector<double>* w_out, std::vector<int64_t>* iters_seen = nullptr) {
  const std::string img_dir = work + "_img";
  std::filesystem::create_directories(img_dir);
  data::Dataset ds;
  ds.source = "nan_run";
  ds.image_root = img_dir;
  ds.categories.push_back({1, "a", ""});
  for (int i = 0; i < 2; ++i) {
    data::Image im(32, 32);
    data::write_png(img_dir + "/" + std::to_string(i) + ".png", im);
    data::ImageRecord r;
    r.id = i + 1;
    r.file = std::to_string(i) + ".png";
    r.width = r.height = 32;
    ds.images.push_back(r);
  }
  ds.reindex();
  data::LoaderConfig lc;
  lc.transform.scale_long = lc.transform.scale_short = 32;
  lc.batch_size = 1;
  lc.workers = 0;
  data::Loader loader(ds, lc);

  Var w(Tensor::full({4}, 0.5, no.dtype), true);
  SGD opt({{"w", w}}, 0.1, 0.9);
  LRSchedule sched;
  sched.policy = LRPolicy::Constant;
  sched.by_epoch = false;
  sched.warmup = LRWarmup::None;
  sched.base_lr = 0.1;
  train::Trainable model;
  model.state = [&] { return TensorMap{{"w", w.data()}}; };
  model.load_state = [&](const TensorMap& sd) { w.data().copy_(sd.at("w")); };
  model.set_train = [](bool) {};
  if (iters_seen) model.set_iteration = [&](int64_t it) { iters_seen->push_back(it); };
  int calls = 0;
  auto loss_fn = [&](const data::Batch&) -> LossList {
    const int what = inject(++calls);
    Var l = mean(w * w);
    if (what == 1) l = mean(w * w * Var(Tensor::full({4}, std::nan(""), no.dtype)));
    if (what == 2) l = l + sum(sqrt(w - w));  // value 0, gradient inf - inf = NaN
    if (what == 3) l = l + sum(w * Var(Tensor::full({4}, 1e200, no.dtype)));  // |g|^2 = 4e400
    if (what == 4) l = l + sum(sqrt(w - Var(w.data().clone())));  // value 0, gradient 1 / (2 sqrt(0)) = +inf
    return {{"loss_a", l}};
  };
  train::TrainOptions o;
  o.max_iters = 6;
  o.log_interval = 1;
  o.checkpoint_interval = 1;
  o.eval_at_end = false;
  o.work_dir = work;
  o.quiet = true;
  o.skip_nonfinite = no.skip;
  o.grad_clip = no.grad_clip;
  o.stop_at = no.stop_at;
  train::TrainResult r = train::run_training(o, "cfg", loader, opt, sched, model, loss_fn, nullptr, no.resume);
  if (w_out) *w_out = w.data().to(DType::F64).to_vector<double>();
  return r;
}

// The "mode":"skip" lines of a JSONL log, in order.
std::vector<std::string> skip_lines(const std::string& log) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b < log.size()) {
    size_t e = log.find('\n', b);
    if (e == std::string::npos) e = log.size();
    const std::string line = log.substr(b, e - b);
    if (line.find("\"mode\":\"skip\"") != std::string::npos) out.push_back(line);
    b = e + 1;
  }
  return out;
}

// A "mode":"skip" log line: its iteration, its reason and the running count of skipped steps.
void check_skip_line(const std::string& line, int iter, const std::string& reason, int skipped) {
  CHECK_MESSAGE(line.find("\"iter\":" + std::to_string(iter) + ",") != std::string::npos, line);
  CHECK_MESSAGE(line.find(reason) != std::string::npos, line);
  CHECK_MESSAGE(line.find("\"skipped_steps\":" + std::to_string(skipped) + "}") != std::string::npos, line);
}

// The error a nonfinite = stop run throws ("" when it finishes).
std::string nan_stop_error(const std::string& work, NanRunOptions no, const std::function<int(int)>& inject) {
  no.skip = false;
  try {
    nan_run(work, no, inject, nullptr);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("train loop: a NaN step is skipped without touching weights or optimizer state, counted, and training goes on") {
  HardDir dir("skip");
  const std::string d = dir.path;
  std::vector<double> w_clean, w_skip;
  NanRunOptions skip;
  skip.skip = true;
  train::TrainResult clean = nan_run(d + "/clean", skip, [](int) { return 0; }, &w_clean);
  CHECK(clean.skipped_steps == 0);
  CHECK(clean.pos.iter == 6);
  // Call 3: NaN loss; call 5: NaN gradient. Both skipped; 6 updates from 8 calls.
  std::vector<int64_t> iters;
  train::TrainResult r = nan_run(d + "/skip", skip, [](int c) { return c == 3 ? 1 : c == 5 ? 2 : 0; }, &w_skip, &iters);
  CHECK(r.skipped_steps == 2);
  CHECK(r.pos.iter == 6);
  // The loss ignores the batch: 6 clean updates give the same weights bit for bit only if the skipped
  // steps left no trace (no update, no NaN gradient or momentum carried into the next step).
  CHECK(w_skip == w_clean);
  CHECK(std::isfinite(w_skip[0]));
  CHECK(w_skip[0] != 0.5);
  // A skipped step does not advance the iteration the next loss call sees (per-step randomness such as
  // MGD's masks is redrawn as it would have been).
  CHECK(iters == std::vector<int64_t>{0, 1, 2, 2, 3, 3, 4, 5});
  const std::vector<std::string> lines = skip_lines(hard_slurp(d + "/skip/log.jsonl"));
  REQUIRE(lines.size() == 2);
  check_skip_line(lines[0], 3, "loss 'loss_a' is ", 1);
  check_skip_line(lines[1], 4, "gradient of 'w' is not finite", 2);

  // nonfinite = stop: the error names the term (or parameter), the iteration and the checkpoint to resume from.
  const auto at3 = [](int kind) { return [kind](int c) { return c == 3 ? kind : 0; }; };
  const std::string e1 = nan_stop_error(d + "/stop_loss", {}, at3(1)), e2 = nan_stop_error(d + "/stop_grad", {}, at3(2));
  CHECK_MESSAGE(e1.find("train: loss 'loss_a' is ") != std::string::npos, e1);
  CHECK_MESSAGE(e1.find("at iteration 3") != std::string::npos, e1);
  CHECK_MESSAGE(e1.find("Last good checkpoint: " + d + "/stop_loss/iter_2.safetensors") != std::string::npos, e1);
  CHECK_MESSAGE(e2.find("train: gradient of 'w' is not finite at iteration 3") != std::string::npos, e2);
  CHECK_MESSAGE(e2.find("Last good checkpoint: " + d + "/stop_grad/iter_2.safetensors") != std::string::npos, e2);
  // Before the first checkpoint: says so.
  const std::string e0 = nan_stop_error(d + "/stop_first", {}, [](int c) { return c == 1 ? 1 : 0; });
  CHECK_MESSAGE(e0.find("at iteration 1") != std::string::npos, e0);
  CHECK_MESSAGE(e0.find("Last good checkpoint: none written yet") != std::string::npos, e0);
  // Resumed from a work directory, before a new checkpoint: the file it resumed from (not the directory).
  NanRunOptions part;
  part.stop_at = 2;
  nan_run(d + "/res", part, [](int) { return 0; }, nullptr);
  NanRunOptions res;
  res.resume = d + "/res";
  const std::string er = nan_stop_error(d + "/res", res, [](int c) { return c == 1 ? 2 : 0; });
  CHECK_MESSAGE(er.find("gradient of 'w' is not finite at iteration 3") != std::string::npos, er);
  CHECK_MESSAGE(er.find("Last good checkpoint: " + d + "/res/iter_2.safetensors (") != std::string::npos, er);
}

TEST_CASE("train loop: with grad_clip > 0 an Inf gradient or an infinite gradient norm stops naming the checkpoint, or is skipped and counted") {
  HardDir dir("clip");
  const std::string d = dir.path;
  NanRunOptions stop;
  stop.grad_clip = 1.0;
  stop.dtype = DType::F64;  // kind 3 needs finite gradients whose squares overflow
  const auto at3 = [](int kind) { return [kind](int c) { return c == 3 ? kind : 0; }; };
  // An Inf gradient: named by parameter, before clipping could turn it into zeros or NaN.
  const std::string e4 = nan_stop_error(d + "/inf_grad", stop, at3(4));
  CHECK_MESSAGE(e4.find("train: gradient of 'w' is not finite at iteration 3") != std::string::npos, e4);
  CHECK_MESSAGE(e4.find("Last good checkpoint: " + d + "/inf_grad/iter_2.safetensors") != std::string::npos, e4);
  CHECK_MESSAGE(e4.find("train.nonfinite = skip") != std::string::npos, e4);
  // Finite gradients, infinite global norm: "gradient norm", the iteration and the checkpoint.
  const std::string e3 = nan_stop_error(d + "/inf_norm", stop, at3(3));
  CHECK_MESSAGE(e3.find("train: gradient norm is inf (train.grad_clip 1) at iteration 3") != std::string::npos, e3);
  CHECK_MESSAGE(e3.find("Last good checkpoint: " + d + "/inf_norm/iter_2.safetensors") != std::string::npos, e3);
  const std::string e3first = nan_stop_error(d + "/inf_norm1", stop, [](int c) { return c == 1 ? 3 : 0; });
  CHECK_MESSAGE(e3first.find("gradient norm is inf (train.grad_clip 1) at iteration 1") != std::string::npos, e3first);
  CHECK_MESSAGE(e3first.find("Last good checkpoint: none written yet") != std::string::npos, e3first);

  // skip: both steps dropped and counted, and the weights equal a clean clipped run bit for bit.
  NanRunOptions skip = stop;
  skip.skip = true;
  std::vector<double> w_clean, w_skip;
  train::TrainResult clean = nan_run(d + "/clean", skip, [](int) { return 0; }, &w_clean);
  CHECK(clean.skipped_steps == 0);
  std::vector<int64_t> iters;
  train::TrainResult r = nan_run(d + "/skip", skip, [](int c) { return c == 3 ? 4 : c == 5 ? 3 : 0; }, &w_skip, &iters);
  CHECK(r.skipped_steps == 2);
  CHECK(r.pos.iter == 6);
  CHECK(w_skip == w_clean);
  CHECK(std::isfinite(w_skip[0]));
  CHECK(iters == std::vector<int64_t>{0, 1, 2, 2, 3, 3, 4, 5});
  const std::vector<std::string> lines = skip_lines(hard_slurp(d + "/skip/log.jsonl"));
  REQUIRE(lines.size() == 2);
  check_skip_line(lines[0], 3, "gradient of 'w' is not finite", 1);
  check_skip_line(lines[1], 4, "gradient norm is inf (train.grad_clip 1)", 2);
  // The logged loss averages of the train lines never saw the skipped steps' values (1e200 terms).
  const std::string log = hard_slurp(d + "/skip/log.jsonl");
  CHECK(log.find("e+200") == std::string::npos);
}

TEST_CASE("kdet distill: a non-finite KD loss term stops naming that term and the last good checkpoint, or is skipped and counted") {
  if (!hard_kbin()) {
    MESSAGE("KDET_BIN not set: distill NaN guard test skipped (make test sets it)");
    return;
  }
  REQUIRE(std::filesystem::exists(kMicroCfg));
  HardDir dir("kdnan");
  const std::string d = dir.path;
  // A random R34 teacher with the micro student's neck and head; MGD. alpha_mgd = 1e39 is +Inf in
  // float32: loss_mgd (and only it) is +Inf while the student's detection losses stay finite.
  RetinaNet teacher(RetinaNetConfig::small(34, 8, 16, 1, 6));
  Generator g(5);
  teacher.init_weights(g);
  teacher.save(d + "/teacher.safetensors");
  {
    std::ofstream f(d + "/kd.cfg");
    f << "base = " << std::filesystem::absolute(kMicroCfg).string() << "\n"
      << "[teacher]\ntype = retinanet\ndepth = 34\nnum_classes = 6\nbase_channels = 8\nneck_channels = 16\n"
      << "stacked_convs = 1\nweights = " << d << "/teacher.safetensors\n"
      << "[distill]\nmethod = mgd\ninherit = true\nalpha_mgd = 0.001\n"
      << "[train]\nnonfinite = stop\nmax_skips_in_a_row = 2\n";
  }
  auto run = [&](const std::string& work, const std::string& args) {
    const std::string cmd = std::string(hard_kbin()) + " distill " + d + "/kd.cfg --quiet --work-dir " + d + "/" + work +
                            " --set data.synth_dir=" + d + "/synth data.synth_train_images=4 train.checkpoint_interval=1 "
                            "train.eval_at_end=false " + args + " > " + d + "/" + work + ".out 2>&1";
    const int rc = std::system(cmd.c_str());
    return std::make_pair(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, hard_slurp(d + "/" + work + ".out"));
  };
  // One good iteration (iter_1 written), then resumed with the KD weight at +Inf: iteration 2 stops.
  auto [rc1, out1] = run("stop", "train.max_iters=1");
  REQUIRE_MESSAGE(rc1 == 0, out1);
  auto [rc2, out2] = run("stop", "train.max_iters=3 distill.alpha_mgd=1e39 --resume " + d + "/stop");
  CHECK(rc2 == 1);
  CHECK_MESSAGE(out2.find("train: loss 'loss_mgd' is inf at iteration 2") != std::string::npos, out2);
  CHECK_MESSAGE(out2.find("Last good checkpoint: " + d + "/stop/iter_1.safetensors") != std::string::npos, out2);
  CHECK_FALSE(std::filesystem::exists(d + "/stop/iter_2.safetensors"));
  // A truncated checkpoint given by name is refused with a message naming it.
  {
    const std::string full = hard_slurp(d + "/stop/iter_1.safetensors");
    std::ofstream(d + "/bad.safetensors", std::ios::binary) << full.substr(0, full.size() - 100);
  }
  auto [rcb, outb] = run("bad", "train.max_iters=2 --resume " + d + "/bad.safetensors");
  CHECK(rcb == 1);
  CHECK_MESSAGE(outb.find(d + "/bad.safetensors") != std::string::npos, outb);
  CHECK_MESSAGE(outb.find("truncated") != std::string::npos, outb);
  // skip: every step skipped (reason: loss_mgd), counted in the log, until max_skips_in_a_row.
  auto [rc3, out3] = run("skip", "train.max_iters=3 distill.alpha_mgd=1e39 train.nonfinite=skip");
  CHECK(rc3 == 1);
  CHECK_MESSAGE(out3.find("train: loss 'loss_mgd' is inf at iteration 1 after 2 skipped steps in a row") !=
                    std::string::npos, out3);
  CHECK_MESSAGE(out3.find("Last good checkpoint: none written yet") != std::string::npos, out3);
  const std::vector<std::string> lines = skip_lines(hard_slurp(d + "/skip/log.jsonl"));
  REQUIRE(lines.size() == 2);
  check_skip_line(lines[0], 1, "loss 'loss_mgd' is inf", 1);
  check_skip_line(lines[1], 1, "loss 'loss_mgd' is inf", 2);
}

TEST_CASE("train: a huge batch size or worker count is refused naming the value (not wrapped to a negative int)") {
  auto error_for = [](const std::string& data_section) {
    try {
      train::build_data(Config::parse("[data]\ntype = synth\n" + data_section), "/tmp/kdet_hard_unused");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string e1 = error_for("batch_size = 1000000000000\n");
  CHECK_MESSAGE(e1.find("data.batch_size must be in [1, 1000000], got 1000000000000") != std::string::npos, e1);
  const std::string e2 = error_for("eval_batch_size = 4294967297\n");  // 2^32 + 1: would wrap to 1
  CHECK_MESSAGE(e2.find("data.eval_batch_size must be in [1, 1000000], got 4294967297") != std::string::npos, e2);
  const std::string e3 = error_for("workers = -1\n");
  CHECK_MESSAGE(e3.find("data.workers must be in [0, 1000000], got -1") != std::string::npos, e3);
}
