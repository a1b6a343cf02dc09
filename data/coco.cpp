#include "data/coco.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "engine/check.h"

namespace kdet::data {

// ---- small shared helpers -----------------------------------------------------------------------

size_t Dataset::num_annotations() const {
  size_t n = 0;
  for (const auto& im : images) n += im.anns.size();
  return n;
}

std::string Dataset::image_path(const ImageRecord& im) const {
  if (im.file.empty() || im.file[0] == '/' || image_root.empty()) return im.file;
  if (image_root.back() == '/') return image_root + im.file;
  return image_root + "/" + im.file;
}

const ImageRecord& Dataset::image_by_id(int64_t id) const {
  auto it = image_index.find(id);
  KDET_CHECK(it != image_index.end(), source, ": no image with id ", id);
  return images[it->second];
}

void Dataset::reindex() {
  std::stable_sort(categories.begin(), categories.end(),
                   [](const Category& a, const Category& b) { return a.id < b.id; });
  cat_to_label.clear();
  for (size_t i = 0; i < categories.size(); ++i) {
    bool fresh = cat_to_label.emplace(categories[i].id, static_cast<int64_t>(i)).second;
    KDET_CHECK(fresh, source, ": duplicate category id ", categories[i].id);
  }
  image_index.clear();
  for (size_t i = 0; i < images.size(); ++i) {
    bool fresh = image_index.emplace(images[i].id, i).second;
    KDET_CHECK(fresh, source, ": duplicate image id ", images[i].id);
  }
}

void box_to_original(const ImageMeta& m, float& x1, float& y1, float& x2, float& y2) {
  if (m.flip) {
    float a = static_cast<float>(m.img_w) - x2, b = static_cast<float>(m.img_w) - x1;
    x1 = a;
    x2 = b;
  }
  x1 /= m.scale_w;
  x2 /= m.scale_w;
  y1 /= m.scale_h;
  y2 /= m.scale_h;
}

Detection make_detection(const Dataset& ds, int64_t image_id, int64_t label, float x1, float y1,
                         float x2, float y2, float score) {
  KDET_CHECK(label >= 0 && label < ds.num_classes(), "make_detection: label ", label, " out of range for ",
             ds.num_classes(), " classes of ", ds.source);
  Detection d;
  d.image_id = image_id;
  d.category_id = ds.categories[static_cast<size_t>(label)].id;
  double a = x1, b = y1, c = x2, e = y2;
  d.bbox = {a, b, c - a, e - b};
  d.score = score;
  return d;
}

std::string format_double(double v) {
  KDET_CHECK(std::isfinite(v), "JSON writer: cannot write non-finite number ", v);
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

void LoadReport::note(const std::string& msg) {
  if (examples.size() < 8) examples.push_back(msg);
}

void LoadReport::print(FILE* f, const std::string& source) const {
  if (skipped() == 0 && area_missing == 0 && outside_image == 0 && !no_annotations_key) return;
  std::fprintf(f, "%s: ", source.c_str());
  if (skipped())
    std::fprintf(f,
                 "skipped %lld annotation(s) (unknown category: %lld, non-finite bbox: %lld, negative "
                 "width/height: %lld, bad area: %lld); ",
                 (long long)skipped(), (long long)unknown_category, (long long)nonfinite_bbox,
                 (long long)negative_size, (long long)bad_area);
  if (area_missing) std::fprintf(f, "%lld without 'area' (w*h used); ", (long long)area_missing);
  if (outside_image)
    std::fprintf(f, "%lld box(es) entirely outside their image (kept for evaluation, dropped from training); ",
                 (long long)outside_image);
  if (no_annotations_key) std::fprintf(f, "no 'annotations' key (no ground truth); ");
  std::fprintf(f, "\n");
  for (const auto& e : examples) std::fprintf(f, "  %s\n", e.c_str());
}

void ResultsReport::print(FILE* f, const std::string& source) const {
  if (unknown_category == 0 && nonfinite == 0) return;
  std::fprintf(f, "%s: skipped %lld detection(s) (category not in ground truth: %lld, non-finite: %lld)\n",
               source.c_str(), (long long)(unknown_category + nonfinite), (long long)unknown_category,
               (long long)nonfinite);
  for (const auto& e : examples) std::fprintf(f, "  %s\n", e.c_str());
}

namespace {

std::string read_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  KDET_CHECK(f, path, ": cannot open (", std::strerror(errno), ")");
  std::string s;
  std::fseek(f, 0, SEEK_END);
  long n = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  if (n > 0) {
    s.resize(static_cast<size_t>(n));
    size_t got = std::fread(s.data(), 1, s.size(), f);
    s.resize(got);
  }
  std::fclose(f);
  return s;
}

std::string dir_of(const std::string& path) {
  auto p = path.find_last_of('/');
  if (p == std::string::npos) return ".";
  if (p == 0) return "/";
  return path.substr(0, p);
}

// ---- streaming parser ---------------------------------------------------------------------------

enum class Sec { None, Images, Anns, Cats, Results, Other };
enum class Field { Other, Id, FileName, Width, Height, ImageId, CategoryId, Bbox, Area, IsCrowd, Ignore, Name,
                   Supercategory, Score };

const char* sec_name(Sec s) {
  switch (s) {
    case Sec::Images: return "images";
    case Sec::Anns: return "annotations";
    case Sec::Cats: return "categories";
    case Sec::Results: return "results";
    default: return "?";
  }
}

Field field_of(Sec s, const std::string& k) {
  if (k == "id" && s != Sec::Results) return Field::Id;
  switch (s) {
    case Sec::Images:
      if (k == "file_name") return Field::FileName;
      if (k == "width") return Field::Width;
      if (k == "height") return Field::Height;
      break;
    case Sec::Anns:
      if (k == "image_id") return Field::ImageId;
      if (k == "category_id") return Field::CategoryId;
      if (k == "bbox") return Field::Bbox;
      if (k == "area") return Field::Area;
      if (k == "iscrowd") return Field::IsCrowd;
      if (k == "ignore") return Field::Ignore;
      break;
    case Sec::Cats:
      if (k == "name") return Field::Name;
      if (k == "supercategory") return Field::Supercategory;
      break;
    case Sec::Results:
      if (k == "image_id") return Field::ImageId;
      if (k == "category_id") return Field::CategoryId;
      if (k == "bbox") return Field::Bbox;
      if (k == "score") return Field::Score;
      break;
    default: break;
  }
  return Field::Other;
}

const char* field_name(Field f) {
  switch (f) {
    case Field::Id: return "id";
    case Field::FileName: return "file_name";
    case Field::Width: return "width";
    case Field::Height: return "height";
    case Field::ImageId: return "image_id";
    case Field::CategoryId: return "category_id";
    case Field::Bbox: return "bbox";
    case Field::Area: return "area";
    case Field::IsCrowd: return "iscrowd";
    case Field::Ignore: return "ignore";
    case Field::Name: return "name";
    case Field::Supercategory: return "supercategory";
    case Field::Score: return "score";
    default: return "?";
  }
}

// One element (image, annotation, category or result) as read; validated at its closing brace.
struct Elem {
  int64_t id = 0, image_id = 0, category_id = 0, width = 0, height = 0;
  double bbox[4] = {0, 0, 0, 0};
  int nbbox = 0;
  double area = 0, score = 0;
  bool crowd = false, ignore = false;
  std::string file, name, super;
  uint32_t seen = 0;  // bit per Field
  std::string err;
  void reset() {
    nbbox = 0;
    crowd = ignore = false;
    file.clear();
    name.clear();
    super.clear();
    seen = 0;
    err.clear();
  }
  bool has(Field f) const { return seen & (1u << static_cast<int>(f)); }
};

struct RawAnn {
  int64_t id, image_id, category_id;
  double bbox[4];
  double area;
  bool has_area, crowd, ignore;
};

struct Scalar {
  enum Kind { Null, Bool, Int, UInt, Float, Str } kind;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  bool b = false;
  const std::string* s = nullptr;
  const char* kind_name() const {
    switch (kind) {
      case Null: return "null";
      case Bool: return "a boolean";
      case Str: return "a string";
      default: return "a number";
    }
  }
};

struct Handler {
  using json = nlohmann::json;
  const std::string& name;
  bool results_mode;
  std::vector<char> stack;  // 'o' / 'a' per open container
  Sec sec = Sec::None;
  Field field = Field::Other;
  int64_t elem_index = -1;
  Elem cur;
  // outputs
  std::vector<ImageRecord> images;
  std::vector<RawAnn> anns;
  std::vector<Category> cats;
  std::vector<Detection> dets;
  std::vector<char> det_bad;  // per det: 1 = non-finite
  bool saw_images = false, saw_anns = false, saw_cats = false;

  Handler(const std::string& n, bool results) : name(n), results_mode(results) {
    if (results) sec = Sec::Results;
  }

  size_t elem_depth() const { return results_mode ? 2 : 3; }
  bool active() const { return sec == Sec::Images || sec == Sec::Anns || sec == Sec::Cats || sec == Sec::Results; }

  std::string where() const {
    return detail::cat(sec_name(sec), "[", elem_index, "]");
  }

  [[noreturn]] void fail_elem(const std::string& msg) {
    std::string who = where();
    if (cur.has(Field::Id)) who += detail::cat(" (id ", cur.id, ")");
    else if (sec == Sec::Results && cur.has(Field::ImageId)) who += detail::cat(" (image_id ", cur.image_id, ")");
    KDET_FAIL(name, ": ", who, ": ", msg);
  }

  void set_err(const std::string& e) {
    if (cur.err.empty()) cur.err = e;
  }

  // a value (scalar or container) begins at the current depth
  void value_begins(bool container, bool is_array, const Scalar* sc) {
    size_t d = stack.size();
    if (d == 0) {
      if (results_mode) {
        KDET_CHECK(container && is_array, name, ": a COCO results file must be a JSON array of detections, found ",
                   container ? "an object" : sc->kind_name());
      } else {
        KDET_CHECK(container && !is_array, name, ": a COCO annotation file must be a JSON object, found ",
                   container ? "an array" : sc->kind_name());
      }
      return;
    }
    if (!active()) return;
    size_t ed = elem_depth();
    if (d == ed - 2) {  // the section's value (instances only)
      KDET_CHECK(container && is_array, name, ": '", sec_name(sec), "' must be an array");
      return;
    }
    if (d == ed - 1) {  // an element
      ++elem_index;
      if (!(container && !is_array)) KDET_FAIL(name, ": ", where(), " must be an object");
      return;
    }
    if (d == ed) {  // a field value
      if (field == Field::Other) return;
      cur.seen |= 1u << static_cast<int>(field);
      if (field == Field::Bbox) {
        if (!(container && is_array)) set_err("'bbox' must be an array of 4 numbers");
        return;
      }
      if (container) {
        set_err(detail::cat("'", field_name(field), "' must be a ", (field == Field::FileName || field == Field::Name || field == Field::Supercategory) ? "string" : "number", ", found ", is_array ? "an array" : "an object"));
        return;
      }
      scalar_field(*sc);
      return;
    }
    if (d == ed + 1 && field == Field::Bbox && stack.back() == 'a') {
      if (container || !(sc->kind == Scalar::Int || sc->kind == Scalar::UInt || sc->kind == Scalar::Float)) {
        set_err("'bbox' must be an array of 4 numbers");
        return;
      }
      double v = sc->kind == Scalar::Int ? static_cast<double>(sc->i)
                 : sc->kind == Scalar::UInt ? static_cast<double>(sc->u) : sc->f;
      if (cur.nbbox < 4) cur.bbox[cur.nbbox] = v;
      ++cur.nbbox;
      return;
    }
    // deeper (segmentation etc.): ignored
  }

  bool to_int(const Scalar& s, int64_t& out) {
    if (s.kind == Scalar::Int) { out = s.i; return true; }
    if (s.kind == Scalar::UInt) {
      if (s.u > static_cast<uint64_t>(INT64_MAX)) return false;
      out = static_cast<int64_t>(s.u);
      return true;
    }
    if (s.kind == Scalar::Float && std::isfinite(s.f) && s.f == std::floor(s.f) && std::fabs(s.f) < 9.2e18) {
      out = static_cast<int64_t>(s.f);
      return true;
    }
    return false;
  }
  bool to_double(const Scalar& s, double& out) {
    if (s.kind == Scalar::Int) out = static_cast<double>(s.i);
    else if (s.kind == Scalar::UInt) out = static_cast<double>(s.u);
    else if (s.kind == Scalar::Float) out = s.f;
    else return false;
    return true;
  }

  void scalar_field(const Scalar& s) {
    auto need_int = [&](int64_t& dst) {
      if (!to_int(s, dst)) set_err(detail::cat("'", field_name(field), "' must be an integer, found ", s.kind_name()));
    };
    auto need_str = [&](std::string& dst) {
      if (s.kind != Scalar::Str) set_err(detail::cat("'", field_name(field), "' must be a string, found ", s.kind_name()));
      else dst = *s.s;
    };
    auto need_flag = [&](bool& dst) {
      double v;
      if (s.kind == Scalar::Bool) dst = s.b;
      else if (to_double(s, v)) dst = v != 0;
      else set_err(detail::cat("'", field_name(field), "' must be 0/1 or a boolean, found ", s.kind_name()));
    };
    auto need_num = [&](double& dst) {
      if (!to_double(s, dst)) set_err(detail::cat("'", field_name(field), "' must be a number, found ", s.kind_name()));
    };
    switch (field) {
      case Field::Id: need_int(cur.id); break;
      case Field::ImageId: need_int(cur.image_id); break;
      case Field::CategoryId: need_int(cur.category_id); break;
      case Field::Width: need_int(cur.width); break;
      case Field::Height: need_int(cur.height); break;
      case Field::FileName: need_str(cur.file); break;
      case Field::Name: need_str(cur.name); break;
      case Field::Supercategory: need_str(cur.super); break;
      case Field::IsCrowd: need_flag(cur.crowd); break;
      case Field::Ignore: need_flag(cur.ignore); break;
      case Field::Area: need_num(cur.area); break;
      case Field::Score: need_num(cur.score); break;
      case Field::Bbox: set_err("'bbox' must be an array of 4 numbers"); break;
      default: break;
    }
  }

  void require(Field f) {
    if (!cur.has(f)) fail_elem(detail::cat("missing required key '", field_name(f), "'"));
  }

  void element_done() {
    if (!cur.err.empty()) fail_elem(cur.err);
    switch (sec) {
      case Sec::Images: {
        require(Field::Id);
        require(Field::FileName);
        require(Field::Width);
        require(Field::Height);
        if (cur.width <= 0 || cur.height <= 0 || cur.width > (1 << 20) || cur.height > (1 << 20))
          fail_elem(detail::cat("bad image size ", cur.width, "x", cur.height));
        ImageRecord im;
        im.id = cur.id;
        im.file = cur.file;
        im.width = static_cast<int>(cur.width);
        im.height = static_cast<int>(cur.height);
        images.push_back(std::move(im));
        break;
      }
      case Sec::Anns: {
        require(Field::Id);
        require(Field::ImageId);
        require(Field::CategoryId);
        require(Field::Bbox);
        if (cur.nbbox != 4) fail_elem(detail::cat("'bbox' must be an array of 4 numbers, found ", cur.nbbox));
        RawAnn a;
        a.id = cur.id;
        a.image_id = cur.image_id;
        a.category_id = cur.category_id;
        std::copy(cur.bbox, cur.bbox + 4, a.bbox);
        a.area = cur.area;
        a.has_area = cur.has(Field::Area);
        a.crowd = cur.crowd;
        a.ignore = cur.ignore;
        anns.push_back(a);
        break;
      }
      case Sec::Cats: {
        require(Field::Id);
        Category c;
        c.id = cur.id;
        c.name = cur.name.empty() ? detail::cat("category_", cur.id) : cur.name;
        c.supercategory = cur.super;
        cats.push_back(std::move(c));
        break;
      }
      case Sec::Results: {
        require(Field::ImageId);
        require(Field::CategoryId);
        require(Field::Bbox);
        require(Field::Score);
        if (cur.nbbox != 4) fail_elem(detail::cat("'bbox' must be an array of 4 numbers, found ", cur.nbbox));
        Detection d;
        d.image_id = cur.image_id;
        d.category_id = cur.category_id;
        d.bbox = {cur.bbox[0], cur.bbox[1], cur.bbox[2], cur.bbox[3]};
        d.score = cur.score;
        bool finite = std::isfinite(d.score);
        for (double v : d.bbox) finite = finite && std::isfinite(v);
        dets.push_back(d);
        det_bad.push_back(finite ? 0 : 1);
        break;
      }
      default: break;
    }
  }

  // --- the SAX interface ---
  bool null() { Scalar s{Scalar::Null}; value_begins(false, false, &s); return true; }
  bool boolean(bool v) { Scalar s{Scalar::Bool}; s.b = v; value_begins(false, false, &s); return true; }
  bool number_integer(json::number_integer_t v) { Scalar s{Scalar::Int}; s.i = v; value_begins(false, false, &s); return true; }
  bool number_unsigned(json::number_unsigned_t v) { Scalar s{Scalar::UInt}; s.u = v; value_begins(false, false, &s); return true; }
  bool number_float(json::number_float_t v, const json::string_t&) { Scalar s{Scalar::Float}; s.f = v; value_begins(false, false, &s); return true; }
  bool string(json::string_t& v) { Scalar s{Scalar::Str}; s.s = &v; value_begins(false, false, &s); return true; }
  bool binary(json::binary_t&) { Scalar s{Scalar::Null}; value_begins(false, false, &s); return true; }
  bool start_object(std::size_t) {
    value_begins(true, false, nullptr);
    stack.push_back('o');
    if (active() && stack.size() == elem_depth()) {
      cur.reset();
      field = Field::Other;
    }
    return true;
  }
  bool end_object() {
    if (active() && stack.size() == elem_depth()) element_done();
    stack.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    value_begins(true, true, nullptr);
    stack.push_back('a');
    return true;
  }
  bool end_array() {
    stack.pop_back();
    if (!results_mode && stack.size() == 1) sec = Sec::None;
    return true;
  }
  bool key(json::string_t& k) {
    if (!results_mode && stack.size() == 1) {
      if (k == "images") { sec = Sec::Images; saw_images = true; }
      else if (k == "annotations") { sec = Sec::Anns; saw_anns = true; }
      else if (k == "categories") { sec = Sec::Cats; saw_cats = true; }
      else sec = Sec::Other;
      elem_index = -1;
      return true;
    }
    if (active() && stack.size() == elem_depth()) field = field_of(sec, k);
    return true;
  }
  bool parse_error(std::size_t pos, const std::string& last_token, const nlohmann::detail::exception& ex) {
    std::string ctx;
    if (active() && elem_index >= 0) ctx = detail::cat(" (while reading ", where(), ")");
    std::string hint;
    // nlohmann stops at the first bad character: "...: [N" for NaN, "...: I" / "-I" for Infinity
    const std::string& t = last_token;
    bool nan_like = !t.empty() && std::strchr("NnIi", t.back()) &&
                    (t.size() == 1 || std::strchr(" [,:-\t\n", t[t.size() - 2]));
    if (nan_like || t.find("NaN") != std::string::npos || t.find("Infinity") != std::string::npos)
      hint = " — NaN/Infinity are not valid JSON numbers (Python's json.dump writes them; use allow_nan=False)";
    KDET_FAIL(name, ": malformed JSON at byte ", pos, ctx, ": ", ex.what(), hint);
  }
};

void run_sax(const std::string& text, Handler& h) {
  KDET_CHECK(!text.empty(), h.name, ": empty file (expected JSON)");
  nlohmann::json::sax_parse(text.data(), text.data() + text.size(), &h);
}

bool box_outside(const BoxAnn& b, int w, int h) {
  double x = b.xywh[0], y = b.xywh[1];
  double inter_w = std::max(0.0, std::min(x + b.xywh[2], double(w)) - std::max(x, 0.0));
  double inter_h = std::max(0.0, std::min(y + b.xywh[3], double(h)) - std::max(y, 0.0));
  return inter_w * inter_h == 0;
}

// Speed: the polygons / RLE of "segmentation" are most of a COCO file's bytes and are never used.
// One pass (memchr from quote to quote) copies the text without those values (written as null),
// so the JSON parser sees a few times fewer bytes. Returns false (text unchanged in meaning: the
// caller parses the original) when the text is not well-formed enough to be sure.
bool strip_segmentations(const std::string& in, std::string& out) {
  static const char kKey[] = "\"segmentation\"";
  const size_t klen = sizeof(kKey) - 1;
  const char* p = in.data();
  const char* end = p + in.size();
  out.clear();
  out.reserve(in.size() / 2);
  while (p < end) {
    const char* q = static_cast<const char*>(std::memchr(p, '"', static_cast<size_t>(end - p)));
    if (!q) {
      out.append(p, end);
      break;
    }
    out.append(p, q);
    // the string starting at q
    const char* e = q + 1;
    for (;;) {
      const char* qq = static_cast<const char*>(std::memchr(e, '"', static_cast<size_t>(end - e)));
      if (!qq) return false;
      size_t bs = 0;  // count backslashes before the quote
      for (const char* b = qq - 1; b > q && *b == '\\'; --b) ++bs;
      e = qq + 1;
      if (bs % 2 == 0) break;
    }
    out.append(q, e);
    p = e;
    if (static_cast<size_t>(e - q) != klen || std::memcmp(q, kKey, klen) != 0) continue;
    // a key? whitespace then ':'
    const char* c = p;
    while (c < end && (*c == ' ' || *c == '\n' || *c == '\r' || *c == '\t')) ++c;
    if (c >= end || *c != ':') continue;
    ++c;
    while (c < end && (*c == ' ' || *c == '\n' || *c == '\r' || *c == '\t')) ++c;
    if (c >= end || (*c != '[' && *c != '{')) continue;  // scalar values are left alone
    // skip one array/object value, strings respected
    int depth = 0;
    const char* v = c;
    for (; v < end; ++v) {
      char ch = *v;
      if (ch == '[' || ch == '{') ++depth;
      else if (ch == ']' || ch == '}') {
        if (--depth == 0) {
          ++v;
          break;
        }
      } else if (ch == '"') {
        for (++v; v < end && *v != '"'; ++v)
          if (*v == '\\') ++v;
        if (v >= end) return false;
      }
    }
    if (depth != 0) return false;
    out += ": null";
    p = v;
  }
  return true;
}

}  // namespace

Dataset parse_coco(const std::string& text, const std::string& name, const CocoLoadOptions& opt,
                   LoadReport* report_out) {
  Handler h(name, false);
  {
    std::string stripped;
    bool ok = strip_segmentations(text, stripped);
    try {
      run_sax(ok ? stripped : text, h);
    } catch (const Error&) {
      if (!ok) throw;
      // report against the original text (byte offsets in messages refer to the file)
      std::string().swap(stripped);
      Handler h2(name, false);
      run_sax(text, h2);
      throw;  // not reached unless the stripped text alone was rejected
    }
  }
  KDET_CHECK(h.saw_images, name, ": missing required key 'images' (not a COCO instances file?)");
  KDET_CHECK(h.saw_cats, name, ": missing required key 'categories' (not a COCO instances file?)");
  LoadReport rep;
  rep.no_annotations_key = !h.saw_anns;

  Dataset ds;
  ds.source = name;
  ds.image_root = opt.image_root.empty() ? dir_of(name) : opt.image_root;
  ds.images = std::move(h.images);
  ds.categories = std::move(h.cats);
  ds.reindex();

  // annotation ids must be unique (pycocotools' index would silently keep only the last one)
  {
    std::vector<int64_t> ids(h.anns.size());
    for (size_t i = 0; i < h.anns.size(); ++i) ids[i] = h.anns[i].id;
    std::sort(ids.begin(), ids.end());
    auto dup = std::adjacent_find(ids.begin(), ids.end());
    KDET_CHECK(dup == ids.end(), name, ": duplicate annotation id ", *dup);
  }
  for (const RawAnn& a : h.anns) {
    auto im_it = ds.image_index.find(a.image_id);
    KDET_CHECK(im_it != ds.image_index.end(), name, ": annotation id ", a.id, ": image_id ", a.image_id,
               " is not an image of this file");
    auto cat_it = ds.cat_to_label.find(a.category_id);
    if (cat_it == ds.cat_to_label.end()) {
      ++rep.unknown_category;
      rep.note(detail::cat("annotation id ", a.id, " (image ", a.image_id, "): unknown category_id ", a.category_id,
                           " — skipped"));
      continue;
    }
    bool finite = std::isfinite(a.bbox[0]) && std::isfinite(a.bbox[1]) && std::isfinite(a.bbox[2]) &&
                  std::isfinite(a.bbox[3]);
    if (!finite) {
      ++rep.nonfinite_bbox;
      rep.note(detail::cat("annotation id ", a.id, " (image ", a.image_id, "): non-finite bbox — skipped"));
      continue;
    }
    if (a.bbox[2] < 0 || a.bbox[3] < 0) {
      ++rep.negative_size;
      rep.note(detail::cat("annotation id ", a.id, " (image ", a.image_id, "): negative width/height ", a.bbox[2],
                           "x", a.bbox[3], " — skipped"));
      continue;
    }
    double area = a.area;
    if (!a.has_area) {
      area = a.bbox[2] * a.bbox[3];
      ++rep.area_missing;
    } else if (!std::isfinite(area) || area < 0) {
      ++rep.bad_area;
      rep.note(detail::cat("annotation id ", a.id, " (image ", a.image_id, "): bad area ", area, " — skipped"));
      continue;
    }
    ImageRecord& im = ds.images[im_it->second];
    BoxAnn b;
    b.xywh = {a.bbox[0], a.bbox[1], a.bbox[2], a.bbox[3]};
    b.x1 = static_cast<float>(a.bbox[0]);
    b.y1 = static_cast<float>(a.bbox[1]);
    b.x2 = static_cast<float>(a.bbox[0] + a.bbox[2]);
    b.y2 = static_cast<float>(a.bbox[1] + a.bbox[3]);
    b.label = cat_it->second;
    b.iscrowd = a.crowd;
    b.ignore = a.crowd || a.ignore;
    b.ann_id = a.id;
    b.area = area;
    if (box_outside(b, im.width, im.height)) {
      ++rep.outside_image;
      rep.note(detail::cat("annotation id ", a.id, " (image ", a.image_id, "): box [", a.bbox[0], ", ", a.bbox[1],
                           ", ", a.bbox[2], ", ", a.bbox[3], "] lies outside the ", im.width, "x", im.height,
                           " image — kept for evaluation, dropped from training"));
    }
    im.anns.push_back(b);
  }
  if (opt.verbose) rep.print(stderr, name);
  if (report_out) *report_out = std::move(rep);
  return ds;
}

Dataset load_coco(const std::string& path, const CocoLoadOptions& opt, LoadReport* report) {
  std::string text = read_file(path);
  CocoLoadOptions o = opt;
  if (o.image_root.empty()) o.image_root = dir_of(path);
  return parse_coco(text, path, o, report);
}

std::string coco_to_string(const Dataset& ds) {
  std::string s;
  s.reserve(256 + ds.images.size() * 96 + ds.num_annotations() * 160);
  auto str = [](const std::string& v) { return nlohmann::json(v).dump(); };
  s += "{\"images\": [";
  for (size_t i = 0; i < ds.images.size(); ++i) {
    const auto& im = ds.images[i];
    s += i ? ",\n" : "\n";
    s += "{\"id\": " + std::to_string(im.id) + ", \"file_name\": " + str(im.file) +
         ", \"width\": " + std::to_string(im.width) + ", \"height\": " + std::to_string(im.height) + "}";
  }
  s += "],\n\"annotations\": [";
  bool first = true;
  for (const auto& im : ds.images) {
    for (const auto& a : im.anns) {
      s += first ? "\n" : ",\n";
      first = false;
      s += "{\"id\": " + std::to_string(a.ann_id) + ", \"image_id\": " + std::to_string(im.id) +
           ", \"category_id\": " + std::to_string(ds.categories.at(static_cast<size_t>(a.label)).id) +
           ", \"bbox\": [" + format_double(a.xywh[0]) + ", " + format_double(a.xywh[1]) + ", " +
           format_double(a.xywh[2]) + ", " + format_double(a.xywh[3]) + "], \"area\": " + format_double(a.area) +
           ", \"iscrowd\": " + (a.iscrowd ? "1" : "0");
      if (a.ignore && !a.iscrowd) s += ", \"ignore\": 1";
      s += "}";
    }
  }
  s += "],\n\"categories\": [";
  for (size_t i = 0; i < ds.categories.size(); ++i) {
    const auto& c = ds.categories[i];
    s += i ? ",\n" : "\n";
    s += "{\"id\": " + std::to_string(c.id) + ", \"name\": " + str(c.name) +
         ", \"supercategory\": " + str(c.supercategory) + "}";
  }
  s += "]}\n";
  return s;
}

namespace {
void write_text(const std::string& path, const std::string& s) {
  FILE* f = std::fopen(path.c_str(), "wb");
  KDET_CHECK(f, path, ": cannot open for writing (", std::strerror(errno), ")");
  size_t n = std::fwrite(s.data(), 1, s.size(), f);
  int rc = std::fclose(f);
  KDET_CHECK(n == s.size() && rc == 0, path, ": write failed");
}
}  // namespace

void write_coco(const Dataset& ds, const std::string& path) { write_text(path, coco_to_string(ds)); }

std::vector<Detection> parse_coco_results(const std::string& text, const std::string& name, const Dataset& gt,
                                          ResultsReport* report_out, bool verbose) {
  Handler h(name, true);
  run_sax(text, h);
  ResultsReport rep;
  std::vector<Detection> out;
  out.reserve(h.dets.size());
  for (size_t i = 0; i < h.dets.size(); ++i) {
    const Detection& d = h.dets[i];
    KDET_CHECK(gt.image_index.count(d.image_id), name, ": results[", i, "]: image_id ", d.image_id,
               " is not an image of the ground truth ", gt.source,
               " (results do not correspond to this data set)");
    if (!gt.cat_to_label.count(d.category_id)) {
      ++rep.unknown_category;
      if (rep.examples.size() < 8)
        rep.examples.push_back(detail::cat("results[", i, "] (image ", d.image_id, "): category_id ", d.category_id,
                                           " not in the ground truth — not evaluated"));
      continue;
    }
    if (h.det_bad[i]) {
      ++rep.nonfinite;
      if (rep.examples.size() < 8)
        rep.examples.push_back(detail::cat("results[", i, "] (image ", d.image_id, "): non-finite score or bbox — skipped"));
      continue;
    }
    out.push_back(d);
  }
  if (verbose) rep.print(stderr, name);
  if (report_out) *report_out = std::move(rep);
  return out;
}

std::vector<Detection> load_coco_results(const std::string& path, const Dataset& gt, ResultsReport* report,
                                         bool verbose) {
  return parse_coco_results(read_file(path), path, gt, report, verbose);
}

void write_coco_results(const std::vector<Detection>& dets, const std::string& path) {
  std::string s = "[";
  for (size_t i = 0; i < dets.size(); ++i) {
    const auto& d = dets[i];
    s += i ? ",\n" : "\n";
    s += "{\"image_id\": " + std::to_string(d.image_id) + ", \"category_id\": " + std::to_string(d.category_id) +
         ", \"bbox\": [" + format_double(d.bbox[0]) + ", " + format_double(d.bbox[1]) + ", " +
         format_double(d.bbox[2]) + ", " + format_double(d.bbox[3]) + "], \"score\": " + format_double(d.score) + "}";
  }
  s += "]\n";
  write_text(path, s);
}

std::vector<BoxAnn> train_targets(const ImageRecord& im) {
  std::vector<BoxAnn> out;
  for (const BoxAnn& a : im.anns) {
    double x = a.xywh[0], y = a.xywh[1], w = a.xywh[2], h = a.xywh[3];
    double inter_w = std::max(0.0, std::min(x + w, double(im.width)) - std::max(x, 0.0));
    double inter_h = std::max(0.0, std::min(y + h, double(im.height)) - std::max(y, 0.0));
    if (inter_w * inter_h == 0) continue;
    if (a.area <= 0 || w < 1 || h < 1) continue;
    out.push_back(a);
  }
  return out;
}

std::vector<size_t> train_image_indices(const Dataset& ds, int min_size, bool filter_empty) {
  std::vector<size_t> out;
  for (size_t i = 0; i < ds.images.size(); ++i) {
    const auto& im = ds.images[i];
    if (std::min(im.width, im.height) < min_size) continue;
    if (filter_empty && im.anns.empty()) continue;
    out.push_back(i);
  }
  return out;
}

}  // namespace kdet::data
