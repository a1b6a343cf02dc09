#include "tests/fixtures.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>

#include "engine/safetensors.h"

namespace kdet::test {

namespace {
std::set<std::string>& skipped() {
  static std::set<std::string> s;
  return s;
}
}  // namespace

const Tensor& Fixture::at(const std::string& key) const {
  auto it = tensors.find(key);
  KDET_CHECK(it != tensors.end(), path, ": fixture has no tensor '", key, "'");
  return it->second;
}

std::string fixture_dir() {
  const char* d = std::getenv("KDET_FIXTURES");
  return d ? d : "build/fixtures";
}

std::optional<Fixture> load_fixture(const std::string& name) {
  std::string path = fixture_dir() + "/" + name + ".safetensors";
  std::ifstream probe(path);
  if (!probe.good()) {
    const char* req = std::getenv("KDET_REQUIRE_FIXTURES");
    if (req && std::string(req) == "1") {
      FAIL_CHECK("missing PyTorch fixture " << path << " (KDET_REQUIRE_FIXTURES=1)");
    } else {
      skipped().insert(name);
    }
    return std::nullopt;
  }
  auto st = load_safetensors(path);
  return Fixture{path, std::move(st.tensors), std::move(st.metadata)};
}

void report_skipped_fixtures() {
  if (skipped().empty()) return;
  std::fprintf(stderr,
               "\n*** WARNING: %zu PyTorch parity fixture(s) missing in %s, parity checks SKIPPED:\n***   ",
               skipped().size(), fixture_dir().c_str());
  for (auto& s : skipped()) std::fprintf(stderr, "%s ", s.c_str());
  std::fprintf(stderr, "\n*** Generate them with `make fixtures` (needs /usr/bin/python3 with torch).\n\n");
}

}  // namespace kdet::test
