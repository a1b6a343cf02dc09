// engine/ops/conv2d_cuda.cu — conv2d forward / backward-data / backward-filter through cuDNN
// (CPU: conv2d_cpu.cpp; shapes and arguments are checked once in conv2d.cpp).
//
// Algorithm choice, cached per shape in the device's context (key: pass, dtype, shapes, args, settings):
//   * default: cuDNN's heuristics (cudnnGet*Algorithm_v7), first candidate that succeeds, is
//     deterministic (unless cuda::set_deterministic(false)), fits the workspace cap and uses an allowed math type;
//   * cuda::set_conv_benchmark(true): cudnnFind*AlgorithmEx times the candidates once per shape
//     (like torch.backends.cudnn.benchmark) and the fastest allowed one is kept.
// Math: full f32 (CUDNN_FMA_MATH) unless TF32 is allowed on the device; never fp16 down-conversion.
// Workspace: a device tensor from the caching allocator, at most kWorkspaceCap bytes.
// Bias: a separate broadcast-add kernel (forward); its gradient is a reduction in conv2d.cpp.
#include <climits>
#include <sstream>
#include <vector>

#include "engine/cuda/launch.cuh"
#include "engine/ops/conv2d_cuda.h"

namespace kdet::cuda {

namespace {

constexpr size_t kWorkspaceCap = size_t(1) << 30;  // 1 GiB

enum class Pass { Forward, BackwardData, BackwardFilter };

const char* pass_name(Pass p) {
  switch (p) {
    case Pass::Forward: return "conv2d";
    case Pass::BackwardData: return "conv2d_backward_input";
    case Pass::BackwardFilter: return "conv2d_backward_weight";
  }
  return "conv2d";
}

int to_int(int64_t v, const char* op) {
  KDET_CHECK(v >= 0 && v <= INT_MAX, op, " (cuda): size ", v, " exceeds cuDNN's int range");
  return static_cast<int>(v);
}

// RAII cuDNN descriptors for one call.
struct Descs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  const char* op;

  Descs(const char* op_, const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dArgs& a, DType dt) : op(op_) {
    const cudnnDataType_t t = dt == DType::F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    KDET_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x), op);
    KDET_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y), op);
    KDET_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w), op);
    KDET_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv), op);
    KDET_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, t, to_int(xs[0], op), to_int(xs[1], op),
                                                to_int(xs[2], op), to_int(xs[3], op)),
                     op);
    KDET_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, t, to_int(ys[0], op), to_int(ys[1], op),
                                                to_int(ys[2], op), to_int(ys[3], op)),
                     op);
    KDET_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, t, CUDNN_TENSOR_NCHW, to_int(ws[0], op), to_int(ws[1], op),
                                                to_int(ws[2], op), to_int(ws[3], op)),
                     op);
    KDET_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, to_int(a.pad_h, op), to_int(a.pad_w, op),
                                                     to_int(a.stride_h, op), to_int(a.stride_w, op),
                                                     to_int(a.dilation_h, op), to_int(a.dilation_w, op),
                                                     CUDNN_CROSS_CORRELATION, t),
                     op);
    KDET_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv, to_int(a.groups, op)), op);
    // cuDNN must agree with conv2d.cpp on the output shape.
    int n = 0, c = 0, h = 0, ww = 0;
    KDET_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv, x, w, &n, &c, &h, &ww), op);
    KDET_CHECK(n == ys[0] && c == ys[1] && h == ys[2] && ww == ys[3], op, " (cuda): cuDNN output shape [", n, ", ",
               c, ", ", h, ", ", ww, "] differs from ", ys);
  }
  ~Descs() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
  Descs(const Descs&) = delete;
  Descs& operator=(const Descs&) = delete;
};

std::string cache_key(Pass p, const Shape& xs, const Shape& ws, const Conv2dArgs& a, DType dt, bool tf32, bool bench,
                      bool det) {
  std::ostringstream k;
  k << static_cast<int>(p) << '|' << dtype_name(dt) << '|' << xs << ws << '|' << a.stride_h << ',' << a.stride_w << ','
    << a.pad_h << ',' << a.pad_w << ',' << a.dilation_h << ',' << a.dilation_w << ',' << a.groups << '|' << tf32
    << bench << det;
  return k.str();
}

bool math_allowed(cudnnMathType_t m, DType dt, bool tf32) {
  if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;  // may down-convert to fp16
  if (dt == DType::F32 && !tf32) return m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
  return true;
}

cudnnMathType_t requested_math(DType dt, bool tf32) {
  return dt == DType::F32 && !tf32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
}

// Workspace of algorithm `algo` of pass p when it runs with math type `math` (left set on d.conv).
cudnnStatus_t workspace_need(cudnnHandle_t h, Pass p, const Descs& d, int algo, int math, size_t& need) {
  need = 0;
  const cudnnStatus_t s = cudnnSetConvolutionMathType(d.conv, static_cast<cudnnMathType_t>(math));
  if (s != CUDNN_STATUS_SUCCESS) return s;
  switch (p) {
    case Pass::Forward:
      return cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y,
                                                     static_cast<cudnnConvolutionFwdAlgo_t>(algo), &need);
    case Pass::BackwardData:
      return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x,
                                                          static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), &need);
    case Pass::BackwardFilter:
      return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.conv, d.w,
                                                            static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), &need);
  }
  return CUDNN_STATUS_BAD_PARAM;
}

// Picks the first acceptable entry of a cuDNN perf list (sorted best first). The workspace is queried again
// for the math type the entry will really run with: a perf entry's `memory` is for its own math type, and
// full f32 runs every entry with FMA math (an entry cuDNN cannot run that way is skipped).
template <class Perf>
bool pick(const Perf* perf, int n, DType dt, bool tf32, bool det, size_t cap, cudnnHandle_t h, Pass pass,
          const Descs& d, ConvAlgo& out) {
  for (int i = 0; i < n; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || (det && p.determinism != CUDNN_DETERMINISTIC) || p.memory > cap ||
        !math_allowed(p.mathType, dt, tf32))
      continue;
    // Full f32: run with FMA math whatever the entry says (DEFAULT math may use TF32 on Ampere and later).
    const int math = static_cast<int>(dt == DType::F32 && !tf32 ? CUDNN_FMA_MATH : p.mathType);
    size_t need = 0;
    if (workspace_need(h, pass, d, static_cast<int>(p.algo), math, need) != CUDNN_STATUS_SUCCESS || need > cap)
      continue;
    out.algo = static_cast<int>(p.algo);
    out.math_type = math;
    out.workspace = std::max(p.memory, need);
    return true;
  }
  return false;
}

// Largest workspace among the acceptable heuristic candidates (what a benchmark run needs).
template <class Perf>
size_t max_workspace(const Perf* perf, int n, DType dt, bool tf32, size_t cap) {
  size_t m = 0;
  for (int i = 0; i < n; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= cap && math_allowed(perf[i].mathType, dt, tf32))
      m = std::max(m, perf[i].memory);
  return m;
}

Tensor workspace(size_t bytes, Device d) {
  return bytes ? Tensor::empty({static_cast<int64_t>(bytes)}, DType::U8, d) : Tensor();
}

void* ws_ptr(Tensor& ws) { return ws.defined() ? ws.raw_data() : nullptr; }

// Chooses (and caches) the algorithm of one pass. The Find*Ex benchmark writes into `out_buf` (the
// call's own output, overwritten by the real call right after).
ConvAlgo choose(Context& ctx, Pass p, Descs& d, const Shape& xs, const Shape& ws, const Conv2dArgs& a, DType dt,
                const void* in0, const void* in1, void* out_buf, Device dev) {
  const char* op = pass_name(p);
  const bool tf32 = ctx.allow_tf32(), bench = ctx.conv_benchmark(), det = ctx.deterministic();
  const std::string key = cache_key(p, xs, ws, a, dt, tf32, bench, det);
  ConvAlgo algo;
  if (ctx.find_conv_algo(key, algo)) return algo;
  cudnnHandle_t h = ctx.cudnn();
  KDET_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, requested_math(dt, tf32)), op);
  bool found = false;
  int returned = 0;
  if (p == Pass::Forward) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    KDET_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                            &returned, perf),
                     op);
    if (bench) {
      Tensor wsb = workspace(max_workspace(perf, returned, dt, tf32, kWorkspaceCap), dev);
      const size_t wsz = wsb.defined() ? wsb.nbytes() : 0;
      KDET_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, d.x, in0, d.w, in1, d.conv, d.y, out_buf,
                                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf,
                                                              ws_ptr(wsb), wsz),
                       op);
      found = pick(perf, returned, dt, tf32, det, wsz, h, p, d, algo);
    } else {
      found = pick(perf, returned, dt, tf32, det, kWorkspaceCap, h, p, d, algo);
    }
    if (!found) {
      algo.algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
      algo.math_type = requested_math(dt, tf32);
      KDET_CUDNN_CHECK(workspace_need(h, p, d, algo.algo, algo.math_type, algo.workspace), op);
    }
  } else if (p == Pass::BackwardData) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    KDET_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x,
                                                                 CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf),
                     op);
    if (bench) {
      Tensor wsb = workspace(max_workspace(perf, returned, dt, tf32, kWorkspaceCap), dev);
      const size_t wsz = wsb.defined() ? wsb.nbytes() : 0;
      // in0 = w, in1 = dy, out_buf = dx
      KDET_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, d.w, in0, d.y, in1, d.conv, d.x, out_buf,
                                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned,
                                                                   perf, ws_ptr(wsb), wsz),
                       op);
      found = pick(perf, returned, dt, tf32, det, wsz, h, p, d, algo);
    } else {
      found = pick(perf, returned, dt, tf32, det, kWorkspaceCap, h, p, d, algo);
    }
    if (!found) {
      algo.algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;  // deterministic
      algo.math_type = requested_math(dt, tf32);
      KDET_CUDNN_CHECK(workspace_need(h, p, d, algo.algo, algo.math_type, algo.workspace), op);
    }
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    KDET_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w,
                                                                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned,
                                                                   perf),
                     op);
    if (bench) {
      Tensor wsb = workspace(max_workspace(perf, returned, dt, tf32, kWorkspaceCap), dev);
      const size_t wsz = wsb.defined() ? wsb.nbytes() : 0;
      // in0 = x, in1 = dy, out_buf = dw
      KDET_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, d.x, in0, d.y, in1, d.conv, d.w, out_buf,
                                                                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                                     &returned, perf, ws_ptr(wsb), wsz),
                       op);
      found = pick(perf, returned, dt, tf32, det, wsz, h, p, d, algo);
    } else {
      found = pick(perf, returned, dt, tf32, det, kWorkspaceCap, h, p, d, algo);
    }
    if (!found) {
      algo.algo = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;  // deterministic
      algo.math_type = requested_math(dt, tf32);
      KDET_CUDNN_CHECK(workspace_need(h, p, d, algo.algo, algo.math_type, algo.workspace), op);
    }
  }
  ctx.store_conv_algo(key, algo);
  return algo;
}

template <class T>
__global__ void add_bias_kernel(int64_t n, int64_t O, int64_t P, T* y, const T* b) {
  KDET_GRID_STRIDE(i, n) { y[i] += b[(i / P) % O]; }
}

// alpha / beta pointers of the data type (cuDNN takes float for float data and double for double).
struct AlphaBeta {
  float f1 = 1.0f, f0 = 0.0f;
  double d1 = 1.0, d0 = 0.0;
  const void* one(DType t) const { return t == DType::F64 ? static_cast<const void*>(&d1) : &f1; }
  const void* zero(DType t) const { return t == DType::F64 ? static_cast<const void*>(&d0) : &f0; }
};

void check_operands(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    KDET_CHECK(t->is_contiguous(), op, " (cuda): operand ", t->desc(), " must be contiguous");
    KDET_CHECK(t->dtype() == DType::F32 || t->dtype() == DType::F64, op, " (cuda): expects f32 or f64, got ",
               t->desc());
  }
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const Conv2dArgs& a) {
  const char* op = "conv2d";
  check_operands(op, {&x, &w, &y});
  Context& ctx = activate(x, op);
  if (y.numel() == 0) return;
  if (x.numel() == 0 || w.numel() == 0) {  // empty sum over input channels
    y.fill_(0.0);
  } else {
    Descs d(op, x.shape(), w.shape(), y.shape(), a, x.dtype());
    const ConvAlgo algo = choose(ctx, Pass::Forward, d, x.shape(), w.shape(), a, x.dtype(), x.raw_data(), w.raw_data(),
                                 y.raw_data(), x.device());
    KDET_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, static_cast<cudnnMathType_t>(algo.math_type)), op);
    Tensor wsb = workspace(algo.workspace, x.device());
    const AlphaBeta ab;
    KDET_CUDNN_CHECK(cudnnConvolutionForward(ctx.cudnn(), ab.one(x.dtype()), d.x, x.raw_data(), d.w, w.raw_data(),
                                             d.conv, static_cast<cudnnConvolutionFwdAlgo_t>(algo.algo), ws_ptr(wsb),
                                             algo.workspace, ab.zero(x.dtype()), d.y, y.raw_data()),
                     op);
  }
  if (b.defined()) {
    KDET_CHECK(b.is_contiguous() && b.numel() == y.size(1), op, " (cuda): bias ", b.desc());
    const int64_t n = y.numel(), O = y.size(1), P = y.size(2) * y.size(3);
    dispatch_float(y.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      add_bias_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, O, P, y.data<T>(), b.data<T>());
    });
  }
  check_launch(ctx, op);
}

void conv2d_backward_input(const Tensor& gy, const Tensor& w, Tensor& gx, const Conv2dArgs& a) {
  const char* op = "conv2d_backward_input";
  check_operands(op, {&gy, &w, &gx});
  Context& ctx = activate(gy, op);
  if (gx.numel() == 0) return;
  if (gy.numel() == 0 || w.numel() == 0) {
    gx.fill_(0.0);
    return;
  }
  Descs d(op, gx.shape(), w.shape(), gy.shape(), a, gy.dtype());
  const ConvAlgo algo = choose(ctx, Pass::BackwardData, d, gx.shape(), w.shape(), a, gy.dtype(), w.raw_data(),
                               gy.raw_data(), gx.raw_data(), gy.device());
  KDET_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, static_cast<cudnnMathType_t>(algo.math_type)), op);
  Tensor wsb = workspace(algo.workspace, gy.device());
  const AlphaBeta ab;
  KDET_CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.cudnn(), ab.one(gy.dtype()), d.w, w.raw_data(), d.y, gy.raw_data(),
                                                d.conv, static_cast<cudnnConvolutionBwdDataAlgo_t>(algo.algo),
                                                ws_ptr(wsb), algo.workspace, ab.zero(gy.dtype()), d.x, gx.raw_data()),
                   op);
  check_launch(ctx, op);
}

void conv2d_backward_weight(const Tensor& gy, const Tensor& x, Tensor& gw, const Conv2dArgs& a) {
  const char* op = "conv2d_backward_weight";
  check_operands(op, {&gy, &x, &gw});
  Context& ctx = activate(gy, op);
  if (gw.numel() == 0) return;
  if (gy.numel() == 0 || x.numel() == 0) {
    gw.fill_(0.0);
    return;
  }
  Descs d(op, x.shape(), gw.shape(), gy.shape(), a, gy.dtype());
  const ConvAlgo algo = choose(ctx, Pass::BackwardFilter, d, x.shape(), gw.shape(), a, gy.dtype(), x.raw_data(),
                               gy.raw_data(), gw.raw_data(), gy.device());
  KDET_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, static_cast<cudnnMathType_t>(algo.math_type)), op);
  Tensor wsb = workspace(algo.workspace, gy.device());
  const AlphaBeta ab;
  KDET_CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.cudnn(), ab.one(gy.dtype()), d.x, x.raw_data(), d.y,
                                                  gy.raw_data(), d.conv,
                                                  static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo.algo), ws_ptr(wsb),
                                                  algo.workspace, ab.zero(gy.dtype()), d.w, gw.raw_data()),
                   op);
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
