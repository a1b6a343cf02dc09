// engine/gemm.cpp — packed, cache-blocked SGEMM with hand-written FMA micro-kernels; Eigen DGEMM.
//
// Loop order (BLIS): jc (NC columns of C) → pc (KC of K; pack op(B) KC×NC into NR-wide panels) →
// ic (MC rows; pack op(A) MC×KC into MR-tall panels) → jr → ir → micro-kernel (MR×NR tile of C held in
// registers, K-loop of rank-1 updates). Edges are zero-padded in the packed panels; partial tiles go
// through a small stack buffer.
// GCC 12's avx512fintrin.h masked load/gather helpers trip -Wmaybe-uninitialized on _mm512_undefined_ps().
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "engine/gemm.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>

#include "engine/tensor.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace kdet {

namespace {

#if defined(__AVX512F__)
constexpr int MR = 12, NR = 32;
constexpr const char* kKernelName = "avx512 12x32";
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int MR = 6, NR = 16;
constexpr const char* kKernelName = "avx2+fma 6x16";
#else
constexpr int MR = 4, NR = 8;
constexpr const char* kKernelName = "generic 4x8";
#endif
constexpr int64_t KC = 256;
constexpr int64_t MC = MR * 16;
constexpr int64_t NC = NR * 64;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Packs rows [0, mc) × k [0, kc) of op(A) (A already offset to the block) into MR-row panels:
// dst[panel * MR*kc + k*MR + r].
void pack_a(bool ta, const float* A, int64_t lda, int64_t mc, int64_t kc, float* dst) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int64_t mr = std::min<int64_t>(MR, mc - i0);
    if (!ta) {
      if (mr == MR) {
        const float* rows[MR];
        for (int r = 0; r < MR; ++r) rows[r] = A + (i0 + r) * lda;
        for (int64_t k = 0; k < kc; ++k) {
#pragma GCC unroll 12
          for (int r = 0; r < MR; ++r) dst[k * MR + r] = rows[r][k];
        }
      } else {
        for (int64_t k = 0; k < kc; ++k) {
          for (int64_t r = 0; r < mr; ++r) dst[k * MR + r] = A[(i0 + r) * lda + k];
          for (int64_t r = mr; r < MR; ++r) dst[k * MR + r] = 0.f;
        }
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A + k * lda + i0;
        for (int64_t r = 0; r < mr; ++r) dst[k * MR + r] = src[r];
        for (int64_t r = mr; r < MR; ++r) dst[k * MR + r] = 0.f;
      }
    }
    dst += MR * kc;
  }
}

// Packs k [0, kc) × columns [0, nc) of op(B) into NR-column panels: dst[panel * NR*kc + k*NR + c].
void pack_b(bool tb, const float* B, int64_t ldb, int64_t kc, int64_t nc, float* dst) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR) {
    const int64_t nr = std::min<int64_t>(NR, nc - j0);
    if (!tb) {
      if (nr == NR) {
        for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * NR, B + k * ldb + j0, NR * sizeof(float));
      } else {
        for (int64_t k = 0; k < kc; ++k) {
          const float* src = B + k * ldb + j0;
          for (int64_t c = 0; c < nr; ++c) dst[k * NR + c] = src[c];
          for (int64_t c = nr; c < NR; ++c) dst[k * NR + c] = 0.f;
        }
      }
    } else {
      // op(B)[k][j] = B[j*ldb + k].
#if defined(__AVX512F__)
      if (nr == NR && ldb * NR < (int64_t(1) << 31)) {  // gather one packed row (32 columns) per k
        const __m512i i0 = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32(static_cast<int>(ldb)));
        const float* src = B + j0 * ldb;
        const float* src16 = src + 16 * ldb;
        for (int64_t k = 0; k < kc; ++k) {
          _mm512_store_ps(dst + k * NR, _mm512_i32gather_ps(i0, src + k, 4));
          _mm512_store_ps(dst + k * NR + 16, _mm512_i32gather_ps(i0, src16 + k, 4));
        }
        dst += NR * kc;
        continue;
      }
#endif
      int64_t c = 0;
      for (; c < nr; ++c) {
        const float* src = B + (j0 + c) * ldb;
        for (int64_t k = 0; k < kc; ++k) dst[k * NR + c] = src[k];
      }
      for (; c < NR; ++c)
        for (int64_t k = 0; k < kc; ++k) dst[k * NR + c] = 0.f;
    }
    dst += NR * kc;
  }
}

// acc (MR×NR, row-major) -> C with alpha/beta, only the valid mr×nr part.
inline void store_tile(const float* acc, float* C, int64_t ldc, float alpha, float beta, int mr, int nr) {
  for (int i = 0; i < mr; ++i) {
    float* c = C + i * ldc;
    const float* a = acc + i * NR;
    if (beta == 0.f)
      for (int j = 0; j < nr; ++j) c[j] = alpha * a[j];
    else
      for (int j = 0; j < nr; ++j) c[j] = alpha * a[j] + beta * c[j];
  }
}

#if defined(__AVX512F__)
// R rows (R <= MR, compile-time) × 32 columns; A panel has row stride MR. Columns >= nr are masked off
// on load/store of C, so edge tiles need no scalar path.
template <int R>
inline void ukernel_rows(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                         float alpha, float beta, int nr) {
  __m512 c0[R], c1[R];
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
    _mm_prefetch(reinterpret_cast<const char*>(B + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      const __m512 a = _mm512_set1_ps(A[i]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
    A += MR;
    B += NR;
  }
  const __mmask16 m0 = nr >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nr) - 1);
  const __mmask16 m1 = nr >= 32 ? __mmask16(0xFFFF) : nr <= 16 ? __mmask16(0) : __mmask16((1u << (nr - 16)) - 1);
  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.f) {
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      _mm512_mask_storeu_ps(C + i * ldc, m0, _mm512_mul_ps(va, c0[i]));
      _mm512_mask_storeu_ps(C + i * ldc + 16, m1, _mm512_mul_ps(va, c1[i]));
    }
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      float* c = C + i * ldc;
      _mm512_mask_storeu_ps(c, m0, _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, c), _mm512_mul_ps(va, c0[i])));
      _mm512_mask_storeu_ps(c + 16, m1,
                            _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16), _mm512_mul_ps(va, c1[i])));
    }
  }
}

inline void ukernel(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                    float alpha, float beta, int mr, int nr) {
  switch (mr) {
    case 12: ukernel_rows<12>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 11: ukernel_rows<11>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 10: ukernel_rows<10>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 9: ukernel_rows<9>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 8: ukernel_rows<8>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 7: ukernel_rows<7>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 6: ukernel_rows<6>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 5: ukernel_rows<5>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 4: ukernel_rows<4>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 3: ukernel_rows<3>(kc, A, B, C, ldc, alpha, beta, nr); break;
    case 2: ukernel_rows<2>(kc, A, B, C, ldc, alpha, beta, nr); break;
    default: ukernel_rows<1>(kc, A, B, C, ldc, alpha, beta, nr); break;
  }
}
#elif defined(__AVX2__) && defined(__FMA__)
inline void ukernel(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                    float alpha, float beta, int mr, int nr) {
  __m256 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(A + i);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
    A += MR;
    B += NR;
  }
  alignas(64) float acc[MR * NR];
  for (int i = 0; i < MR; ++i) {
    _mm256_store_ps(acc + i * NR, c0[i]);
    _mm256_store_ps(acc + i * NR + 8, c1[i]);
  }
  store_tile(acc, C, ldc, alpha, beta, mr, nr);
}
#else
inline void ukernel(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                    float alpha, float beta, int mr, int nr) {
  float acc[MR * NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i * NR + j] += A[i] * B[j];
    A += MR;
    B += NR;
  }
  store_tile(acc, C, ldc, alpha, beta, mr, nr);
}
#endif

// One thread's GEMM on C[M,N] (pointers already offset to its rectangle).
void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc, float* bufA, float* bufB) {
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const float bb = pc == 0 ? beta : 1.f;
      pack_b(tb, tb ? B + jc * ldb + pc : B + pc * ldb + jc, ldb, kc, nc, bufB);
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = std::min(MC, M - ic);
        pack_a(ta, ta ? A + pc * lda + ic : A + ic * lda + pc, lda, mc, kc, bufA);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          const float* bp = bufB + jr * kc;  // (jr/NR) * NR*kc
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            ukernel(kc, bufA + ir * kc, bp, C + (ic + ir) * ldc + jc + jr, ldc, alpha, bb, mr, nr);
          }
        }
      }
    }
  }
}

void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
}

}  // namespace

const char* sgemm_kernel_name() { return kKernelName; }

static_assert(KC == 256, "sgemm_packed in gemm.h hard-codes the K block");

int64_t sgemm_packed_a_size(int64_t M, int64_t K) { return round_up(M, MR) * K; }
int64_t sgemm_packed_bufb_size() { return NC * KC; }
int sgemm_nr() { return NR; }
int sgemm_mr() { return MR; }
int64_t sgemm_nc() { return NC; }

// Layout: K block pc (kc = min(KC, K - pc)) starts at pc·round_up(M, MR); inside it, MR-row panels of
// MR·kc floats (so the MC block at row ic starts at ic·kc, as in gemm_serial's bufA).
void sgemm_pack_a(bool ta, int64_t M, int64_t K, const float* A, int64_t lda, float* dst) {
  const int64_t Mp = round_up(M, MR);
  for (int64_t pc = 0; pc < K; pc += KC) {
    const int64_t kc = std::min(KC, K - pc);
    pack_a(ta, ta ? A + pc * lda : A + pc, lda, M, kc, dst + pc * Mp);
  }
}

void sgemm_pack_b(bool tb, const float* B, int64_t ldb, int64_t kc, int64_t nc, float* dst) {
  pack_b(tb, B, ldb, kc, nc, dst);
}

// C[M, nc] (+)= A[:, pc:pc+kc] · Bp for one packed K block (the body of gemm_serial's pc loop).
void sgemm_packed_block(int64_t M, int64_t nc, int64_t kc, int64_t pc, float alpha, const float* Ap, const float* Bp,
                        float beta, float* C, int64_t ldc) {
  const float* a_blk = Ap + pc * round_up(M, MR);
  for (int64_t ic = 0; ic < M; ic += MC) {
    const int64_t mc = std::min(MC, M - ic);
    for (int64_t jr = 0; jr < nc; jr += NR) {
      const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
      const float* bp = Bp + jr * kc;
      for (int64_t ir = 0; ir < mc; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
        ukernel(kc, a_blk + (ic + ir) * kc, bp, C + (ic + ir) * ldc + jr, ldc, alpha, beta, mr, nr);
      }
    }
  }
}

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  // Thread grid tm × tn over MR×NR tiles, chosen to minimise the largest share.
  int nth = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (2.0 * M * N * K < 4e6) nth = 1;
  const int64_t mt = (M + MR - 1) / MR, nt = (N + NR - 1) / NR;
  nth = static_cast<int>(std::min<int64_t>(nth, mt * nt));
  int best_tm = 1, best_tn = nth;
  int64_t best = -1;
  for (int tm = 1; tm <= nth; ++tm) {
    if (nth % tm) continue;
    const int tn = nth / tm;
    const int64_t share = ((mt + tm - 1) / tm) * ((nt + tn - 1) / tn);
    if (best < 0 || share < best || (share == best && tn > best_tn)) best = share, best_tm = tm, best_tn = tn;
  }
  const int tm = best_tm, tn = best_tn;
  const int64_t kcap = std::min(KC, K);
  const int64_t a_sz = round_up(std::min(MC, (mt + tm - 1) / tm * MR) * kcap, 16);  // keeps bufB 64-byte aligned
  const int64_t b_sz = round_up(std::min(NC, (nt + tn - 1) / tn * NR), NR) * kcap;
  const int64_t per = round_up(a_sz + b_sz, 16);
  Tensor scratch = Tensor::empty({per * nth}, DType::F32);
  float* buf = scratch.data<float>();
  auto run = [&](int t) {
    const int ti = t / tn, tj = t % tn;
    const int64_t m0 = std::min(M, ((mt * ti) / tm) * MR), m1 = std::min(M, ((mt * (ti + 1)) / tm) * MR);
    const int64_t n0 = std::min(N, ((nt * tj) / tn) * NR), n1 = std::min(N, ((nt * (tj + 1)) / tn) * NR);
    if (m1 <= m0 || n1 <= n0) return;
    float* bufA = buf + per * t;
    float* bufB = bufA + a_sz;
    gemm_serial(ta, tb, m1 - m0, n1 - n0, K, alpha, ta ? A + m0 : A + m0 * lda, lda, tb ? B + n0 * ldb : B + n0,
                ldb, beta, C + m0 * ldc + n0, ldc, bufA, bufB);
  };
  if (nth == 1) {
    run(0);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nth)
  for (int t = 0; t < nth; ++t) run(t);
}

void dgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
           const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  using RM = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CM = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  Eigen::Map<RM, 0, Eigen::OuterStride<>> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (beta == 0.0)
    c.setZero();
  else if (beta != 1.0)
    c *= beta;
  if (K <= 0 || alpha == 0.0) return;
  // op(A) as an M×K expression: row-major M×K, or the transpose of a row-major K×M (= col-major M×K).
  if (!ta && !tb) {
    Eigen::Map<const RM, 0, Eigen::OuterStride<>> a(A, M, K, Eigen::OuterStride<>(lda));
    Eigen::Map<const RM, 0, Eigen::OuterStride<>> b(B, K, N, Eigen::OuterStride<>(ldb));
    c.noalias() += alpha * a * b;
  } else if (!ta && tb) {
    Eigen::Map<const RM, 0, Eigen::OuterStride<>> a(A, M, K, Eigen::OuterStride<>(lda));
    Eigen::Map<const CM, 0, Eigen::OuterStride<>> b(B, K, N, Eigen::OuterStride<>(ldb));
    c.noalias() += alpha * a * b;
  } else if (ta && !tb) {
    Eigen::Map<const CM, 0, Eigen::OuterStride<>> a(A, M, K, Eigen::OuterStride<>(lda));
    Eigen::Map<const RM, 0, Eigen::OuterStride<>> b(B, K, N, Eigen::OuterStride<>(ldb));
    c.noalias() += alpha * a * b;
  } else {
    Eigen::Map<const CM, 0, Eigen::OuterStride<>> a(A, M, K, Eigen::OuterStride<>(lda));
    Eigen::Map<const CM, 0, Eigen::OuterStride<>> b(B, K, N, Eigen::OuterStride<>(ldb));
    c.noalias() += alpha * a * b;
  }
}

}  // namespace kdet
