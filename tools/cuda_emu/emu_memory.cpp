// tools/cuda_emu/emu_memory.cpp — CUDA EMULATION on the CPU: device and pinned memory.
//
// Device memory (cudaMalloc) lives in one reserved arena that host code cannot touch: it is mapped
// PROT_NONE except while emulated device work runs (a kernel launch, a cudaMemcpy / cudaMemset, a cuBLAS /
// cuDNN / cub call: DeviceScope). Host code that dereferences a device pointer therefore faults as it would
// next to a real GPU, and the SIGSEGV handler says so ("host code touched device memory") before the crash
// is reported. Fresh device blocks are filled with 0xff bytes (NaN / -1) like uninitialised GPU memory.
// Pinned memory (cudaHostAlloc) is ordinary host memory that kernels may also use.
#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "tools/cuda_emu/emu_internal.h"

namespace kdet_emu {

namespace {

constexpr size_t kArenaBytes = size_t(64) << 30;  // address space only (MAP_NORESERVE)
constexpr size_t kAlign = 256;
constexpr size_t kPage = 4096;
constexpr size_t kHuge = size_t(2) << 20;

struct Alloc {
  size_t size;  // requested bytes
  size_t span;  // bytes reserved in the arena (device) or allocated (pinned)
  bool pinned;
};

std::mutex g_mu;
std::map<const char*, Alloc> g_allocs;      // base -> allocation, device and pinned
std::multimap<size_t, char*> g_free;        // freed device spans by size, reused first
char* g_arena = nullptr;
size_t g_used = 0;                          // bytes of the arena handed out so far (page-rounded)
int g_depth = 0;                            // nesting of DeviceScope
struct sigaction g_prev_segv;
bool g_have_prev = false;

void on_segv(int sig, siginfo_t* info, void* uctx);

// Our handler goes first (others, e.g. doctest's, may have replaced it since): it explains a fault in the
// arena, then hands the signal to the handler it displaced.
void install_handler() {
  struct sigaction cur;
  sigaction(SIGSEGV, nullptr, &cur);
  if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_segv) return;
  g_prev_segv = cur;
  g_have_prev = true;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, nullptr);
}

void say(const char* s) { (void)!write(2, s, std::strlen(s)); }

void on_segv(int sig, siginfo_t* info, void* uctx) {
  const char* a = static_cast<const char*>(info->si_addr);
  if (g_arena && a >= g_arena && a < g_arena + kArenaBytes) {
    say("\nCUDA EMULATION: host code touched device memory (a cudaMalloc block) outside any kernel or copy; a GPU "
        "build would fault or read garbage here. Host stack:\n");
    void* frames[48];
    backtrace_symbols_fd(frames, backtrace(frames, 48), 2);
  }
  // Hand over: restore the displaced handler and return, so the fault happens again under it.
  if (g_have_prev)
    sigaction(SIGSEGV, &g_prev_segv, nullptr);
  else
    signal(SIGSEGV, SIG_DFL);
  (void)sig;
  (void)uctx;
}

char* arena() {
  if (!g_arena) {
    void* m = mmap(nullptr, kArenaBytes + kHuge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      std::fprintf(stderr, "CUDA EMULATION: cannot reserve the device arena\n");
      std::abort();
    }
    // 2 MiB aligned, on transparent huge pages where the kernel allows: far fewer page-table entries for
    // the mprotect of every device scope to change.
    g_arena = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(m) + kHuge - 1) / kHuge * kHuge);
    madvise(g_arena, kArenaBytes, MADV_HUGEPAGE);
    static char altstack[1 << 16];  // the handler must run even when a fiber stack overflowed
    stack_t ss;
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
    install_handler();
  }
  return g_arena;
}

// Changes the access of [p, p + n) rounded out to huge pages (so a huge page is never split).
void set_access(char* p, size_t n, bool rw) {
  if (!n) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) / kHuge * kHuge;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + n + kHuge - 1) / kHuge * kHuge;
  mprotect(reinterpret_cast<void*>(a), b - a, rw ? PROT_READ | PROT_WRITE : PROT_NONE);
}

// The allocation holding [p, p + n) (n may be 0: p may then be one past the end), or null. Caller holds g_mu.
const Alloc* find_alloc(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  auto it = g_allocs.upper_bound(c);
  if (it == g_allocs.begin()) return nullptr;
  --it;
  if (c < it->first || c + n > it->first + it->second.size) return nullptr;
  return &it->second;
}

}  // namespace

void enter_device() {
  std::lock_guard<std::mutex> lk(g_mu);
  if (g_depth++ == 0) set_access(arena(), g_used, true);
}

void leave_device() {
  std::lock_guard<std::mutex> lk(g_mu);
  if (--g_depth == 0) {
    set_access(arena(), g_used, false);
    install_handler();
  }
}

void* device_alloc(size_t n) {
  const size_t span = (std::max<size_t>(n, 1) + kPage - 1) / kPage * kPage;
  char* p = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    char* base = arena();
    auto it = g_free.lower_bound(span);
    if (it != g_free.end() && it->first == span) {
      p = it->second;
      g_free.erase(it);
    } else {
      if (g_used + span > kArenaBytes) return nullptr;
      p = base + g_used;
      g_used += span;
      if (g_depth > 0) set_access(p, span, true);  // inside a device scope: usable at once
    }
    g_allocs[p] = Alloc{n, span, false};
  }
  DeviceScope s;
  std::memset(p, 0xff, span);  // uninitialised device memory
  return p;
}

bool device_free(void* p) {
  if (!p) return true;
  std::lock_guard<std::mutex> lk(g_mu);
  auto it = g_allocs.find(static_cast<const char*>(p));
  if (it == g_allocs.end() || it->second.pinned) return false;
  madvise(p, it->second.span, MADV_DONTNEED);  // give the pages back; the span is reused later
  g_free.emplace(it->second.span, static_cast<char*>(p));
  g_allocs.erase(it);
  return true;
}

void* pinned_alloc(size_t n) {
  const size_t span = (std::max<size_t>(n, 1) + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, span);
  if (!p) return nullptr;
  std::lock_guard<std::mutex> lk(g_mu);
  g_allocs[static_cast<const char*>(p)] = Alloc{n, span, true};
  return p;
}

bool pinned_free(void* p) {
  if (!p) return true;
  std::lock_guard<std::mutex> lk(g_mu);
  auto it = g_allocs.find(static_cast<const char*>(p));
  if (it == g_allocs.end() || !it->second.pinned) return false;
  g_allocs.erase(it);
  std::free(p);
  return true;
}

Space space_of(const void* p, size_t n) {
  std::lock_guard<std::mutex> lk(g_mu);
  const Alloc* a = find_alloc(p, n);
  if (!a) return Space::Host;
  return a->pinned ? Space::Pinned : Space::Device;
}

bool device_accessible(const void* p) { return space_of(p, 0) != Space::Host; }

bool device_range(const void* p, size_t n) { return n == 0 || space_of(p, n) == Space::Device; }

}  // namespace kdet_emu
