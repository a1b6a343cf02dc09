// bench/bench_detector.h — the detector section of `make bench` (bench/bench_detector.cpp).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/autograd.h"

namespace kdet {

class Detector;
class Optimizer;
namespace data {
struct Batch;
}

struct DetectorBenchOptions {
  int size = 512;                    // square input side (train batch 2, inference 1 image)
  int reps = 7;                      // timed reps per case (median reported; cpu_peers §4 used 7)
  int warmup = 1;                    // untimed reps first
  std::string recipe = "mmdet";      // mmdet | torchvision (see bench_detector.cpp)
  std::string models = "r18,r50";    // subset of r18,r50
  std::string passes = "train,infer";
  bool torch = true;                 // run bench/torch_detectors.py when `python` has torch
  std::string python = "/usr/bin/python3";
  double wait_s = 20;                // wait for a quiet machine before each case (up to this many seconds)
};

// Prints the RetinaNet table; every case runs in a child process (argv0 re-executed with --detector-case).
void run_detector_section(const DetectorBenchOptions& o, const char* argv0);
// Child side: runs one case ("r50_train", "r18_infer", ...) and prints one JSON line on stdout. Returns the
// exit status.
int run_detector_case(const std::string& name, const DetectorBenchOptions& o);

// Shared with the other per-process detector sections (bench/bench_two_stage.cpp).
namespace bench {
struct ChildResult {
  bool ok = false;
  nlohmann::json j;   // the last JSON line the child printed
  std::string error;  // why !ok
};
// Runs args (args[0] = executable path) and waits for it; ok when it exits 0 with a JSON line on stdout.
ChildResult run_child(const std::vector<std::string>& args);
// Can `python` import torch and torchvision?
bool python_has_torch(const std::string& python);
// This executable's path (/proc/self/exe; argv0 as a fallback).
std::string self_exe(const char* argv0);
// conv2d / linear FLOPs (2 x MACs) of the graph that produced `roots` (every such node needs its weight slot:
// count on a model with every parameter trainable).
double graph_flops(const std::vector<Var>& roots);
// The training step every detector section times: loss forward, backward, optimizer step, zero_grad. The
// first call's loss terms go into *first (when it is still null).
void train_step(Detector& model, const data::Batch& b, Optimizer& opt, nlohmann::json* first);
}  // namespace bench

}  // namespace kdet
