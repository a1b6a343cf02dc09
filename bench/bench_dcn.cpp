// bench/bench_dcn.cpp — deformable convolution throughput (engine/ops/deform_conv.h) beside
// torchvision.ops.deform_conv2d (bench/torch_dcn.py, same shapes, offsets N(0, 2²) pixels, mask U(0, 1)).
//
// Cases: the RepPoints head's two DCNs (256->256 3x3 on P3 of a 512-px batch of 2: 2x256x64x64), ResNet-50's
// c4 DCN / DCNv2 conv2 (2x256x32x32) and the strided first c3 block (2x128x64x64, stride 2). GFLOP counts the
// equivalent convolution's GEMM (2·MACs; forward+backward = 3×); bilinear sampling and the offset/mask
// gradients come on top. fwd+bwd computes every gradient (input, offset, mask, weight).
// run_dcn_cuda_section (kdet_bench --cuda --only dcn): the same cases on the GPU beside torchvision's CUDA kernel.
#include "bench/bench_dcn.h"

#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "engine/ops/deform_conv.h"
#include "engine/random.h"

#if KDET_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace kdet {

using namespace kdet::bench;

namespace {

struct DcnCase {
  const char* name;
  const char* desc;
  int64_t n, c, h, w, o, stride;
  bool mask;
};

// Kept in step with bench/torch_dcn.py.
const DcnCase kDcnCases[] = {
    {"dcn_reppoints_256_64", "RepPoints head DCN 256->256, 2x256x64x64", 2, 256, 64, 64, 256, 1, false},
    {"dcn_r50_c4_256_32", "R50 c4 DCN 256->256, 2x256x32x32", 2, 256, 32, 32, 256, 1, false},
    {"dcnv2_r50_c4_256_32", "R50 c4 DCNv2 (mask), 2x256x32x32", 2, 256, 32, 32, 256, 1, true},
    {"dcn_r50_c3s2_128_64", "R50 c3.0 DCN s2 128->128, 2x128x64x64", 2, 128, 64, 64, 128, 2, false},
};

// gpu: torchvision's CUDA kernel (--device cuda, TF32 as asked), with o.reps / o.warmup; else its CPU kernel.
std::map<std::string, nlohmann::json> run_torch_dcn(const DcnBenchOptions& o, std::string& info, bool gpu = false,
                                                    bool tf32 = false) {
  std::map<std::string, nlohmann::json> out;
  if (access(o.python.c_str(), X_OK) != 0 || access("bench/torch_dcn.py", R_OK) != 0) return out;
  const std::string probe = o.python + " -c 'import torchvision' >/dev/null 2>&1";
  if (std::system(probe.c_str()) != 0) return out;
  const std::string nth = std::to_string(omp_get_max_threads());
  std::string cmd = "OMP_NUM_THREADS=" + nth + " " + o.python + " bench/torch_dcn.py --threads " + nth;
  if (gpu)
    cmd += " --device cuda --reps " + std::to_string(o.reps) + " --warmup " + std::to_string(o.warmup) +
           " --wait-idle 0" + (tf32 ? " --tf32" : "") + " 2>/dev/null";
  else
    cmd += " --reps " + std::to_string(o.torch_reps) + " --warmup " + std::to_string(o.torch_warmup) +
           " --wait-idle " + std::to_string(static_cast<int>(o.wait_s));
  for (auto& j : json_lines_of(cmd)) {
    if (!j.contains("name")) continue;
    if (j["name"] == "info")
      info = "torch " + j["torch"].get<std::string>() +
             (gpu ? ", " + j.value("device", std::string("cuda")) : ", " + std::to_string(j["threads"].get<int>()) + " threads");
    else
      out[j["name"].get<std::string>()] = j;
  }
  return out;
}

}  // namespace

void run_dcn_section(const DcnBenchOptions& o) {
  struct Row {
    const DcnCase* c;
    double gflop;
    Timing f, fb;
    double cpu_f, cpu_fb;  // process CPU ms per call (all threads)
    double load;
  };
  std::vector<Row> rows;
  for (const DcnCase& cc : kDcnCases) {
    Generator g(3);
    const int64_t ho = (cc.h - 1) / cc.stride + 1, wo = (cc.w - 1) / cc.stride + 1;
    Tensor x = rand_normal({cc.n, cc.c, cc.h, cc.w}, g), w = rand_normal({cc.o, cc.c, 3, 3}, g, 0, 0.05);
    Tensor off = rand_normal({cc.n, 18, ho, wo}, g, 0, 2);
    Tensor mask = cc.mask ? rand_uniform({cc.n, 9, ho, wo}, g, 0, 1) : Tensor();
    Tensor gy = rand_normal({cc.n, cc.o, ho, wo}, g);
    const DeformConvArgs a = DeformConvArgs::make(cc.stride, 1);
    wait_idle(o.wait_s);
    const double b0 = machine_busy_s(), s0 = self_cpu_s(), t0 = now_s();
    const double c0 = self_cpu_s();
    const Timing f = time_ms([&] { ops::deform_conv2d(x, off, mask, w, Tensor(), a); }, o.warmup, o.reps);
    const double c1 = self_cpu_s();
    const Timing fb = time_ms(
        [&] {
          ops::deform_conv2d(x, off, mask, w, Tensor(), a);
          ops::deform_conv2d_backward(gy, x, off, mask, w, false, a);
        },
        o.warmup, o.reps);
    const double c2 = self_cpu_s(), calls = o.warmup + o.reps;
    const double load = ((machine_busy_s() - b0) - (self_cpu_s() - s0)) / (now_s() - t0);
    rows.push_back({&cc, 2.0 * cc.n * cc.o * ho * wo * cc.c * 9 / 1e9, f, fb, (c1 - c0) * 1e3 / calls,
                    (c2 - c1) * 1e3 / calls, load});
  }
  std::map<std::string, nlohmann::json> tr;
  std::string tinfo;
  if (o.torch) tr = run_torch_dcn(o, tinfo);
  const bool have_torch = !tr.empty();
  if (o.torch && !have_torch) std::printf("(torchvision DCN peers skipped: %s has no torchvision)\n", o.python.c_str());
  std::printf("deform_conv2d 3x3 pad 1, FP32, no bias, offsets N(0, 2^2) px; kdet median of %d after %d warm-up",
              o.reps, o.warmup);
  if (have_torch)
    std::printf("; torchvision.ops.deform_conv2d (%s) median of %d after %d warm-up", tinfo.c_str(), o.torch_reps,
                o.torch_warmup);
  std::printf("\n%-42s %-7s %6s %15s %7s %8s %5s", "case", "pass", "GFLOP", "kdet ms med/min", "GFLOP/s", "CPU ms",
              "load");
  if (have_torch)
    std::printf(" %12s %7s %8s %5s %10s %10s", "torchvision ms", "GFLOP/s", "CPU ms", "load", "kdet/torch", "CPU ratio");
  std::printf("\n");
  for (const Row& r : rows)
    for (int pass = 0; pass < 2; ++pass) {
      const double gfl = pass ? 3 * r.gflop : r.gflop;
      const Timing t = pass ? r.fb : r.f;
      const double cpu = pass ? r.cpu_fb : r.cpu_f;
      std::printf("%-42s %-7s %6.2f %7.1f/%7.1f %7.1f %8.0f %5.2f", pass ? "" : r.c->desc, pass ? "fwd+bwd" : "fwd",
                  gfl, t.med, t.min, gfl / (t.med * 1e-3), cpu, r.load);
      if (have_torch && tr.count(r.c->name)) {
        const auto& j = tr[r.c->name];
        const double tms = j[pass ? "fwdbwd_ms" : "fwd_ms"].get<double>();
        const double tcpu = j.value(pass ? "fwdbwd_cpu_ms" : "fwd_cpu_ms", 0.0);
        std::printf(" %12.1f %7.2f %8.0f %5.2f %9.1fx %9.1fx", tms, gfl / (tms * 1e-3), tcpu, j.value("load", 0.0),
                    tms / t.med, tcpu / cpu);
      }
      std::printf("\n");
    }
  std::printf("GFLOP = the equivalent convolution's GEMM (2*MACs, fwd+bwd 3x); kdet/torch = torchvision time / kdet "
              "time (>1: kdet is faster); CPU ms = process CPU time per call (all threads, warm-up included), CPU ratio = "
              "torchvision / kdet: the fairer figure when the machine is shared; load = CPU cores used by other "
              "processes during the case.\n");
}

int run_dcn_cuda_section(const DcnBenchOptions& o, bool tf32) {
  if (!cuda_built()) {
    std::printf("kdet_bench --cuda --only dcn: this build has no CUDA backend (rebuild with make CUDA=1)\n");
    return 1;
  }
#if KDET_CUDA
  if (!cuda::gpu_available()) {
    std::printf("kdet_bench --cuda --only dcn: %s\n", cuda::device_status().c_str());
    return 1;
  }
  const Device dev = Device::cuda(0);
  cuda::set_allow_tf32(tf32);
  std::map<std::string, nlohmann::json> tr;
  std::string tinfo;
  if (o.torch) tr = run_torch_dcn(o, tinfo, true, tf32);
  const bool have_torch = !tr.empty();
  std::printf("GPU deform_conv2d 3x3 pad 1, %s, no bias, offsets N(0, 2^2) px; %s; median of %d after %d warm-up, "
              "each call between device synchronisations\n",
              tf32 ? "f32 (TF32 allowed)" : "full f32", cuda::device_status().c_str(), o.reps, o.warmup);
  if (o.torch && !have_torch)
    std::printf("(torchvision GPU peer skipped: %s has no torchvision with CUDA, or the script failed)\n",
                o.python.c_str());
  if (have_torch) std::printf("torchvision.ops.deform_conv2d: %s\n", tinfo.c_str());
  std::printf("%-42s %-7s %6s %17s %8s", "case", "pass", "GFLOP", "kdet ms med/min", "GFLOP/s");
  if (have_torch) std::printf(" %15s %8s %10s", "torchvision ms", "GFLOP/s", "kdet/torch");
  std::printf("\n");
  for (const DcnCase& cc : kDcnCases) {
    Generator g(3);
    const int64_t ho = (cc.h - 1) / cc.stride + 1, wo = (cc.w - 1) / cc.stride + 1;
    const Tensor x = rand_normal({cc.n, cc.c, cc.h, cc.w}, g).to(dev);
    const Tensor w = rand_normal({cc.o, cc.c, 3, 3}, g, 0, 0.05).to(dev);
    const Tensor off = rand_normal({cc.n, 18, ho, wo}, g, 0, 2).to(dev);
    const Tensor mask = cc.mask ? rand_uniform({cc.n, 9, ho, wo}, g, 0, 1).to(dev) : Tensor();
    const Tensor gy = rand_normal({cc.n, cc.o, ho, wo}, g).to(dev);
    const DeformConvArgs a = DeformConvArgs::make(cc.stride, 1);
    const Timing f = time_ms(
        [&] {
          cuda::synchronize();
          ops::deform_conv2d(x, off, mask, w, Tensor(), a);
          cuda::synchronize();
        },
        o.warmup, o.reps);
    const Timing fb = time_ms(
        [&] {
          cuda::synchronize();
          ops::deform_conv2d(x, off, mask, w, Tensor(), a);
          ops::deform_conv2d_backward(gy, x, off, mask, w, false, a);
          cuda::synchronize();
        },
        o.warmup, o.reps);
    const double gflop = 2.0 * cc.n * cc.o * ho * wo * cc.c * 9 / 1e9;
    for (int pass = 0; pass < 2; ++pass) {
      const double gfl = pass ? 3 * gflop : gflop;
      const Timing t = pass ? fb : f;
      std::printf("%-42s %-7s %6.2f %8.3f/%8.3f %8.0f", pass ? "" : cc.desc, pass ? "fwd+bwd" : "fwd", gfl, t.med, t.min,
                  gfl / (t.med * 1e-3));
      if (have_torch && tr.count(cc.name)) {
        const double tms = tr[cc.name][pass ? "fwdbwd_ms" : "fwd_ms"].get<double>();
        std::printf(" %15.3f %8.0f %9.2fx", tms, gfl / (tms * 1e-3), tms / t.med);
      }
      std::printf("\n");
    }
  }
  std::printf("GFLOP = the equivalent convolution's GEMM (2*MACs, fwd+bwd 3x); kdet/torch = torchvision time / kdet "
              "time (>1: kdet is faster). kdet's backward is deterministic (sorted col2im); torchvision's uses "
              "atomicAdd.\n");
  cuda::set_allow_tf32(false);
  return 0;
#else
  return 1;
#endif
}

}  // namespace kdet
