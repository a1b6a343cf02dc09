// tests/fuzz/test_fuzz_corpus.cpp — replays the fuzz regression corpus (tests/fuzz/corpus/<target>/*)
// through the same code as the libFuzzer targets (tests/fuzz/targets.h), so `make test` keeps checking
// every input the fuzzers found, without clang. Files named seed* are valid inputs and must load;
// crash-* / oom-* / leak-* / timeout-* inputs must be refused with a kdet::Error (the fixed behaviour);
// any other name (input-*) only has to load or be refused cleanly.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
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
  // stb fails this one without a reason (it had "" left from probing the GIF format): never an empty or stale one.
  CHECK(msg("input-png-empty-first-idat").find("cannot decode image (corrupt or unsupported file)") != std::string::npos);
  // 69 bytes that took 11 s and 1.8 GB: stb's zlib read zeros past the end, doubling its output buffer.
  CHECK(msg("oom-png-zlib-expands-past-end").find("compressed data expands beyond a 4x4 image") != std::string::npos);
  CHECK(msg("crash-pgm16-heap-overflow").find("16-bit PNM (maxval 2222) is not supported") != std::string::npos);
  CHECK(msg("crash-jpeg-scan-undefined-huffman-table").find("AC Huffman table 1, which is not defined") !=
        std::string::npos);
}

TEST_CASE("fuzz corpus: a truncated image decodes to the same pixels every time (missing pixels are black)") {
  // An uncompressed 24-bit TGA that declares 8x8 pixels but carries 10 (stb reads whole rows: one row
  // of 8, the 2 of the next are dropped): stb 2.27 left the other 7 rows as they came from malloc
  // (fuzz_image finding; stb's buffers are now zeroed, data/stb_impl.cpp).
  std::vector<uint8_t> tga = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 8, 0, 24, 0};
  for (int i = 0; i < 30; ++i) tga.push_back(0x7F);
  for (int round = 0; round < 2; ++round) {
    // Leave freed blocks of the decoder's sizes full of 0xAB: an uninitialised buffer would show them.
    for (size_t n : {size_t(192), size_t(256), size_t(4096)}) {
      void* junk = std::malloc(n);
      std::memset(junk, 0xAB, n);
      std::free(junk);
    }
    kdet::data::Image im = kdet::data::decode_image(tga.data(), tga.size(), "truncated.tga");
    REQUIRE(im.w == 8);
    REQUIRE(im.h == 8);
    int nonzero = 0;
    for (uint8_t v : im.px) nonzero += v != 0;
    CHECK(nonzero == 24);  // the row the file has (0x7F), the rest black
  }
}
