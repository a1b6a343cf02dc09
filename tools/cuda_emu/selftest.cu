// tools/cuda_emu/selftest.cu — CUDA EMULATION self-test (run by `make cuda-emu-test` before the [cuda]
// tests): the emulation must compute what a GPU computes for correct code and must reject what the
// [cuda] tests rely on it to reject (divergent barriers, host pointers in kernels, bad launch
// configurations, wrong cuBLAS / cuDNN / cub / memcpy arguments). Written as CUDA source: it goes through
// rewrite.py like the backend's files.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cub/device/device_radix_sort.cuh>
#include <cstdint>
#include <vector>

#include "tools/cuda_emu/emu_internal.h"

namespace {

int g_failed = 0;
#define EXPECT(cond)                                                      \
  do {                                                                    \
    if (!(cond)) {                                                        \
      std::fprintf(stderr, "selftest FAILED: %s (line %d)\n", #cond, __LINE__); \
      ++g_failed;                                                         \
    }                                                                     \
  } while (0)

// Tree sum of 256 values per block (the shape of kdet's block_sum).
__global__ void block_sums(const float* x, float* out) {
  __shared__ float sh[256];
  const int t = threadIdx.x;
  sh[t] = x[blockIdx.x * 256 + t];
  __syncthreads();
  for (int s = 128; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = sh[0];
}

__global__ void divergent_barrier(float* x) {
  if (threadIdx.x < 128) __syncthreads();
  x[threadIdx.x] = 1.0f;
}

__global__ void early_exit(float* x, int n) {
  if (static_cast<int>(threadIdx.x) >= n) return;
  __syncthreads();
  x[threadIdx.x] = 1.0f;
}

__global__ void fill(float* x, float v) { x[blockIdx.x * blockDim.x + threadIdx.x] = v; }

template <class T, int K>
__global__ void scale(T* x, T a) {
  x[threadIdx.x] *= a * T(K);
}

}  // namespace

int main() {
  kdet_emu::set_quiet(true);  // the errors provoked below are expected
  // Correct code: reductions with barriers, a template kernel, dim3 indexing.
  const int B = 3;
  std::vector<float> h(B * 256);
  for (int i = 0; i < B * 256; ++i) h[i] = static_cast<float>(i % 7);
  float *dx = nullptr, *dout = nullptr;
  EXPECT(cudaMalloc(&dx, h.size() * sizeof(float)) == cudaSuccess);
  EXPECT(cudaMalloc(&dout, B * sizeof(float)) == cudaSuccess);
  EXPECT(cudaMemcpy(dx, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  block_sums<<<B, 256>>>(dx, dout);
  EXPECT(cudaGetLastError() == cudaSuccess);
  float hs[B];
  EXPECT(cudaMemcpy(hs, dout, sizeof hs, cudaMemcpyDeviceToHost) == cudaSuccess);
  for (int b = 0; b < B; ++b) {
    float ref = 0;
    for (int i = 0; i < 256; ++i) ref += h[b * 256 + i];
    EXPECT(hs[b] == ref);
  }
  scale<float, 2><<<1, 4, 0, nullptr>>>(dout, 0.5f);
  EXPECT(cudaGetLastError() == cudaSuccess);
  float h0 = 0;
  EXPECT(cudaMemcpy(&h0, dout, sizeof h0, cudaMemcpyDeviceToHost) == cudaSuccess);
  EXPECT(h0 == hs[0]);

  // What a GPU would hang on or corrupt: reported as a launch failure naming the kernel.
  divergent_barrier<<<1, 256>>>(dx);
  EXPECT(cudaGetLastError() == cudaErrorLaunchFailure);
  early_exit<<<1, 64>>>(dx, 32);
  EXPECT(cudaGetLastError() == cudaErrorLaunchFailure);
  early_exit<<<1, 64>>>(dx, 64);  // every thread reaches the barrier: fine
  EXPECT(cudaGetLastError() == cudaSuccess);
  fill<<<1, 4>>>(h.data(), 1.0f);  // a host pointer
  EXPECT(cudaGetLastError() == cudaErrorLaunchFailure);
  EXPECT(h[1] == 1.0f);            // untouched (i % 7 == 1)
  fill<<<1, 2048>>>(dx, 1.0f);     // more than 1024 threads per block
  EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration);
  fill<<<dim3(1, 70000), 32>>>(dx, 1.0f);  // grid.y over 65535
  EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration);
  EXPECT(cudaMemcpy(dx, h.data(), 16, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);  // wrong direction
  (void)cudaGetLastError();
  // Host code reading device memory faults, as next to a GPU.
  const pid_t child = fork();
  if (child == 0) {
    std::freopen("/dev/null", "w", stderr);
    volatile float v = dx[0];
    (void)v;
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);

  // cuBLAS: column-major C (2x3) = A^T (2x4) B (4x3) with lda = 4, against a hand loop; a bad ldb.
  cublasHandle_t hb = nullptr;
  EXPECT(cublasCreate(&hb) == CUBLAS_STATUS_SUCCESS);
  float *dA = nullptr, *dB = nullptr, *dC = nullptr;
  std::vector<float> A(4 * 2), Bm(4 * 3), C(2 * 3, -1.0f);
  for (int i = 0; i < 8; ++i) A[i] = static_cast<float>(i + 1);
  for (int i = 0; i < 12; ++i) Bm[i] = static_cast<float>(2 * i - 5);
  EXPECT(cudaMalloc(&dA, A.size() * 4) == cudaSuccess && cudaMalloc(&dB, Bm.size() * 4) == cudaSuccess &&
         cudaMalloc(&dC, C.size() * 4) == cudaSuccess);
  cudaMemcpy(dA, A.data(), A.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dB, Bm.data(), Bm.size() * 4, cudaMemcpyHostToDevice);
  const float one = 1.0f, zero = 0.0f;
  EXPECT(cublasSgemm(hb, CUBLAS_OP_T, CUBLAS_OP_N, 2, 3, 4, &one, dA, 4, dB, 4, &zero, dC, 2) == CUBLAS_STATUS_SUCCESS);
  cudaMemcpy(C.data(), dC, C.size() * 4, cudaMemcpyDeviceToHost);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) {
      float ref = 0;
      for (int l = 0; l < 4; ++l) ref += A[l + i * 4] * Bm[l + j * 4];
      EXPECT(C[i + j * 2] == ref);
    }
  EXPECT(cublasSgemm(hb, CUBLAS_OP_T, CUBLAS_OP_N, 2, 3, 4, &one, dA, 4, dB, 3, &zero, dC, 2) ==
         CUBLAS_STATUS_INVALID_VALUE);  // ldb < k

  // cuDNN: a 3x3 conv, pad 1, on 1x2x4x4 -> 1x4x4x4 with 2 groups; a y descriptor of the wrong shape.
  cudnnHandle_t hd = nullptr;
  EXPECT(cudnnCreate(&hd) == CUDNN_STATUS_SUCCESS);
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd), cudnnCreateFilterDescriptor(&wd);
  cudnnCreateConvolutionDescriptor(&cd);
  EXPECT(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 2, 4, 4) == CUDNN_STATUS_SUCCESS);
  EXPECT(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 4, 1, 3, 3) == CUDNN_STATUS_SUCCESS);
  EXPECT(cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT) ==
         CUDNN_STATUS_SUCCESS);
  int n, c, hh, ww;
  EXPECT(cudnnGetConvolution2dForwardOutputDim(cd, xd, wd, &n, &c, &hh, &ww) == CUDNN_STATUS_BAD_PARAM);  // 1 group
  EXPECT(cudnnSetConvolutionGroupCount(cd, 2) == CUDNN_STATUS_SUCCESS);
  EXPECT(cudnnGetConvolution2dForwardOutputDim(cd, xd, wd, &n, &c, &hh, &ww) == CUDNN_STATUS_SUCCESS);
  EXPECT(n == 1 && c == 4 && hh == 4 && ww == 4);
  EXPECT(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 4, 4, 3) == CUDNN_STATUS_SUCCESS);
  cudnnConvolutionFwdAlgoPerf_t perf[8];
  int returned = 0;
  EXPECT(cudnnGetConvolutionForwardAlgorithm_v7(hd, xd, wd, cd, yd, 8, &returned, perf) == CUDNN_STATUS_BAD_PARAM);
  EXPECT(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 4, 4, 4) == CUDNN_STATUS_SUCCESS);
  EXPECT(cudnnGetConvolutionForwardAlgorithm_v7(hd, xd, wd, cd, yd, 8, &returned, perf) == CUDNN_STATUS_SUCCESS);
  std::vector<float> X(32), W(36), Y(64);
  for (int i = 0; i < 32; ++i) X[i] = static_cast<float>(i % 5) - 2.0f;
  for (int i = 0; i < 36; ++i) W[i] = static_cast<float>(i % 3) - 1.0f;
  float *dX, *dW, *dY;
  cudaMalloc(&dX, 32 * 4), cudaMalloc(&dW, 36 * 4), cudaMalloc(&dY, 64 * 4);
  cudaMemcpy(dX, X.data(), 32 * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dW, W.data(), 36 * 4, cudaMemcpyHostToDevice);
  EXPECT(cudnnConvolutionForward(hd, &one, xd, dX, wd, dW, cd, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0,
                                 &zero, yd, dY) == CUDNN_STATUS_SUCCESS);
  EXPECT(cudnnConvolutionForward(hd, &one, xd, dX, wd, dW, cd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, nullptr, 0, &zero, yd,
                                 dY) == CUDNN_STATUS_BAD_PARAM);  // GEMM needs a workspace
  cudaMemcpy(Y.data(), dY, 64 * 4, cudaMemcpyDeviceToHost);
  for (int k = 0; k < 4; ++k)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) {
        float ref = 0;
        const int ci = k / 2;  // group of output channel k (2 outputs per group, 1 input channel each)
        for (int r = 0; r < 3; ++r)
          for (int s = 0; s < 3; ++s) {
            const int iy = y - 1 + r, ix = x - 1 + s;
            if (iy >= 0 && iy < 4 && ix >= 0 && ix < 4) ref += W[k * 9 + r * 3 + s] * X[ci * 16 + iy * 4 + ix];
          }
        EXPECT(Y[k * 16 + y * 4 + x] == ref);
      }

  // cub: stable by the key bits [0, 2); the second phase needs the temp storage the first asked for.
  std::vector<uint32_t> keys = {7, 4, 1, 6, 5, 0}, vals = {0, 1, 2, 3, 4, 5};
  uint32_t *kin, *kout, *vin, *vout;
  cudaMalloc(&kin, 24), cudaMalloc(&kout, 24), cudaMalloc(&vin, 24), cudaMalloc(&vout, 24);
  cudaMemcpy(kin, keys.data(), 24, cudaMemcpyHostToDevice);
  cudaMemcpy(vin, vals.data(), 24, cudaMemcpyHostToDevice);
  size_t tb = 0;
  EXPECT(cub::DeviceRadixSort::SortPairs(nullptr, tb, kin, kout, vin, vout, 6, 0, 2) == cudaSuccess && tb > 0);
  void* temp = nullptr;
  cudaMalloc(&temp, tb);
  size_t small = tb - 1;
  EXPECT(cub::DeviceRadixSort::SortPairs(temp, small, kin, kout, vin, vout, 6, 0, 2) == cudaErrorInvalidValue);
  EXPECT(cub::DeviceRadixSort::SortPairs(temp, tb, kin, kout, vin, vout, 6, 0, 2) == cudaSuccess);
  cudaMemcpy(vals.data(), vout, 24, cudaMemcpyDeviceToHost);
  // low two bits: 7->3, 4->0, 1->1, 6->2, 5->1, 0->0  =>  4, 0, 1, 5, 6, 7 (ids 1, 5, 2, 4, 3, 0)
  const std::vector<uint32_t> want = {1, 5, 2, 4, 3, 0};
  EXPECT(vals == want);

  std::printf("CUDA EMULATION self-test: %s\n", g_failed ? "FAILED" : "passed (kernels, barriers, cuBLAS, cuDNN, cub)");
  return g_failed ? 1 : 0;
}
