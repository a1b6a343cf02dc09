#include "data/kitti.h"

#include <dirent.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "data/image.h"
#include "engine/check.h"

namespace kdet::data {

std::vector<KittiObject> parse_kitti_label(const std::string& text, const std::string& name) {
  std::vector<KittiObject> out;
  std::istringstream in(text);
  std::string line;
  int ln = 0;
  while (std::getline(in, line)) {
    ++ln;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::istringstream ls(line);
    std::vector<std::string> f;
    std::string tok;
    while (ls >> tok) f.push_back(tok);
    KDET_CHECK(f.size() >= 15, name, ":", ln, ": expected at least 15 fields (type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry), found ",
               f.size());
    auto num = [&](size_t i) {
      char* end = nullptr;
      double v = std::strtod(f[i].c_str(), &end);
      KDET_CHECK(end && *end == '\0' && std::isfinite(v), name, ":", ln, ": field ", i + 1, " '", f[i], "' is not a finite number");
      return v;
    };
    KittiObject o;
    o.type = f[0];
    o.truncated = num(1);
    o.occluded = num(2);
    o.alpha = num(3);
    o.x1 = num(4);
    o.y1 = num(5);
    o.x2 = num(6);
    o.y2 = num(7);
    for (size_t i = 8; i < 15; ++i) num(i);
    out.push_back(o);
  }
  return out;
}

Dataset load_kitti(const std::string& root, const KittiOptions& opt, LoadReport* report, bool verbose) {
  KDET_CHECK(!opt.classes.empty(), "load_kitti: empty class list");
  std::string label_dir = root + "/" + opt.label_dir;
  DIR* d = opendir(label_dir.c_str());
  KDET_CHECK(d, label_dir, ": cannot open label directory (", std::strerror(errno), ")");
  std::vector<std::string> stems;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 4 && n.substr(n.size() - 4) == ".txt") stems.push_back(n.substr(0, n.size() - 4));
  }
  closedir(d);
  std::sort(stems.begin(), stems.end());
  KDET_CHECK(!stems.empty(), label_dir, ": no .txt label files");

  Dataset ds;
  ds.source = label_dir;
  ds.image_root = root;
  for (size_t c = 0; c < opt.classes.size(); ++c)
    ds.categories.push_back({static_cast<int64_t>(c + 1), opt.classes[c], "kitti"});
  LoadReport rep;
  int64_t ann_id = 1;
  for (size_t s = 0; s < stems.size(); ++s) {
    const std::string lpath = label_dir + "/" + stems[s] + ".txt";
    std::ifstream f(lpath, std::ios::binary);
    KDET_CHECK(f.good(), lpath, ": cannot open");
    std::stringstream buf;
    buf << f.rdbuf();
    auto objs = parse_kitti_label(buf.str(), lpath);
    ImageRecord im;
    char* end = nullptr;
    long long idv = std::strtoll(stems[s].c_str(), &end, 10);
    im.id = (end && *end == '\0' && !stems[s].empty()) ? idv : static_cast<int64_t>(s);
    im.file = opt.image_dir + "/" + stems[s] + opt.image_ext;
    image_size(ds.image_path(im), im.width, im.height);
    for (const auto& o : objs) {
      auto push = [&](int64_t label, bool crowd) {
        BoxAnn a;
        a.xywh = {o.x1, o.y1, o.x2 - o.x1, o.y2 - o.y1};
        a.x1 = static_cast<float>(o.x1);
        a.y1 = static_cast<float>(o.y1);
        a.x2 = static_cast<float>(o.x1 + a.xywh[2]);
        a.y2 = static_cast<float>(o.y1 + a.xywh[3]);
        a.area = a.xywh[2] * a.xywh[3];
        a.label = label;
        a.iscrowd = a.ignore = crowd;
        a.ann_id = ann_id++;
        im.anns.push_back(a);
      };
      if (o.x2 < o.x1 || o.y2 < o.y1) {
        ++rep.negative_size;
        rep.note(detail::cat(lpath, ": ", o.type, " box with x2 < x1 or y2 < y1 — skipped"));
        continue;
      }
      if (o.type == "DontCare") {
        for (size_t c = 0; c < opt.classes.size(); ++c) push(static_cast<int64_t>(c), true);
        continue;
      }
      auto it = std::find(opt.classes.begin(), opt.classes.end(), o.type);
      if (it == opt.classes.end()) {
        ++rep.unknown_category;
        rep.note(detail::cat(lpath, ": type '", o.type, "' not in the class list — skipped"));
        continue;
      }
      push(it - opt.classes.begin(), false);
    }
    ds.images.push_back(std::move(im));
  }
  ds.reindex();
  if (verbose) rep.print(stderr, label_dir);
  if (report) *report = std::move(rep);
  return ds;
}

}  // namespace kdet::data
