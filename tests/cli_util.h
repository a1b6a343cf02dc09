// tests/cli_util.h — helpers for the tests that run the kdet binary or write files: a temporary
// directory removed at scope exit, reading a whole file, and running `kdet ARGS` with its output
// captured. The binary comes from KDET_BIN (set by `make test`); tests skip themselves without it.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace kdet::test {

// /tmp/kdet_test_<tag>_<pid>, created now and removed (with everything in it) at scope exit.
struct TmpDir {
  std::string path;
  explicit TmpDir(const std::string& tag) : path("/tmp/kdet_test_" + tag + "_" + std::to_string(::getpid())) {
    std::filesystem::create_directories(path);
  }
  ~TmpDir() { std::filesystem::remove_all(path); }
  TmpDir(const TmpDir&) = delete;
  TmpDir& operator=(const TmpDir&) = delete;
};

// The whole file ("" when it cannot be read).
inline std::string slurp(const std::string& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// The kdet binary under test (KDET_BIN), or nullptr.
inline const char* kbin() { return std::getenv("KDET_BIN"); }

// Runs `kdet ARGS` with stdout / stderr in DIR/stdout.txt / DIR/stderr.txt; returns the exit status,
// stderr's text in *err.
inline int kdet_run(const std::string& args, const std::string& dir, std::string* err = nullptr) {
  const std::string e = dir + "/stderr.txt";
  const int rc = std::system((std::string(kbin()) + " " + args + " > " + dir + "/stdout.txt 2> " + e).c_str());
  if (err) *err = slurp(e);
  return WEXITSTATUS(rc);
}

}  // namespace kdet::test
