// engine/cuda/context.cu — device discovery, the per-device context registry, error reporting and the
// caching device allocator (installed into engine/allocator.h when this object is linked in, which it
// always is in a KDET_CUDA=1 build: engine/backend.cpp calls device_count()).
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "engine/allocator.h"
#include "engine/cuda/context.h"
#include "engine/cuda/cuda_backend.h"

namespace kdet::cuda {

// ---- errors -----------------------------------------------------------------------------------------

void throw_error(const char* op, const char* call, const char* what, const char* file, int line) {
  std::string c(call);
  const size_t paren = c.find('(');
  if (paren != std::string::npos) c = c.substr(0, paren) + "(...)";
  KDET_FAIL(op, " (cuda): ", c, " failed: ", what, " [", file, ":", line, "]");
}

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

// ---- devices ----------------------------------------------------------------------------------------

namespace {

struct DeviceInfo {
  int count = 0;
  std::string status;
};

// Queried once; cudaGetDeviceCount fails cleanly (no abort) without a driver or GPU.
const DeviceInfo& device_info() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      d.count = 0;
      d.status = std::string("no CUDA device (cudaGetDeviceCount: ") + cudaGetErrorString(e) + ")";
      return d;
    }
    d.count = n;
    if (n == 0) {
      d.status = "no CUDA device (cudaGetDeviceCount found 0)";
      return d;
    }
    std::ostringstream s;
    s << n << " CUDA device" << (n > 1 ? "s" : "") << ":";
    for (int i = 0; i < n; ++i) {
      cudaDeviceProp p;
      if (cudaGetDeviceProperties(&p, i) == cudaSuccess)
        s << (i ? "," : "") << " cuda:" << i << " " << p.name << " (sm_" << p.major << p.minor << ", "
          << (p.totalGlobalMem >> 20) << " MiB)";
      else
        (void)cudaGetLastError();
    }
    d.status = s.str();
    return d;
  }();
  return info;
}

constexpr int kMaxDevices = 64;

}  // namespace

int device_count() { return device_info().count; }
bool gpu_available() { return device_count() > 0; }
std::string device_status() { return device_info().status; }

// ---- contexts ---------------------------------------------------------------------------------------

Context::Context(int device) : device_(device) {
  KDET_CUDA_CHECK(cudaSetDevice(device), "cuda context");
  KDET_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cuda context");
  const char* env = std::getenv("KDET_CUDA_SYNC");
  sync_each_kernel_ = env != nullptr && std::strcmp(env, "0") != 0 && env[0] != '\0';
}

cublasHandle_t Context::cublas() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!cublas_) {
    KDET_CUDA_CHECK(cudaSetDevice(device_), "cublas");
    KDET_CUBLAS_CHECK(cublasCreate(&cublas_), "cublas");
    KDET_CUBLAS_CHECK(cublasSetStream(cublas_, stream_), "cublas");
  }
  return cublas_;
}

cudnnHandle_t Context::cudnn() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!cudnn_) {
    KDET_CUDA_CHECK(cudaSetDevice(device_), "cudnn");
    KDET_CUDNN_CHECK(cudnnCreate(&cudnn_), "cudnn");
    KDET_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_), "cudnn");
  }
  return cudnn_;
}

bool Context::find_conv_algo(const std::string& key, ConvAlgo& out) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = conv_algos_.find(key);
  if (it == conv_algos_.end()) return false;
  out = it->second;
  return true;
}

void Context::store_conv_algo(const std::string& key, const ConvAlgo& a) {
  std::lock_guard<std::mutex> lk(mu_);
  conv_algos_[key] = a;
}

namespace {
struct Registry {
  std::mutex mu;
  Context* ctx[kMaxDevices] = {};  // never destroyed (see context.h)
};
Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}
}  // namespace

Context& context(int device, const char* op) {
  const int n = device_count();
  KDET_CHECK(n > 0, op, ": tensor on cuda:", device, " but ", device_status());
  KDET_CHECK(device >= 0 && device < n && device < kMaxDevices, op, ": cuda:", device, " does not exist (",
             device_status(), ")");
  Registry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  if (!r.ctx[device]) r.ctx[device] = new Context(device);
  return *r.ctx[device];
}

Context& activate(Device d, const char* op) {
  KDET_CHECK(d.is_cuda(), op, " (cuda): expected a CUDA tensor, got one on ", d);
  Context& ctx = context(d.index, op);
  KDET_CUDA_CHECK(cudaSetDevice(d.index), op);
  return ctx;
}

Context& activate(const Tensor& t, const char* op) {
  KDET_CHECK(t.defined(), op, " (cuda): undefined tensor");
  return activate(t.device(), op);
}

void check_launch(Context& ctx, const char* op) {
  KDET_CUDA_CHECK(cudaGetLastError(), op);
  if (ctx.sync_each_kernel()) KDET_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()), op);
}

void synchronize(int device) {
  Context& ctx = activate(Device::cuda(device), "synchronize");
  KDET_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()), "synchronize");
}

void set_allow_tf32(bool on, int device) { context(device, "set_allow_tf32").set_allow_tf32(on); }
bool allow_tf32(int device) { return context(device, "allow_tf32").allow_tf32(); }
void set_conv_benchmark(bool on, int device) { context(device, "set_conv_benchmark").set_conv_benchmark(on); }
bool conv_benchmark(int device) { return context(device, "conv_benchmark").conv_benchmark(); }
void set_deterministic(bool on, int device) { context(device, "set_deterministic").set_deterministic(on); }
bool deterministic(int device) { return context(device, "deterministic").deterministic(); }

// ---- caching device allocator ------------------------------------------------------------------------
//
// Blocks are rounded up to a size class (512-byte granularity below 1 MiB, then 4 classes per power of
// two: < 25% waste) and kept on free lists keyed by (stream, class) when their tensor dies. A block is
// handed out again only for an allocation on the same stream, where stream order already guarantees that
// earlier kernels using it have finished before later ones start, so no event or sync is needed. Freeing
// never calls CUDA (safe at any point, including process exit); cached blocks go back to the driver on
// release_cache() or when cudaMalloc runs out of memory.

namespace {

constexpr size_t kSmall = size_t(1) << 20;

size_t device_size_class(size_t n) {
  if (n == 0) n = 1;
  if (n < kSmall) return (n + 511) / 512 * 512;
  size_t p = kSmall;
  while (p * 2 <= n) p *= 2;
  const size_t step = p / 4;
  return (n + step - 1) / step * step;
}

struct LiveBlock {
  size_t size;
  cudaStream_t stream;
};

struct DeviceCache {
  std::mutex mu;
  std::map<std::pair<cudaStream_t, size_t>, std::vector<void*>> free_blocks;
  std::unordered_map<void*, LiveBlock> live;
  AllocStats stats;
};

DeviceCache& device_cache(int device) {
  static DeviceCache* caches[kMaxDevices] = {};
  static std::mutex mu;
  std::lock_guard<std::mutex> lk(mu);
  if (!caches[device]) caches[device] = new DeviceCache();  // never destroyed (frees may run at exit)
  return *caches[device];
}

// Returns every cached block of the device to the driver (caller holds c.mu).
void release_locked(DeviceCache& c, int device) {
  if (c.free_blocks.empty()) return;
  KDET_CUDA_CHECK(cudaSetDevice(device), "release_cache");
  for (auto& kv : c.free_blocks)
    for (void* p : kv.second) KDET_CUDA_CHECK(cudaFree(p), "release_cache");
  c.free_blocks.clear();
  c.stats.cached_bytes = 0;
}

void* device_alloc(size_t nbytes, int device) {
  KDET_CHECK(nbytes <= (size_t(1) << 50), "out of memory: ", nbytes, " bytes requested on cuda:", device);
  Context& ctx = activate(Device::cuda(device), "cuda allocator");
  const size_t sz = device_size_class(nbytes);
  DeviceCache& c = device_cache(device);
  std::lock_guard<std::mutex> lk(c.mu);
  c.stats.allocs++;
  auto it = c.free_blocks.find({ctx.stream(), sz});
  void* p = nullptr;
  if (it != c.free_blocks.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    c.stats.cached_bytes -= static_cast<int64_t>(sz);
    c.stats.cache_hits++;
  } else {
    cudaError_t e = cudaMalloc(&p, sz);
    if (e == cudaErrorMemoryAllocation) {  // give the cache back to the driver and try once more
      (void)cudaGetLastError();
      release_locked(c, device);
      e = cudaMalloc(&p, sz);
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      c.stats.allocs--;
      KDET_FAIL("out of memory on cuda:", device, ": could not allocate ", sz, " bytes (",
                static_cast<double>(sz) / double(1 << 20), " MiB; ", c.stats.current_bytes >> 20,
                " MiB in live tensors): ", cudaGetErrorString(e));
    }
  }
  c.live[p] = LiveBlock{sz, ctx.stream()};
  c.stats.current_bytes += static_cast<int64_t>(sz);
  if (c.stats.current_bytes > c.stats.peak_bytes) c.stats.peak_bytes = c.stats.current_bytes;
  return p;
}

void device_free(void* p, size_t /*nbytes*/, int device) {
  if (!p || device < 0 || device >= kMaxDevices) return;
  DeviceCache& c = device_cache(device);
  std::lock_guard<std::mutex> lk(c.mu);
  auto it = c.live.find(p);
  if (it == c.live.end()) return;  // not ours (cannot happen through Storage); never throw from a destructor
  const LiveBlock b = it->second;
  c.live.erase(it);
  c.stats.current_bytes -= static_cast<int64_t>(b.size);
  c.stats.cached_bytes += static_cast<int64_t>(b.size);
  c.free_blocks[{b.stream, b.size}].push_back(p);
}

AllocStats device_stats(int device) {
  KDET_CHECK(device >= 0 && device < kMaxDevices, "alloc_stats: bad device cuda:", device);
  DeviceCache& c = device_cache(device);
  std::lock_guard<std::mutex> lk(c.mu);
  return c.stats;
}

void device_reset_peak(int device) {
  if (device < 0 || device >= kMaxDevices) return;
  DeviceCache& c = device_cache(device);
  std::lock_guard<std::mutex> lk(c.mu);
  c.stats.peak_bytes = c.stats.current_bytes;
}

// Installs the allocator before main() (engine/allocator.h keeps the hooks in a function-local static,
// so the order of static initialisation does not matter).
const bool kAllocatorInstalled = [] {
  DeviceAllocator a;
  a.alloc = device_alloc;
  a.free = device_free;
  a.stats = device_stats;
  a.reset_peak = device_reset_peak;
  set_cuda_allocator(a);
  return true;
}();

}  // namespace

void release_cache(int device) {
  KDET_CHECK(device >= 0 && device < kMaxDevices, "release_cache: bad device cuda:", device);
  if (device_count() == 0) return;
  DeviceCache& c = device_cache(device);
  std::lock_guard<std::mutex> lk(c.mu);
  release_locked(c, device);
}

}  // namespace kdet::cuda
