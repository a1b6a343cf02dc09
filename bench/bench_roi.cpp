// bench/bench_roi.cpp — RoIAlign throughput (engine/ops/roi_align.h, mmcv semantics: 7x7, aligned, adaptive
// sampling ratio) beside torchvision.ops.roi_align (bench/torch_roi.py: the same features' shape and the same
// RoIs, from the formula in make_rois below).
//
// Cases (Faster R-CNN, 512-px batch of 2, 512 sampled RoIs per image): P2 (stride 4, 2x256x128x128) with RoIs
// of 16..112 px, and P4 (stride 16, 2x256x32x32) with RoIs of 224..448 px. fwd+bwd = forward, then the
// gradient of the features for a random output gradient.
#include "bench/bench_roi.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "bench/bench_util.h"
#include "engine/ops/roi_align.h"
#include "engine/random.h"

namespace kdet {

using namespace kdet::bench;

namespace {

struct RoiCase {
  const char* name;
  const char* desc;
  int64_t n, c, h, w, stride, rois;
  double lo, hi;  // RoI side range in image pixels
};

// Kept in step with bench/torch_roi.py.
const RoiCase kRoiCases[] = {
    {"roi_p2_16_112", "P2 2x256x128x128, 1024 RoIs 16..112 px", 2, 256, 128, 128, 4, 1024, 16, 112},
    {"roi_p4_224_448", "P4 2x256x32x32, 1024 RoIs 224..448 px", 2, 256, 32, 32, 16, 1024, 224, 448},
};

// Deterministic RoIs (same formula in torch_roi.py): image index k % n, side lengths and corners from
// fixed residues, clipped to the image.
Tensor make_rois(const RoiCase& c) {
  const double img_h = static_cast<double>(c.h * c.stride), img_w = static_cast<double>(c.w * c.stride);
  std::vector<float> v;
  for (int64_t k = 0; k < c.rois; ++k) {
    const double bw = c.lo + (c.hi - c.lo) * ((k * 37) % 101) / 100.0;
    const double bh = c.lo + (c.hi - c.lo) * ((k * 61) % 103) / 102.0;
    const double x1 = std::max(0.0, img_w - bw) * ((k * 53) % 97) / 96.0;
    const double y1 = std::max(0.0, img_h - bh) * ((k * 29) % 89) / 88.0;
    v.insert(v.end(), {static_cast<float>(k % c.n), static_cast<float>(x1), static_cast<float>(y1),
                       static_cast<float>(std::min(img_w, x1 + bw)), static_cast<float>(std::min(img_h, y1 + bh))});
  }
  return Tensor::from_vector(v, Shape{c.rois, 5});
}

}  // namespace

void run_roi_section(const RoiBenchOptions& o) {
  struct Row {
    const RoiCase* c;
    Timing f, fb;
    double load;
  };
  std::vector<Row> rows;
  for (const RoiCase& cc : kRoiCases) {
    Generator g(5);
    Tensor feat = rand_normal({cc.n, cc.c, cc.h, cc.w}, g);
    Tensor rois = make_rois(cc);
    RoIAlignArgs a;
    a.spatial_scale = 1.0 / static_cast<double>(cc.stride);
    Tensor gy = rand_normal({cc.rois, cc.c, a.out_h, a.out_w}, g);
    wait_idle(o.wait_s);
    const double b0 = machine_busy_s(), s0 = self_cpu_s(), t0 = now_s();
    const Timing f = time_ms([&] { ops::roi_align(feat, rois, a); }, o.warmup, o.reps);
    const Timing fb = time_ms(
        [&] {
          ops::roi_align(feat, rois, a);
          ops::roi_align_backward(gy, rois, feat.shape(), a);
        },
        o.warmup, o.reps);
    rows.push_back({&cc, f, fb, ((machine_busy_s() - b0) - (self_cpu_s() - s0)) / (now_s() - t0)});
  }
  std::map<std::string, nlohmann::json> tr;
  std::string tinfo;
  if (o.torch && access(o.python.c_str(), X_OK) == 0 && access("bench/torch_roi.py", R_OK) == 0) {
    const std::string nth = std::to_string(omp_get_max_threads());
    for (auto& j : json_lines_of("OMP_NUM_THREADS=" + nth + " " + o.python + " bench/torch_roi.py --threads " + nth +
                                 " --reps " + std::to_string(o.reps) + " --warmup " + std::to_string(o.warmup) +
                                 " --wait-idle " + std::to_string(static_cast<int>(o.wait_s)) + " 2>/dev/null")) {
      if (!j.contains("name")) continue;
      if (j["name"] == "info")
        tinfo = "torchvision " + j.value("torchvision", std::string("?")) + ", " +
                std::to_string(j.value("threads", 0)) + " threads";
      else
        tr[j["name"].get<std::string>()] = j;
    }
  }
  const bool have_torch = !tr.empty();
  if (o.torch && !have_torch) std::printf("(torchvision roi_align peers skipped: %s has no torchvision)\n", o.python.c_str());
  std::printf("roi_align 7x7, aligned, sampling_ratio 0, FP32; kdet median of %d after %d warm-up", o.reps, o.warmup);
  if (have_torch) std::printf("; torchvision.ops.roi_align (%s), same protocol", tinfo.c_str());
  std::printf("\n%-42s %-7s %15s %5s", "case", "pass", "kdet ms med/min", "load");
  if (have_torch) std::printf(" %19s %5s %10s", "torchvision ms med", "load", "kdet/torch");
  std::printf("\n");
  for (const Row& r : rows)
    for (int pass = 0; pass < 2; ++pass) {
      const Timing t = pass ? r.fb : r.f;
      std::printf("%-42s %-7s %7.2f/%7.2f %5.2f", pass ? "" : r.c->desc, pass ? "fwd+bwd" : "fwd", t.med, t.min, r.load);
      if (have_torch && tr.count(r.c->name)) {
        const auto& j = tr[r.c->name];
        const double tms = j[pass ? "fwdbwd_ms" : "fwd_ms"].get<double>();
        std::printf(" %19.2f %5.2f %9.2fx", tms, j.value("load", 0.0), tms / t.med);
      }
      std::printf("\n");
    }
  std::printf("kdet/torch = torchvision time / kdet time (>1: kdet is faster); load = CPU cores used by other "
              "processes during the case.\n");
}

}  // namespace kdet
