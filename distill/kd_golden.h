// distill/kd_golden.h — reader of the KD golden-file format `kdgold-1` (specs/kd_golden_format.md §1–2).
//
// A golden file is a safetensors container holding one test case of one KD loss. load_kdgold validates
// everything the format requires and throws kdet::Error naming the file (and the key) otherwise:
//   * u64 LE header length n <= 100 000 000 and inside the file; header = one JSON object starting
//     with '{', possibly followed by ASCII spaces only;
//   * "__metadata__" with exactly "format" = "kdgold-1" (any other format string is refused),
//     "method" ∈ kd_methods(), "case" = "<method>_<k>";
//   * every other member {"dtype": "F64", "shape": [...], "data_offsets": [b, e]} (F64 only), e − b =
//     8·Π shape; the ranges, sorted by offset, tile the data buffer exactly (no hole, no overlap, no
//     trailing byte); readers rely only on data_offsets;
//   * keys are ASCII, family ∈ {in, param, hp, out, grad, mid}; hp.* and out.* are 0-d.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kdet::kd {

inline constexpr const char* kKdGoldFormat = "kdgold-1";
inline constexpr uint64_t kKdGoldMaxHeader = 100000000;

// fgd, mgd, amd, dmkd, ssim_kd, fbkd, aid, fitnet, logit_kd_kl, logit_kd_bce.
const std::vector<std::string>& kd_methods();

struct KdGolden {
  std::string path;
  std::string method;
  std::string case_name;
  std::map<std::string, Tensor> tensors;  // all F64 on the CPU
  bool has(const std::string& key) const { return tensors.count(key) > 0; }
  const Tensor& at(const std::string& key) const;  // throws naming the file and the key
};

KdGolden load_kdgold(const std::string& path);
// The same validation on bytes already in memory (`path` is used in messages only).
KdGolden parse_kdgold(const std::string& bytes, const std::string& path);

// The writer side (§1.1–1.3): every tensor converted to F64, laid out contiguously in ascending byte
// order of the keys, header = compact JSON {"__metadata__": {format, method, case}, key: {...}, ...}
// padded with spaces to a multiple of 8. Byte-identical to tests/ref/gen_kd_golden.py's writer.
std::string encode_kdgold(const std::string& method, const std::string& case_name,
                          const std::map<std::string, Tensor>& tensors);
void save_kdgold(const std::string& path, const KdGolden& g);

}  // namespace kdet::kd
