// tests/fuzz/fuzz_kitti.cc — libFuzzer entry point for the kitti target (tests/fuzz/targets.h); built by
// `make fuzz` (clang, -fsanitize=fuzzer,address,undefined). Not a .cpp: the test suite globs those.
#include "tests/fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kdet::fuzz::kitti_one(data, size);
  return 0;
}
