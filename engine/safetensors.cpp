#include "engine/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <climits>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

namespace kdet {

namespace {

using json = nlohmann::json;

bool parse_dtype(const std::string& s, DType& t) {
  if (s == "F32") t = DType::F32;
  else if (s == "F64") t = DType::F64;
  else if (s == "I64") t = DType::I64;
  else if (s == "U8") t = DType::U8;
  else if (s == "BOOL") t = DType::Bool;
  else return false;
  return true;
}

const char* dtype_tag(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

// The reader proper, over any byte source: `read(offset, n, dst)` copies n bytes at offset (the
// caller has checked that [offset, offset + n) lies inside the `file_size` bytes).
template <class Read>
SafetensorsFile parse_safetensors(const std::string& path, int64_t file_size, Read&& read) {
  KDET_CHECK(file_size >= 8, path, ": not a safetensors file (", file_size, " bytes, need at least 8)");
  unsigned char lenbuf[8];
  read(0, 8, reinterpret_cast<char*>(lenbuf));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | lenbuf[i];
  KDET_CHECK(n <= static_cast<uint64_t>(file_size - 8), path, ": header length ", n,
             " exceeds file size ", file_size, " (truncated or not a safetensors file)");
  std::string header(n, '\0');
  read(8, static_cast<int64_t>(n), header.data());
  json h;
  try {
    h = json::parse(header);
  } catch (const std::exception& e) {
    KDET_FAIL(path, ": malformed safetensors header JSON: ", e.what());
  }
  KDET_CHECK(h.is_object(), path, ": safetensors header is not a JSON object");
  const int64_t data_start = 8 + static_cast<int64_t>(n);
  const int64_t data_size = file_size - data_start;
  SafetensorsFile out;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      KDET_CHECK(v.is_object(), path, ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        KDET_CHECK(m.value().is_string(), path, ": __metadata__ value for '", m.key(), "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    KDET_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"), path,
               ": tensor '", name, "' lacks dtype/shape/data_offsets");
    KDET_CHECK(v["dtype"].is_string(), path, ": tensor '", name, "' dtype is not a string");
    DType t;
    std::string ds = v["dtype"].get<std::string>();
    KDET_CHECK(parse_dtype(ds, t), path, ": tensor '", name, "' has unsupported dtype ", ds,
               " (kdet reads F32, F64, I64, U8, BOOL)");
    KDET_CHECK(v["shape"].is_array(), path, ": tensor '", name, "' shape is not an array");
    Shape s;
    // The byte count is computed with overflow checks: a hostile shape must not wrap around to a
    // small number that happens to match the offsets.
    int64_t want = static_cast<int64_t>(dtype_size(t));
    for (auto& d : v["shape"]) {
      KDET_CHECK(d.is_number_integer() && !(d.is_number_unsigned() && d.get<uint64_t>() > INT64_MAX) &&
                     d.get<int64_t>() >= 0,
                 path, ": tensor '", name, "' has a bad shape");
      s.push_back(d.get<int64_t>());
      KDET_CHECK(!__builtin_mul_overflow(want, s.back(), &want), path, ": tensor '", name,
                 "' shape overflows 64-bit byte count");
    }
    const json& off = v["data_offsets"];
    KDET_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_integer() && off[1].is_number_integer() &&
                   !(off[0].is_number_unsigned() && off[0].get<uint64_t>() > INT64_MAX) &&
                   !(off[1].is_number_unsigned() && off[1].get<uint64_t>() > INT64_MAX),
               path, ": tensor '", name, "' data_offsets must be [begin, end]");
    int64_t b = off[0].get<int64_t>(), e = off[1].get<int64_t>();
    KDET_CHECK(0 <= b && b <= e && e <= data_size, path, ": tensor '", name, "' data_offsets [", b, ", ", e,
               "] outside the data section of ", data_size, " bytes (truncated file?)");
    KDET_CHECK(e - b == want, path, ": tensor '", name, "' has ", e - b, " bytes but ", ds, s, " needs ", want);
    ranges.push_back({b, e});
    Tensor tensor = Tensor::empty(s, t);
    if (want > 0) read(data_start + b, want, static_cast<char*>(tensor.raw_data()));
    out.tensors[name] = tensor;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    KDET_CHECK(ranges[i].first >= ranges[i - 1].second, path, ": overlapping tensor data ranges");
  return out;
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  KDET_CHECK(f.good(), path, ": cannot open safetensors file");
  f.seekg(0, std::ios::end);
  const int64_t file_size = f.tellg();
  f.seekg(0);
  return parse_safetensors(path, file_size, [&](int64_t off, int64_t n, char* dst) {
    f.seekg(off);
    f.read(dst, static_cast<std::streamsize>(n));
    KDET_CHECK(f.good(), path, ": read error at byte ", off, " (", n, " bytes)");
  });
}

SafetensorsFile load_safetensors_from_memory(const std::string& bytes, const std::string& name) {
  return parse_safetensors(name, static_cast<int64_t>(bytes.size()), [&](int64_t off, int64_t n, char* dst) {
    std::memcpy(dst, bytes.data() + off, static_cast<size_t>(n));
  });
}

namespace {
// fsync of a file (or a directory: best effort, some file systems refuse it).
void sync_to_disk(const std::string& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) {
    KDET_CHECK(directory, p, ": cannot reopen to flush it to disk");
    return;
  }
  const int rc = ::fsync(fd);
  ::close(fd);
  KDET_CHECK(rc == 0 || directory, p, ": fsync failed (disk full or I/O error?)");
}
}  // namespace

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::vector<Tensor> cpu;
  int64_t off = 0;
  for (auto& [name, t] : tensors) {
    KDET_CHECK(t.defined(), "save_safetensors: tensor '", name, "' is undefined");
    Tensor c = t.to(Device::cpu()).contiguous();
    int64_t nb = static_cast<int64_t>(c.nbytes());
    h[name] = {{"dtype", dtype_tag(c.dtype())}, {"shape", std::vector<int64_t>(c.shape())},
               {"data_offsets", {off, off + nb}}};
    off += nb;
    cpu.push_back(c);
  }
  std::string hs = h.dump();
  while ((8 + hs.size()) % 8) hs.push_back(' ');  // keep data 8-byte aligned, as the Python writer does
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    KDET_CHECK(f.good(), tmp, ": cannot open for writing");
    uint64_t n = hs.size();
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; ++i) lenbuf[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    f.write(reinterpret_cast<const char*>(lenbuf), 8);
    f.write(hs.data(), static_cast<std::streamsize>(hs.size()));
    for (auto& c : cpu) f.write(static_cast<const char*>(c.raw_data()), static_cast<std::streamsize>(c.nbytes()));
    f.flush();
    KDET_CHECK(f.good(), tmp, ": write error (disk full?)");
  }
  // Durable, not only atomic: the data reaches the disk before the rename makes it the file, and the
  // rename itself is flushed with its directory (a power cut then leaves the old file or the new one).
  sync_to_disk(tmp, false);
  KDET_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path);
  const size_t slash = path.find_last_of('/');
  sync_to_disk(slash == std::string::npos ? std::string(".") : (slash == 0 ? std::string("/") : path.substr(0, slash)), true);
}

}  // namespace kdet
