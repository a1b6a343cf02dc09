// kdet eval CONFIG CKPT [--out DIR] [--device DEV] [--set key=value ...]
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/coco.h"
#include "detectors/build.h"
#include "engine/check.h"
#include "tools/commands.h"
#include "tools/train_loop.h"

namespace kdet::cli {

int cmd_eval(int argc, char** argv) {
  const char* usage =
      "usage: kdet eval CONFIG CKPT [--out DIR] [--device cpu|cuda|cuda:N] [--set key=value ...] [--quiet]\n"
      "Evaluates the weights of CKPT (a kdet checkpoint or a converted mmdet file) on the validation set of\n"
      "CONFIG ([data] val_ann, or the synthetic val split). Writes DIR/metrics.json (COCO metrics, per class)\n"
      "and DIR/results.json (COCO results). DIR defaults to the checkpoint's directory. The network runs on\n"
      "--device (default: the config's train.device, else the CPU); post-processing runs on the host.\n";
  std::string cfg_path, ckpt, out, device;
  std::vector<std::string> sets;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      KDET_CHECK(i + 1 < argc, "eval: ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf("%s", usage);
      return 0;
    } else if (a == "--out") out = val();
    else if (a == "--device") device = val();
    else if (a == "--quiet") quiet = true;
    else if (a == "--set") {
      sets.push_back(val());
      while (i + 1 < argc && argv[i + 1][0] != '-' && std::string(argv[i + 1]).find('=') != std::string::npos)
        sets.push_back(argv[++i]);
    } else if (!a.empty() && a[0] == '-') KDET_FAIL("eval: unknown option '", a, "'\n", usage);
    else if (cfg_path.empty()) cfg_path = a;
    else if (ckpt.empty()) ckpt = a;
    else KDET_FAIL("eval: unexpected argument '", a, "'\n", usage);
  }
  KDET_CHECK(!cfg_path.empty() && !ckpt.empty(), "eval: CONFIG and CKPT are required\n", usage);
  Config c = Config::load(cfg_path);
  train::apply_sets(c, sets);
  if (out.empty()) out = std::filesystem::path(ckpt).parent_path().string();
  if (out.empty()) out = ".";
  std::filesystem::create_directories(out);
  const std::string work = std::filesystem::path(ckpt).parent_path().string();
  train::DataSetup d = train::build_data(c, work.empty() ? "." : work, false);
  auto model = build_detector(c);
  KDET_CHECK(model->num_classes() == d.val.num_classes(), "eval: model.num_classes = ", model->num_classes(), " but ",
             d.val.source, " has ", d.val.num_classes(), " categories");
  const Device dev = train::parse_device(device.empty() ? c.get_string("train.device", "cpu") : device,
                                         device.empty() ? "train.device" : "--device");
  train::accept_section(c, "train");
  c.check_all_used();
  load_detector_weights(*model, ckpt);
  model->to(dev);  // evaluate_detector sends the batches where the model is
  std::vector<data::Detection> dets;
  data::CocoMetrics m = train::evaluate_detector(*model, d.val, d.val_loader, &dets, quiet);
  {
    std::ofstream f(out + "/metrics.json");
    KDET_CHECK(f.good(), "eval: cannot write ", out, "/metrics.json");
    f << m.to_json() << "\n";
  }
  data::write_coco_results(dets, out + "/results.json");
  if (!quiet) m.print(stdout, true);
  std::printf("eval: %zu images, %zu detections -> %s/metrics.json, %s/results.json (AP %.4f AP50 %.4f)\n",
              d.val.images.size(), dets.size(), out.c_str(), out.c_str(), m.AP, m.AP50);
  return 0;
}

}  // namespace kdet::cli
