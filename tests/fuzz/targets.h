// tests/fuzz/targets.h — what each fuzz target does with one input, shared by the libFuzzer entry
// points (tests/fuzz/fuzz_<target>.cc, built by `make fuzz` with clang) and the regression replay in
// the normal suite (tests/fuzz/test_fuzz_corpus.cpp replays tests/fuzz/corpus/<target>/*).
//
// Contract under test: any input either loads or is refused with kdet::Error (a clear message).
// Every other exception escapes (libFuzzer reports it as a crash; the replay test fails), and under
// ASan/UBSan every memory error, leak or undefined behaviour aborts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/coco.h"
#include "data/image.h"
#include "data/kitti.h"
#include "engine/check.h"
#include "engine/config.h"
#include "engine/safetensors.h"

namespace kdet::fuzz {

// Runs f; a kdet::Error is an accepted outcome (returns false), anything else propagates.
template <class F>
bool refused_cleanly(F&& f) {
  try {
    f();
    return true;
  } catch (const kdet::Error&) {
    return false;
  }
}

// COCO instances JSON, then on the loaded dataset: training targets, writer, results reader.
inline bool coco_one(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  data::CocoLoadOptions opt;
  opt.verbose = false;
  return refused_cleanly([&] {
    data::LoadReport rep;
    data::Dataset ds = data::parse_coco(text, "fuzz.json", opt, &rep);
    for (auto& im : ds.images) (void)data::train_targets(im);
    (void)data::train_image_indices(ds);
    (void)data::coco_to_string(ds);
    refused_cleanly([&] {
      data::ResultsReport rr;
      (void)data::parse_coco_results(text, "fuzz_results.json", ds, &rr, false);
    });
  });
}

inline bool kitti_one(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  return refused_cleanly([&] { (void)data::parse_kitti_label(text, "000000.txt"); });
}

// The pixel limit is 2^20 here instead of kMaxDecodePixels (2^26): the same checks run, but an input
// whose header declares a large canvas costs milliseconds instead of a second (stb allocates and
// fills the whole canvas), so the fuzzer runs ~10x more inputs. An image returned above the limit
// (a format whose header stbi_info cannot read but stbi_load can) is a finding.
constexpr int64_t kFuzzMaxPixels = int64_t(1) << 20;
inline bool image_one(const uint8_t* data, size_t size) {
  return refused_cleanly([&] {
    data::Image im = data::decode_image(data, size, "fuzz.img", kFuzzMaxPixels);
    if (!(im.w > 0 && im.h > 0 && im.px.size() == static_cast<size_t>(im.w) * im.h * 3)) __builtin_trap();
    if (static_cast<int64_t>(im.w) * im.h > kFuzzMaxPixels) __builtin_trap();
  });
}

inline bool safetensors_one(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  return refused_cleanly([&] {
    SafetensorsFile f = load_safetensors_from_memory(bytes, "fuzz.safetensors");
    for (auto& [name, t] : f.tensors)
      if (t.nbytes() > size) __builtin_trap();  // a tensor larger than the input cannot have been read from it
  });
}

// Inputs with a `base = ...` line are not parsed: `base` reads another file and the fuzzer must not roam the
// file system (base chains are covered by tests/engine/test_hardening.cpp).
inline bool reads_a_base_file(const std::string& text) {
  size_t p = 0;
  while (p < text.size()) {
    size_t e = text.find('\n', p);
    if (e == std::string::npos) e = text.size();
    size_t b = text.find_first_not_of(" \t\r", p);
    if (b < e && text.compare(b, 4, "base") == 0) {
      size_t q = text.find_first_not_of(" \t\r", b + 4);
      if (q < e && text[q] == '=') return true;
    }
    p = e + 1;
  }
  return false;
}

inline bool config_one(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (reads_a_base_file(text)) return false;
  return refused_cleanly([&] {
    Config c = Config::parse(text, "fuzz.cfg");
    (void)c.dump();
    for (const char* sec : {"model", "data", "train", "a"}) {
      for (const std::string& k : c.keys(sec)) {
        const std::string full = std::string(sec) + "." + k;
        refused_cleanly([&] { (void)c.get_int(full); });
        refused_cleanly([&] { (void)c.get_double(full); });
        refused_cleanly([&] { (void)c.get_bool(full); });
        refused_cleanly([&] { (void)c.get_ints(full); });
        refused_cleanly([&] { (void)c.get_doubles(full); });
        refused_cleanly([&] { (void)c.get_strings(full); });
        refused_cleanly([&] { (void)c.get_string(full); });
      }
    }
    refused_cleanly([&] { c.check_all_used(); });
    refused_cleanly([&] { c.apply_override(text.substr(0, text.find('\n'))); });
  });
}

}  // namespace kdet::fuzz
