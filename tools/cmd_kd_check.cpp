// kdet kd-check FILE... — runs the engine's KD losses in float64 on kdgold-1 golden files
// (specs/kd_golden_format.md) and compares every out.*, grad.* and mid.* tensor.
// Exit status: 0 when every file passes, 1 when any file fails or is malformed, 2 on a usage error.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "distill/kd_check.h"
#include "tools/commands.h"

namespace kdet::cli {

namespace {
void usage(FILE* f) {
  std::fprintf(f,
               "usage: kdet kd-check [-q|--quiet] FILE...\n"
               "  Checks each kdgold-1 golden file: builds the method from its hp.* and param.* entries, runs\n"
               "  it in float64 on the in.* tensors and compares every out.*, grad.* and mid.* tensor with\n"
               "  max|a-b| <= rtol * max(max|b|, phi * S_family)  (out/mid 1e-9, 1e-9; grad 1e-8, 1e-5).\n"
               "  Prints the max relative error per key (relative to max(max|b|, phi * S)); exits 1 on any\n"
               "  failure or malformed file.\n"
               "  -q     print only failing keys and one summary line per file\n"
               "  --f32  smoke test of the float32 path (inputs/params cast to f32; loose limits: rtol out/mid\n"
               "         1e-4, grad 1e-3, phi 1e-3) — not the format's float64 exactness check\n");
}
}  // namespace

int cmd_kd_check(int argc, char** argv) {
  bool quiet = false;
  kd::KdCheckOptions opts;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    }
    if (!std::strcmp(argv[i], "-q") || !std::strcmp(argv[i], "--quiet")) {
      quiet = true;
      continue;
    }
    if (!std::strcmp(argv[i], "--f32")) {
      opts.dtype = DType::F32;
      continue;
    }
    if (argv[i][0] == '-' && argv[i][1]) {
      std::fprintf(stderr, "kdet kd-check: unknown option '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
    files.push_back(argv[i]);
  }
  if (files.empty()) {
    usage(stderr);
    return 2;
  }
  int failed = 0;
  for (const auto& path : files) {
    const kd::KdCheckReport rep = kd::kd_check_file(path, opts);
    const bool ok = rep.ok();
    std::printf("%s%s: %s", opts.dtype == DType::F32 ? "[f32 smoke] " : "", path.c_str(), rep.method.empty() ? "(unreadable)" : rep.method.c_str());
    if (!rep.case_name.empty()) std::printf(" case %s", rep.case_name.c_str());
    std::printf("\n");
    for (const auto& k : rep.keys) {
      if (quiet && k.pass) continue;
      std::printf("  %-4s %-48s max rel err %9.3e  (max abs err %9.3e, tol rtol %.0e)%s%s\n", k.pass ? "ok" : "FAIL",
                  k.key.c_str(), k.rel_err(), k.max_abs_err, k.rtol, k.note.empty() ? "" : "  ", k.note.c_str());
    }
    for (const auto& s : rep.skipped) std::printf("  SKIP %s (not produced by the engine)\n", s.c_str());
    for (const auto& e : rep.errors) std::printf("  ERROR %s\n", e.c_str());
    size_t bad = 0;
    for (const auto& k : rep.keys) bad += !k.pass;
    std::printf("%s %s: %zu keys compared, %zu failed, %zu errors, worst err/tol %.3g\n", ok ? "PASS" : "FAIL",
                path.c_str(), rep.keys.size(), bad, rep.errors.size(), rep.worst_ratio());
    failed += !ok;
  }
  if (files.size() > 1)
    std::printf("kd-check: %zu file(s), %d failed\n", files.size(), failed);
  return failed ? 1 : 0;
}

}  // namespace kdet::cli
