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
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/checkpoint.h"
#include "engine/safetensors.h"

using namespace kdet;

namespace {

const char* hard_kbin() { return std::getenv("KDET_BIN"); }

std::string hard_slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

const std::string kMicroCfg = "configs/retinanet_r18_micro_synth.cfg";

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
  const std::string d = "/tmp/kdet_hard_kill_" + std::to_string(::getpid()), a = d + "/a", b = d + "/b";
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(b);
  struct Cleanup {
    std::string p;
    ~Cleanup() { std::filesystem::remove_all(p); }
  } cleanup{d};

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
  const std::string d = "/tmp/kdet_hard_nan_" + std::to_string(::getpid());
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  struct Cleanup {
    std::string p;
    ~Cleanup() { std::filesystem::remove_all(p); }
  } cleanup{d};
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
  const std::string d = "/tmp/kdet_hard_oom_" + std::to_string(::getpid());
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  struct Cleanup {
    std::string p;
    ~Cleanup() { std::filesystem::remove_all(p); }
  } cleanup{d};
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
