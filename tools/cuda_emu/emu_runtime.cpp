// tools/cuda_emu/emu_runtime.cpp — CUDA EMULATION on the CPU: the runtime API of include/cuda_runtime.h
// and the kernel executor. Validates kernel logic and API use as modelled; not GPU timing, not races.
//
// Executor: the blocks of a grid run in order. Within a block, thread 0 runs first on a fiber (its own
// stack). If it finishes without reaching __syncthreads, the kernel has no barrier in this block and the
// other threads run one after another on the host stack (a __syncthreads reached by one of them is a
// divergent barrier: the launch fails). Otherwise every thread gets a fiber and they run round robin: each
// runs until its next __syncthreads or its end. After each round every live thread must wait at the same
// barrier (same count) and no thread may have exited while others wait; else the launch fails with
// "divergent __syncthreads" (undefined behaviour on a GPU: a hang or garbage).
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "tools/cuda_emu/include/cuda_runtime.h"
#include "tools/cuda_emu/emu_internal.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace kdet_emu {

// ---- errors ------------------------------------------------------------------------------------------

namespace {
std::mutex g_err_mu;
cudaError_t g_last = cudaSuccess;  // what cudaGetLastError returns (and clears)
cudaError_t g_msg_code = cudaSuccess;  // the error g_msg describes
std::string g_msg;
}  // namespace

cudaError_t set_error(cudaError_t e, const std::string& msg) {
  std::lock_guard<std::mutex> lk(g_err_mu);
  g_last = g_msg_code = e;
  g_msg = "CUDA EMULATION: " + msg;
  return e;
}

namespace {
bool g_quiet = false;
}
void set_quiet(bool q) { g_quiet = q; }
void report(const std::string& msg) {
  if (!g_quiet) std::fprintf(stderr, "CUDA EMULATION: %s\n", msg.c_str());
}

void fail_launch(const char* kernel, const char* why) {
  report(std::string("kernel ") + kernel + ": " + why);
  set_error(cudaErrorLaunchFailure, std::string("kernel ") + kernel + ": " + why);
}

// ---- fibers (x86-64 System V) ----------------------------------------------------------------------------

#if !defined(__x86_64__)
#error "the CUDA emulation's fibers are written for x86-64"
#endif

extern "C" void kdet_emu_switch(void** save_sp, void* load_sp);
// Saves the callee-saved registers on the current stack, stores its pointer in *save_sp, loads load_sp
// and pops the registers saved there (a new fiber's stack holds zeros and the entry address).
asm(R"(
  .text
  .globl kdet_emu_switch
  .type kdet_emu_switch, @function
kdet_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size kdet_emu_switch, .-kdet_emu_switch
)");

namespace {

constexpr size_t kStackBytes = size_t(256) << 10;  // per thread (a guard page below it)
constexpr size_t kPage = 4096;

struct Fiber {
  char* base = nullptr;  // mapping: guard page + stack
  void* sp = nullptr;
  int barriers = 0;
  bool done = false;
  bool waiting = false;
};

struct Exec {
  std::vector<Fiber> fibers;
  void* sched_sp = nullptr;
  int cur = -1;
  bool direct = false;  // threads run on the host stack (after the first thread run showed no barrier)
  int first = 0;        // that thread
  Body body{};
};

Exec g_exec;  // used under g_launch_mu only
std::mutex g_launch_mu;

// KDET_CUDA_EMU_ORDER=reverse runs the blocks of a grid and the threads of a block in reverse order: a
// kernel whose result depends on the order (one thread reading what another writes between two barriers)
// has a data race on a GPU, and then gives different results in the two orders.
bool reverse_order() {
  static const bool r = [] {
    const char* e = std::getenv("KDET_CUDA_EMU_ORDER");
    return e && std::strcmp(e, "reverse") == 0;
  }();
  return r;
}

// Launch statistics (under g_launch_mu), printed at exit: one line, or per kernel with KDET_CUDA_EMU_STATS=1.
struct KernelStats {
  uint64_t launches = 0, blocks = 0, threads = 0, barrier_blocks = 0;
};
std::map<std::string, KernelStats>* g_stats = nullptr;

void print_stats() {
  std::lock_guard<std::mutex> lk(g_launch_mu);
  KernelStats t;
  for (const auto& [name, k] : *g_stats) {
    t.launches += k.launches, t.blocks += k.blocks, t.threads += k.threads, t.barrier_blocks += k.barrier_blocks;
  }
  std::fprintf(stderr,
               "CUDA EMULATION%s: %llu kernel launches of %zu kernels (%llu blocks, %llu threads; %llu blocks ran "
               "their threads as fibers through __syncthreads)\n",
               reverse_order() ? " (reverse order)" : "", (unsigned long long)t.launches, g_stats->size(), (unsigned long long)t.blocks,
               (unsigned long long)t.threads, (unsigned long long)t.barrier_blocks);
  const char* env = std::getenv("KDET_CUDA_EMU_STATS");
  if (env && env[0] && std::strcmp(env, "0") != 0)
    for (const auto& [name, k] : *g_stats)
      std::fprintf(stderr, "  %-40s %8llu launches %10llu blocks %12llu threads %8llu barrier blocks\n", name.c_str(),
                   (unsigned long long)k.launches, (unsigned long long)k.blocks, (unsigned long long)k.threads,
                   (unsigned long long)k.barrier_blocks);
}

struct Divergence : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fiber_entry() {
  Fiber& f = g_exec.fibers[g_exec.cur];
  g_exec.body.run(g_exec.body.self);
  f.done = true;
  kdet_emu_switch(&f.sp, g_exec.sched_sp);
  std::abort();  // a finished fiber is never resumed
}

void start_fiber(int t) {
  Fiber& f = g_exec.fibers[t];
  if (!f.base) {
    void* m = mmap(nullptr, kStackBytes + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("CUDA EMULATION: mmap of a fiber stack failed");
    mprotect(m, kPage, PROT_NONE);  // stack overflow -> SIGSEGV instead of silent corruption
    f.base = static_cast<char*>(m);
  }
  // Top of stack: [0 = fake return address of fiber_entry][fiber_entry][6 saved registers = 0].
  auto* top = reinterpret_cast<uintptr_t*>(f.base + kPage + kStackBytes);
  top[-1] = 0;
  top[-2] = reinterpret_cast<uintptr_t>(&fiber_entry);
  for (int i = 3; i <= 8; ++i) top[-i] = 0;
  f.sp = top - 8;
  f.barriers = 0;
  f.done = f.waiting = false;
}

void set_thread(int t, dim3 b) {
  const unsigned u = static_cast<unsigned>(t);
  threadIdx = uint3{u % b.x, (u / b.x) % b.y, u / (b.x * b.y)};
}

void resume(int t, dim3 b) {
  g_exec.cur = t;
  set_thread(t, b);
  Fiber& f = g_exec.fibers[t];
  f.waiting = false;
  kdet_emu_switch(&g_exec.sched_sp, f.sp);
}

// KDET_CUDA_EMU_MAX_GRID=n launches at most n blocks along x (a stress mode: engine/cuda/launch.cuh says every
// kernel loops grid-stride, so its result must not depend on the grid size; this checks that claim).
unsigned max_grid_x() {
  static const unsigned m = [] {
    const char* e = std::getenv("KDET_CUDA_EMU_MAX_GRID");
    const long v = e ? std::strtol(e, nullptr, 10) : 0;
    return v > 0 ? static_cast<unsigned>(v) : 0u;
  }();
  return m;
}

// Runs one block; throws Divergence on a barrier not reached by every thread. Returns whether the block
// synchronised (ran as fibers).
bool run_block(int nthreads, dim3 b) {
  if (static_cast<int>(g_exec.fibers.size()) < nthreads) g_exec.fibers.resize(nthreads);
  const bool rev = reverse_order();
  auto ord = [&](int i) { return rev ? nthreads - 1 - i : i; };  // i-th thread to run
  const int first = ord(0);
  start_fiber(first);
  resume(first, b);
  if (g_exec.fibers[first].done) {  // no barrier: the rest run plainly
    g_exec.direct = true;
    g_exec.first = first;
    for (int i = 1; i < nthreads; ++i) {
      g_exec.cur = ord(i);
      set_thread(g_exec.cur, b);
      g_exec.body.run(g_exec.body.self);
    }
    g_exec.direct = false;
    return false;
  }
  for (int i = 1; i < nthreads; ++i) {
    start_fiber(ord(i));
    resume(ord(i), b);
  }
  for (;;) {
    int live = -1, exited = -1;
    for (int t = 0; t < nthreads; ++t) {
      const Fiber& f = g_exec.fibers[t];
      if (f.done) {
        exited = t;
        continue;
      }
      if (live >= 0 && f.barriers != g_exec.fibers[live].barriers)
        throw Divergence("divergent __syncthreads: thread " + std::to_string(live) + " waits at its barrier #" +
                         std::to_string(g_exec.fibers[live].barriers) + ", thread " + std::to_string(t) +
                         " at its barrier #" + std::to_string(f.barriers));
      live = t;
    }
    if (live < 0) return true;
    if (exited >= 0)
      throw Divergence("divergent __syncthreads: thread " + std::to_string(exited) +
                       " exited while thread " + std::to_string(live) + " waits at its barrier #" +
                       std::to_string(g_exec.fibers[live].barriers));
    for (int i = 0; i < nthreads; ++i) resume(ord(i), b);
  }
}

}  // namespace

void syncthreads() {
  if (g_exec.cur < 0) {
    std::fprintf(stderr, "CUDA EMULATION: __syncthreads() called outside a kernel\n");
    std::abort();
  }
  if (g_exec.direct)
    throw Divergence("divergent __syncthreads: thread " + std::to_string(g_exec.first) +
                     " finished without one, thread " + std::to_string(g_exec.cur) + " reached one");
  Fiber& f = g_exec.fibers[g_exec.cur];
  ++f.barriers;
  f.waiting = true;
  kdet_emu_switch(&f.sp, g_exec.sched_sp);
}

cudaError_t run_grid(const char* kernel, dim3 grid, dim3 block, size_t smem, Body body) {
  const uint64_t nt = uint64_t(block.x) * block.y * block.z;
  const bool bad = grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 ||
                   grid.z > 65535 || nt == 0 || nt > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
                   smem > 48 * 1024;
  if (bad) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "invalid launch configuration grid (%u, %u, %u) block (%u, %u, %u) smem %zu",
                  grid.x, grid.y, grid.z, block.x, block.y, block.z, smem);
    return set_error(cudaErrorInvalidConfiguration, std::string("kernel ") + kernel + ": " + buf);
  }
  if (max_grid_x() && grid.x > max_grid_x()) grid.x = max_grid_x();
  std::lock_guard<std::mutex> lk(g_launch_mu);
  if (!g_stats) {
    g_stats = new std::map<std::string, KernelStats>();  // never destroyed: printed at exit
    std::atexit(print_stats);
  }
  KernelStats& st = (*g_stats)[kernel];
  st.launches++;
  DeviceScope device;
  g_exec.body = body;
  gridDim = grid;
  blockDim = block;
  try {
    const uint64_t nb = uint64_t(grid.x) * grid.y * grid.z;
    for (uint64_t i = 0; i < nb; ++i) {
      const uint64_t lin = reverse_order() ? nb - 1 - i : i;
      blockIdx = uint3{static_cast<unsigned>(lin % grid.x), static_cast<unsigned>(lin / grid.x % grid.y),
                       static_cast<unsigned>(lin / (uint64_t(grid.x) * grid.y))};
      st.barrier_blocks += run_block(static_cast<int>(nt), block);
      st.blocks++;
      st.threads += nt;
    }
  } catch (const Divergence& e) {
    g_exec.cur = -1;
    g_exec.direct = false;
    char where[100];
    std::snprintf(where, sizeof where, " (block (%u, %u, %u) of (%u, %u, %u), %llu threads)", blockIdx.x,
                  blockIdx.y, blockIdx.z, grid.x, grid.y, grid.z, static_cast<unsigned long long>(nt));
    const std::string msg = std::string("kernel ") + kernel + ": " + e.what() + where;
    report(msg);
    return set_error(cudaErrorLaunchFailure, msg);
  }
  g_exec.cur = -1;
  return cudaSuccess;
}

}  // namespace kdet_emu

using namespace kdet_emu;

// ---- runtime API -------------------------------------------------------------------------------------

namespace {
thread_local int t_device = 0;

cudaError_t check_device(int d) { return d == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice, "no such device"); }

cudaError_t copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, const char* call) {
  if (n == 0) return cudaSuccess;
  if (!dst || !src) return set_error(cudaErrorInvalidValue, std::string(call) + ": null pointer");
  const Space ds = space_of(dst, n), ss = space_of(src, n);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = ds == Space::Device && ss != Space::Device; break;
    case cudaMemcpyDeviceToHost: ok = ss == Space::Device && ds != Space::Device; break;
    case cudaMemcpyDeviceToDevice: ok = ss == Space::Device && ds == Space::Device; break;
    case cudaMemcpyHostToHost: ok = ss != Space::Device && ds != Space::Device; break;
    case cudaMemcpyDefault: break;
  }
  if (!ok)
    return set_error(cudaErrorInvalidValue, std::string(call) + ": copy kind " + std::to_string(kind) +
                                                " does not match the pointers (or a device range is out of bounds)");
  DeviceScope device;
  std::memmove(dst, src, n);
  return cudaSuccess;
}
}  // namespace

struct CUstream_st {
  unsigned flags;
};
struct CUevent_st {
  unsigned flags;
};

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return set_error(cudaErrorInvalidValue, "cudaGetDeviceCount: null");
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (const cudaError_t e = check_device(device)) return e;
  t_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = t_device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (const cudaError_t e = check_device(device)) return e;
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "CUDA EMULATION on the CPU");
  p->totalGlobalMem = size_t(16) << 30;
  p->sharedMemPerBlock = 48 << 10;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->warpSize = 32;
  p->major = 8;
  p->minor = 0;
  p->multiProcessorCount = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  std::lock_guard<std::mutex> lk(g_err_mu);
  const cudaError_t e = g_last;
  g_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() {
  std::lock_guard<std::mutex> lk(g_err_mu);
  return g_last;
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  // The last failure's message (it names the kernel or call) while it is still the most recent error.
  thread_local std::string s;
  {
    std::lock_guard<std::mutex> lk(g_err_mu);
    s = e == g_msg_code && e != cudaSuccess ? " [" + g_msg + "]" : std::string();
  }
  s = std::string(cudaGetErrorName(e)) + s;
  return s.c_str();
}
cudaError_t cudaMalloc(void** p, size_t n) {
  if (!p) return set_error(cudaErrorInvalidValue, "cudaMalloc: null");
  if (n > (size_t(16) << 30)) return cudaErrorMemoryAllocation;  // more than the emulated device has
  *p = device_alloc(n);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  return device_free(p) ? cudaSuccess : set_error(cudaErrorInvalidValue, "cudaFree: not a device pointer");
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int) {
  *p = pinned_alloc(n);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void* p) {
  return pinned_free(p) ? cudaSuccess : set_error(cudaErrorInvalidValue, "cudaFreeHost: not pinned memory");
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = *total_bytes = size_t(16) << 30;
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  return copy(dst, src, n, kind, "cudaMemcpy");
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t) {
  return copy(dst, src, n, kind, "cudaMemcpyAsync");
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int dd, const void* src, int sd, size_t n, cudaStream_t) {
  if (const cudaError_t e = check_device(dd)) return e;
  if (const cudaError_t e = check_device(sd)) return e;
  return copy(dst, src, n, cudaMemcpyDeviceToDevice, "cudaMemcpyPeerAsync");
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  if (!device_range(p, n)) return set_error(cudaErrorInvalidValue, "cudaMemset: not a device range");
  DeviceScope device;
  std::memset(p, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { return cudaMemset(p, v, n); }
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  *s = new CUstream_st{flags};
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  *e = new CUevent_st{flags};
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  return e ? cudaSuccess : set_error(cudaErrorInvalidValue, "cudaEventRecord: null event");
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  return e ? cudaSuccess : set_error(cudaErrorInvalidValue, "cudaEventSynchronize: null event");
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!a || !b || (a->flags & cudaEventDisableTiming) || (b->flags & cudaEventDisableTiming))
    return set_error(cudaErrorInvalidValue, "cudaEventElapsedTime: event without timing");
  *ms = 0.0f;  // no GPU timing in the emulation
  return cudaSuccess;
}
