// detectors/build.h — detectors from configs (configs/*.cfg) and checkpoint loading.
//
//   Config c = Config::load("configs/retinanet_r50_fpn_1x.cfg");
//   auto model = build_detector(c);           // reads [model] (type = retinanet, + RetinaNetConfig keys)
//   load_detector_weights(*model, "ckpt.safetensors");   // kdet checkpoint or converted mmdet file
//
// Checkpoints: a kdet training checkpoint holds the model's state dict under its own (mmdet) names
// plus optimizer state under "optimizer.*" (tools/train_loop.h); a file converted from an mmdet .pth
// (tools/convert_mmdet.py) holds just the state dict. Both load here; loading is strict and the
// error lists every missing, unexpected and mis-shaped key.
#pragma once
#include <memory>
#include <string>

#include <vector>

#include "detectors/detector.h"
#include "engine/config.h"

namespace kdet {

// [section].type picks the detector (default "retinanet"); the other keys of the section go to that
// detector's Config::from_config. Known types: see detector_types(). Weights are NOT initialised (call
// init_weights or load).
std::unique_ptr<Detector> build_detector(const Config& c, const std::string& section = "model");
// The `type` values build_detector accepts.
const std::vector<std::string>& detector_types();

// Keys of a checkpoint that are not model weights (optimizer state) start with this.
inline constexpr const char* kOptimizerPrefix = "optimizer.";

// Loads the model weights of `path` (every tensor not under kOptimizerPrefix) strictly into `m`.
// Errors name the file and list every problem.
void load_detector_weights(Module& m, const std::string& path);

}  // namespace kdet
