// tools/cuda_emu/include/cuda_runtime.h — CUDA EMULATION on the CPU (make cuda-emu-test): the subset of
// the CUDA runtime that kdet's backend uses, for compiling its .cu files with g++ as plain C++.
//
// This is an EMULATION. It validates the kernels' index math, their __syncthreads structure, the host
// logic around them and the API calls as modelled here. It does NOT model GPU timing, real cuDNN /
// cuBLAS numerics, memory-model races (the threads of a block run one after another, switching only at
// __syncthreads), warp-level behaviour, or host code reading device memory directly (device memory is
// host memory here).
//
// Model: one device ("cuda:0"); every stream is the null stream and every call completes before it
// returns (so events and stream syncs are no-ops). Device memory comes from cudaMalloc and is tracked:
// copies whose direction does not match the pointers, and kernels given a pointer argument that is
// neither device nor pinned memory, fail with an error; host code that touches device memory outside a
// kernel or copy faults (the memory is mapped inaccessible then: emu_memory.cpp). A kernel launch `k<<<g, b, smem, s>>>(args)` is
// rewritten by tools/cuda_emu/rewrite.py into `::kdet_emu::launch(g, b, smem, s, k, args)`, which runs
// the blocks in order and the threads of a block as fibers (tools/cuda_emu/emu_runtime.cpp).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- qualifiers -----------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Blocks run one at a time and all threads of a block share one instance: a function-local static.
#define __shared__ static
#define __constant__

// ---- types and built-in variables -----------------------------------------------------------------
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};
typedef cudaError_t cudaError;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;
typedef CUstream_st* cudaStream_t;
struct CUevent_st;
typedef CUevent_st* cudaEvent_t;

constexpr unsigned int cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned int cudaEventDefault = 0, cudaEventDisableTiming = 2;
constexpr unsigned int cudaHostAllocDefault = 0;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int warpSize;
  int major, minor;
  int multiProcessorCount;
};

// ---- runtime API (emu_runtime.cpp) -----------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaMalloc(void** p, size_t n);
template <class T>
inline cudaError_t cudaMalloc(T** p, size_t n) { return cudaMalloc(reinterpret_cast<void**>(p), n); }
cudaError_t cudaFree(void* p);
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int flags);
template <class T>
inline cudaError_t cudaHostAlloc(T** p, size_t n, unsigned int flags) {
  return cudaHostAlloc(reinterpret_cast<void**>(p), n, flags);
}
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s = nullptr);
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_dev, const void* src, int src_dev, size_t n,
                                cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* p, int v, size_t n);
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b);

// ---- device functions --------------------------------------------------------------------------------
namespace kdet_emu {
void syncthreads();  // switches to the block's next thread (emu_runtime.cpp)
}
// The compiler barriers keep g++ from caching __shared__ (static) values in registers across the switch.
__attribute__((always_inline)) inline void __syncthreads() {
  __asm__ __volatile__("" ::: "memory");
  ::kdet_emu::syncthreads();
  __asm__ __volatile__("" ::: "memory");
}

// Threads of a block never run at the same time here, so the atomics are plain read-modify-writes.
namespace kdet_emu {
template <class T, class F>
inline T rmw(T* p, F f) {
  const T old = *p;
  *p = f(old);
  return old;
}
}  // namespace kdet_emu
template <class T>
inline T atomicAdd(T* p, T v) { return kdet_emu::rmw(p, [v](T o) { return o + v; }); }
template <class T>
inline T atomicOr(T* p, T v) { return kdet_emu::rmw(p, [v](T o) { return o | v; }); }
template <class T>
inline T atomicAnd(T* p, T v) { return kdet_emu::rmw(p, [v](T o) { return o & v; }); }
template <class T>
inline T atomicMax(T* p, T v) { return kdet_emu::rmw(p, [v](T o) { return o < v ? v : o; }); }
template <class T>
inline T atomicMin(T* p, T v) { return kdet_emu::rmw(p, [v](T o) { return v < o ? v : o; }); }
template <class T>
inline T atomicExch(T* p, T v) { return kdet_emu::rmw(p, [v](T) { return v; }); }
template <class T>
inline T atomicCAS(T* p, T cmp, T v) { return kdet_emu::rmw(p, [cmp, v](T o) { return o == cmp ? v : o; }); }

namespace kdet_emu {
template <class To, class From>
inline To bits(From f) {
  static_assert(sizeof(To) == sizeof(From));
  To t;
  std::memcpy(&t, &f, sizeof t);
  return t;
}
}  // namespace kdet_emu
inline float __int_as_float(int v) { return kdet_emu::bits<float>(v); }
inline int __float_as_int(float v) { return kdet_emu::bits<int>(v); }
inline float __uint_as_float(unsigned v) { return kdet_emu::bits<float>(v); }
inline unsigned __float_as_uint(float v) { return kdet_emu::bits<unsigned>(v); }
inline double __longlong_as_double(long long v) { return kdet_emu::bits<double>(v); }
inline long long __double_as_longlong(double v) { return kdet_emu::bits<long long>(v); }
// Round-to-nearest single operations that nvcc never contracts into an FMA: the volatile store keeps
// g++ from contracting them either.
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline double __dmul_rn(double a, double b) {
  volatile double r = a * b;
  return r;
}
inline double __dadd_rn(double a, double b) {
  volatile double r = a + b;
  return r;
}

// ---- kernel launches -------------------------------------------------------------------------------
namespace kdet_emu {

// Device memory is accessible only inside a DeviceScope (emu_memory.cpp): kernels, copies, library calls.
void enter_device();
void leave_device();
struct DeviceScope {
  DeviceScope() { enter_device(); }
  ~DeviceScope() { leave_device(); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
};

// Runs body(thread) for every thread of the grid: blocks in order, threads of a block as fibers that
// switch at __syncthreads (emu_runtime.cpp). Returns the launch's error (also recorded for
// cudaGetLastError): invalid configuration, or a __syncthreads that not every thread of a block reached.
struct Body {
  void (*run)(void* self);
  void* self;
};
cudaError_t run_grid(const char* kernel, dim3 grid, dim3 block, size_t smem, Body body);
// A kernel pointer argument must be null or point into device (or pinned) memory.
bool device_accessible(const void* p);
void fail_launch(const char* kernel, const char* why);

template <class P>
inline bool check_arg(const P& a) {
  if constexpr (std::is_pointer_v<P>)
    return a == nullptr || device_accessible(static_cast<const void*>(a));
  else
    return true;
}

template <class... P, class... A>
void launch(const char* name, dim3 grid, dim3 block, size_t smem, cudaStream_t /*stream*/, void (*kernel)(P...),
            A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  // Kernel parameters are passed by value: each thread gets its own copy, as on a GPU.
  using Args = std::tuple<std::decay_t<P>...>;
  Args packed(static_cast<std::decay_t<P>>(std::forward<A>(args))...);
  const bool ok = std::apply([](const auto&... a) { return (check_arg(a) && ...); }, packed);
  if (!ok) {
    fail_launch(name, "a pointer argument is neither device nor pinned host memory");
    return;
  }
  struct Closure {
    void (*kernel)(P...);
    const Args* packed;
    static void run(void* self) {
      const Closure& c = *static_cast<const Closure*>(self);
      Args mine = *c.packed;
      std::apply(c.kernel, std::move(mine));
    }
  } closure{kernel, &packed};
  run_grid(name, grid, block, smem, Body{&Closure::run, &closure});
}

}  // namespace kdet_emu
