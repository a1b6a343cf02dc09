#include "distill/kd_golden.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

namespace kdet::kd {

static_assert(std::endian::native == std::endian::little, "kdgold-1 reader assumes a little-endian host");

const std::vector<std::string>& kd_methods() {
  static const std::vector<std::string> m = {"fgd",     "mgd",  "amd", "dmkd",        "ssim_kd",
                                             "fbkd",    "aid",  "fitnet", "logit_kd_kl", "logit_kd_bce"};
  return m;
}

const Tensor& KdGolden::at(const std::string& key) const {
  auto it = tensors.find(key);
  KDET_CHECK(it != tensors.end(), path, ": golden file has no tensor '", key, "'");
  return it->second;
}

KdGolden load_kdgold(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  KDET_CHECK(f.good(), path, ": cannot open golden file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_kdgold(ss.str(), path);
}

KdGolden parse_kdgold(const std::string& bytes, const std::string& path) {
  using json = nlohmann::json;
  const uint64_t file_size = bytes.size();
  KDET_CHECK(file_size >= 8, path, ": not a kdgold-1 file (", file_size, " bytes, need at least 8)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  KDET_CHECK(n <= kKdGoldMaxHeader, path, ": header length ", n, " exceeds the kdgold-1 limit of ", kKdGoldMaxHeader);
  KDET_CHECK(n <= file_size - 8, path, ": header length ", n, " runs past the end of the ", file_size, "-byte file");
  const std::string header = bytes.substr(8, n);
  KDET_CHECK(!header.empty() && header[0] == '{', path, ": header does not start with '{'");
  const size_t close = header.find_last_of('}');
  KDET_CHECK(close != std::string::npos, path, ": header has no closing '}'");
  for (size_t i = close + 1; i < header.size(); ++i)
    KDET_CHECK(header[i] == ' ', path, ": header has a non-space byte after the JSON object (offset ", 8 + i, ")");
  json h;
  try {
    h = json::parse(header.substr(0, close + 1));
  } catch (const std::exception& e) {
    KDET_FAIL(path, ": header is not valid JSON: ", e.what());
  }
  KDET_CHECK(h.is_object(), path, ": header is not a JSON object");

  KdGolden g;
  g.path = path;
  // --- metadata ---
  KDET_CHECK(h.contains("__metadata__"), path, ": header has no __metadata__");
  const json& md = h["__metadata__"];
  KDET_CHECK(md.is_object(), path, ": __metadata__ is not an object");
  for (auto it = md.begin(); it != md.end(); ++it) {
    KDET_CHECK(it.value().is_string(), path, ": __metadata__ value '", it.key(), "' is not a string");
    KDET_CHECK(it.key() == "format" || it.key() == "method" || it.key() == "case", path, ": unexpected __metadata__ key '",
               it.key(), "' (kdgold-1 has exactly format, method, case)");
  }
  KDET_CHECK(md.contains("format") && md.contains("method") && md.contains("case"), path,
             ": __metadata__ must hold format, method and case");
  const std::string fmt = md["format"].get<std::string>();
  KDET_CHECK(fmt == kKdGoldFormat, path, ": unknown format '", fmt, "' (this checker reads ", kKdGoldFormat, ")");
  g.method = md["method"].get<std::string>();
  const auto& ms = kd_methods();
  KDET_CHECK(std::find(ms.begin(), ms.end(), g.method) != ms.end(), path, ": unknown method '", g.method, "'");
  g.case_name = md["case"].get<std::string>();
  KDET_CHECK(std::regex_match(g.case_name, std::regex(g.method + "_[0-9]+")), path, ": case '", g.case_name,
             "' is not of the form ", g.method, "_<k>");

  // --- tensors ---
  const uint64_t data_start = 8 + n, data_size = file_size - data_start;
  struct Range {
    uint64_t b, e;
    std::string key;
  };
  std::vector<Range> ranges;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& key = it.key();
    if (key == "__metadata__") continue;
    for (unsigned char c : key)
      KDET_CHECK(c >= 0x21 && c < 0x7f, path, ": key '", key, "' is not printable ASCII");
    const std::string fam = key.substr(0, key.find('.'));
    KDET_CHECK(key.find('.') != std::string::npos &&
                   (fam == "in" || fam == "param" || fam == "hp" || fam == "out" || fam == "grad" || fam == "mid"),
               path, ": key '", key, "' has no known family (in, param, hp, out, grad, mid)");
    const json& v = it.value();
    KDET_CHECK(v.is_object() && v.size() == 3 && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
               path, ": tensor '", key, "' must have exactly dtype, shape, data_offsets");
    KDET_CHECK(v["dtype"].is_string() && v["dtype"].get<std::string>() == "F64", path, ": tensor '", key,
               "' has dtype ", v["dtype"].dump(), "; kdgold-1 holds F64 only");
    KDET_CHECK(v["shape"].is_array(), path, ": tensor '", key, "' shape is not an array");
    Shape s;
    for (const auto& d : v["shape"]) {
      KDET_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), path, ": tensor '", key,
                 "' has a bad shape entry ", d.dump());
      s.push_back(d.get<int64_t>());
    }
    KDET_CHECK(!(fam == "hp" || fam == "out") || s.empty(), path, ": tensor '", key, "' must be 0-d, has shape ", s);
    const json& off = v["data_offsets"];
    KDET_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(), path,
               ": tensor '", key, "' data_offsets must be two non-negative integers");
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    KDET_CHECK(b <= e && e <= data_size, path, ": tensor '", key, "' data_offsets [", b, ", ", e,
               "] outside the data buffer of ", data_size, " bytes");
    const uint64_t want = 8 * static_cast<uint64_t>(s.numel());
    KDET_CHECK(e - b == want, path, ": tensor '", key, "' has ", e - b, " bytes but F64", s, " needs ", want);
    Tensor t = Tensor::empty(s, DType::F64);
    if (want) std::memcpy(t.raw_data(), bytes.data() + data_start + b, want);
    g.tensors[key] = t;
    ranges.push_back({b, e, key});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.b != b.b ? a.b < b.b : a.e < b.e;
  });
  uint64_t cursor = 0;
  for (const Range& r : ranges) {
    KDET_CHECK(r.b >= cursor, path, ": tensor '", r.key, "' [", r.b, ", ", r.e, ") overlaps the previous tensor (ends at ",
               cursor, ")");
    KDET_CHECK(r.b == cursor, path, ": hole in the data buffer: bytes [", cursor, ", ", r.b, ") before tensor '", r.key,
               "' belong to no tensor");
    cursor = r.e;
  }
  KDET_CHECK(cursor == data_size, path, ": ", data_size - cursor, " trailing byte(s) after the last tensor");
  return g;
}

std::string encode_kdgold(const std::string& method, const std::string& case_name,
                          const std::map<std::string, Tensor>& tensors) {
  nlohmann::ordered_json h;
  h["__metadata__"] = {{"format", kKdGoldFormat}, {"method", method}, {"case", case_name}};
  std::string data;
  for (const auto& [key, t] : tensors) {  // std::map: ascending byte order of the keys
    KDET_CHECK(t.defined(), "encode_kdgold: tensor '", key, "' is undefined");
    const Tensor c = t.to(Device::cpu()).to(DType::F64).contiguous();
    const uint64_t b = data.size();
    data.append(static_cast<const char*>(c.raw_data()), c.nbytes());
    h[key] = {{"dtype", "F64"}, {"shape", std::vector<int64_t>(c.shape())}, {"data_offsets", {b, data.size()}}};
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs.push_back(' ');
  std::string out(8, '\0');
  const uint64_t n = hs.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + hs + data;
}

void save_kdgold(const std::string& path, const KdGolden& g) {
  const std::string bytes = encode_kdgold(g.method, g.case_name, g.tensors);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  KDET_CHECK(f.good(), path, ": cannot open for writing");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  KDET_CHECK(f.good(), path, ": write error");
}

}  // namespace kdet::kd
