// kdet bench-coco-load [--images 120000] [--boxes 860000] [--seg-points 24] [--file PATH] [--keep]
// Writes a COCO instances JSON the size of instances_train2017 (with polygon segmentations, which
// the loader must skip) and times load_coco; peak RSS via getrusage.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "data/coco.h"
#include "engine/check.h"
#include "engine/random.h"
#include "tools/commands.h"

namespace kdet::cli {

namespace {
double cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}
double max_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}
}  // namespace

int cmd_bench_coco_load(int argc, char** argv) {
  int64_t n_images = 120000, n_boxes = 860000;
  int seg_points = 24;
  std::string path = "/tmp/kdet_bench_instances.json";
  bool keep = false, reuse = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      KDET_CHECK(i + 1 < argc, "bench-coco-load: ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--images") n_images = std::stoll(val());
    else if (a == "--boxes") n_boxes = std::stoll(val());
    else if (a == "--seg-points") seg_points = std::stoi(val());
    else if (a == "--file") path = val();
    else if (a == "--keep") keep = true;
    else if (a == "--reuse") reuse = keep = true;
    else if (a == "--help" || a == "-h") {
      std::printf("usage: kdet bench-coco-load [--images 120000] [--boxes 860000] [--seg-points 24] [--file PATH] [--keep] [--reuse]\n"
                  "--reuse: time an existing --file instead of writing one (implies --keep)\n");
      return 0;
    } else KDET_FAIL("bench-coco-load: unknown option '", a, "'");
  }
  KDET_CHECK(n_images > 0 && n_boxes >= 0 && seg_points >= 0, "bench-coco-load: bad sizes");
  auto t0 = std::chrono::steady_clock::now();
  FILE* probe = reuse ? std::fopen(path.c_str(), "rb") : nullptr;
  if (probe) std::fclose(probe);
  if (!probe) {
    FILE* f = std::fopen(path.c_str(), "wb");
    KDET_CHECK(f, path, ": cannot open for writing");
    Generator g(2017);
    std::fprintf(f, "{\"info\": {\"description\": \"kdet bench\", \"year\": 2017}, \"licenses\": [{\"id\": 1, \"name\": \"x\"}],\n\"images\": [");
    for (int64_t i = 0; i < n_images; ++i)
      std::fprintf(f, "%s{\"license\": 1, \"file_name\": \"%012lld.jpg\", \"coco_url\": \"http://images.cocodataset.org/train2017/%012lld.jpg\", \"height\": %d, \"width\": 640, \"date_captured\": \"2013-11-14 11:18:45\", \"id\": %lld}",
                   i ? ",\n" : "\n", (long long)(i + 1), (long long)(i + 1), 360 + static_cast<int>(i % 120), (long long)(i + 1));
    std::fprintf(f, "],\n\"annotations\": [");
    for (int64_t k = 0; k < n_boxes; ++k) {
      double w = g.uniform(1, 300), h = g.uniform(1, 300), x = g.uniform(0, 640 - w), y = g.uniform(0, 360 - h);
      std::fprintf(f, "%s{\"segmentation\": [[", k ? ",\n" : "\n");
      for (int p = 0; p < seg_points; ++p)
        std::fprintf(f, "%s%.2f,%.2f", p ? "," : "", x + g.uniform(0, w), y + g.uniform(0, h));
      std::fprintf(f, "]], \"area\": %.4f, \"iscrowd\": %d, \"image_id\": %lld, \"bbox\": [%.2f,%.2f,%.2f,%.2f], \"category_id\": %d, \"id\": %lld}",
                   w * h * 0.6, k % 97 == 0 ? 1 : 0, (long long)(g.randint(0, n_images) + 1), x, y, w, h,
                   static_cast<int>(g.randint(1, 91)), (long long)(k + 1));
    }
    std::fprintf(f, "],\n\"categories\": [");
    for (int c = 1; c <= 90; ++c) std::fprintf(f, "%s{\"supercategory\": \"s\", \"id\": %d, \"name\": \"class%d\"}", c > 1 ? ", " : "", c, c);
    std::fprintf(f, "]}\n");
    long bytes = std::ftell(f);
    KDET_CHECK(std::fclose(f) == 0, path, ": write failed");
    double gs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("bench-coco-load: wrote %s (%.1f MB, %lld images, %lld boxes) in %.1f s; RSS so far %.0f MB\n",
                path.c_str(), bytes / 1e6, (long long)n_images, (long long)n_boxes, gs, max_rss_mb());
  }
  auto t1 = std::chrono::steady_clock::now();
  double c1 = cpu_s();
  data::CocoLoadOptions opt;
  opt.verbose = false;
  data::Dataset ds = data::load_coco(path, opt);
  double ls = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  double lc = cpu_s() - c1;
  std::printf("bench-coco-load: load_coco %.2f s wall (%.2f s CPU), %zu images, %zu annotations, %lld classes, peak RSS %.0f MB "
              "(targets: < 10 s, < 3000 MB)\n",
              ls, lc, ds.images.size(), ds.num_annotations(), (long long)ds.num_classes(), max_rss_mb());
  if (!keep) std::remove(path.c_str());
  return ls < 10.0 && max_rss_mb() < 3000 ? 0 : 1;
}

}  // namespace kdet::cli
