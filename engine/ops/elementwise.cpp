#include "engine/ops/elementwise.h"

#include "engine/backend.h"
#include "engine/ops/cpu_map.h"
#include "engine/ops/reduce.h"

#if KDET_CUDA
#include "engine/ops/elementwise_cuda.h"
#endif

namespace kdet {

namespace {

enum class BinOp { Add, Sub, Mul, Div };

const char* binop_name(BinOp o) {
  switch (o) {
    case BinOp::Add: return "add";
    case BinOp::Sub: return "sub";
    case BinOp::Mul: return "mul";
    case BinOp::Div: return "div";
  }
  return "?";
}

template <class T>
void binary_cpu(BinOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  switch (op) {
    case BinOp::Add: cpu::cpu_binary<T>(a, b, out, [](T x, T y) { return x + y; }); break;
    case BinOp::Sub: cpu::cpu_binary<T>(a, b, out, [](T x, T y) { return x - y; }); break;
    case BinOp::Mul: cpu::cpu_binary<T>(a, b, out, [](T x, T y) { return x * y; }); break;
    case BinOp::Div: cpu::cpu_binary<T>(a, b, out, [](T x, T y) { return x / y; }); break;
  }
}

Tensor binary(BinOp op, const Tensor& a, const Tensor& b) {
  const char* name = binop_name(op);
  KDET_CHECK(a.defined() && b.defined(), name, ": undefined operand");
  KDET_CHECK(a.dtype() == b.dtype(), name, ": dtype mismatch ", a.desc(), " vs ", b.desc());
  KDET_CHECK(a.device() == b.device(), name, ": device mismatch ", a.desc(), " vs ", b.desc());
  Shape s = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  if (a.device().is_cpu()) {
    dispatch_all(a.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_same_v<T, bool>)
        KDET_FAIL(name, ": not defined for bool tensors");
      else
        binary_cpu<T>(op, a, b, out);
    });
    return out;
  }
#if KDET_CUDA
  cuda::binary(static_cast<int>(op), a, b, out);
  return out;
#else
  no_kernel(name, a.device());
#endif
}

}  // namespace

namespace ops {
Tensor add(const Tensor& a, const Tensor& b) { return binary(BinOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinOp::Div, a, b); }
Tensor add_scalar(const Tensor& a, double s) { return add(a, Tensor::full({}, s, a.dtype(), a.device())); }
Tensor mul_scalar(const Tensor& a, double s) { return mul(a, Tensor::full({}, s, a.dtype(), a.device())); }
Tensor neg(const Tensor& a) { return mul_scalar(a, -1.0); }

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  KDET_CHECK(g.ndim() >= shape.ndim(), "sum_to: cannot reduce ", g.desc(), " to ", shape);
  // Validate: shape must broadcast to g's shape.
  KDET_CHECK(broadcast_shapes(shape, g.shape(), "sum_to") == g.shape(), "sum_to: ", shape,
             " does not broadcast to ", g.shape());
  if (!g.device().is_cpu()) {  // CUDA: a deterministic reduction over the broadcast dims (engine/ops/reduce.h)
    std::vector<int> axes;
    const int lead = g.ndim() - shape.ndim();
    for (int d = 0; d < g.ndim(); ++d)
      if (d < lead || (shape[d - lead] == 1 && g.shape()[d] != 1)) axes.push_back(d);
    if (axes.empty()) return g.reshape(shape);
    return ops::sum(g, axes, /*keepdim=*/true).reshape(shape);
  }
  Tensor out = Tensor::zeros(shape, g.dtype(), g.device());
  // Iterate over g; the output is viewed with stride 0 on reduced dims. Rows are accumulated in a
  // fixed order (serial over the outer index), so the result is deterministic.
  Shape ost = cpu::broadcast_strides(out, g.shape());
  dispatch_float(g.dtype(), "sum_to", [&](auto tag) {
    using T = decltype(tag);
    const Tensor gc = g;
    const T* pg = gc.data<T>();
    T* po = out.data<T>();
    std::array<const Shape*, 2> st{&ost, &gc.strides()};
    for_each_strided<2>(g.shape(), st, [&](const int64_t* off, int64_t n, const int64_t* in) {
      T* o = po + off[0];
      const T* x = pg + off[1];
      if (in[0] == 0) {
        T acc = 0;
        for (int64_t i = 0; i < n; ++i) acc += x[i * in[1]];
        *o += acc;
      } else {
        for (int64_t i = 0; i < n; ++i) o[i * in[0]] += x[i * in[1]];
      }
    });
  });
  return out;
}

void axpy_(Tensor& y, const Tensor& x, double alpha) {
  KDET_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype(), "axpy_: ", y.desc(), " vs ", x.desc());
  KDET_CHECK(y.is_contiguous(), "axpy_: destination must be contiguous");
  if (!y.device().is_cpu()) {
#if KDET_CUDA
    cuda::axpy(y, x, alpha);
    return;
#endif
    no_kernel("axpy_", y.device());
  }
  dispatch_float(y.dtype(), "axpy_", [&](auto tag) {
    using T = decltype(tag);
    const Tensor xc = x.contiguous();
    const T* px = xc.data<T>();
    T* py = y.data<T>();
    const T a = static_cast<T>(alpha);
    const int64_t n = y.numel();
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
    for (int64_t i = 0; i < n; ++i) py[i] += a * px[i];
  });
}
}  // namespace ops

Var add(const Var& a, const Var& b) {
  return record("add", ops::add(a.data(), b.data()), {&a, &b},
                [sa = a.shape(), sb = b.shape()](const Tensor& g, Grads& gr) {
                  if (gr.wants(0)) gr.accumulate(0, ops::sum_to(g, sa));
                  if (gr.wants(1)) gr.accumulate(1, ops::sum_to(g, sb));
                });
}

Var sub(const Var& a, const Var& b) {
  return record("sub", ops::sub(a.data(), b.data()), {&a, &b},
                [sa = a.shape(), sb = b.shape()](const Tensor& g, Grads& gr) {
                  if (gr.wants(0)) gr.accumulate(0, ops::sum_to(g, sa));
                  if (gr.wants(1)) gr.accumulate(1, ops::sum_to(ops::neg(g), sb));
                });
}

Var mul(const Var& a, const Var& b) {
  // Capture each operand only if the *other* one needs its gradient.
  return record("mul", ops::mul(a.data(), b.data()), {&a, &b},
                [bd = a.requires_grad() ? b.data() : Tensor(), ad = b.requires_grad() ? a.data() : Tensor(),
                 sa = a.shape(), sb = b.shape()](const Tensor& g, Grads& gr) {
                  if (gr.wants(0)) gr.accumulate(0, ops::sum_to(ops::mul(g, bd), sa));
                  if (gr.wants(1)) gr.accumulate(1, ops::sum_to(ops::mul(g, ad), sb));
                });
}

Var div(const Var& a, const Var& b) {
  Tensor out = ops::div(a.data(), b.data());
  // d/da = g / b ; d/db = -g * a / b^2 = -g * out / b
  return record("div", out, {&a, &b},
                [bd = b.data(), outs = b.requires_grad() ? out : Tensor(), sa = a.shape(),
                 sb = b.shape()](const Tensor& g, Grads& gr) {
                  Tensor gb = ops::div(g, bd);
                  if (gr.wants(0)) gr.accumulate(0, ops::sum_to(gb, sa));
                  if (gr.wants(1)) gr.accumulate(1, ops::sum_to(ops::neg(ops::mul(gb, outs)), sb));
                });
}

Var add(const Var& a, double s) {
  return record("add_scalar", ops::add_scalar(a.data(), s), {&a},
                [](const Tensor& g, Grads& gr) { gr.accumulate(0, g); });
}

Var mul(const Var& a, double s) {
  return record("mul_scalar", ops::mul_scalar(a.data(), s), {&a},
                [s](const Tensor& g, Grads& gr) { gr.accumulate(0, ops::mul_scalar(g, s)); });
}

Var neg(const Var& a) { return mul(a, -1.0); }

}  // namespace kdet
