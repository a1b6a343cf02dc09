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

// Packed-A SGEMM for many products with one left operand (conv weights), single-threaded (the caller
// splits work across threads). sgemm_pack_a packs op(A) [M×K] once into sgemm_packed_a_size(M, K)
// floats; sgemm_packed then computes C = alpha·A·B + beta·C where B is supplied block by block by
// pack_b(k0, kc, j0, nc, dst): it must write op(B)[k0:k0+kc, j0:j0+nc] as NR-column panels,
// dst[(j/NR)·NR·kc + k·NR + j%NR], zero-padding the columns of the last panel up to NR (sgemm_nr()).
// bufB holds sgemm_packed_bufb_size() floats, 64-byte aligned. The K blocking (and so the summation
// order) is that of sgemm, so results equal sgemm's bit for bit.
int64_t sgemm_packed_a_size(int64_t M, int64_t K);
void sgemm_pack_a(bool trans_a, int64_t M, int64_t K, const float* A, int64_t lda, float* dst);
int64_t sgemm_packed_bufb_size();
int sgemm_nr();
int sgemm_mr();
int64_t sgemm_nc();
// The plain packer (what sgemm uses): op(B) rows [0, kc) × columns [0, nc) of B (already offset).
void sgemm_pack_b(bool trans_b, const float* B, int64_t ldb, int64_t kc, int64_t nc, float* dst);
template <class PackB>
void sgemm_packed(int64_t M, int64_t N, int64_t K, float alpha, const float* Ap, PackB&& pack_b, float beta, float* C,
                  int64_t ldc, float* bufB);
void sgemm_packed_block(int64_t M, int64_t nc, int64_t kc, int64_t pc, float alpha, const float* Ap, const float* Bp,
                        float beta, float* C, int64_t ldc);

template <class PackB>
void sgemm_packed(int64_t M, int64_t N, int64_t K, float alpha, const float* Ap, PackB&& pack_b, float beta, float* C,
                  int64_t ldc, float* bufB) {
  const int64_t NCb = sgemm_nc();
  for (int64_t jc = 0; jc < N; jc += NCb) {
    const int64_t nc = N - jc < NCb ? N - jc : NCb;
    for (int64_t pc = 0; pc < K; pc += 256) {
      const int64_t kc = K - pc < 256 ? K - pc : 256;
      pack_b(pc, kc, jc, nc, bufB);
      sgemm_packed_block(M, nc, kc, pc, alpha, Ap, bufB, pc == 0 ? beta : 1.f, C + jc, ldc);
    }
  }
}

// Name of the compiled sgemm micro-kernel ("avx512 12x32", "avx2 6x16", "generic 4x8").
const char* sgemm_kernel_name();

}  // namespace kdet
