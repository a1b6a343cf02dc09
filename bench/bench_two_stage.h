// bench/bench_two_stage.h — the Faster R-CNN section of `make bench` (bench/bench_two_stage.cpp): a two-stage
// detector built by build_detector from a config (default configs/faster_rcnn_r50_fpn_1x.cfg, random weights),
// training step and inference, beside torchvision's fasterrcnn_resnet50_fpn configured like mmdet's
// (bench/torch_faster_rcnn.py). Each case runs in its own process, so its peak RSS is its own.
#pragma once
#include <string>

namespace kdet {

struct TwoStageBenchOptions {
  std::string config = "configs/faster_rcnn_r50_fpn_1x.cfg";  // its [model] section is built
  int size = 512;                  // square input side (train batch 2, inference 1 image), as the RetinaNet section
  int reps = 5;                    // timed reps per case (median reported)
  int warmup = 1;                  // untimed reps first
  std::string passes = "train,infer";
  bool frozen_bn = false;          // backbone BN affine frozen too (torchvision's pretrained recipe, torch --norm
                                   // frozen); default: mmdet's trainable affine
  bool torch = true;               // run bench/torch_faster_rcnn.py when `python` has torch + torchvision
  std::string python = "/usr/bin/python3";
  double wait_s = 20;              // wait for a quiet machine before each case (up to this many seconds)
};

// Prints the Faster R-CNN table; every case runs in a child process (argv0 re-executed with --frcnn-case).
void run_two_stage_section(const TwoStageBenchOptions& o, const char* argv0);
// Child side: runs one case ("train" or "infer") and prints one JSON line on stdout. Returns the exit status.
int run_two_stage_case(const std::string& pass, const TwoStageBenchOptions& o);

}  // namespace kdet
