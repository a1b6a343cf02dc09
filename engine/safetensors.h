// engine/safetensors.h — the checkpoint and fixture format (https://github.com/huggingface/safetensors).
//
// Layout: u64 little-endian header length N, N bytes of JSON
//   {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// then the raw little-endian data; offsets are relative to the end of the header. Files written by
// the Python package load here and vice versa. Reading validates everything (header size, JSON, dtype
// names, offsets inside the file, offsets consistent with shape×dtype, no overlaps) and throws an
// error naming the file and the tensor.
#pragma once
#include <map>
#include <string>

#include "engine/tensor.h"

namespace kdet {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;  // on the CPU
  std::map<std::string, std::string> metadata;
};

SafetensorsFile load_safetensors(const std::string& path);
// Same checks, from the file's bytes in memory (`name` stands for the file in messages).
SafetensorsFile load_safetensors_from_memory(const std::string& bytes, const std::string& name);
// Writes atomically: to path + ".tmp", then rename. Tensors may be on any device (copied to CPU).
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace kdet
