// kdet infer CONFIG CKPT IMAGE... --out DIR [--score-thr T] [--set key=value ...]
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/image.h"
#include "data/synth.h"
#include "data/transforms.h"
#include "detectors/build.h"
#include "engine/check.h"
#include "tools/commands.h"
#include "tools/font5x7.h"
#include "tools/train_loop.h"

namespace kdet::cli {

namespace {


void put(data::Image& im, int x, int y, const uint8_t* c) {
  if (x < 0 || y < 0 || x >= im.w || y >= im.h) return;
  uint8_t* p = im.row(y) + 3 * x;
  p[0] = c[0], p[1] = c[1], p[2] = c[2];
}

void fill_rect(data::Image& im, int x0, int y0, int x1, int y1, const uint8_t* c) {
  for (int y = std::max(0, y0); y < std::min(im.h, y1); ++y)
    for (int x = std::max(0, x0); x < std::min(im.w, x1); ++x) put(im, x, y, c);
}

// Text of height 7*scale with a filled background; (x, y) = top-left.
void draw_text(data::Image& im, int x, int y, const std::string& s, const uint8_t* fg, const uint8_t* bg, int scale) {
  fill_rect(im, x, y, x + static_cast<int>(s.size()) * 6 * scale + scale, y + 9 * scale, bg);
  for (size_t i = 0; i < s.size(); ++i) {
    const uint8_t* g = font5x7_glyph(s[i]);
    for (int col = 0; col < 5; ++col)
      for (int row = 0; row < 7; ++row)
        if (g[col] >> row & 1)
          fill_rect(im, x + scale + (static_cast<int>(i) * 6 + col) * scale, y + scale + row * scale,
                    x + scale + (static_cast<int>(i) * 6 + col + 1) * scale, y + scale + (row + 1) * scale, fg);
  }
}

void draw_box(data::Image& im, float fx1, float fy1, float fx2, float fy2, const uint8_t* c, int t) {
  int x1 = static_cast<int>(fx1), y1 = static_cast<int>(fy1), x2 = static_cast<int>(fx2), y2 = static_cast<int>(fy2);
  fill_rect(im, x1, y1, x2 + 1, y1 + t, c);
  fill_rect(im, x1, y2 - t + 1, x2 + 1, y2 + 1, c);
  fill_rect(im, x1, y1, x1 + t, y2 + 1, c);
  fill_rect(im, x2 - t + 1, y1, x2 + 1, y2 + 1, c);
}

const uint8_t kPalette[][3] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},  {245, 130, 48},
                               {145, 30, 180}, {70, 240, 240}, {240, 50, 230}, {210, 245, 60}, {0, 128, 128}};

std::vector<std::string> names_from_config(const Config& c, int64_t num_classes) {
  std::vector<std::string> n;
  if (c.has("data.class_names")) n = c.get_strings("data.class_names");
  else if (c.get_string("data.type", "coco") == "synth") n = data::synth_class_names();
  else if (c.has("data.val_ann") && std::filesystem::exists(c.get_string("data.val_ann"))) {
    data::CocoLoadOptions o;
    o.verbose = false;
    n = train::class_names(data::load_coco(c.get_string("data.val_ann"), o));
  }
  KDET_CHECK(n.empty() || static_cast<int64_t>(n.size()) == num_classes, "infer: ", n.size(),
             " class names for a model with ", num_classes, " classes");
  for (int64_t k = static_cast<int64_t>(n.size()); k < num_classes; ++k) n.push_back("class_" + std::to_string(k));
  return n;
}

}  // namespace

int cmd_infer(int argc, char** argv) {
  const char* usage =
      "usage: kdet infer CONFIG CKPT IMAGE... --out DIR [--score-thr T=0.3] [--device cpu|cuda|cuda:N]\n"
      "                  [--set key=value ...]\n"
      "Runs the detector on each image (the config's test pipeline) and writes DIR/<image>.png with boxes,\n"
      "class names and scores drawn (detections with score >= T) and DIR/detections.json (all detections of\n"
      "the model's test_cfg, original-image pixels x1 y1 x2 y2). Class names: [data] class_names, the\n"
      "synthetic classes, or the categories of data.val_ann. The network runs on --device (default: the\n"
      "config's train.device, else the CPU).\n";
  std::string cfg_path, ckpt, out, device;
  std::vector<std::string> images, sets;
  double thr = 0.3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      KDET_CHECK(i + 1 < argc, "infer: ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf("%s", usage);
      return 0;
    } else if (a == "--out") out = val();
    else if (a == "--score-thr") thr = std::stod(val());
    else if (a == "--device") device = val();
    else if (a == "--set") {
      sets.push_back(val());
      while (i + 1 < argc && argv[i + 1][0] != '-' && std::string(argv[i + 1]).find('=') != std::string::npos)
        sets.push_back(argv[++i]);
    } else if (!a.empty() && a[0] == '-') KDET_FAIL("infer: unknown option '", a, "'\n", usage);
    else if (cfg_path.empty()) cfg_path = a;
    else if (ckpt.empty()) ckpt = a;
    else images.push_back(a);
  }
  KDET_CHECK(!cfg_path.empty() && !ckpt.empty() && !images.empty(), "infer: CONFIG, CKPT and at least one IMAGE are required\n",
             usage);
  KDET_CHECK(!out.empty(), "infer: --out DIR is required");
  Config c = Config::load(cfg_path);
  train::apply_sets(c, sets);
  auto model = build_detector(c);
  data::TransformConfig tf = train::transform_from_config(c);
  std::vector<std::string> names = names_from_config(c, model->num_classes());
  const Device dev = train::parse_device(device.empty() ? c.get_string("train.device", "cpu") : device,
                                         device.empty() ? "train.device" : "--device");
  train::accept_section(c, "train");
  train::accept_section(c, "data");
  c.check_all_used();
  load_detector_weights(*model, ckpt);
  model->to(dev);
  model->eval();
  train::BatchUploader upload(dev);
  std::filesystem::create_directories(out);

  nlohmann::json all = nlohmann::json::array();
  for (size_t i = 0; i < images.size(); ++i) {
    data::Image im = data::load_image(images[i]);
    data::PreparedImage p = data::prepare_image(im, {}, tf, false);
    p.meta.image_id = static_cast<int64_t>(i);
    p.meta.index = i;
    std::vector<data::PreparedImage> items;
    items.push_back(std::move(p));
    data::Batch b = data::collate(std::move(items));
    Detections d = model->predict(upload(b), true).at(0);  // detections come back on the host
    nlohmann::json dets = nlohmann::json::array();
    const Tensor B = d.boxes.contiguous(), S = d.scores.contiguous(), L = d.labels.contiguous();
    const float* bx = B.data<float>();
    const float* sc = S.data<float>();
    const int64_t* lb = L.data<int64_t>();
    data::Image vis = im;
    const int scale = std::max(1, std::min(im.w, im.h) / 300);
    int drawn = 0;
    // lowest scores first so the best boxes and labels end up on top
    for (int64_t k = d.size() - 1; k >= 0; --k) {
      const float* q = bx + 4 * k;
      dets.push_back({{"bbox", {q[0], q[1], q[2], q[3]}}, {"score", sc[k]}, {"label", lb[k]},
                      {"class", names.at(static_cast<size_t>(lb[k]))}});
      if (sc[k] < thr) continue;
      const uint8_t* col = kPalette[lb[k] % 10];
      draw_box(vis, q[0], q[1], q[2], q[3], col, scale);
      char txt[96];
      std::snprintf(txt, sizeof txt, "%s %.2f", names.at(static_cast<size_t>(lb[k])).c_str(), sc[k]);
      const uint8_t black[3] = {0, 0, 0};
      int ty = static_cast<int>(q[1]) - 9 * scale;
      if (ty < 0) ty = static_cast<int>(q[1]);
      draw_text(vis, static_cast<int>(q[0]), ty, txt, black, col, scale);
      ++drawn;
    }
    std::reverse(dets.begin(), dets.end());
    std::string base = std::filesystem::path(images[i]).stem().string();
    std::string png = out + "/" + base + ".png";
    data::write_png(png, vis);
    all.push_back({{"image", images[i]}, {"width", im.w}, {"height", im.h}, {"visualization", png}, {"detections", dets}});
    std::printf("%s: %lld detections (%d with score >= %.2f drawn) -> %s\n", images[i].c_str(), (long long)d.size(),
                drawn, thr, png.c_str());
  }
  std::ofstream f(out + "/detections.json");
  KDET_CHECK(f.good(), "infer: cannot write ", out, "/detections.json");
  f << all.dump(1) << "\n";
  return 0;
}

}  // namespace kdet::cli
