// bench/kdet_bench.cpp — `make bench`: this machine's FP32 peak, SGEMM and conv2d throughput, and the
// same shapes in PyTorch (bench/torch_peers.py, when /usr/bin/python3 has torch) in the same run.
//
//   build/kdet_bench [--reps N] [--warmup N] [--no-torch] [--only conv|detector|dcn|roi|frcnn|all|case,case] [--python PATH]
//                    [--no-detector] [--no-dcn] [--no-roi] [--no-frcnn] [--detector-size N] [--detector-reps N] [--detector-warmup N] ...
//
// Sections: "conv" (this file), "detector" (bench/bench_detector.cpp: RetinaNet R18/R50-FPN train step and
// inference, each case in its own process for peak RSS) and "dcn" (bench/bench_dcn.cpp: deformable conv beside
// torchvision.ops.deform_conv2d), "roi" (bench/bench_roi.cpp) and "frcnn" (bench/bench_two_stage.cpp: Faster R-CNN
// R50-FPN train step and inference beside torchvision's FasterRCNN, each case in its own process). All run by default; --only picks sections, or conv2d case names (which select
// the conv section only).
//
// FLOPs: 2·MACs; forward+backward = 3× forward (2× backward), or 2× when the input needs no gradient
// (the stem), as in specs/cpu_peers.md. Times are medians (and minima) of --reps runs after --warmup
// runs; the FP32 peak is the best of 40 short FMA-loop runs. "other
// load" is the CPU time (in cores) that other processes used while the kdet cases ran: numbers taken
// with other load above ~0.1 cores are not representative.
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "engine/gemm.h"
#include "engine/ops/conv2d.h"
#include "engine/random.h"
#include "bench/bench_cuda.h"
#include "bench/bench_dcn.h"
#include "bench/bench_roi.h"
#include "bench/bench_detector.h"
#include "bench/bench_two_stage.h"
#include "bench/bench_util.h"

using namespace kdet;
using namespace kdet::bench;

namespace {

// ---- FMA peak ---------------------------------------------------------------------------------------
// Each thread runs 24 independent FMA chains on full-width vectors (enough to cover latency × ports).
double fma_loop(int64_t iters) {
#if defined(__AVX512F__)
  // NOTE: named variables, not an array: GCC kept a 24-element __m512 array in memory (store-forwarding
  // latency bound, ~81 GFLOP/s per core here while SGEMM sustained 192), so the "peak" came out too low.
  __m512 a0 = _mm512_set1_ps(0.1f), a1 = _mm512_set1_ps(0.2f), a2 = _mm512_set1_ps(0.3f), a3 = _mm512_set1_ps(0.4f),
         a4 = _mm512_set1_ps(0.5f), a5 = _mm512_set1_ps(0.6f), a6 = _mm512_set1_ps(0.7f), a7 = _mm512_set1_ps(0.8f),
         a8 = _mm512_set1_ps(0.9f), a9 = _mm512_set1_ps(1.0f), a10 = _mm512_set1_ps(1.1f), a11 = _mm512_set1_ps(1.2f);
  const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
    a0 = _mm512_fmadd_ps(a0, m, b); a1 = _mm512_fmadd_ps(a1, m, b); a2 = _mm512_fmadd_ps(a2, m, b);
    a3 = _mm512_fmadd_ps(a3, m, b); a4 = _mm512_fmadd_ps(a4, m, b); a5 = _mm512_fmadd_ps(a5, m, b);
    a6 = _mm512_fmadd_ps(a6, m, b); a7 = _mm512_fmadd_ps(a7, m, b); a8 = _mm512_fmadd_ps(a8, m, b);
    a9 = _mm512_fmadd_ps(a9, m, b); a10 = _mm512_fmadd_ps(a10, m, b); a11 = _mm512_fmadd_ps(a11, m, b);
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8),
                     "+v"(a9), "+v"(a10), "+v"(a11));
  }
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                           _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  volatile float sink = out[0];
  (void)sink;
  return 2.0 * 16 * 12 * iters;
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    __asm__ volatile("" : "+x"(acc[0]), "+x"(acc[6]), "+x"(acc[11]));
  }
  alignas(32) float out[8];
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_store_ps(out, s);
  volatile float sink = out[0];
  (void)sink;
  return 2.0 * 8 * 12 * iters;
#else
  float acc[64];
  for (int i = 0; i < 64; ++i) acc[i] = 0.001f * i;
  for (int64_t it = 0; it < iters; ++it)
#pragma omp simd
    for (int i = 0; i < 64; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  volatile float sink = acc[3];
  (void)sink;
  return 2.0 * 64 * iters;
#endif
}

const char* fma_isa() {
#if defined(__AVX512F__)
  return "AVX-512 (12 zmm FMA chains)";
#elif defined(__AVX2__) && defined(__FMA__)
  return "AVX2+FMA (12 ymm FMA chains)";
#else
  return "portable";
#endif
}

// Peak = the best of many short runs (~10 ms each), so a run that fits between other processes' time
// slices still finds the hardware's rate on a busy machine.
double fma_peak(int threads) {
  const int64_t iters = 2'000'000;
  std::vector<double> r;
  for (int rep = 0; rep < 40; ++rep) {
    double flops = 0;
    const double t0 = now_s();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += fma_loop(iters);
    r.push_back(flops / (now_s() - t0) / 1e9);
  }
  return *std::max_element(r.begin(), r.end());
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

struct ConvCase {
  const char* name;
  const char* desc;
  int64_t n, c, h, w, o, k, s, p;
  bool input_grad;
};

const ConvCase kCases[] = {
    {"stem7x7s2", "3->64 7x7 s2 p3, 2x3x512x512 (no input grad)", 2, 3, 512, 512, 64, 7, 2, 3, false},
    {"3x3_64_128", "64->64 3x3, 2x64x128x128", 2, 64, 128, 128, 64, 3, 1, 1, true},
    {"3x3_256_64", "256->256 3x3, 2x256x64x64", 2, 256, 64, 64, 256, 3, 1, 1, true},
    {"3x3_512_16", "512->512 3x3, 2x512x16x16", 2, 512, 16, 16, 512, 3, 1, 1, true},
    {"1x1_256_1024_32", "256->1024 1x1, 2x256x32x32", 2, 256, 32, 32, 1024, 1, 1, 0, true},
};

std::map<std::string, nlohmann::json> run_torch(const std::string& python, int reps, int warmup, double wait_s,
                                                const std::string& only, std::string& info) {
  std::map<std::string, nlohmann::json> out;
  if (access(python.c_str(), X_OK) != 0) return out;
  const std::string probe = python + " -c 'import torch' >/dev/null 2>&1";
  if (std::system(probe.c_str()) != 0) return out;
  if (access("bench/torch_peers.py", R_OK) != 0) {
    info = "bench/torch_peers.py not found (run from the repository root)";
    return out;
  }
  std::string cmd = "OMP_NUM_THREADS=" + std::to_string(omp_get_max_threads()) + " " + python +
                    " bench/torch_peers.py --threads " + std::to_string(omp_get_max_threads()) + " --reps " +
                    std::to_string(reps) + " --warmup " + std::to_string(warmup) + " --wait-idle " +
                    std::to_string(static_cast<int>(wait_s));
  if (!only.empty()) cmd += " --only " + only + ",sgemm2048";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  while (fgets(buf, sizeof buf, p)) {
    try {
      auto j = nlohmann::json::parse(buf);
      if (j["name"] == "info")
        info = "torch " + j["torch"].get<std::string>() + ", " + std::to_string(j["threads"].get<int>()) +
               " threads, oneDNN " + (j["mkldnn"].get<bool>() ? "on" : "off");
      else
        out[j["name"].get<std::string>()] = j;
    } catch (...) {
    }
  }
  pclose(p);
  return out;
}

// Peak, SGEMM and the conv2d table (with the PyTorch peers when `torch`).
void run_conv_section(int reps, int warmup, double wait_s, bool torch, const std::string& only,
                      const std::set<std::string>& sel, const std::string& python) {
  const int nth = omp_get_max_threads();
  double la[3] = {};
  wait_idle(wait_s);
  const double busy0 = machine_busy_s(), self0 = self_cpu_s(), wall0 = now_s();
  const double peak1 = fma_peak(1), peakN = fma_peak(nth);
  std::printf("FP32 peak, %s: 1 thread %.1f GFLOP/s, %d threads %.1f GFLOP/s\n", fma_isa(), peak1, nth, peakN);

  // SGEMM 2048^3.
  const int64_t n = 2048;
  Generator g(1);
  Tensor A = rand_normal({n, n}, g), B = rand_normal({n, n}, g), C = Tensor::empty({n, n});
  const Timing gemm_t = time_ms([&] { sgemm(false, false, n, n, n, 1.f, A.data<float>(), n, B.data<float>(), n, 0.f,
                                             C.data<float>(), n); },
                                 warmup, std::max(reps, 5));
  const double gemm_ms = gemm_t.med;
  const double gemm_gf = 2.0 * n * n * n / (gemm_ms * 1e-3) / 1e9;
  std::printf("SGEMM 2048^3: median %.1f ms (min %.1f), %.1f GFLOP/s, %.0f%% of peak\n", gemm_ms, gemm_t.min, gemm_gf,
              100 * gemm_gf / peakN);
  A = B = C = Tensor();

  struct Row {
    const ConvCase* c;
    double gflop_f, gflop_fb;
    Timing f, fb;
    double load;
  };
  std::vector<Row> rows;
  for (const ConvCase& cc : kCases) {
    if (!sel.empty() && !sel.count(cc.name)) continue;
    Generator gg(2);
    Tensor x = rand_normal({cc.n, cc.c, cc.h, cc.w}, gg), w = rand_normal({cc.o, cc.c, cc.k, cc.k}, gg, 0, 0.05);
    const Conv2dArgs a = Conv2dArgs::make(cc.s, cc.p);
    Shape ys = ops::conv2d_output_shape(x.shape(), w.shape(), a);
    Tensor gy = rand_normal(ys, gg);
    const double gf = 2.0 * ys.numel() * cc.c * cc.k * cc.k / 1e9;
    wait_idle(wait_s);
    const double cb0 = machine_busy_s(), cs0 = self_cpu_s(), ct0 = now_s();
    const Timing ms_f = time_ms([&] { ops::conv2d(x, w, Tensor(), a); }, warmup, reps);
    const Timing ms_fb = time_ms(
        [&] {
          Tensor y = ops::conv2d(x, w, Tensor(), a);
          if (cc.input_grad) ops::conv2d_backward_input(gy, w, x.shape(), a);
          ops::conv2d_backward_weight(gy, x, w.shape(), a);
        },
        warmup, reps);
    const double load = ((machine_busy_s() - cb0) - (self_cpu_s() - cs0)) / (now_s() - ct0);
    rows.push_back({&cc, gf, gf * (cc.input_grad ? 3 : 2), ms_f, ms_fb, load});
  }
  const double other = ((machine_busy_s() - busy0) - (self_cpu_s() - self0)) / (now_s() - wall0);

  std::map<std::string, nlohmann::json> tr;
  std::string tinfo;
  if (torch) {
    wait_idle(wait_s);
    tr = run_torch(python, reps, warmup, wait_s, only, tinfo);
  }
  const bool have_torch = !tr.empty();
  if (torch && !have_torch) std::printf("(PyTorch peers skipped: %s has no torch)\n", python.c_str());
  if (have_torch) std::printf("\nPyTorch peers: %s, NCHW, bias=False, same reps\n", tinfo.c_str());
  if (have_torch && tr.count("sgemm2048")) {
    const double tms = tr["sgemm2048"]["ms"].get<double>();
    std::printf("torch.mm 2048^3: %.1f ms, %.1f GFLOP/s -> kdet/torch speed %.2fx\n", tms,
                2.0 * n * n * n / (tms * 1e-3) / 1e9, tms / gemm_ms);
  }
  std::printf("\nconv2d, N=2, FP32, no bias; median of %d after %d warm-up; %% of the %d-thread peak (%.1f)\n", reps,
              warmup, nth, peakN);
  std::printf("%-46s %-7s %6s %15s %7s %6s %5s", "case", "pass", "GFLOP", "kdet ms med/min", "GFLOP/s", "%peak",
              "load");
  if (have_torch) std::printf(" %16s %7s %6s %5s %10s", "torch ms med/min", "GFLOP/s", "%peak", "load", "kdet/torch");
  std::printf("\n");
  for (const Row& r : rows) {
    for (int pass = 0; pass < 2; ++pass) {
      const double gfl = pass ? r.gflop_fb : r.gflop_f;
      const Timing t = pass ? r.fb : r.f;
      const double rate = gfl / (t.med * 1e-3);
      std::printf("%-46s %-7s %6.2f %7.1f/%7.1f %7.1f %5.0f%% %5.2f", pass ? "" : r.c->desc, pass ? "fwd+bwd" : "fwd", gfl,
                  t.med, t.min, rate, 100 * rate / peakN, r.load);
      if (have_torch && tr.count(r.c->name)) {
        const auto& j = tr[r.c->name];
        const double tms = j[pass ? "fwdbwd_ms" : "fwd_ms"].get<double>();
        const double tmin = j.value(pass ? "fwdbwd_min_ms" : "fwd_min_ms", tms);
        const double trate = gfl / (tms * 1e-3);
        std::printf(" %8.1f/%7.1f %7.1f %5.0f%% %5.2f %9.2fx", tms, tmin, trate, 100 * trate / peakN,
                    j.value("load", 0.0), tms / t.med);
      }
      std::printf("\n");
    }
  }
  getloadavg(la, 3);
  std::printf("\nGFLOP/s, %%peak and kdet/torch use medians; kdet/torch = torch time / kdet time (>1: kdet is faster). load = CPU cores used by other processes "
              "while the kdet case ran.\nOther load over the whole kdet part: %.2f cores%s; load average at end: %.2f %.2f "
              "%.2f\n",
              other, other > 0.15 ? " (HIGH: rerun on a quiet machine)" : "", la[0], la[1], la[2]);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows up line by line when redirected
  int reps = 9, warmup = 2;
  double wait_s = 20;
  bool torch = true, conv = true, detector = true, dcn = true, roi = true, frcnn = true;
  std::string only, python = "/usr/bin/python3", det_case, frcnn_case;
  DetectorBenchOptions dopt;
  TwoStageBenchOptions fopt;
  CudaBenchOptions copt;
  bool cuda = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--warmup" && i + 1 < argc) warmup = std::atoi(argv[++i]);
    else if (a == "--no-torch") torch = false;
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--python" && i + 1 < argc) python = argv[++i];
    else if (a == "--wait-idle" && i + 1 < argc) wait_s = std::atof(argv[++i]);
    else if (a == "--no-detector") detector = false;
    else if (a == "--no-dcn") dcn = false;
    else if (a == "--no-roi") roi = false;
    else if (a == "--detector-size" && i + 1 < argc) dopt.size = std::atoi(argv[++i]);
    else if (a == "--detector-reps" && i + 1 < argc) dopt.reps = std::atoi(argv[++i]);
    else if (a == "--detector-warmup" && i + 1 < argc) dopt.warmup = std::atoi(argv[++i]);
    else if (a == "--detector-recipe" && i + 1 < argc) dopt.recipe = argv[++i];
    else if (a == "--detector-models" && i + 1 < argc) dopt.models = argv[++i];
    else if (a == "--detector-passes" && i + 1 < argc) dopt.passes = argv[++i];
    else if (a == "--detector-case" && i + 1 < argc) det_case = argv[++i];  // internal: child process
    else if (a == "--no-frcnn") frcnn = false;
    else if (a == "--frcnn-config" && i + 1 < argc) fopt.config = argv[++i];
    else if (a == "--frcnn-size" && i + 1 < argc) fopt.size = std::atoi(argv[++i]);
    else if (a == "--frcnn-reps" && i + 1 < argc) fopt.reps = std::atoi(argv[++i]);
    else if (a == "--frcnn-warmup" && i + 1 < argc) fopt.warmup = std::atoi(argv[++i]);
    else if (a == "--frcnn-passes" && i + 1 < argc) fopt.passes = argv[++i];
    else if (a == "--frcnn-frozen-bn") fopt.frozen_bn = true;
    else if (a == "--frcnn-case" && i + 1 < argc) frcnn_case = argv[++i];  // internal: child process
    else if (a == "--cuda") cuda = true;
    else if (a == "--cuda-depth" && i + 1 < argc) copt.depth = std::atoi(argv[++i]);
    else if (a == "--cuda-size" && i + 1 < argc) std::sscanf(argv[++i], "%dx%d", &copt.height, &copt.width);
    else if (a == "--cuda-batch" && i + 1 < argc) copt.batch = std::atoi(argv[++i]);
    else if (a == "--cuda-reps" && i + 1 < argc) copt.reps = std::atoi(argv[++i]);
    else if (a == "--cuda-warmup" && i + 1 < argc) copt.warmup = std::atoi(argv[++i]);
    else if (a == "--cuda-tf32") copt.tf32 = true;
    else if (a == "--cuda-benchmark") copt.benchmark = true;
    else if (a == "--cuda-nondeterministic") copt.deterministic = false;
    else {
      std::printf(
          "usage: kdet_bench [--reps N] [--warmup N] [--no-torch] [--only SECTIONS|CASES] [--python PATH]\n"
          "                  [--wait-idle SECONDS (default 20)] [--no-detector]\n"
          "                  [--detector-size N (512)] [--detector-reps N (7)] [--detector-warmup N (1)]\n"
          "                  [--detector-recipe mmdet|torchvision] [--detector-models r18,r50]\n"
          "                  [--detector-passes train,infer] [--no-frcnn] [--frcnn-config PATH]\n"
          "                  [--frcnn-size N (512)] [--frcnn-reps N (5)] [--frcnn-warmup N (1)]\n"
          "                  [--frcnn-passes train,infer] [--frcnn-frozen-bn (BN affine frozen on both sides)]\n"
          "       kdet_bench --cuda [--cuda-depth 50] [--cuda-size 800x1333] [--cuda-batch 2] [--cuda-reps 20]\n"
          "                  [--cuda-warmup 5] [--cuda-tf32] [--cuda-benchmark] [--cuda-nondeterministic] [--no-torch]\n"
          "                  [--python PATH]\n"
          "                  (GPU RetinaNet training step beside bench/torch_retinanet_gpu.py)\n"
          "  --only: conv | detector | dcn | roi | frcnn | all, or conv2d case names (a,b; implies conv only);\n"
          "  --no-dcn skips the deformable-conv section (bench/bench_dcn.cpp, beside torchvision.ops.deform_conv2d), --no-roi the\n"
          "  RoIAlign section (bench/bench_roi.cpp, beside torchvision.ops.roi_align), --no-frcnn the Faster R-CNN\n"
          "  section (bench/bench_two_stage.cpp, beside torchvision's FasterRCNN; --only frcnn runs just that)\n");
      return a == "--help" ? 0 : 2;
    }
  }
  try {
    if (!det_case.empty()) return run_detector_case(det_case, dopt);
    if (!frcnn_case.empty()) return run_two_stage_case(frcnn_case, fopt);
    if (cuda) {
      if (only == "dcn") {  // --cuda --only dcn: deform_conv2d on the GPU beside torchvision's CUDA kernel
        DcnBenchOptions o;
        o.reps = copt.reps, o.warmup = copt.warmup, o.torch = torch, o.python = python;
        return run_dcn_cuda_section(o, copt.tf32);
      }
      copt.torch = torch;
      copt.python = python;
      return run_cuda_section(copt);
    }
    dopt.python = python;
    dopt.torch = torch;
    dopt.wait_s = wait_s;
    std::set<std::string> sel;
    {
      std::stringstream ss(only);
      std::string t;
      bool sections = false, cases = false, want_conv = false, want_det = false, want_dcn = false, want_roi = false,
           want_frcnn = false;
      while (std::getline(ss, t, ',')) {
        if (t == "conv") sections = want_conv = true;
        else if (t == "detector") sections = want_det = true;
        else if (t == "dcn") sections = want_dcn = true;
        else if (t == "roi") sections = want_roi = true;
        else if (t == "frcnn") sections = want_frcnn = true;
        else if (t == "all") sections = want_conv = want_det = want_dcn = want_roi = want_frcnn = true;
        else if (!t.empty()) cases = true, sel.insert(t);
      }
      if (sections || cases) {
        conv = want_conv || cases;
        detector = detector && want_det;
        dcn = dcn && want_dcn;
        roi = roi && want_roi;
        frcnn = frcnn && want_frcnn;
      }
    }
    const std::string conv_only = [&] {
      std::string o;
      for (const auto& c : sel) o += (o.empty() ? "" : ",") + c;
      return o;
    }();
    double la[3] = {};
    getloadavg(la, 3);
    std::printf("kdet bench — %s, %ld CPUs online, OpenMP threads %d, sgemm kernel %s\n", cpu_model().c_str(),
                sysconf(_SC_NPROCESSORS_ONLN), omp_get_max_threads(), sgemm_kernel_name());
    std::printf("load average at start: %.2f %.2f %.2f\n\n", la[0], la[1], la[2]);
    if (conv) run_conv_section(reps, warmup, wait_s, torch, conv_only, sel, python);
    if (detector) {
      if (conv) std::printf("\n");
      run_detector_section(dopt, argv[0]);
    }
    if (dcn) {
      if (conv || detector) std::printf("\n");
      DcnBenchOptions o;
      o.torch = torch, o.python = python, o.wait_s = wait_s;
      run_dcn_section(o);
    }
    if (roi) {
      if (conv || detector || dcn) std::printf("\n");
      RoiBenchOptions o;
      o.torch = torch, o.python = python, o.wait_s = wait_s;
      run_roi_section(o);
    }
    if (frcnn) {
      if (conv || detector || dcn || roi) std::printf("\n");
      fopt.torch = torch, fopt.python = python, fopt.wait_s = wait_s;
      run_two_stage_section(fopt, argv[0]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kdet_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
