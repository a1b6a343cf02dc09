// engine/ops/matmul_cuda.h — CUDA kernels of engine/ops/matmul.cpp (plain C++ declarations).
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// C[b] = op(A[b]) · op(B[b]) for b < Bn through cuBLAS (f32/f64). A, B, C contiguous row-major, 2-D or
// [Bn, rows, cols]; op(A) is M×K, op(B) K×N, C M×N. Full f32 arithmetic unless TF32 is allowed on the
// device (cuda::set_allow_tf32).
void gemm(bool trans_a, bool trans_b, int64_t Bn, int64_t M, int64_t N, int64_t K, const Tensor& A, const Tensor& B,
          Tensor& C);

}  // namespace kdet::cuda
