// engine/cuda/cuda_backend.h — the CUDA backend's public C++ API (plain C++: no CUDA headers, so any
// translation unit of a KDET_CUDA=1 build may include it). Implemented in engine/cuda/*.cu.
//
//   Devices    device_count() / gpu_available() never throw and never abort: without a GPU or with an
//              unusable driver they report 0 devices, and device_status() says why.
//   Streams    every op runs on its device's one stream (engine/cuda/context.h); host code sees results
//              after an explicit copy to the CPU (Tensor::to / item / to_vector synchronise).
//   Memory     a caching allocator (size classes, blocks keyed by stream, current/peak stats through
//              kdet::alloc_stats(Device::cuda(i))) is installed into engine/allocator.h at start-up.
//   Copies     explicit only: Tensor::to(Device) (host<->device, device<->device), Tensor::copy_ on one
//              device; PinnedBuffer + upload_async for the data loader (page-locked staging, async H2D).
//   Settings   per device (kept in its context): TF32 math (off by default: conv and matmul in full f32,
//              like the CPU), cuDNN algorithm benchmarking (off: heuristics), KDET_CUDA_SYNC=1 in the
//              environment synchronises after every kernel so an error names the op that caused it.
#pragma once
#include <cstddef>
#include <string>

#include "engine/tensor.h"

namespace kdet::cuda {

// --- devices -------------------------------------------------------------------------------------
int device_count();         // 0 when cudaGetDeviceCount fails or finds nothing
bool gpu_available();       // device_count() > 0
std::string device_status();  // "1 CUDA device: NVIDIA H100 ..." or why there is none
void synchronize(int device = 0);  // waits for the device's stream

// --- engine/backend.h hooks ---------------------------------------------------------------------
// dst and src contiguous, same shape and dtype, on different devices (at least one CUDA).
void copy_between_devices(Tensor& dst, const Tensor& src);
// dst = src (src already broadcast to dst's shape; any strides; dtype converted), one CUDA device.
void copy_strided(Tensor& dst, const Tensor& src);
void fill(Tensor& dst, double v);

// --- allocator ------------------------------------------------------------------------------------
// Frees the cached (unused) device blocks of `device` (cudaFree; synchronises the device).
void release_cache(int device = 0);

// --- per-device settings (stored in the device's context) ----------------------------------------
void set_allow_tf32(bool on, int device = 0);    // cuDNN/cuBLAS tensor-core TF32 for f32 (default off)
bool allow_tf32(int device = 0);
void set_conv_benchmark(bool on, int device = 0);  // time cuDNN algorithms once per shape (default off)
bool conv_benchmark(int device = 0);
// cuDNN algorithms restricted to deterministic ones (default on: a GPU run repeats bit for bit). Off lets
// cuDNN pick faster non-deterministic backward algorithms, as PyTorch does unless cudnn.deterministic is set.
void set_deterministic(bool on, int device = 0);
bool deterministic(int device = 0);

// --- pinned host memory for the loader ------------------------------------------------------------
// Page-locked host memory (cudaHostAlloc). Move-only. An upload from it runs asynchronously on the
// device's stream; wait() blocks until the last one has finished (upload_async calls it before
// overwriting the buffer, so one buffer can be reused batch after batch).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t nbytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t size() const { return nbytes_; }
  void wait() const;  // the last upload from this buffer has completed

 private:
  friend Tensor upload_async(const Tensor& host, Device dev, PinnedBuffer& staging);
  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
  void* event_ = nullptr;  // cudaEvent_t recorded after the last upload
};

// Copies the CPU tensor `host` into `staging` (growing it when too small), enqueues the host->device
// copy on dev's stream and returns the device tensor without waiting. Ops queued afterwards on that
// device see the data; `host` may be modified as soon as this returns.
Tensor upload_async(const Tensor& host, Device dev, PinnedBuffer& staging);

}  // namespace kdet::cuda
