// engine/cuda/check.h — error checks for CUDA runtime, cuBLAS and cuDNN calls (CUDA translation units
// only). A failure throws kdet::Error naming the op, the call, the library's message and file:line:
//   "conv2d (cuda): cudnnConvolutionForward(...) failed: CUDNN_STATUS_BAD_PARAM [engine/ops/conv2d_cuda.cu:120]"
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "engine/check.h"

namespace kdet::cuda {

[[noreturn]] void throw_error(const char* op, const char* call, const char* what, const char* file, int line);
const char* cublas_status_name(cublasStatus_t s);

}  // namespace kdet::cuda

#define KDET_CUDA_CHECK(expr, op)                                                                 \
  do {                                                                                            \
    const cudaError_t kdet_e_ = (expr);                                                           \
    if (kdet_e_ != cudaSuccess) {                                                                 \
      (void)cudaGetLastError(); /* clear the sticky-free error so later calls do not report it */ \
      ::kdet::cuda::throw_error(op, #expr, cudaGetErrorString(kdet_e_), __FILE__, __LINE__);      \
    }                                                                                             \
  } while (0)

#define KDET_CUBLAS_CHECK(expr, op)                                                                           \
  do {                                                                                                        \
    const cublasStatus_t kdet_s_ = (expr);                                                                    \
    if (kdet_s_ != CUBLAS_STATUS_SUCCESS)                                                                     \
      ::kdet::cuda::throw_error(op, #expr, ::kdet::cuda::cublas_status_name(kdet_s_), __FILE__, __LINE__); \
  } while (0)

#define KDET_CUDNN_CHECK(expr, op)                                                               \
  do {                                                                                           \
    const cudnnStatus_t kdet_s_ = (expr);                                                        \
    if (kdet_s_ != CUDNN_STATUS_SUCCESS)                                                         \
      ::kdet::cuda::throw_error(op, #expr, cudnnGetErrorString(kdet_s_), __FILE__, __LINE__); \
  } while (0)
