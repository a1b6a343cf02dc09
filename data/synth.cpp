#include "data/synth.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "data/coco.h"
#include "engine/check.h"
#include "engine/random.h"

namespace kdet::data {

const std::vector<std::string>& synth_class_names() {
  static const std::vector<std::string> n{"circle", "square", "triangle", "ring", "cross", "diamond"};
  return n;
}

namespace {
// is (u, v) (shape frame, radius 1) inside shape `cls`?
bool inside(int cls, double u, double v) {
  switch (cls) {
    case 0: return u * u + v * v <= 1.0;
    case 1: return std::fabs(u) <= 0.85 && std::fabs(v) <= 0.85;
    case 2: {  // triangle (0,-1) (-0.95,0.75) (0.95,0.75)
      if (v > 0.75) return false;
      double half = 0.95 * (v + 1.0) / 1.75;
      return v >= -1.0 && std::fabs(u) <= half;
    }
    case 3: {
      double r2 = u * u + v * v;
      return r2 <= 1.0 && r2 >= 0.36;
    }
    case 4: return (std::fabs(u) <= 0.3 && std::fabs(v) <= 1.0) || (std::fabs(v) <= 0.3 && std::fabs(u) <= 1.0);
    case 5: return std::fabs(u) + std::fabs(v) <= 1.0;
  }
  return false;
}

uint8_t clamp8(double v) { return static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L)); }

struct Obj {
  int cls;
  double cx, cy, rx, ry;
  uint8_t col[3];
};
}  // namespace

SynthImage synth_image(int index, const SynthConfig& cfg) {
  KDET_CHECK(cfg.size >= 16 && cfg.size <= 8192, "synth: size must be in [16, 8192], got ", cfg.size);
  KDET_CHECK(cfg.num_classes >= 1 && cfg.num_classes <= static_cast<int>(synth_class_names().size()),
             "synth: num_classes must be in [1, ", synth_class_names().size(), "], got ", cfg.num_classes);
  KDET_CHECK(cfg.min_radius >= 1 && cfg.max_radius_frac > 0, "synth: min_radius must be >= 1 and max_radius_frac > 0, got ",
             cfg.min_radius, ", ", cfg.max_radius_frac);
  Generator base(cfg.seed);
  Generator g = base.fork(static_cast<uint64_t>(index));
  const int S = cfg.size;
  SynthImage out;
  Image& im = out.image;
  im = Image(S, S);
  // background: gradient between two muted colours
  double c0[3], c1[3];
  for (int c = 0; c < 3; ++c) c0[c] = g.uniform(40, 215), c1[c] = g.uniform(40, 215);
  double ang = g.uniform(0, 2 * M_PI), ca = std::cos(ang), sa = std::sin(ang);
  for (int y = 0; y < S; ++y) {
    uint8_t* r = im.row(y);
    for (int x = 0; x < S; ++x) {
      double t = 0.5 + 0.5 * ((x - S / 2.0) * ca + (y - S / 2.0) * sa) / (S * 0.7071);
      for (int c = 0; c < 3; ++c) r[x * 3 + c] = clamp8(c0[c] * (1 - t) + c1[c] * t);
    }
  }
  // clutter: lines and specks (not annotated)
  int nlines = cfg.clutter ? static_cast<int>(g.randint(0, 6)) : 0;
  for (int l = 0; l < nlines; ++l) {
    double x0 = g.uniform(0, S), y0 = g.uniform(0, S), x1 = g.uniform(0, S), y1 = g.uniform(0, S);
    uint8_t col[3];
    for (auto& c : col) c = static_cast<uint8_t>(g.randint(0, 256));
    int steps = static_cast<int>(std::hypot(x1 - x0, y1 - y0)) + 1;
    for (int s = 0; s <= steps; ++s) {
      int x = static_cast<int>(x0 + (x1 - x0) * s / steps), y = static_cast<int>(y0 + (y1 - y0) * s / steps);
      if (x >= 0 && x < S && y >= 0 && y < S) std::memcpy(im.row(y) + x * 3, col, 3);
    }
  }
  int nspecks = cfg.clutter ? static_cast<int>(g.randint(0, 40)) : 0;
  for (int k = 0; k < nspecks; ++k) {
    int x = static_cast<int>(g.randint(0, S - 1)), y = static_cast<int>(g.randint(0, S - 1));
    uint8_t col[3];
    for (auto& c : col) c = static_cast<uint8_t>(g.randint(0, 256));
    for (int dy = 0; dy < 2; ++dy)
      for (int dx = 0; dx < 2; ++dx) std::memcpy(im.row(y + dy) + (x + dx) * 3, col, 3);
  }
  // objects
  int n = static_cast<int>(g.randint(1, cfg.max_objects + 1));
  std::vector<Obj> objs;
  std::vector<int16_t> owner(static_cast<size_t>(S) * S, -1);
  std::vector<int64_t> drawn;
  const double rmin = cfg.min_radius, rmax = std::max(std::max(4.0, rmin), cfg.max_radius_frac * S);
  for (int k = 0; k < n; ++k) {
    Obj o;
    o.cls = static_cast<int>(g.randint(0, static_cast<int64_t>(cfg.num_classes)));
    double r = std::exp(g.uniform(std::log(rmin), std::log(rmax)));
    double ar = std::exp(g.uniform(-0.4, 0.4));
    o.rx = r * std::sqrt(ar);
    o.ry = r / std::sqrt(ar);
    o.cx = g.uniform(o.rx * 0.5, S - o.rx * 0.5);
    o.cy = g.uniform(o.ry * 0.5, S - o.ry * 0.5);
    // colour with contrast to the background at its centre
    const uint8_t* bg = im.row(std::clamp(static_cast<int>(o.cy), 0, S - 1)) + std::clamp(static_cast<int>(o.cx), 0, S - 1) * 3;
    for (int tries = 0; tries < 8; ++tries) {
      for (auto& c : o.col) c = static_cast<uint8_t>(g.randint(0, 256));
      double d = std::fabs(o.col[0] - bg[0]) + std::fabs(o.col[1] - bg[1]) + std::fabs(o.col[2] - bg[2]);
      if (d > 150) break;
    }
    int x0 = std::max(0, static_cast<int>(std::floor(o.cx - o.rx))), x1 = std::min(S - 1, static_cast<int>(std::ceil(o.cx + o.rx)));
    int y0 = std::max(0, static_cast<int>(std::floor(o.cy - o.ry))), y1 = std::min(S - 1, static_cast<int>(std::ceil(o.cy + o.ry)));
    int64_t cnt = 0;
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) {
        double u = (x + 0.5 - o.cx) / o.rx, v = (y + 0.5 - o.cy) / o.ry;
        if (!inside(o.cls, u, v)) continue;
        std::memcpy(im.row(y) + x * 3, o.col, 3);
        owner[static_cast<size_t>(y) * S + x] = static_cast<int16_t>(k);
        ++cnt;
      }
    objs.push_back(o);
    drawn.push_back(cnt);
  }
  // noise
  // (N(0,1) samples from a fixed 64k table indexed by 16 random bits: 4 pixels per draw)
  static const std::vector<float> kNormal = [] {
    Generator t(0x5eed);
    std::vector<float> v(65536);
    for (auto& x : v) x = static_cast<float>(t.normal());
    return v;
  }();
  double sigma = g.uniform(0, cfg.noise_max);
  if (sigma > 0.5) {
    const float sg = static_cast<float>(sigma);
    uint64_t bits = 0;
    for (size_t i = 0; i < im.px.size(); ++i) {
      if ((i & 3) == 0) bits = g.next_u64();
      float v = im.px[i] + sg * kNormal[bits & 0xffff];
      bits >>= 16;
      im.px[i] = static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
    }
  }
  // visible boxes
  std::vector<int64_t> vis(objs.size(), 0);
  std::vector<int> bx0(objs.size(), S), by0(objs.size(), S), bx1(objs.size(), -1), by1(objs.size(), -1);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      int k = owner[static_cast<size_t>(y) * S + x];
      if (k < 0) continue;
      ++vis[k];
      bx0[k] = std::min(bx0[k], x), bx1[k] = std::max(bx1[k], x);
      by0[k] = std::min(by0[k], y), by1[k] = std::max(by1[k], y);
    }
  for (size_t k = 0; k < objs.size(); ++k) {
    if (vis[k] == 0) continue;
    BoxAnn a;
    a.label = objs[k].cls;
    a.xywh = {double(bx0[k]), double(by0[k]), double(bx1[k] - bx0[k] + 1), double(by1[k] - by0[k] + 1)};
    a.x1 = static_cast<float>(a.xywh[0]);
    a.y1 = static_cast<float>(a.xywh[1]);
    a.x2 = static_cast<float>(a.xywh[0] + a.xywh[2]);
    a.y2 = static_cast<float>(a.xywh[1] + a.xywh[3]);
    a.area = static_cast<double>(vis[k]);
    a.iscrowd = a.ignore = vis[k] * 10 < drawn[k] * 3;
    out.anns.push_back(a);
  }
  return out;
}

Dataset synth_dataset(const SynthConfig& cfg, std::vector<Image>* pixels) {
  KDET_CHECK(cfg.images >= 1, "synth: --images must be >= 1, got ", cfg.images);
  Dataset ds;
  ds.source = "synth";
  const auto& names = synth_class_names();
  for (size_t c = 0; c < static_cast<size_t>(cfg.num_classes); ++c) ds.categories.push_back({static_cast<int64_t>(c + 1), names[c], "shape"});
  std::vector<SynthImage> imgs(static_cast<size_t>(cfg.images));
#pragma omp parallel for schedule(static)
  for (int i = 0; i < cfg.images; ++i) imgs[i] = synth_image(i, cfg);
  int64_t ann_id = 1;
  for (int i = 0; i < cfg.images; ++i) {
    ImageRecord r;
    r.id = i + 1;
    char buf[64];
    std::snprintf(buf, sizeof(buf), "images/%06d.png", i);
    r.file = buf;
    r.width = r.height = cfg.size;
    r.anns = std::move(imgs[i].anns);
    for (auto& a : r.anns) a.ann_id = ann_id++;
    ds.images.push_back(std::move(r));
    if (pixels) pixels->push_back(std::move(imgs[i].image));
  }
  ds.reindex();
  return ds;
}

Dataset write_synth(const SynthConfig& cfg, const std::string& dir) {
  auto mk = [](const std::string& d) {
    if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) KDET_FAIL(d, ": cannot create directory (", std::strerror(errno), ")");
  };
  mk(dir);
  mk(dir + "/images");
  std::vector<Image> px;
  Dataset ds = synth_dataset(cfg, &px);
  std::vector<std::string> errors(px.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(px.size()); ++i) {
    try {
      write_png(dir + "/" + ds.images[i].file, px[i]);
    } catch (const Error& e) {
      errors[i] = e.what();
    }
  }
  for (auto& e : errors) KDET_CHECK(e.empty(), e);
  write_coco(ds, dir + "/annotations.json");
  ds.source = dir + "/annotations.json";
  ds.image_root = dir;
  return ds;
}

}  // namespace kdet::data
