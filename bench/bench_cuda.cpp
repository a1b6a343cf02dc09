// bench/bench_cuda.cpp — `kdet_bench --cuda`: RetinaNet-R50-FPN training step (batch 2, 800x1333) on the GPU,
// beside the same step in PyTorch + cuDNN (bench/torch_retinanet_gpu.py) on the same GPU (issue 6).
//
// Step (both sides): loss (focal + L1, 80 classes) -> sum -> backward -> SGD (lr 0.01, momentum 0.9, weight
// decay 1e-4) -> zero_grad, on N(0,1) images (kdet) / U[0,1) images normalised by the model (torch) with 4
// random boxes each. Timing: the device is synchronised before and after every step; median / min / max of
// --cuda-reps steps after --cuda-warmup untimed ones. Precision: full f32 unless --cuda-tf32 (both sides).
// Algorithms: deterministic cuDNN ones on both sides (torch.backends.cudnn.deterministic) unless
// --cuda-nondeterministic (then both use their defaults: PyTorch eager's own setting).
#include "bench/bench_cuda.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/bench_detector.h"
#include "bench/bench_util.h"
#include "bench/random_batch.h"
#include "detectors/retinanet.h"
#include "engine/optim.h"
#include "engine/random.h"

#if KDET_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace kdet {

namespace {

// The PyTorch side, one JSON line on stdout (or nothing when python / torch / CUDA is missing).
[[maybe_unused]] std::string run_torch(const CudaBenchOptions& o) {  // unused in a CPU-only build
  char cmd[1024];
  std::snprintf(cmd, sizeof cmd,
                "%s bench/torch_retinanet_gpu.py --depth %d --height %d --width %d --batch %d --reps %d --warmup %d%s%s%s "
                "2>/dev/null",
                o.python.c_str(), o.depth, o.height, o.width, o.batch, o.reps, o.warmup, o.tf32 ? " --tf32" : "",
                o.benchmark ? " --benchmark" : "", o.deterministic ? " --deterministic" : "");
  FILE* f = popen(cmd, "r");
  if (!f) return "";
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, f)) out += buf;
  pclose(f);
  const auto nl = out.find_last_of('{');
  return nl == std::string::npos ? "" : out.substr(nl);
}

}  // namespace

int run_cuda_section(const CudaBenchOptions& o) {
  if (!cuda_built()) {
    std::printf("kdet_bench --cuda: this build has no CUDA backend (rebuild with make CUDA=1)\n");
    return 1;
  }
#if KDET_CUDA
  if (!cuda::gpu_available()) {
    std::printf("kdet_bench --cuda: %s\n", cuda::device_status().c_str());
    return 1;
  }
  const Device dev = Device::cuda(0);
  cuda::set_allow_tf32(o.tf32);
  cuda::set_conv_benchmark(o.benchmark);
  cuda::set_deterministic(o.deterministic);
  std::printf("GPU RetinaNet-R%d-FPN training step, batch %d, %dx%d, %s, cuDNN %s, %s algorithms; %s\n", o.depth,
              o.batch, o.height, o.width, o.tf32 ? "TF32 allowed" : "full f32", o.benchmark ? "benchmarking" : "heuristics",
              o.deterministic ? "deterministic" : "any (non-deterministic allowed)", cuda::device_status().c_str());

  RetinaNet model(RetinaNetConfig::mmdet(o.depth, 80));
  Generator g(0);
  model.init_weights(g);
  model.to(dev);
  model.train();
  const int ph = (o.height + 31) / 32 * 32, pw = (o.width + 31) / 32 * 32;
  data::Batch b = bench::random_detection_batch(o.batch, o.height, o.width, ph, pw, 80, 4, g);
  b.images = b.images.to(dev);
  SGD opt(model.named_parameters("", true), 0.01, 0.9, 1e-4);
  nlohmann::json first;
  std::vector<double> all;
  alloc_reset_peak(dev);
  const bench::Timing t = bench::time_ms(
      [&] {
        cuda::synchronize();
        bench::train_step(model, b, opt, &first);
        cuda::synchronize();
      },
      o.warmup, o.reps, &all);
  nlohmann::json j;
  j["name"] = "kdet_retinanet_r" + std::to_string(o.depth) + "_train_b" + std::to_string(o.batch);
  j["ms"] = t.med;
  j["min_ms"] = t.min;
  j["max_ms"] = *std::max_element(all.begin(), all.end());
  j["first_losses"] = first;
  j["peak_live_mib"] = static_cast<double>(alloc_stats(dev).peak_bytes) / (1024.0 * 1024.0);
  std::printf("%s\n", j.dump().c_str());
  if (o.torch) {
    const std::string tj = run_torch(o);
    if (tj.empty()) {
      std::printf("PyTorch side: not run (%s has no torch with CUDA, or the script failed)\n", o.python.c_str());
    } else {
      std::printf("%s", tj.c_str());
      try {
        const auto p = nlohmann::json::parse(tj);
        if (p.contains("ms"))
          std::printf("kdet %.1f ms, PyTorch %.1f ms per step: kdet/torch = %.2f (> 1: kdet is faster)\n", t.med,
                      p["ms"].get<double>(), p["ms"].get<double>() / t.med);
      } catch (const std::exception&) {
      }
    }
  }
  return 0;
#else
  return 1;
#endif
}

}  // namespace kdet
