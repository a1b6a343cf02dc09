#include "engine/checkpoint.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "engine/check.h"

namespace kdet {

namespace {

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> t = [] {
    std::array<uint32_t, 256> r{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      r[i] = c;
    }
    return r;
  }();
  return t;
}

std::string hex8(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

const char* const kChecksumKeys[] = {"format", "iter", "epoch", "batch_in_epoch", "seed"};

}  // namespace

uint32_t crc32(const void* data, size_t n, uint32_t crc) {
  const auto& t = crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::string checkpoint_checksum(const std::map<std::string, Tensor>& tensors,
                                const std::map<std::string, std::string>& metadata) {
  uint32_t c = 0;
  for (auto& [name, t] : tensors) {
    Tensor h = t.to(Device::cpu()).contiguous();
    c = crc32(h.raw_data(), h.nbytes(), c);
  }
  for (const char* k : kChecksumKeys) {
    auto it = metadata.find(k);
    const std::string v = std::string(k) + "=" + (it == metadata.end() ? std::string() : it->second) + ";";
    c = crc32(v.data(), v.size(), c);
  }
  return "crc32:" + hex8(c);
}

bool verify_checkpoint(const std::string& path, const SafetensorsFile& f) {
  auto it = f.metadata.find("checksum");
  if (it == f.metadata.end()) return false;
  const std::string got = checkpoint_checksum(f.tensors, f.metadata);
  KDET_CHECK(got == it->second, path, ": checkpoint is corrupted (stored checksum ", it->second,
             ", the data gives ", got, ")");
  return true;
}

SafetensorsFile load_verified_checkpoint(const std::string& path) {
  try {
    SafetensorsFile f = load_safetensors(path);
    verify_checkpoint(path, f);
    return f;
  } catch (const Error& e) {
    KDET_FAIL("cannot use checkpoint ", path, ": ", e.what(),
              "\n  (truncated or corrupted; `--resume WORK_DIR` picks the newest valid checkpoint of a run)");
  }
}

std::string resolve_resume(const std::string& arg, std::vector<std::string>* skipped, bool quiet) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(arg, ec)) return arg;
  std::vector<std::pair<int64_t, std::string>> found;  // (iter, path)
  for (auto& e : fs::directory_iterator(arg, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const std::string name = e.path().filename().string();
    const std::string pre = "iter_", suf = ".safetensors";
    if (name.size() <= pre.size() + suf.size() || name.compare(0, pre.size(), pre) != 0 ||
        name.compare(name.size() - suf.size(), suf.size(), suf) != 0)
      continue;
    const std::string num = name.substr(pre.size(), name.size() - pre.size() - suf.size());
    if (num.find_first_not_of("0123456789") != std::string::npos || num.size() > 18) continue;
    found.emplace_back(std::stoll(num), e.path().string());
  }
  KDET_CHECK(!found.empty(), arg, ": no checkpoint (iter_N.safetensors) to resume from");
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::string reasons;
  for (auto& [iter, path] : found) {
    try {
      SafetensorsFile f = load_safetensors(path);
      verify_checkpoint(path, f);
      auto fmt = f.metadata.find("format");
      KDET_CHECK(fmt != f.metadata.end() && fmt->second == "kdet-train-1", path,
                 ": not a kdet training checkpoint (no format kdet-train-1 in its metadata)");
      return path;
    } catch (const Error& e) {
      const std::string why = e.what();
      if (skipped) skipped->push_back(why);
      if (!quiet) std::fprintf(stderr, "resume: skipping %s\n", why.c_str());
      reasons += "\n  " + why;
    }
  }
  KDET_FAIL(arg, ": no valid checkpoint to resume from; every candidate was refused:", reasons);
}

}  // namespace kdet
