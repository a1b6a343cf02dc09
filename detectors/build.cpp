#include "detectors/build.h"

#include "engine/check.h"
#include "engine/safetensors.h"

namespace kdet {

std::unique_ptr<RetinaNet> build_detector(const Config& c, const std::string& section) {
  const std::string type = c.get_string(section + ".type", "retinanet");
  KDET_CHECK(type == "retinanet", "build_detector: ", section, ".type = '", type,
             "' is not a known detector (known: retinanet)");
  return std::make_unique<RetinaNet>(RetinaNetConfig::from_config(c, section));
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
