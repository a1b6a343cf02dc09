// tests/fuzz/test_fuzz_corpus.cpp — replays the fuzz regression corpus (tests/fuzz/corpus/<target>/*)
// through the same code as the libFuzzer targets (tests/fuzz/targets.h), so `make test` keeps checking
// every input the fuzzers found, without clang. Files named seed* are valid inputs and must load;
// crash-* / oom-* / leak-* / timeout-* inputs must be refused with a kdet::Error (the fixed behaviour).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/fuzz/targets.h"

namespace {

std::vector<std::filesystem::path> corpus(const std::string& target) {
  std::vector<std::filesystem::path> out;
  const std::filesystem::path dir = std::filesystem::path("tests/fuzz/corpus") / target;
  if (std::filesystem::is_directory(dir))
    for (auto& e : std::filesystem::directory_iterator(dir))
      if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint8_t> bytes_of(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), {});
}

template <class F>
void replay(const std::string& target, F&& one) {
  auto files = corpus(target);
  REQUIRE_MESSAGE(!files.empty(), "no regression corpus for ", target, " (run the suite from the repository root)");
  for (auto& p : files) {
    const std::string name = p.filename().string();
    auto b = bytes_of(p);
    INFO(target, ": ", name);
    const auto t0 = std::chrono::steady_clock::now();
    bool loaded = false;
    CHECK_NOTHROW(loaded = one(b.data(), b.size()));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK_MESSAGE(s < 2.0, name, " took ", s, " s");  // the fuzzer's timeouts stay fixed too
    if (name.rfind("seed", 0) == 0) CHECK_MESSAGE(loaded, name, " is a valid input and must load");
    for (const char* bad : {"crash-", "oom-", "leak-", "timeout-"})
      if (name.rfind(bad, 0) == 0) CHECK_MESSAGE(!loaded, name, " must be refused with a clear error");
  }
}

}  // namespace

TEST_CASE("fuzz corpus: coco") { replay("coco", kdet::fuzz::coco_one); }
TEST_CASE("fuzz corpus: kitti") { replay("kitti", kdet::fuzz::kitti_one); }
TEST_CASE("fuzz corpus: image") { replay("image", kdet::fuzz::image_one); }
TEST_CASE("fuzz corpus: safetensors") { replay("safetensors", kdet::fuzz::safetensors_one); }
TEST_CASE("fuzz corpus: config") { replay("config", kdet::fuzz::config_one); }

TEST_CASE("fuzz corpus: the image findings are refused with their reason") {
  auto msg = [](const char* file) -> std::string {
    auto b = bytes_of(std::filesystem::path("tests/fuzz/corpus/image") / file);
    REQUIRE(!b.empty());
    try {
      kdet::data::decode_image(b.data(), b.size(), file);
    } catch (const kdet::Error& e) {
      return e.what();
    }
    return "";
  };
  CHECK(msg("crash-jpeg-dht-overflow").find("Huffman table declares more than 256 codes") != std::string::npos);
  CHECK(msg("crash-zero-height").find("pixels") != std::string::npos);
  CHECK(msg("oom-gif-14649x14649").find("14649x14649 exceeds the limit") != std::string::npos);
  CHECK(msg("crash-pnm-header-int-overflow").find("corrupt PNM header") != std::string::npos);
  CHECK(msg("crash-jpeg-scan-undefined-huffman-table").find("AC Huffman table 1, which is not defined") !=
        std::string::npos);
}
