// tools/cuda_emu/emu_internal.h — shared by the CUDA EMULATION's runtime, cuBLAS, cuDNN and cub parts.
#pragma once
#include <cstddef>
#include <string>

#include "tools/cuda_emu/include/cuda_runtime.h"

namespace kdet_emu {

enum class Space { Host, Device, Pinned };
// Device blocks (an inaccessible-to-host arena, filled with 0xff) and pinned host blocks (emu_memory.cpp).
void* device_alloc(size_t n);
bool device_free(void* p);
void* pinned_alloc(size_t n);
bool pinned_free(void* p);
// Where [p, p + n) lies: inside one cudaMalloc block, one cudaHostAlloc block, or neither (host).
Space space_of(const void* p, size_t n);
// [p, p + n) lies inside one device allocation (true for n == 0).
bool device_range(const void* p, size_t n);
// Records an error for cudaGetLastError (its message is appended by cudaGetErrorString) and returns it.
cudaError_t set_error(cudaError_t e, const std::string& msg);
// Prints "CUDA EMULATION: msg" on stderr unless quiet (the self-test provokes errors on purpose).
void report(const std::string& msg);
void set_quiet(bool q);

}  // namespace kdet_emu
