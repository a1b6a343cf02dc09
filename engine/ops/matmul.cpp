// engine/ops/matmul.cpp — matmul / linear, forward and backward, on sgemm/dgemm.
#include "engine/ops/matmul.h"

#include <algorithm>

#include "engine/backend.h"
#include "engine/gemm.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"

#if KDET_CUDA
#include "engine/ops/matmul_cuda.h"
#endif

namespace kdet {

namespace {

// Column sums of a contiguous [R, C] matrix -> [C]; rows are added in order (deterministic).
Tensor sum_rows(const Tensor& g2, int64_t R, int64_t C) {
  Tensor out = Tensor::empty({C}, g2.dtype());
  dispatch_float(g2.dtype(), "linear_backward_bias", [&](auto tag) {
    using T = decltype(tag);
    const T* p = g2.data<T>();
    T* o = out.data<T>();
    const int64_t nb = (C + 63) / 64;
#pragma omp parallel for schedule(static) if (R * C > (1 << 15))
    for (int64_t blk = 0; blk < nb; ++blk) {
      const int64_t c0 = blk * 64, c1 = std::min(C, c0 + 64);
      T acc[64] = {};
      for (int64_t r = 0; r < R; ++r) {
        const T* row = p + r * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] += row[c];
      }
      for (int64_t c = c0; c < c1; ++c) o[c] = acc[c - c0];
    }
  });
  return out;
}

}  // namespace

namespace ops {

Tensor matmul_t(const Tensor& a, bool ta, const Tensor& b, bool tb) {
  KDET_CHECK(a.defined() && b.defined(), "matmul: undefined operand");
  KDET_CHECK(a.dtype() == b.dtype(), "matmul: dtype mismatch ", a.desc(), " vs ", b.desc());
  KDET_CHECK(a.device() == b.device(), "matmul: device mismatch ", a.desc(), " vs ", b.desc());
  KDET_CHECK((a.ndim() == 2 && b.ndim() == 2) || (a.ndim() == 3 && b.ndim() == 3 && a.size(0) == b.size(0)),
             "matmul: expects [M,K]x[K,N] or [B,M,K]x[B,K,N], got ", a.desc(), " and ", b.desc());
  const bool batched = a.ndim() == 3;
  const int64_t Bn = batched ? a.size(0) : 1;
  const int64_t ar = a.size(-2), ac = a.size(-1), br = b.size(-2), bc = b.size(-1);
  const int64_t M = ta ? ac : ar, K = ta ? ar : ac, Kb = tb ? bc : br, N = tb ? br : bc;
  KDET_CHECK(K == Kb, "matmul: inner dimensions differ: ", a.desc(), (ta ? "ᵀ" : ""), " x ", b.desc(),
             (tb ? "ᵀ" : ""));
  Shape os = batched ? Shape{Bn, M, N} : Shape{M, N};
  Tensor out = Tensor::empty(os, a.dtype(), a.device());
  if (!a.device().is_cpu() && !(KDET_CUDA && a.device().is_cuda())) no_kernel("matmul", a.device());
  const Tensor A = a.contiguous(), B = b.contiguous();
#if KDET_CUDA
  if (a.device().is_cuda()) {
    cuda::gemm(ta, tb, Bn, M, N, K, A, B, out);
    return out;
  }
#endif
  dispatch_float(a.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = A.data<T>();
    const T* pb = B.data<T>();
    T* po = out.data<T>();
    for (int64_t i = 0; i < Bn; ++i)
      gemm(ta, tb, M, N, K, T(1), pa + i * ar * ac, ac, pb + i * br * bc, bc, T(0), po + i * M * N, N);
  });
  return out;
}

Tensor matmul(const Tensor& a, const Tensor& b) { return matmul_t(a, false, b, false); }

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  KDET_CHECK(x.defined() && w.defined(), "linear: undefined input or weight");
  KDET_CHECK(x.dtype() == w.dtype() && x.device() == w.device(), "linear: input ", x.desc(), " vs weight ",
             w.desc());
  KDET_CHECK(w.ndim() == 2, "linear: weight must be [out, in], got ", w.desc());
  KDET_CHECK(x.ndim() >= 1 && x.size(-1) == w.size(1), "linear: input ", x.desc(), " has ",
             (x.ndim() ? x.size(-1) : 0), " features, weight ", w.desc(), " expects ", w.size(1));
  const int64_t in = w.size(1), outf = w.size(0), M = x.numel() / std::max<int64_t>(in, 1);
  if (b.defined())
    KDET_CHECK(b.ndim() == 1 && b.size(0) == outf && b.dtype() == x.dtype(), "linear: bias ", b.desc(),
               " does not match weight ", w.desc());
  Shape os = x.shape();
  os.back() = outf;
  if (!x.device().is_cpu()) {
#if KDET_CUDA
    if (x.device().is_cuda()) {  // y = x·wᵀ (+ b broadcast over rows)
      Tensor y = matmul_t(x.contiguous().view({M, in}), false, w, true).view(os);
      return b.defined() ? add(y, b) : y;
    }
#endif
    no_kernel("linear", x.device());
  }
  Tensor y = Tensor::empty(os, x.dtype(), x.device());
  const Tensor xc = x.contiguous(), wc = w.contiguous(), bc = b.defined() ? b.contiguous() : Tensor();
  dispatch_float(x.dtype(), "linear", [&](auto tag) {
    using T = decltype(tag);
    T* py = y.data<T>();
    if (bc.defined()) {
      const T* pb = bc.data<T>();
#pragma omp parallel for schedule(static) if (M * outf > (1 << 15))
      for (int64_t r = 0; r < M; ++r) std::copy(pb, pb + outf, py + r * outf);
    }
    gemm(false, true, M, outf, in, T(1), xc.data<T>(), in, wc.data<T>(), in, bc.defined() ? T(1) : T(0), py, outf);
  });
  return y;
}

}  // namespace ops

Var matmul(const Var& a, const Var& b) {
  return record("matmul", ops::matmul(a.data(), b.data()), {&a, &b},
                [ad = b.requires_grad() ? a.data() : Tensor(), bd = a.requires_grad() ? b.data() : Tensor()](
                    const Tensor& g, Grads& gr) {
                  if (gr.wants(0)) gr.accumulate(0, ops::matmul_t(g, false, bd, true));
                  if (gr.wants(1)) gr.accumulate(1, ops::matmul_t(ad, true, g, false));
                });
}

Var linear(const Var& x, const Var& w, const Var& b) {
  Tensor y = ops::linear(x.data(), w.data(), b.defined() ? b.data() : Tensor());
  return record("linear", y, {&x, &w, b.defined() ? &b : nullptr},
                [xd = w.requires_grad() ? x.data() : Tensor(), wd = x.requires_grad() ? w.data() : Tensor(),
                 xs = x.shape(), in = w.size(1), outf = w.size(0)](const Tensor& g, Grads& gr) {
                  const int64_t M = g.numel() / std::max<int64_t>(outf, 1);
                  const Tensor g2 = g.contiguous().view({M, outf});
                  if (gr.wants(0)) gr.accumulate(0, ops::matmul_t(g2, false, wd, false).view(xs));
                  if (gr.wants(1)) gr.accumulate(1, ops::matmul_t(g2, true, xd.contiguous().view({M, in}), false));
                  if (gr.wants(2))
                    gr.accumulate(2, g2.device().is_cpu() ? sum_rows(g2, M, outf) : ops::sum(g2, {0}));
                });
}

}  // namespace kdet
