// engine/cuda/context.h — per-device CUDA state, for the backend's own translation units (.cu).
//
// Each device has one Context, created on first use and kept for the life of the process (the
// registry below is the only process-wide CUDA state; contexts are never destroyed, so no CUDA call
// runs during static destruction). A Context owns the device's stream, its cuBLAS and cuDNN handles
// (created lazily, bound to the stream), the cuDNN algorithm cache and the per-device settings.
// Every kernel of the backend runs on ctx.stream(); host code synchronises only when it copies a
// result to the CPU.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "engine/cuda/check.h"
#include "engine/tensor.h"

namespace kdet::cuda {

// A cuDNN convolution algorithm chosen for one shape (conv2d_cuda.cu): algorithm, math type, workspace.
struct ConvAlgo {
  int algo = 0;
  int math_type = 0;
  size_t workspace = 0;
};

class Context {
 public:
  explicit Context(int device);
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas();  // bound to stream(); math mode follows allow_tf32 at each call
  cudnnHandle_t cudnn();    // bound to stream()

  bool allow_tf32() const { return allow_tf32_.load(); }
  void set_allow_tf32(bool on) { allow_tf32_.store(on); }
  bool conv_benchmark() const { return conv_benchmark_.load(); }
  void set_conv_benchmark(bool on) { conv_benchmark_.store(on); }
  bool deterministic() const { return deterministic_.load(); }
  void set_deterministic(bool on) { deterministic_.store(on); }
  bool sync_each_kernel() const { return sync_each_kernel_; }

  // cuDNN algorithm cache: key (conv2d_cuda.cu builds it from the op, shapes, args, dtype, settings).
  bool find_conv_algo(const std::string& key, ConvAlgo& out);
  void store_conv_algo(const std::string& key, const ConvAlgo& a);

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
  std::mutex mu_;  // handles and caches
  cublasHandle_t cublas_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  std::map<std::string, ConvAlgo> conv_algos_;
  std::atomic<bool> allow_tf32_{false};
  std::atomic<bool> conv_benchmark_{false};
  std::atomic<bool> deterministic_{true};
  bool sync_each_kernel_ = false;  // KDET_CUDA_SYNC=1
};

// The context of `device` (created on first use; makes no device current). Throws a kdet::Error naming
// `op` when the device does not exist or no GPU is usable.
Context& context(int device, const char* op = "cuda");

// For an op on tensor t: checks that t lives on a CUDA device, makes that device current for this
// thread and returns its context.
Context& activate(const Tensor& t, const char* op);
Context& activate(Device d, const char* op);

// After a kernel launch: reports a launch error naming the op; with KDET_CUDA_SYNC=1 also waits for the
// stream so that an asynchronous fault is attributed to this op.
void check_launch(Context& ctx, const char* op);

}  // namespace kdet::cuda
