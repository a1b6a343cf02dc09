// engine/allocator.h — memory for tensors.
//
// CPU: 64-byte aligned blocks (Eigen maps and AVX-512 loads want it). Large blocks are cached by
// size class and reused, because glibc mmaps and page-faults every big buffer back on each call (see
// specs/cpu_peers.md §5: ~25% of a ResNet-50 step in PyTorch). A request with no idle block of its own
// class takes the idle block of the smallest class in [size, 2 size) before asking for new memory (the
// block goes back to its own class when freed), so a changing mix of sizes does not pile up idle
// blocks of every size it has seen. Stats count bytes handed out to tensors (current/peak, a lent block
// at its real size), not bytes held in the cache.
// CUDA: the CUDA backend installs its allocator here (engine/cuda/); without it CUDA storage throws.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/device.h"

namespace kdet {

struct AllocStats {
  int64_t current_bytes = 0;  // bytes in live tensors
  int64_t peak_bytes = 0;     // max of current_bytes since the last reset_peak
  int64_t cached_bytes = 0;   // bytes kept for reuse (not counted in current)
  int64_t allocs = 0;         // number of allocations served
  int64_t cache_hits = 0;     // ...of which came from the cache
};

AllocStats alloc_stats(Device d = Device::cpu());
void alloc_reset_peak(Device d = Device::cpu());
// Gives cached CPU blocks back to the OS.
void alloc_release_cache();

void* cpu_alloc(size_t nbytes);
void cpu_free(void* p, size_t nbytes);

// Hooks installed by the CUDA backend when it is built in.
struct DeviceAllocator {
  void* (*alloc)(size_t nbytes, int device) = nullptr;
  void (*free)(void* p, size_t nbytes, int device) = nullptr;
  AllocStats (*stats)(int device) = nullptr;
  void (*reset_peak)(int device) = nullptr;
};
void set_cuda_allocator(const DeviceAllocator& a);
const DeviceAllocator& cuda_allocator();

// A refcounted block of memory on one device. Views of a tensor share one Storage.
class Storage {
 public:
  Storage(size_t nbytes, Device d);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return ptr_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

}  // namespace kdet
