// engine/checkpoint.h — integrity of training checkpoints (issue 8).
//
// A training checkpoint (tools/train_loop.h) stores in its metadata "checksum" = "crc32:<8 hex digits>": the
// CRC-32 (IEEE, as zlib) of every tensor's bytes in name order (the order save_safetensors writes
// them), followed by the metadata values of format, iter, epoch, batch_in_epoch and seed. A file that
// does not load (truncated, bad header) or whose data does not match its checksum is refused with a
// message naming the file and what is wrong. Checkpoints written before the checksum existed (no
// "checksum" key) still load.
//
// `--resume DIR` (a work directory instead of a file) resumes from the newest valid iter_N.safetensors
// in DIR: damaged ones are skipped with a note on stderr; leftover *.tmp files of an interrupted write
// are never considered.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "engine/tensor.h"

namespace kdet {

uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);  // crc32("123456789") == 0xCBF43926

// "crc32:<8 hex digits>" of tensors + the position metadata (see above).
std::string checkpoint_checksum(const std::map<std::string, Tensor>& tensors,
                                const std::map<std::string, std::string>& metadata);

// Throws "<path>: checkpoint is corrupted (...)" when metadata["checksum"] does not match the data.
// Returns false (nothing to verify) when the file has no checksum.
bool verify_checkpoint(const std::string& path, const SafetensorsFile& f);

// Loads and verifies; every failure (missing, truncated, malformed, checksum) becomes one error naming
// the file and suggesting `--resume WORK_DIR`.
SafetensorsFile load_verified_checkpoint(const std::string& path);

// `arg` is a checkpoint file (returned as is) or a work directory: the newest iter_N.safetensors in it
// that loads and verifies. `skipped` (optional) receives "<file>: <reason>" for each newer one passed
// over (also printed to stderr unless quiet). Throws when the directory holds no valid checkpoint.
std::string resolve_resume(const std::string& arg, std::vector<std::string>* skipped = nullptr, bool quiet = false);

}  // namespace kdet
