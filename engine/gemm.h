// engine/gemm.h — the one GEMM every CPU kernel (matmul, linear, conv) calls.
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C      (row-major; op = transpose when trans_*)
//
// A is M×K with row stride lda (K×M when trans_a), B is K×N with row stride ldb (N×K when trans_b),
// C is M×N with row stride ldc. beta == 0 overwrites C (NaNs in C are not propagated), like BLAS.
//
// sgemm: own packed, cache-blocked GEMM (BLIS loop order) with an AVX-512 (12×32), AVX2+FMA (6×16) or
// portable micro-kernel, chosen at compile time. Threads (OpenMP, static) split C into disjoint
// rectangles, each packing its own panels: no reductions across threads, so results are bit-identical
// run to run for a fixed thread count (and independent of the thread count, since every C element is
// accumulated over K in the same order whichever thread computes it).
// dgemm: Eigen (the f64 path exists for gradchecks).
#pragma once
#include <cstdint>

namespace kdet {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void dgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
           int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

// Overloads so templated kernels can write gemm<T>(...).
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                 const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  dgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Name of the compiled sgemm micro-kernel ("avx512 12x32", "avx2 6x16", "generic 4x8").
const char* sgemm_kernel_name();

}  // namespace kdet
