#include "detectors/build.h"

#include "detectors/reppoints.h"
#include "detectors/retinanet.h"
#include "detectors/two_stage.h"
#include "engine/check.h"
#include "engine/safetensors.h"

namespace kdet {

const std::vector<std::string>& detector_types() {
  static const std::vector<std::string> t = {"retinanet", "faster_rcnn", "cascade_rcnn", "reppoints"};
  return t;
}

std::unique_ptr<Detector> build_detector(const Config& c, const std::string& section) {
  const std::string type = c.get_string(section + ".type", "retinanet");
  // One branch per detector type (keep detector_types() in step).
  if (type == "retinanet") return std::make_unique<RetinaNet>(RetinaNetConfig::from_config(c, section));
  if (type == "faster_rcnn") return std::make_unique<FasterRCNN>(TwoStageConfig::from_config(c, section));
  if (type == "cascade_rcnn") return std::make_unique<CascadeRCNN>(TwoStageConfig::from_config(c, section));
  if (type == "reppoints") return std::make_unique<RepPointsDetector>(RepPointsConfig::from_config(c, section));
  std::string known;
  for (const auto& t : detector_types()) known += (known.empty() ? "" : ", ") + t;
  KDET_FAIL("build_detector: ", section, ".type = '", type, "' is not a known detector (known: ", known, ")");
}

void load_detector_weights(Module& m, const std::string& path) {
  SafetensorsFile f = load_safetensors(path);
  TensorMap sd;
  const std::string opt = kOptimizerPrefix;
  for (auto& [k, t] : f.tensors)
    if (k.compare(0, opt.size(), opt) != 0) sd.emplace(k, t);
  KDET_CHECK(!sd.empty(), path, ": no model weights in the file (", f.tensors.size(), " optimizer tensors only)");
  try {
    m.load_state_dict(sd, /*strict=*/true);
  } catch (const Error& e) {
    KDET_FAIL(path, ": checkpoint does not match the model built from the config: ", e.what());
  }
}

}  // namespace kdet
