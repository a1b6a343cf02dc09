// bench/bench_dcn.h — the DCN section of `make bench` (bench/bench_dcn.cpp): deformable convolution forward and
// forward+backward beside torchvision.ops.deform_conv2d (bench/torch_dcn.py) on the same shapes.
#pragma once
#include <string>

namespace kdet {

struct DcnBenchOptions {
  int reps = 5, warmup = 1;           // kdet side
  int torch_reps = 1, torch_warmup = 0;  // torchvision's CPU kernel takes seconds to minutes per call
  bool torch = true;
  std::string python = "/usr/bin/python3";
  double wait_s = 20;
};

void run_dcn_section(const DcnBenchOptions& o);

}  // namespace kdet
