// bench/bench_roi.h — the RoIAlign section of `make bench` (bench/bench_roi.cpp): engine/ops/roi_align forward
// and forward+backward beside torchvision.ops.roi_align (bench/torch_roi.py) on the same features and RoIs.
#pragma once
#include <string>

namespace kdet {

struct RoiBenchOptions {
  int reps = 7, warmup = 2;
  bool torch = true;
  std::string python = "/usr/bin/python3";
  double wait_s = 20;
};

void run_roi_section(const RoiBenchOptions& o);

}  // namespace kdet
