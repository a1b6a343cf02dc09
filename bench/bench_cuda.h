// bench/bench_cuda.h — `kdet_bench --cuda` (bench/bench_cuda.cpp): the RetinaNet training step on the GPU
// beside PyTorch + cuDNN on the same GPU (bench/torch_retinanet_gpu.py).
#pragma once
#include <string>

namespace kdet {

struct CudaBenchOptions {
  int depth = 50;          // RetinaNet-R{depth}-FPN, mmdet recipe (frozen stem + layer1, BN eval, P6 from C5)
  int height = 800, width = 1333;  // input (padded to a multiple of 32, like mmdet and torchvision)
  int batch = 2;
  int reps = 20, warmup = 5;
  bool tf32 = false;       // TF32 tensor-core math in cuDNN / cuBLAS (both sides)
  bool benchmark = false;  // cuDNN algorithm benchmarking (both sides)
  bool deterministic = true;  // deterministic cuDNN algorithms only (both sides: torch cudnn.deterministic)
  bool torch = true;       // run the PyTorch side when `python` has torch with CUDA
  std::string python = "/usr/bin/python3";
};

// Prints the kdet and the PyTorch step times (median / min / max over reps, after warm-up) and the first
// losses. Returns non-zero when this build has no CUDA backend or no GPU is usable.
int run_cuda_section(const CudaBenchOptions& o);

}  // namespace kdet
