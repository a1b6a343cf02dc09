// kdet convert-kitti --root KITTI/training --out kitti.json [--classes Car,Pedestrian,Cyclist]
#include <cstdio>
#include <sstream>
#include <string>

#include "data/coco.h"
#include "data/kitti.h"
#include "engine/check.h"
#include "tools/commands.h"

namespace kdet::cli {

int cmd_convert_kitti(int argc, char** argv) {
  data::KittiOptions opt;
  std::string root, out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      KDET_CHECK(i + 1 < argc, "convert-kitti: ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--root") root = val();
    else if (a == "--out") out = val();
    else if (a == "--classes") {
      opt.classes.clear();
      std::stringstream ss(val());
      std::string c;
      while (std::getline(ss, c, ',')) if (!c.empty()) opt.classes.push_back(c);
    } else if (a == "--image-dir") opt.image_dir = val();
    else if (a == "--label-dir") opt.label_dir = val();
    else if (a == "--help" || a == "-h") {
      std::printf("usage: kdet convert-kitti --root DIR --out FILE.json [--classes Car,Van,...] [--image-dir image_2]\n"
                  "                          [--label-dir label_2]\n"
                  "Reads DIR/label_2/*.txt (KITTI object labels) and image sizes from DIR/image_2/*.png; writes COCO\n"
                  "instances JSON (file_name relative to DIR; DontCare -> one crowd region per category).\n");
      return 0;
    } else KDET_FAIL("convert-kitti: unknown option '", a, "'");
  }
  KDET_CHECK(!root.empty() && !out.empty(), "convert-kitti: --root and --out are required");
  data::Dataset ds = data::load_kitti(root, opt);
  data::write_coco(ds, out);
  std::printf("convert-kitti: %zu images, %zu annotations, %lld classes -> %s\n", ds.images.size(),
              ds.num_annotations(), (long long)ds.num_classes(), out.c_str());
  return 0;
}

}  // namespace kdet::cli
