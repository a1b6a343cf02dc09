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

// `kdet_bench --cuda --only dcn`: the same cases on GPU 0 (f32, full precision unless tf32), each call timed
// between device synchronisations, beside torchvision.ops.deform_conv2d on the same GPU (bench/torch_dcn.py
// --device cuda) when o.torch and o.python has torch with CUDA. Returns non-zero when this build has no CUDA
// backend or no GPU is usable.
int run_dcn_cuda_section(const DcnBenchOptions& o, bool tf32 = false);

}  // namespace kdet
