#include "engine/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/check.h"

namespace kdet {

namespace {

constexpr size_t kAlign = 64;
constexpr size_t kCacheMin = 1 << 16;          // blocks below 64 KiB go straight to malloc
constexpr int64_t kCacheLimit = int64_t(4) << 30;  // never keep more than 4 GiB idle

// Size classes: 4 steps per power of two, so waste is below 19%.
size_t size_class(size_t n) {
  if (n < kCacheMin) return (n + kAlign - 1) / kAlign * kAlign;
  size_t p = 1;
  while (p * 2 <= n) p *= 2;
  size_t step = p / 4;
  return (n + step - 1) / step * step;
}

struct CpuCache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;  // size class -> blocks
  std::unordered_map<void*, size_t> lent;             // blocks handed out for a smaller class -> their class
  AllocStats stats;
};

CpuCache& cache() {
  static CpuCache* c = new CpuCache();  // leaked on purpose: tensors in static objects outlive main
  return *c;
}

DeviceAllocator& cuda_alloc_hooks() {
  static DeviceAllocator a;
  return a;
}

}  // namespace

void* cpu_alloc(size_t nbytes) {
  // Beyond 2^60 bytes no machine has the memory, and size_class would overflow: refuse up front.
  KDET_CHECK(nbytes <= (size_t(1) << 60), "out of memory: ", nbytes, " bytes (",
             static_cast<double>(nbytes) / double(1 << 30), " GiB) requested on cpu");
  size_t sz = size_class(nbytes == 0 ? kAlign : nbytes);
  auto& c = cache();
  {
    std::lock_guard<std::mutex> lk(c.mu);
    c.stats.allocs++;
    if (sz >= kCacheMin) {
      // The idle block of the smallest cached class in [sz, 2 sz): an exact hit, or a larger block lent
      // out (remembered in `lent`, so it returns to its own class). Reusing idle memory instead of taking
      // new memory keeps a changing mix of sizes (RoI counts, image sizes) from piling up idle blocks of
      // every size it has seen, without giving memory back to the OS (page faults on the next use).
      for (auto it = c.free_blocks.lower_bound(sz); it != c.free_blocks.end() && it->first < 2 * sz; ++it) {
        if (it->second.empty()) continue;
        void* p = it->second.back();
        it->second.pop_back();
        const size_t got = it->first;
        c.stats.cached_bytes -= static_cast<int64_t>(got);
        c.stats.cache_hits++;
        if (got != sz) c.lent.emplace(p, got);
        c.stats.current_bytes += static_cast<int64_t>(got);
        if (c.stats.current_bytes > c.stats.peak_bytes) c.stats.peak_bytes = c.stats.current_bytes;
        return p;
      }
    }
    c.stats.current_bytes += static_cast<int64_t>(sz);
    if (c.stats.current_bytes > c.stats.peak_bytes) c.stats.peak_bytes = c.stats.current_bytes;
  }
  void* p = std::aligned_alloc(kAlign, sz);
  if (p == nullptr) {
    {
      std::lock_guard<std::mutex> lk(c.mu);  // the failed block was counted above: take it back
      c.stats.allocs--;
      c.stats.current_bytes -= static_cast<int64_t>(sz);
    }
    KDET_FAIL("out of memory: could not allocate ", sz, " bytes (", static_cast<double>(sz) / double(1 << 30),
              " GiB) on cpu");
  }
  return p;
}

void cpu_free(void* p, size_t nbytes) {
  if (!p) return;
  size_t sz = size_class(nbytes == 0 ? kAlign : nbytes);
  auto& c = cache();
  {
    std::lock_guard<std::mutex> lk(c.mu);
    if (sz >= kCacheMin && !c.lent.empty()) {
      auto l = c.lent.find(p);
      if (l != c.lent.end()) {
        sz = l->second;
        c.lent.erase(l);
      }
    }
    c.stats.current_bytes -= static_cast<int64_t>(sz);
    if (sz >= kCacheMin && c.stats.cached_bytes + static_cast<int64_t>(sz) <= kCacheLimit) {
      c.free_blocks[sz].push_back(p);
      c.stats.cached_bytes += static_cast<int64_t>(sz);
      return;
    }
  }
  std::free(p);
}

void alloc_release_cache() {
  auto& c = cache();
  std::lock_guard<std::mutex> lk(c.mu);
  for (auto& kv : c.free_blocks)
    for (void* p : kv.second) std::free(p);
  c.free_blocks.clear();
  c.stats.cached_bytes = 0;
}

AllocStats alloc_stats(Device d) {
  if (d.is_cuda()) {
    KDET_CHECK(cuda_alloc_hooks().stats, "alloc_stats: CUDA backend not available");
    return cuda_alloc_hooks().stats(d.index);
  }
  auto& c = cache();
  std::lock_guard<std::mutex> lk(c.mu);
  return c.stats;
}

void alloc_reset_peak(Device d) {
  if (d.is_cuda()) {
    if (cuda_alloc_hooks().reset_peak) cuda_alloc_hooks().reset_peak(d.index);
    return;
  }
  auto& c = cache();
  std::lock_guard<std::mutex> lk(c.mu);
  c.stats.peak_bytes = c.stats.current_bytes;
}

void set_cuda_allocator(const DeviceAllocator& a) { cuda_alloc_hooks() = a; }
const DeviceAllocator& cuda_allocator() { return cuda_alloc_hooks(); }

Storage::Storage(size_t nbytes, Device d) : nbytes_(nbytes), device_(d) {
  if (d.is_cpu()) {
    ptr_ = cpu_alloc(nbytes);
  } else {
    KDET_CHECK(cuda_alloc_hooks().alloc, "cannot allocate on ", d,
               ": this build of kdet has no CUDA backend (rebuild with make CUDA=1)");
    ptr_ = cuda_alloc_hooks().alloc(nbytes, d.index);
  }
}

Storage::~Storage() {
  if (device_.is_cpu())
    cpu_free(ptr_, nbytes_);
  else if (cuda_alloc_hooks().free)
    cuda_alloc_hooks().free(ptr_, nbytes_, device_.index);
}

}  // namespace kdet
