// engine/ops/matmul_cuda.cu — row-major GEMM on cuBLAS (CPU: matmul.cpp + engine/gemm.h).
//
// cuBLAS is column-major. A row-major M×N matrix C is the column-major N×M matrix Cᵀ, and
// Cᵀ = op(B)ᵀ · op(A)ᵀ, so the call passes B first and A second with their own transpose flags and
// leading dimensions equal to their row-major row lengths (no data is moved).
#include <climits>

#include "engine/cuda/launch.cuh"
#include "engine/ops/matmul_cuda.h"

namespace kdet::cuda {

namespace {

// cuBLAS's S / D entry points under one name (column-major C = op(A) op(B)).
cublasStatus_t gemm_cm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                       const float* alpha, const float* A, int lda, long long sa, const float* B, int ldb,
                       long long sb, const float* beta, float* C, int ldc, long long sc, int batch) {
  if (batch == 1) return cublasSgemm(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}
cublasStatus_t gemm_cm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                       const double* alpha, const double* A, int lda, long long sa, const double* B, int ldb,
                       long long sb, const double* beta, double* C, int ldc, long long sc, int batch) {
  if (batch == 1) return cublasDgemm(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  return cublasDgemmStridedBatched(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

}  // namespace

void gemm(bool ta, bool tb, int64_t Bn, int64_t M, int64_t N, int64_t K, const Tensor& A, const Tensor& B,
          Tensor& C) {
  const char* op = "matmul";
  KDET_CHECK(A.is_contiguous() && B.is_contiguous() && C.is_contiguous(), op, " (cuda): operands must be contiguous");
  KDET_CHECK(A.dtype() == B.dtype() && A.dtype() == C.dtype(), op, " (cuda): dtype mismatch");
  KDET_CHECK(A.device() == B.device() && A.device() == C.device(), op, " (cuda): device mismatch");
  Context& ctx = activate(C, op);
  if (Bn == 0 || M == 0 || N == 0) return;
  if (K == 0) {  // empty sum
    C.fill_(0.0);
    return;
  }
  const int64_t ac = A.size(-1), bc = B.size(-1);
  for (int64_t v : {M, N, K, ac, bc, Bn})
    KDET_CHECK(v <= INT_MAX, op, " (cuda): dimension ", v, " exceeds cuBLAS's int range (", A.desc(), " x ",
               B.desc(), ")");
  const long long sa = static_cast<long long>(A.size(-2)) * ac, sb = static_cast<long long>(B.size(-2)) * bc,
                  sc = static_cast<long long>(M) * N;
  cublasHandle_t h = ctx.cublas();
  KDET_CUBLAS_CHECK(cublasSetMathMode(h, A.dtype() == DType::F32 && ctx.allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                                     : CUBLAS_DEFAULT_MATH),
                    op);
  // Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: B first, then A (see the top).
  dispatch_float(A.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T one = T(1), zero = T(0);
    KDET_CUBLAS_CHECK(gemm_cm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(N),
                              static_cast<int>(M), static_cast<int>(K), &one, B.data<T>(), static_cast<int>(bc), sb,
                              A.data<T>(), static_cast<int>(ac), sa, &zero, C.data<T>(), static_cast<int>(N), sc,
                              static_cast<int>(Bn)),
                      op);
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
