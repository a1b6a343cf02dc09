// engine/cuda/optim.cu — SGD and AdamW updates on the GPU (CPU: engine/optim.cpp, same arithmetic).
#include "engine/cuda/optim_cuda.h"
#include "engine/cuda/pointwise.cuh"

namespace kdet::cuda {

namespace {

template <class T>
__global__ void sgd_kernel(int64_t n, T* pp, const T* pg, T* pb, T wd, T m, T damp1, T neg_lr, bool has_wd,
                           bool first, bool nesterov) {
  KDET_GRID_STRIDE(i, n) {
    T d = pg[i];
    if (has_wd) d = d + wd * pp[i];
    T u = d;
    if (pb) {
      const T b = first ? d : pb[i] * m + damp1 * d;
      pb[i] = b;
      u = nesterov ? d + m * b : b;
    }
    pp[i] = pp[i] + neg_lr * u;
  }
}

template <class T>
__global__ void adamw_kernel(int64_t n, T* pp, const T* pg, T* m, T* v, T* vmax, T decay, T b1, T b2, T c1, T c2,
                             T bc2s, T eps, T neg_step) {
  KDET_GRID_STRIDE(i, n) {
    const T gi = pg[i];
    const T pi = pp[i] * decay;
    const T mi = m[i] * b1 + c1 * gi;
    const T vi = v[i] * b2 + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    T vd = vi;
    if (vmax) {
      vd = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vd;
    }
    const T denom = dm::sqrt(vd) / bc2s + eps;
    pp[i] = pi + (neg_step * mi) / denom;
  }
}

void check_same(const char* op, const Tensor& p, std::initializer_list<const Tensor*> others) {
  KDET_CHECK(p.is_contiguous(), op, " (cuda): parameter ", p.desc(), " is not contiguous");
  for (const Tensor* t : others)
    KDET_CHECK(t->is_contiguous() && t->shape() == p.shape() && t->dtype() == p.dtype() && t->device() == p.device(),
               op, " (cuda): state / gradient ", t->desc(), " does not match parameter ", p.desc());
}

}  // namespace

void sgd_step(Tensor& p, const Tensor& g, Tensor* buf, double lr, double weight_decay, double momentum,
              double dampening, bool nesterov, bool first) {
  const char* op = "SGD.step";
  check_same(op, p, {&g});
  if (buf) check_same(op, p, {buf});
  Context& ctx = activate(p, op);
  const int64_t n = p.numel();
  if (n == 0) return;
  dispatch_float(p.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    sgd_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(
        n, p.data<T>(), g.data<T>(), buf ? buf->data<T>() : nullptr, static_cast<T>(weight_decay),
        static_cast<T>(momentum), static_cast<T>(1.0 - dampening), static_cast<T>(-lr), weight_decay != 0, first,
        nesterov);
  });
  check_launch(ctx, op);
}

void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, Tensor* vmax, double lr, double weight_decay,
                double beta1, double beta2, double eps, double step_size, double bc2_sqrt) {
  const char* op = "AdamW.step";
  check_same(op, p, {&g, &m, &v});
  if (vmax) check_same(op, p, {vmax});
  Context& ctx = activate(p, op);
  const int64_t n = p.numel();
  if (n == 0) return;
  dispatch_float(p.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    adamw_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(
        n, p.data<T>(), g.data<T>(), m.data<T>(), v.data<T>(), vmax ? vmax->data<T>() : nullptr,
        static_cast<T>(1.0 - lr * weight_decay), static_cast<T>(beta1), static_cast<T>(beta2),
        static_cast<T>(1.0 - beta1), static_cast<T>(1.0 - beta2), static_cast<T>(bc2_sqrt), static_cast<T>(eps),
        static_cast<T>(-step_size));
  });
  check_launch(ctx, op);
}

}  // namespace kdet::cuda
