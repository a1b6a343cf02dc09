// [cuda] `kdet train` / `kdet distill` with train.device = cuda, end to end in-process (cli::cmd_train,
// cli::cmd_distill): the same 3 iterations on the CPU and on the GPU log the same losses (f32 tolerance),
// and the GPU run's checkpoint (written from the host) resumes on the CPU. Skipped without a GPU.
#include <doctest/doctest.h>

#if KDET_CUDA  // the CPU build has tests/cuda/test_cuda_ops.cpp's "[cuda] CUDA backend: not built" instead
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "detectors/build.h"
#include "engine/config.h"
#include "engine/random.h"
#include "tests/cli_util.h"
#include "tests/cuda/cuda_test_util.h"
#include "tools/commands.h"
#include "tools/train_loop.h"

using namespace kdet;

namespace {

using test::bitwise_equal;
using test::kGpu;
using test::slurp;
using test::TmpDir;

int run(int (*cmd)(int, char**), std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return cmd(static_cast<int>(argv.size()), argv.data());
}

// The "mode":"train" lines of a work dir's log.jsonl.
std::vector<nlohmann::json> train_lines(const std::string& dir) {
  std::ifstream f(dir + "/log.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("mode", "") == "train") out.push_back(j);
  }
  return out;
}

void compare_logs(const std::string& cpu, const std::string& gpu, double rel) {
  auto a = train_lines(cpu), b = train_lines(gpu);
  REQUIRE(a.size() == b.size());
  REQUIRE(!a.empty());
  for (size_t i = 0; i < a.size(); ++i)
    for (auto& [k, v] : a[i].items()) {
      if (k.rfind("loss", 0) != 0 && k != "grad_norm") continue;
      REQUIRE_MESSAGE(b[i].contains(k), k);
      const double x = v.get<double>(), y = b[i][k].get<double>();
      CHECK_MESSAGE(std::abs(x - y) <= rel * (std::abs(x) + 1e-3), k << " at log line " << i << ": cpu " << x
                                                                      << ", gpu " << y);
    }
}

const std::string kCfg = "configs/retinanet_r18_micro_synth.cfg";

std::vector<std::string> common(const std::string& d, const std::string& work, const std::string& device) {
  return {"--work-dir", work, "--quiet", "--set", "data.synth_dir=" + d + "/synth", "data.synth_train_images=6",
          "data.synth_val_images=4", "train.max_iters=3", "train.log_interval=1", "train.checkpoint_interval=3",
          "train.device=" + device};
}

}  // namespace

TEST_CASE("[cuda] kdet train with train.device = cuda: the CPU run's losses, a checkpoint that resumes on the CPU") {
  KDET_REQUIRE_GPU();
  REQUIRE(std::filesystem::exists(kCfg));
  TmpDir t("train");
  for (const char* dev : {"cpu", "cuda"}) {
    std::vector<std::string> a = {"train", kCfg};
    for (auto& s : common(t.path, t.path + "/" + dev, dev)) a.push_back(s);
    REQUIRE_MESSAGE(run(cli::cmd_train, a) == 0, std::string(dev));
  }
  compare_logs(t.path + "/cpu", t.path + "/cuda", 2e-3);
  CHECK(std::filesystem::exists(t.path + "/cuda/metrics.json"));
  // The GPU run's checkpoint continues on the CPU (one more iteration).
  std::vector<std::string> a = {"train", kCfg};
  for (auto& s : common(t.path, t.path + "/resumed", "cpu")) a.push_back(s);
  a.insert(a.end(), {"--set", "train.max_iters=4", "--resume", t.path + "/cuda/iter_3.safetensors"});
  CHECK(run(cli::cmd_train, a) == 0);
}

TEST_CASE("[cuda] kdet distill with train.device = cuda (every KD method): the CPU run's losses") {
  KDET_REQUIRE_GPU();
  TmpDir t("distill");
  // A teacher checkpoint: the micro detector trained for 3 iterations on the CPU.
  {
    std::vector<std::string> a = {"train", kCfg};
    for (auto& s : common(t.path, t.path + "/teacher", "cpu")) a.push_back(s);
    REQUIRE(run(cli::cmd_train, a) == 0);
  }
  for (const char* method : {"fitnet", "fgd", "mgd", "amd", "dmkd", "ssim", "fbkd", "aid", "logit_kd"}) {
    const std::string cfg = t.path + "/kd_" + method + ".cfg";
    std::ofstream(cfg) << "base = " << std::filesystem::absolute(kCfg).string() << "\n[teacher]\n"
                       << "type = retinanet\ndepth = 18\nnum_classes = 6\nbase_channels = 8\nfrozen_stages = -1\n"
                       << "norm_eval = false\nneck_channels = 16\nstacked_convs = 1\nhead_norm = none\nreg_loss = l1\n"
                       << "weights = " << t.path << "/teacher/iter_3.safetensors\n"
                       << "[distill]\nmethod = " << method << "\ninherit = false\n";
    // The micro detector's coarsest levels are 1x1: the non-local blocks of FBKD / AID cannot pool there.
    if (std::string(method) == "fbkd" || std::string(method) == "aid")
      std::ofstream(cfg, std::ios::app) << "nonlocal_inter = 8,8,8,8,8\nnonlocal_pool = 1,1,1,1,1\n";
    for (const char* dev : {"cpu", "cuda"}) {
      std::vector<std::string> a = {"distill", cfg};
      for (auto& s : common(t.path, t.path + "/" + method + "_" + dev, dev)) a.push_back(s);
      REQUIRE_MESSAGE(run(cli::cmd_distill, a) == 0, (std::string(method) + " on " + dev));
    }
    compare_logs(t.path + "/" + method + "_cpu", t.path + "/" + method + "_cuda", 5e-3);
  }
}

// The two-stage detectors and RepPoints: host-side target / proposal / RoI code around device heads. The
// R-CNN losses are compared more loosely: proposals come from a top-k + NMS over the RPN scores, where a
// float difference between the devices may swap a near-tie and change a few of the 512 sampled RoIs.
TEST_CASE("[cuda] kdet train with train.device = cuda: Faster R-CNN, Cascade R-CNN, RepPoints match the CPU run") {
  KDET_REQUIRE_GPU();
  const std::vector<std::pair<std::string, double>> cases = {{"configs/faster_rcnn_r18_tiny_synth.cfg", 2e-2},
                                                             {"configs/cascade_rcnn_r34_tiny_synth.cfg", 2e-2},
                                                             {"configs/reppoints_r18_tiny_synth.cfg", 2e-3}};
  for (const auto& [cfg, rel] : cases) {
    const bool two_stage = cfg.find("rcnn") != std::string::npos;
    REQUIRE(std::filesystem::exists(cfg));
    TmpDir t("train2");
    for (const char* dev : {"cpu", "cuda"}) {
      std::vector<std::string> a = {"train", cfg};
      for (auto& s : common(t.path, t.path + "/" + dev, dev)) a.push_back(s);
      a.insert(a.end(), {"data.batch_size=2", "data.eval_batch_size=2", "train.max_iters=2"});
      if (two_stage) a.insert(a.end(), {"model.rpn_train_max_per_img=100", "model.rcnn_sampler_num=64"});
      REQUIRE_MESSAGE(run(cli::cmd_train, a) == 0, (cfg + " on " + dev));
    }
    INFO(cfg);
    compare_logs(t.path + "/cpu", t.path + "/cuda", rel);
    CHECK(std::filesystem::exists(t.path + "/cuda/metrics.json"));  // evaluation ran on the GPU too
  }
}

TEST_CASE("[cuda] kdet distill with train.device = cuda: RoI logit KD between Faster R-CNNs") {
  KDET_REQUIRE_GPU();
  const std::string cfg = "configs/kd_logit_roi_faster_r34_r18_tiny_synth.cfg";
  REQUIRE(std::filesystem::exists(cfg));
  TmpDir t("distill_roi");
  // A random teacher of the config's [teacher] section.
  const std::string tw = t.path + "/teacher.safetensors";
  {
    auto teacher = build_detector(Config::load(cfg), "teacher");
    Generator g(3);
    teacher->init_weights(g);
    teacher->save(tw);
  }
  for (const char* dev : {"cpu", "cuda"}) {
    std::vector<std::string> a = {"distill", cfg};
    for (auto& s : common(t.path, t.path + "/" + dev, dev)) a.push_back(s);
    a.insert(a.end(), {"data.batch_size=2", "data.eval_batch_size=2", "train.max_iters=2", "teacher.weights=" + tw,
                       "model.rpn_train_max_per_img=100", "model.rcnn_sampler_num=64"});
    REQUIRE_MESSAGE(run(cli::cmd_distill, a) == 0, std::string(dev));
  }
  compare_logs(t.path + "/cpu", t.path + "/cuda", 2e-2);
}

TEST_CASE("[cuda] a diverging run on the GPU stops naming the loss term or parameter and the iteration") {
  KDET_REQUIRE_GPU();
  TmpDir t("diverge");
  std::vector<std::string> a = {"train", kCfg};
  for (auto& s : common(t.path, t.path + "/cuda", "cuda")) a.push_back(s);
  a.insert(a.end(), {"train.lr=1e30", "train.grad_clip=0", "train.warmup=none", "train.max_iters=6"});
  try {
    run(cli::cmd_train, a);
    FAIL("the diverging run did not stop");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK_MESSAGE((m.find("train: loss 'loss_") != std::string::npos || m.find("train: gradient of '") != std::string::npos),
                  m);
    CHECK_MESSAGE(m.find("at iteration") != std::string::npos, m);
  }
}

TEST_CASE("[cuda] kdet eval / infer --device cuda: the CPU's metrics and detections") {
  KDET_REQUIRE_GPU();
  TmpDir t("eval");
  std::vector<std::string> a = {"train", kCfg};
  for (auto& s : common(t.path, t.path + "/cpu", "cpu")) a.push_back(s);
  REQUIRE(run(cli::cmd_train, a) == 0);
  const std::string ck = t.path + "/cpu/iter_3.safetensors";
  std::map<std::string, nlohmann::json> metrics, dets;
  for (const std::string dev : {"cpu", "cuda"}) {
    REQUIRE_MESSAGE(run(cli::cmd_eval, {"eval", kCfg, ck, "--quiet", "--device", dev, "--out", t.path + "/ev_" + dev,
                                        "--set", "data.synth_dir=" + t.path + "/synth", "data.synth_train_images=6",
                                        "data.synth_val_images=4"}) == 0,
                    dev);
    metrics[dev] = nlohmann::json::parse(slurp(t.path + "/ev_" + dev + "/metrics.json"));
    dets[dev] = nlohmann::json::parse(slurp(t.path + "/ev_" + dev + "/results.json"));
  }
  CHECK(dets["cuda"].size() == dets["cpu"].size());
  for (const char* k : {"AP", "AP50"})
    CHECK_MESSAGE(std::abs(metrics["cuda"][k].get<double>() - metrics["cpu"][k].get<double>()) <= 1e-3, k);
  // infer on one validation image on both devices: the same number of drawn-or-listed detections
  std::string img;
  for (const auto& e : std::filesystem::recursive_directory_iterator(t.path + "/synth"))
    if (e.path().extension() == ".png" && img.empty()) img = e.path().string();
  REQUIRE(!img.empty());
  std::map<std::string, size_t> count;
  for (const std::string dev : {"cpu", "cuda"}) {
    REQUIRE_MESSAGE(run(cli::cmd_infer, {"infer", kCfg, ck, img, "--out", t.path + "/inf_" + dev, "--score-thr", "0.05",
                                         "--device", dev}) == 0,
                    dev);
    const auto j = nlohmann::json::parse(slurp(t.path + "/inf_" + dev + "/detections.json"));
    REQUIRE(j.is_array());
    REQUIRE(!j.empty());
    count[dev] = j[0]["detections"].size();
  }
  CHECK(count["cuda"] == count["cpu"]);
}

TEST_CASE("[cuda] kdet bench-kd --device cuda runs every feature KD method on the GPU") {
  KDET_REQUIRE_GPU();
  CHECK(run(cli::cmd_bench_kd, {"bench-kd", "--device", "cuda", "--no-student", "--size", "256", "--channels", "16",
                                "--reps", "1"}) == 0);
}

TEST_CASE("[cuda] BatchUploader: images through two pinned staging buffers in turn, annotations on the host") {
  KDET_REQUIRE_GPU();
  train::BatchUploader up(kGpu);
  Generator g(7);
  std::vector<data::Batch> host(3);
  std::vector<data::Batch> dev;
  for (int k = 0; k < 3; ++k) {
    host[k].images = rand_normal({2, 3, 32 + 32 * k, 64}, g);  // a different size each time: buffers grow
    host[k].metas.resize(2);
    host[k].gts.resize(2);
    host[k].gts[1].push_back(data::BoxAnn{});
    dev.push_back(up(host[k]));  // copied out: the uploader's batch is valid until the next call
  }
  for (int k = 0; k < 3; ++k) {
    CHECK(dev[k].images.device() == kGpu);
    CHECK(dev[k].metas.size() == 2);
    CHECK(dev[k].gts[1].size() == 1);
    // Two uploads later the staging buffer of batch k was reused: the device copy must not have changed.
    CHECK(bitwise_equal(dev[k].images, host[k].images));
  }
  // On the CPU the batch passes through untouched (no copy).
  train::BatchUploader cpu(Device::cpu());
  CHECK(&cpu(host[0]) == &host[0]);
}

#endif  // KDET_CUDA
