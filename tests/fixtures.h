// tests/fixtures.h — locating PyTorch parity fixtures (written by tests/ref/make_fixtures.py).
//
// A parity test calls `auto f = load_fixture("conv2d");` which returns std::nullopt when the file is
// missing (no torch on this machine); the test then records a skip that main() prints loudly at the
// end. With KDET_REQUIRE_FIXTURES=1 in the environment (set by `make test` after generating them), a
// missing fixture is a failure instead.
#pragma once
#include <map>
#include <optional>
#include <string>

#include "engine/tensor.h"

namespace kdet::test {

struct Fixture {
  std::string path;
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
  const Tensor& at(const std::string& key) const;
};

std::string fixture_dir();
std::optional<Fixture> load_fixture(const std::string& name);
void report_skipped_fixtures();

}  // namespace kdet::test
