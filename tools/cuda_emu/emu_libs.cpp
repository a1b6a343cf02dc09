// tools/cuda_emu/emu_libs.cpp — CUDA EMULATION on the CPU: the cuBLAS GEMMs, the cuDNN convolutions and
// the checks of cub's SortPairs declared in include/. Plain loops that follow the libraries' documented
// contracts; they validate kdet's use of the APIs, not the libraries' numerics or speed. Every rejected
// call prints why on stderr ("CUDA EMULATION: ...") since the libraries only return a status code.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "tools/cuda_emu/emu_internal.h"
#include "tools/cuda_emu/include/cublas_v2.h"
#include "tools/cuda_emu/include/cub/device/device_radix_sort.cuh"
#include "tools/cuda_emu/include/cudnn.h"

using kdet_emu::device_range;

namespace {
void why(const std::string& msg) { kdet_emu::report(msg); }
}  // namespace

// ---- cub ---------------------------------------------------------------------------------------------------

bool kdet_emu::cub_check(const void* temp, size_t temp_bytes, size_t need, const void* const* ranges,
                         const size_t* sizes, int nranges, int begin_bit, int end_bit, int key_bits) {
  if (temp_bytes < need || !device_range(temp, temp_bytes)) {
    why("cub::DeviceRadixSort::SortPairs: temp storage of " + std::to_string(temp_bytes) + " bytes, " +
        std::to_string(need) + " needed, or not device memory");
    return false;
  }
  if (begin_bit < 0 || end_bit > key_bits || begin_bit > end_bit) {
    why("cub::DeviceRadixSort::SortPairs: bad bit range [" + std::to_string(begin_bit) + ", " +
        std::to_string(end_bit) + ")");
    return false;
  }
  for (int i = 0; i < nranges; ++i)
    if (!device_range(ranges[i], sizes[i])) {
      why("cub::DeviceRadixSort::SortPairs: operand " + std::to_string(i) + " is not a device range");
      return false;
    }
  return true;
}

// ---- cuBLAS ------------------------------------------------------------------------------------------------

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m != CUBLAS_DEFAULT_MATH && m != CUBLAS_TENSOR_OP_MATH && m != CUBLAS_PEDANTIC_MATH &&
      m != CUBLAS_TF32_TENSOR_OP_MATH)
    return CUBLAS_STATUS_INVALID_VALUE;
  h->math = m;
  return CUBLAS_STATUS_SUCCESS;
}

namespace {

// Column-major rows×cols matrix with leading dimension ld: elements spanned.
size_t extent(int rows, int cols, int ld) {
  return rows == 0 || cols == 0 ? 0 : static_cast<size_t>(cols - 1) * ld + rows;
}

// C = alpha op(A) op(B) + beta C for `batch` matrices (strides in elements), column-major.
template <class T>
cublasStatus_t gemm(const char* call, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, const T* alpha, const T* A, int lda, long long sa, const T* B, int ldb, long long sb,
                    const T* beta, T* C, int ldc, long long sc, int batch) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool na = ta == CUBLAS_OP_N, nb = tb == CUBLAS_OP_N;
  const bool ops_ok = (na || ta == CUBLAS_OP_T || ta == CUBLAS_OP_C) && (nb || tb == CUBLAS_OP_T || tb == CUBLAS_OP_C);
  if (!ops_ok || m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, na ? m : k) ||
      ldb < std::max(1, nb ? k : n) || ldc < std::max(1, m) || !alpha || !beta) {
    why(std::string(call) + ": invalid value (m " + std::to_string(m) + ", n " + std::to_string(n) + ", k " +
        std::to_string(k) + ", lda " + std::to_string(lda) + ", ldb " + std::to_string(ldb) + ", ldc " +
        std::to_string(ldc) + ", batch " + std::to_string(batch) + ")");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  // alpha and beta are host pointers (the default pointer mode); the matrices are device memory.
  const size_t ea = extent(na ? m : k, na ? k : m, lda), eb = extent(nb ? k : n, nb ? n : k, ldb),
               ec = extent(m, n, ldc);
  for (int i = 0; i < batch; ++i)
    if (!device_range(A + i * sa, ea * sizeof(T)) || !device_range(B + i * sb, eb * sizeof(T)) ||
        !device_range(C + i * sc, ec * sizeof(T))) {
      why(std::string(call) + ": batch " + std::to_string(i) + ": an operand is not inside device memory");
      return CUBLAS_STATUS_EXECUTION_FAILED;
    }
  const double al = *alpha, be = *beta;
  kdet_emu::DeviceScope device;
  std::vector<double> acc(m);
  for (int b = 0; b < batch; ++b) {
    const T* a = A + b * sa;
    const T* bb = B + b * sb;
    T* c = C + b * sc;
    for (int j = 0; j < n; ++j) {
      std::fill(acc.begin(), acc.end(), 0.0);
      if (al != 0.0)
        for (int l = 0; l < k; ++l) {
          const double bv = nb ? bb[l + static_cast<size_t>(j) * ldb] : bb[j + static_cast<size_t>(l) * ldb];
          if (na) {
            const T* col = a + static_cast<size_t>(l) * lda;
            for (int i = 0; i < m; ++i) acc[i] += static_cast<double>(col[i]) * bv;
          } else {
            for (int i = 0; i < m; ++i) acc[i] += static_cast<double>(a[l + static_cast<size_t>(i) * lda]) * bv;
          }
        }
      T* cc = c + static_cast<size_t>(j) * ldc;
      for (int i = 0; i < m; ++i)  // beta == 0: C is not read (it may hold NaN)
        cc[i] = static_cast<T>(al * acc[i] + (be == 0.0 ? 0.0 : be * static_cast<double>(cc[i])));
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  return gemm("cublasSgemm", h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const double* alpha, const double* A, int lda, const double* B, int ldb,
                           const double* beta, double* C, int ldc) {
  return gemm("cublasDgemm", h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long sa,
                                         const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                                         long long sc, int batch) {
  return gemm("cublasSgemmStridedBatched", h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc,
              batch);
}
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const double* alpha, const double* A, int lda, long long sa,
                                         const double* B, int ldb, long long sb, const double* beta, double* C,
                                         int ldc, long long sc, int batch) {
  return gemm("cublasDgemmStridedBatched", h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc,
              batch);
}

// ---- cuDNN -------------------------------------------------------------------------------------------------

struct cudnnContext {
  cudaStream_t stream = nullptr;
};
struct cudnnTensorStruct {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
};
struct cudnnFilterStruct {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int k = 0, c = 0, h = 0, w = 0;
};
struct cudnnConvolutionStruct {
  bool set = false;
  int ph = 0, pw = 0, sh = 1, sw = 1, dh = 1, dw = 1, groups = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

const char* cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
  }
  return "CUDNN_STATUS_UNKNOWN";
}

namespace {

cudnnStatus_t bad(const std::string& msg, cudnnStatus_t s = CUDNN_STATUS_BAD_PARAM) {
  why(msg);
  return s;
}
bool valid_type(cudnnDataType_t t) { return t == CUDNN_DATA_FLOAT || t == CUDNN_DATA_DOUBLE || t == CUDNN_DATA_HALF; }
size_t type_size(cudnnDataType_t t) { return t == CUDNN_DATA_DOUBLE ? 8 : t == CUDNN_DATA_HALF ? 2 : 4; }

template <class P>
cudnnStatus_t create(P** d) {
  if (!d) return CUDNN_STATUS_BAD_PARAM;
  *d = new P();
  return CUDNN_STATUS_SUCCESS;
}
template <class P>
cudnnStatus_t destroy(P* d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}

int out_dim(int in, int pad, int k, int stride, int dil) { return (in + 2 * pad - (dil * (k - 1) + 1)) / stride + 1; }

// The convolution's geometry after checking the descriptors against each other.
struct Geo {
  int N, C, H, W, K, R, S, OH, OW, G, ph, pw, sh, sw, dh, dw;
  bool flip;
  cudnnDataType_t type;
  size_t x_bytes() const { return size_t(N) * C * H * W * type_size(type); }
  size_t w_bytes() const { return size_t(K) * (C / G) * R * S * type_size(type); }
  size_t y_bytes() const { return size_t(N) * K * OH * OW * type_size(type); }
};

cudnnStatus_t geometry(const char* call, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                       cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y, Geo& g) {
  const std::string c(call);
  if (!x || !w || !conv || !y || !x->set || !w->set || !conv->set) return bad(c + ": a descriptor is null or unset");
  if (x->type != w->type || x->type != y->type || !y->set)
    return bad(c + ": x, w and y descriptors differ in data type (or y is unset)");
  if (x->type == CUDNN_DATA_HALF || conv->compute != x->type)
    return bad(c + ": data type / compute type combination not modelled", CUDNN_STATUS_NOT_SUPPORTED);
  if (x->c != w->c * conv->groups || w->k % conv->groups != 0)
    return bad(c + ": input channels " + std::to_string(x->c) + " vs filter [" + std::to_string(w->k) + ", " +
               std::to_string(w->c) + ", ...] with " + std::to_string(conv->groups) + " groups");
  g = Geo{x->n, x->c, x->h, x->w, w->k, w->h, w->w, out_dim(x->h, conv->ph, w->h, conv->sh, conv->dh),
          out_dim(x->w, conv->pw, w->w, conv->sw, conv->dw), conv->groups, conv->ph, conv->pw, conv->sh, conv->sw,
          conv->dh, conv->dw, conv->mode == CUDNN_CONVOLUTION, x->type};
  if (g.OH <= 0 || g.OW <= 0) return bad(c + ": empty output");
  if (y->n != g.N || y->c != g.K || y->h != g.OH || y->w != g.OW)
    return bad(c + ": y descriptor [" + std::to_string(y->n) + ", " + std::to_string(y->c) + ", " +
               std::to_string(y->h) + ", " + std::to_string(y->w) + "] is not the output shape [" +
               std::to_string(g.N) + ", " + std::to_string(g.K) + ", " + std::to_string(g.OH) + ", " +
               std::to_string(g.OW) + "]");
  return CUDNN_STATUS_SUCCESS;
}

enum class Pass { Fwd, BwdData, BwdFilter };
constexpr size_t kHuge = size_t(2) << 30;  // a candidate over kdet's 1 GiB workspace cap

// The emulated algorithm list of a pass (heuristic order). It includes entries kdet must skip.
template <class Algo>
std::vector<cudnnAlgoPerfEmu<Algo>> candidates(Pass p, const Geo& g, cudnnMathType_t m) {
  using E = cudnnAlgoPerfEmu<Algo>;
  auto e = [&](int a, cudnnStatus_t s, size_t mem, cudnnDeterminism_t d, cudnnMathType_t mt) {
    return E{static_cast<Algo>(a), s, 0.0f, mem, d, mt, {0, 0, 0}};
  };
  const auto S = CUDNN_STATUS_SUCCESS;
  const auto D = CUDNN_DETERMINISTIC, ND = CUDNN_NON_DETERMINISTIC;
  const size_t col = size_t(g.C / g.G) * g.R * g.S * g.OH * g.OW * type_size(g.type);  // an im2col buffer
  switch (p) {
    case Pass::Fwd:
      return {e(CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, CUDNN_STATUS_NOT_SUPPORTED, 0, D, m),
              e(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, S, 0, D, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION),
              e(CUDNN_CONVOLUTION_FWD_ALGO_FFT, S, kHuge, D, m), e(CUDNN_CONVOLUTION_FWD_ALGO_GEMM, S, col, D, m),
              e(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, S, 0, D, m)};
    case Pass::BwdData:
      return {e(CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, S, 0, ND, m), e(CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT, S, kHuge, D, m),
              e(CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, S, 1024, D, m)};
    case Pass::BwdFilter:
      return {e(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, S, 0, ND, m), e(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, S, 0, ND, m),
              e(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, S, kHuge, D, m),
              e(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, S, 1024, D, m)};
  }
  return {};
}

template <class Algo>
cudnnStatus_t get_algos(const char* call, Pass p, cudnnHandle_t h, const Geo& g, cudnnMathType_t m, int requested,
                        int* returned, cudnnAlgoPerfEmu<Algo>* perf) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (requested < 1 || !returned || !perf) return bad(std::string(call) + ": requestedAlgoCount < 1 or null output");
  const auto all = candidates<Algo>(p, g, m);
  const int n = std::min<int>(requested, static_cast<int>(all.size()));
  for (int i = 0; i < n; ++i) perf[i] = all[i];
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

// The workspace an algorithm needs, or NOT_SUPPORTED when the emulated list does not offer it.
template <class Algo>
cudnnStatus_t algo_workspace(const char* call, Pass p, const Geo& g, cudnnMathType_t m, Algo a, size_t& bytes) {
  for (const auto& e : candidates<Algo>(p, g, m))
    if (e.algo == a && e.status == CUDNN_STATUS_SUCCESS) {
      bytes = e.memory;
      return CUDNN_STATUS_SUCCESS;
    }
  return bad(std::string(call) + ": algorithm " + std::to_string(static_cast<int>(a)) + " not supported",
             CUDNN_STATUS_NOT_SUPPORTED);
}

// Checks the scalars, operands and workspace of an execution call.
template <class Algo>
cudnnStatus_t check_call(const char* call, Pass p, cudnnHandle_t h, const Geo& g, cudnnConvolutionDescriptor_t conv,
                         Algo a, const void* alpha, const void* beta, const void* in0, size_t b0, const void* in1,
                         size_t b1, const void* out, size_t bo, const void* ws, size_t ws_bytes) {
  const std::string c(call);
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (!alpha || !beta) return bad(c + ": null alpha / beta");
  size_t need = 0;
  if (const cudnnStatus_t s = algo_workspace(call, p, g, conv->math, a, need)) return s;
  if (ws_bytes < need) return bad(c + ": workspace " + std::to_string(ws_bytes) + " bytes < " + std::to_string(need));
  if (ws_bytes > 0 && !device_range(ws, ws_bytes)) return bad(c + ": workspace is not device memory");
  if (!device_range(in0, b0) || !device_range(in1, b1) || !device_range(out, bo))
    return bad(c + ": an operand is not inside device memory", CUDNN_STATUS_EXECUTION_FAILED);
  return CUDNN_STATUS_SUCCESS;
}

double scalar(const void* p, cudnnDataType_t t) {
  return t == CUDNN_DATA_DOUBLE ? *static_cast<const double*>(p) : *static_cast<const float*>(p);
}

template <class T>
void store(T* dst, const std::vector<double>& acc, double alpha, double beta) {
  for (size_t i = 0; i < acc.size(); ++i)  // beta == 0: dst is not read
    dst[i] = static_cast<T>(alpha * acc[i] + (beta == 0.0 ? 0.0 : beta * static_cast<double>(dst[i])));
}

// Filter element (k, cl, r, s) as the cross-correlation sees it (CONVOLUTION mode flips the window).
inline size_t widx(const Geo& g, int k, int cl, int r, int s) {
  const int Cg = g.C / g.G;
  if (g.flip) r = g.R - 1 - r, s = g.S - 1 - s;
  return ((static_cast<size_t>(k) * Cg + cl) * g.R + r) * g.S + s;
}

// Calls f(n, k, c, cl, r, s, oh, ow, ih, iw) for every valid (output, tap) pair, in a fixed order.
template <class F>
void for_each_tap(const Geo& g, F f) {
  const int Cg = g.C / g.G, Kg = g.K / g.G;
  for (int n = 0; n < g.N; ++n)
    for (int k = 0; k < g.K; ++k) {
      const int gi = k / Kg;
      for (int cl = 0; cl < Cg; ++cl)
        for (int r = 0; r < g.R; ++r)
          for (int oh = 0; oh < g.OH; ++oh) {
            const int ih = oh * g.sh - g.ph + r * g.dh;
            if (ih < 0 || ih >= g.H) continue;
            for (int s = 0; s < g.S; ++s)
              for (int ow = 0; ow < g.OW; ++ow) {
                const int iw = ow * g.sw - g.pw + s * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                f(n, k, gi * Cg + cl, cl, r, s, oh, ow, ih, iw);
              }
          }
    }
}

template <class T>
void conv_fwd(const Geo& g, double alpha, const T* x, const T* w, double beta, T* y) {
  std::vector<double> acc(size_t(g.N) * g.K * g.OH * g.OW, 0.0);
  for_each_tap(g, [&](int n, int k, int c, int cl, int r, int s, int oh, int ow, int ih, int iw) {
    acc[((size_t(n) * g.K + k) * g.OH + oh) * g.OW + ow] +=
        double(w[widx(g, k, cl, r, s)]) * double(x[((size_t(n) * g.C + c) * g.H + ih) * g.W + iw]);
  });
  store(y, acc, alpha, beta);
}

template <class T>
void conv_bwd_data(const Geo& g, double alpha, const T* w, const T* dy, double beta, T* dx) {
  std::vector<double> acc(size_t(g.N) * g.C * g.H * g.W, 0.0);
  for_each_tap(g, [&](int n, int k, int c, int cl, int r, int s, int oh, int ow, int ih, int iw) {
    acc[((size_t(n) * g.C + c) * g.H + ih) * g.W + iw] +=
        double(w[widx(g, k, cl, r, s)]) * double(dy[((size_t(n) * g.K + k) * g.OH + oh) * g.OW + ow]);
  });
  store(dx, acc, alpha, beta);
}

template <class T>
void conv_bwd_filter(const Geo& g, double alpha, const T* x, const T* dy, double beta, T* dw) {
  std::vector<double> acc(size_t(g.K) * (g.C / g.G) * g.R * g.S, 0.0);
  for_each_tap(g, [&](int n, int k, int c, int cl, int r, int s, int oh, int ow, int ih, int iw) {
    acc[widx(g, k, cl, r, s)] +=
        double(x[((size_t(n) * g.C + c) * g.H + ih) * g.W + iw]) * double(dy[((size_t(n) * g.K + k) * g.OH + oh) * g.OW + ow]);
  });
  store(dw, acc, alpha, beta);
}

// Runs a pass on the descriptors' data type.
void run_pass(Pass p, const Geo& g, double alpha, const void* in0, const void* in1, double beta, void* out) {
  kdet_emu::DeviceScope device;
  auto go = [&](auto tag) {
    using T = decltype(tag);
    const T* a = static_cast<const T*>(in0);
    const T* b = static_cast<const T*>(in1);
    T* o = static_cast<T*>(out);
    if (p == Pass::Fwd) conv_fwd(g, alpha, a, b, beta, o);          // in0 = x, in1 = w
    if (p == Pass::BwdData) conv_bwd_data(g, alpha, a, b, beta, o);  // in0 = w, in1 = dy
    if (p == Pass::BwdFilter) conv_bwd_filter(g, alpha, a, b, beta, o);  // in0 = x, in1 = dy
  };
  if (g.type == CUDNN_DATA_DOUBLE)
    go(double());
  else
    go(float());
}

// Find*Ex: runs the pass (into the caller's output buffer, as cuDNN does) and returns the candidates in
// "measured" order, entries needing more workspace than given marked as failed.
template <class Algo>
cudnnStatus_t find_algos(const char* call, Pass p, cudnnHandle_t h, const Geo& g, cudnnConvolutionDescriptor_t conv,
                         const void* in0, size_t b0, const void* in1, size_t b1, void* out, size_t bo, int requested,
                         int* returned, cudnnAlgoPerfEmu<Algo>* perf, const void* ws, size_t ws_bytes) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (requested < 1 || !returned || !perf) return bad(std::string(call) + ": requestedAlgoCount < 1 or null output");
  if (ws_bytes > 0 && !device_range(ws, ws_bytes)) return bad(std::string(call) + ": workspace is not device memory");
  if (!device_range(in0, b0) || !device_range(in1, b1) || !device_range(out, bo))
    return bad(std::string(call) + ": an operand is not inside device memory", CUDNN_STATUS_EXECUTION_FAILED);
  run_pass(p, g, 1.0, in0, in1, 0.0, out);
  auto all = candidates<Algo>(p, g, conv->math);
  std::reverse(all.begin(), all.end());  // the "fastest" first: the heuristics' last choice
  for (size_t i = 0; i < all.size(); ++i) {
    all[i].time = 0.1f * static_cast<float>(i + 1);
    if (all[i].status == CUDNN_STATUS_SUCCESS && all[i].memory > ws_bytes) all[i].status = CUDNN_STATUS_NOT_SUPPORTED;
  }
  std::stable_partition(all.begin(), all.end(), [](const auto& e) { return e.status == CUDNN_STATUS_SUCCESS; });
  const int n = std::min<int>(requested, static_cast<int>(all.size()));
  for (int i = 0; i < n; ++i) perf[i] = all[i];
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

cudnnStatus_t cudnnCreate(cudnnHandle_t* h) { return create(h); }
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) { return h ? destroy(h) : CUDNN_STATUS_NOT_INITIALIZED; }
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* d) { return create(d); }
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) { return destroy(d); }
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f, cudnnDataType_t t, int n,
                                         int c, int h, int w) {
  if (!d || !valid_type(t) || n <= 0 || c <= 0 || h <= 0 || w <= 0 || (f != CUDNN_TENSOR_NCHW && f != CUDNN_TENSOR_NHWC))
    return bad("cudnnSetTensor4dDescriptor: bad argument (n " + std::to_string(n) + ", c " + std::to_string(c) +
               ", h " + std::to_string(h) + ", w " + std::to_string(w) + ")");
  if (f != CUDNN_TENSOR_NCHW) return bad("cudnnSetTensor4dDescriptor: only NCHW is modelled", CUDNN_STATUS_NOT_SUPPORTED);
  *d = cudnnTensorStruct{true, t, n, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* d) { return create(d); }
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) { return destroy(d); }
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t, cudnnTensorFormat_t f, int k,
                                         int c, int h, int w) {
  if (!d || !valid_type(t) || k <= 0 || c <= 0 || h <= 0 || w <= 0 || (f != CUDNN_TENSOR_NCHW && f != CUDNN_TENSOR_NHWC))
    return bad("cudnnSetFilter4dDescriptor: bad argument");
  if (f != CUDNN_TENSOR_NCHW) return bad("cudnnSetFilter4dDescriptor: only NCHW is modelled", CUDNN_STATUS_NOT_SUPPORTED);
  *d = cudnnFilterStruct{true, t, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* d) { return create(d); }
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) { return destroy(d); }
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dil_h, int dil_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
  if (!d || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dil_h <= 0 || dil_w <= 0 ||
      (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION) || !valid_type(compute))
    return bad("cudnnSetConvolution2dDescriptor: bad argument");
  d->set = true;
  d->ph = pad_h, d->pw = pad_w, d->sh = u, d->sw = v, d->dh = dil_h, d->dw = dil_w;
  d->mode = mode;
  d->compute = compute;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int groups) {
  if (!d || groups < 1) return bad("cudnnSetConvolutionGroupCount: bad argument");
  d->groups = groups;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
  if (!d || (m != CUDNN_DEFAULT_MATH && m != CUDNN_TENSOR_OP_MATH && m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION &&
             m != CUDNN_FMA_MATH))
    return bad("cudnnSetConvolutionMathType: bad argument");
  d->math = m;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t d, cudnnTensorDescriptor_t x,
                                                    cudnnFilterDescriptor_t w, int* n, int* c, int* h, int* wo) {
  const char* call = "cudnnGetConvolution2dForwardOutputDim";
  if (!d || !x || !w || !d->set || !x->set || !w->set || !n || !c || !h || !wo) return bad(std::string(call) + ": unset");
  if (x->type != w->type) return bad(std::string(call) + ": x and w data types differ");
  if (x->c != w->c * d->groups)
    return bad(std::string(call) + ": input channels " + std::to_string(x->c) + " != filter channels " +
               std::to_string(w->c) + " x groups " + std::to_string(d->groups));
  const int oh = out_dim(x->h, d->ph, w->h, d->sh, d->dh), ow = out_dim(x->w, d->pw, w->w, d->sw, d->dw);
  if (oh <= 0 || ow <= 0) return bad(std::string(call) + ": empty output");
  *n = x->n, *c = w->k, *h = oh, *wo = ow;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                                                     cudnnTensorDescriptor_t y, int requested, int* returned,
                                                     cudnnConvolutionFwdAlgoPerf_t* perf) {
  const char* call = "cudnnGetConvolutionForwardAlgorithm_v7";
  Geo g;
  if (const cudnnStatus_t s = geometry(call, x, w, conv, y, g)) return s;
  return get_algos(call, Pass::Fwd, h, g, conv->math, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t h, cudnnFilterDescriptor_t w,
                                                          cudnnTensorDescriptor_t dy,
                                                          cudnnConvolutionDescriptor_t conv,
                                                          cudnnTensorDescriptor_t dx, int requested, int* returned,
                                                          cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  const char* call = "cudnnGetConvolutionBackwardDataAlgorithm_v7";
  Geo g;
  if (const cudnnStatus_t s = geometry(call, dx, w, conv, dy, g)) return s;
  return get_algos(call, Pass::BwdData, h, g, conv->math, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                            cudnnTensorDescriptor_t dy,
                                                            cudnnConvolutionDescriptor_t conv,
                                                            cudnnFilterDescriptor_t dw, int requested, int* returned,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  const char* call = "cudnnGetConvolutionBackwardFilterAlgorithm_v7";
  Geo g;
  if (const cudnnStatus_t s = geometry(call, x, dw, conv, dy, g)) return s;
  return get_algos(call, Pass::BwdFilter, h, g, conv->math, requested, returned, perf);
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(cudnnHandle_t h, cudnnTensorDescriptor_t xd, const void* x,
                                                     cudnnFilterDescriptor_t wd, const void* w,
                                                     cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t yd,
                                                     void* y, int requested, int* returned,
                                                     cudnnConvolutionFwdAlgoPerf_t* perf, void* ws, size_t ws_bytes) {
  const char* call = "cudnnFindConvolutionForwardAlgorithmEx";
  Geo g;
  if (const cudnnStatus_t s = geometry(call, xd, wd, conv, yd, g)) return s;
  return find_algos(call, Pass::Fwd, h, g, conv, x, g.x_bytes(), w, g.w_bytes(), y, g.y_bytes(), requested, returned,
                    perf, ws, ws_bytes);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(cudnnHandle_t h, cudnnFilterDescriptor_t wd, const void* w,
                                                          cudnnTensorDescriptor_t dyd, const void* dy,
                                                          cudnnConvolutionDescriptor_t conv,
                                                          cudnnTensorDescriptor_t dxd, void* dx, int requested,
                                                          int* returned, cudnnConvolutionBwdDataAlgoPerf_t* perf,
                                                          void* ws, size_t ws_bytes) {
  const char* call = "cudnnFindConvolutionBackwardDataAlgorithmEx";
  Geo g;
  if (const cudnnStatus_t s = geometry(call, dxd, wd, conv, dyd, g)) return s;
  return find_algos(call, Pass::BwdData, h, g, conv, w, g.w_bytes(), dy, g.y_bytes(), dx, g.x_bytes(), requested,
                    returned, perf, ws, ws_bytes);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnnHandle_t h, cudnnTensorDescriptor_t xd,
                                                            const void* x, cudnnTensorDescriptor_t dyd,
                                                            const void* dy, cudnnConvolutionDescriptor_t conv,
                                                            cudnnFilterDescriptor_t dwd, void* dw, int requested,
                                                            int* returned, cudnnConvolutionBwdFilterAlgoPerf_t* perf,
                                                            void* ws, size_t ws_bytes) {
  const char* call = "cudnnFindConvolutionBackwardFilterAlgorithmEx";
  Geo g;
  if (const cudnnStatus_t s = geometry(call, xd, dwd, conv, dyd, g)) return s;
  return find_algos(call, Pass::BwdFilter, h, g, conv, x, g.x_bytes(), dy, g.y_bytes(), dw, g.w_bytes(), requested,
                    returned, perf, ws, ws_bytes);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                                                      cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t* bytes) {
  const char* call = "cudnnGetConvolutionForwardWorkspaceSize";
  Geo g;
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (const cudnnStatus_t s = geometry(call, x, w, conv, y, g)) return s;
  return bytes ? algo_workspace(call, Pass::Fwd, g, conv->math, algo, *bytes) : bad("null size");
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h, cudnnFilterDescriptor_t w,
                                                           cudnnTensorDescriptor_t dy,
                                                           cudnnConvolutionDescriptor_t conv,
                                                           cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t* bytes) {
  const char* call = "cudnnGetConvolutionBackwardDataWorkspaceSize";
  Geo g;
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (const cudnnStatus_t s = geometry(call, dx, w, conv, dy, g)) return s;
  return bytes ? algo_workspace(call, Pass::BwdData, g, conv->math, algo, *bytes) : bad("null size");
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                             cudnnTensorDescriptor_t dy,
                                                             cudnnConvolutionDescriptor_t conv,
                                                             cudnnFilterDescriptor_t dw,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t* bytes) {
  const char* call = "cudnnGetConvolutionBackwardFilterWorkspaceSize";
  Geo g;
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (const cudnnStatus_t s = geometry(call, x, dw, conv, dy, g)) return s;
  return bytes ? algo_workspace(call, Pass::BwdFilter, g, conv->math, algo, *bytes) : bad("null size");
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void* alpha, cudnnTensorDescriptor_t xd, const void* x,
                                      cudnnFilterDescriptor_t wd, const void* w, cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void* ws, size_t ws_bytes, const void* beta,
                                      cudnnTensorDescriptor_t yd, void* y) {
  const char* call = "cudnnConvolutionForward";
  Geo g;
  if (const cudnnStatus_t s = geometry(call, xd, wd, conv, yd, g)) return s;
  if (const cudnnStatus_t s = check_call(call, Pass::Fwd, h, g, conv, algo, alpha, beta, x, g.x_bytes(), w,
                                         g.w_bytes(), y, g.y_bytes(), ws, ws_bytes))
    return s;
  run_pass(Pass::Fwd, g, scalar(alpha, g.type), x, w, scalar(beta, g.type), y);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void* alpha, cudnnFilterDescriptor_t wd,
                                           const void* w, cudnnTensorDescriptor_t dyd, const void* dy,
                                           cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdDataAlgo_t algo,
                                           void* ws, size_t ws_bytes, const void* beta, cudnnTensorDescriptor_t dxd,
                                           void* dx) {
  const char* call = "cudnnConvolutionBackwardData";
  Geo g;
  if (const cudnnStatus_t s = geometry(call, dxd, wd, conv, dyd, g)) return s;
  if (const cudnnStatus_t s = check_call(call, Pass::BwdData, h, g, conv, algo, alpha, beta, w, g.w_bytes(), dy,
                                         g.y_bytes(), dx, g.x_bytes(), ws, ws_bytes))
    return s;
  run_pass(Pass::BwdData, g, scalar(alpha, g.type), w, dy, scalar(beta, g.type), dx);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void* alpha, cudnnTensorDescriptor_t xd,
                                             const void* x, cudnnTensorDescriptor_t dyd, const void* dy,
                                             cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdFilterAlgo_t algo,
                                             void* ws, size_t ws_bytes, const void* beta,
                                             cudnnFilterDescriptor_t dwd, void* dw) {
  const char* call = "cudnnConvolutionBackwardFilter";
  Geo g;
  if (const cudnnStatus_t s = geometry(call, xd, dwd, conv, dyd, g)) return s;
  if (const cudnnStatus_t s = check_call(call, Pass::BwdFilter, h, g, conv, algo, alpha, beta, x, g.x_bytes(), dy,
                                         g.y_bytes(), dw, g.w_bytes(), ws, ws_bytes))
    return s;
  run_pass(Pass::BwdFilter, g, scalar(alpha, g.type), x, dy, scalar(beta, g.type), dw);
  return CUDNN_STATUS_SUCCESS;
}
