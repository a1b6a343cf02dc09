#include "engine/ops/unary.h"

#include <algorithm>
#include <cmath>

#include "engine/backend.h"
#include "engine/ops/cpu_map.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/unary_cuda.h"  // op codes shared with the CUDA kernels (plain C++)

namespace kdet {

namespace {

void check_float(const char* op, const Tensor& x) {
  KDET_CHECK(x.defined(), op, ": undefined tensor");
  KDET_CHECK(is_floating(x.dtype()), op, ": expects an f32 or f64 tensor, got ", x.desc());
}

// out[i] = f(x[i]); f is a generic lambda called with T. `code` (+ p0, p1) names the same function for
// the CUDA backend (engine/ops/unary_cuda.h).
template <class F>
Tensor map1(const char* op, const Tensor& x, F f, cuda::UnaryOp code, double p0 = 0, double p1 = 0) {
  check_float(op, x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().is_cpu()) {
    dispatch_float(x.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      cpu::cpu_unary<T>(x, out, [f](T v) { return static_cast<T>(f(v)); });
    });
    return out;
  }
#if KDET_CUDA
  if (x.device().is_cuda()) {
    cuda::unary(code, x, out, p0, p1);
    return out;
  }
#endif
  no_kernel(op, x.device());
}

// out = f(a, b) with broadcasting; used by the backward closures (g, x) -> dx.
template <class F>
Tensor map2(const char* op, const Tensor& a, const Tensor& b, F f, cuda::UnaryOp code, double p0 = 0, double p1 = 0) {
  check_float(op, a);
  check_float(op, b);
  KDET_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch ", a.desc(), " vs ", b.desc());
  KDET_CHECK(a.device() == b.device(), op, ": device mismatch ", a.desc(), " vs ", b.desc());
  Tensor out = Tensor::empty(broadcast_shapes(a.shape(), b.shape(), op), a.dtype(), a.device());
  if (a.device().is_cpu()) {
    dispatch_float(a.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      cpu::cpu_binary<T>(a, b, out, [f](T u, T v) { return static_cast<T>(f(u, v)); });
    });
    return out;
  }
#if KDET_CUDA
  if (a.device().is_cuda()) {
    cuda::unary2(code, a, b, out, p0, p1);
    return out;
  }
#endif
  no_kernel(op, a.device());
}

}  // namespace

namespace ops {

Tensor abs(const Tensor& x) { return map1("abs", x, [](auto v) { return std::abs(v); }, cuda::UnaryOp::Abs); }
Tensor exp(const Tensor& x) { return map1("exp", x, [](auto v) { return cpu::exp_f32(v); }, cuda::UnaryOp::Exp); }
Tensor log(const Tensor& x) { return map1("log", x, [](auto v) { return std::log(v); }, cuda::UnaryOp::Log); }
Tensor sqrt(const Tensor& x) { return map1("sqrt", x, [](auto v) { return std::sqrt(v); }, cuda::UnaryOp::Sqrt); }
Tensor pow(const Tensor& x, double p) {
  constexpr auto kPow = cuda::UnaryOp::Pow;
  if (p == 2.0) return map1("pow", x, [](auto v) { return v * v; }, kPow, p);
  if (p == 1.0) return map1("pow", x, [](auto v) { return v; }, kPow, p);
  if (p == 0.5) return map1("pow", x, [](auto v) { return std::sqrt(v); }, kPow, p);
  return map1(
      "pow", x,
      [p](auto v) {
        using T = decltype(v);
        return static_cast<T>(std::pow(v, static_cast<T>(p)));
      },
      kPow, p);
}
Tensor clamp(const Tensor& x, double lo, double hi) {
  KDET_CHECK(!(lo > hi), "clamp: lo ", lo, " > hi ", hi, " for ", x.desc());
  return map1(
      "clamp", x,
      [lo, hi](auto v) {
        using T = decltype(v);
        return std::min(std::max(v, static_cast<T>(lo)), static_cast<T>(hi));
      },
      cuda::UnaryOp::Clamp, lo, hi);
}
Tensor clamp_min(const Tensor& x, double lo) {
  return map1(
      "clamp_min", x, [lo](auto v) { return std::max(v, static_cast<decltype(v)>(lo)); }, cuda::UnaryOp::ClampMin,
      lo);
}
Tensor clamp_max(const Tensor& x, double hi) {
  return map1(
      "clamp_max", x, [hi](auto v) { return std::min(v, static_cast<decltype(v)>(hi)); }, cuda::UnaryOp::ClampMax,
      hi);
}
Tensor sigmoid(const Tensor& x) {
  return map1("sigmoid", x, [](auto v) { return cpu::sigmoid_scalar(v); }, cuda::UnaryOp::Sigmoid);
}
Tensor relu(const Tensor& x) {
  return map1("relu", x, [](auto v) { return v > decltype(v)(0) ? v : decltype(v)(0); }, cuda::UnaryOp::Relu);
}
Tensor tanh(const Tensor& x) { return map1("tanh", x, [](auto v) { return std::tanh(v); }, cuda::UnaryOp::Tanh); }
Tensor sign(const Tensor& x) {
  return map1(
      "sign", x,
      [](auto v) {
        using T = decltype(v);
        return v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0));
      },
      cuda::UnaryOp::Sign);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  KDET_CHECK(cond.defined() && a.defined() && b.defined(), "where: undefined operand");
  KDET_CHECK(cond.dtype() == DType::Bool, "where: condition must be bool, got ", cond.desc());
  KDET_CHECK(a.dtype() == b.dtype(), "where: dtype mismatch ", a.desc(), " vs ", b.desc());
  KDET_CHECK(a.device() == b.device() && a.device() == cond.device(), "where: device mismatch ", cond.desc(),
             ", ", a.desc(), ", ", b.desc());
  Shape s = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  if (!a.device().is_cpu()) {
#if KDET_CUDA
    if (a.device().is_cuda()) {
      cuda::where(cond, a, b, out);
      return out;
    }
#endif
    no_kernel("where", a.device());
  }
  dispatch_all(a.dtype(), "where", [&](auto tag) {
    using T = decltype(tag);
    const bool* pc = cond.data<bool>();
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    Shape sc = cpu::broadcast_strides(cond, s), sa = cpu::broadcast_strides(a, s), sb = cpu::broadcast_strides(b, s);
    std::array<const Shape*, 4> st{&out.strides(), &sc, &sa, &sb};
    for_each_strided_parallel<4>(s, st, [&](const int64_t* off, int64_t n, const int64_t* in) {
      T* o = po + off[0];
      const bool* c = pc + off[1];
      const T* x = pa + off[2];
      const T* y = pb + off[3];
      for (int64_t i = 0; i < n; ++i) o[i * in[0]] = c[i * in[1]] ? x[i * in[2]] : y[i * in[3]];
    });
  });
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, double b) {
  return where(cond, a, Tensor::full({}, b, a.dtype(), a.device()));
}

}  // namespace ops

// ---- differentiable versions ------------------------------------------------------------------------

Var abs(const Var& x) {
  return record("abs", ops::abs(x.data()), {&x}, [xd = x.data()](const Tensor& g, Grads& gr) {
    gr.accumulate(0, map2(
                         "abs_backward", g, xd,
                         [](auto gv, auto v) {
                           using T = decltype(v);
                           return v > T(0) ? gv : (v < T(0) ? -gv : T(0));
                         },
                         cuda::UnaryOp::AbsBackward));
  });
}

Var exp(const Var& x) {
  Tensor out = ops::exp(x.data());
  return record("exp", out, {&x}, [out](const Tensor& g, Grads& gr) { gr.accumulate(0, ops::mul(g, out)); });
}

Var log(const Var& x) {
  return record("log", ops::log(x.data()), {&x},
                [xd = x.data()](const Tensor& g, Grads& gr) { gr.accumulate(0, ops::div(g, xd)); });
}

Var sqrt(const Var& x) {
  Tensor out = ops::sqrt(x.data());
  return record("sqrt", out, {&x}, [out](const Tensor& g, Grads& gr) {
    gr.accumulate(0, map2("sqrt_backward", g, out, [](auto gv, auto y) { return gv / (y + y); },
                          cuda::UnaryOp::SqrtBackward));
  });
}

Var pow(const Var& x, double p) {
  return record("pow", ops::pow(x.data(), p), {&x}, [xd = x.data(), p](const Tensor& g, Grads& gr) {
    if (p == 0.0) {
      gr.accumulate(0, Tensor::zeros(xd.shape(), xd.dtype(), xd.device()));
      return;
    }
    gr.accumulate(0, map2(
                         "pow_backward", g, xd,
                         [p](auto gv, auto v) {
                           using T = decltype(v);
                           if (p == 1.0) return gv;
                           if (p == 2.0) return gv * T(2) * v;
                           return static_cast<T>(gv * static_cast<T>(p) * std::pow(v, static_cast<T>(p - 1.0)));
                         },
                         cuda::UnaryOp::PowBackward, p));
  });
}

Var clamp(const Var& x, double lo, double hi) {
  return record("clamp", ops::clamp(x.data(), lo, hi), {&x}, [xd = x.data(), lo, hi](const Tensor& g, Grads& gr) {
    gr.accumulate(0, map2(
                         "clamp_backward", g, xd,
                         [lo, hi](auto gv, auto v) {
                           using T = decltype(v);
                           return (v >= static_cast<T>(lo) && v <= static_cast<T>(hi)) ? gv : T(0);
                         },
                         cuda::UnaryOp::ClampBackward, lo, hi));
  });
}

Var clamp_min(const Var& x, double lo) {
  return record("clamp_min", ops::clamp_min(x.data(), lo), {&x}, [xd = x.data(), lo](const Tensor& g, Grads& gr) {
    gr.accumulate(0, map2(
                         "clamp_min_backward", g, xd,
                         [lo](auto gv, auto v) {
                           using T = decltype(v);
                           return v >= static_cast<T>(lo) ? gv : T(0);
                         },
                         cuda::UnaryOp::ClampMinBackward, lo));
  });
}

Var clamp_max(const Var& x, double hi) {
  return record("clamp_max", ops::clamp_max(x.data(), hi), {&x}, [xd = x.data(), hi](const Tensor& g, Grads& gr) {
    gr.accumulate(0, map2(
                         "clamp_max_backward", g, xd,
                         [hi](auto gv, auto v) {
                           using T = decltype(v);
                           return v <= static_cast<T>(hi) ? gv : T(0);
                         },
                         cuda::UnaryOp::ClampMaxBackward, hi));
  });
}

Var sigmoid(const Var& x) {
  Tensor out = ops::sigmoid(x.data());
  return record("sigmoid", out, {&x}, [out](const Tensor& g, Grads& gr) {
    gr.accumulate(0, map2("sigmoid_backward", g, out, [](auto gv, auto y) { return gv * y * (decltype(y)(1) - y); },
                          cuda::UnaryOp::SigmoidBackward));
  });
}

Var relu(const Var& x) {
  Tensor out = ops::relu(x.data());
  return record("relu", out, {&x}, [out](const Tensor& g, Grads& gr) {
    gr.accumulate(0, map2(
                         "relu_backward", g, out,
                         [](auto gv, auto y) {
                           using T = decltype(y);
                           return y > T(0) ? gv : T(0);
                         },
                         cuda::UnaryOp::ReluBackward));
  });
}

Var tanh(const Var& x) {
  Tensor out = ops::tanh(x.data());
  return record("tanh", out, {&x}, [out](const Tensor& g, Grads& gr) {
    gr.accumulate(0, map2("tanh_backward", g, out, [](auto gv, auto y) { return gv * (decltype(y)(1) - y * y); },
                          cuda::UnaryOp::TanhBackward));
  });
}

Var where(const Tensor& cond, const Var& a, const Var& b) {
  return record("where", ops::where(cond, a.data(), b.data()), {&a, &b},
                [cond, sa = a.shape(), sb = b.shape()](const Tensor& g, Grads& gr) {
                  Tensor zero = Tensor::zeros({}, g.dtype(), g.device());
                  if (gr.wants(0)) gr.accumulate(0, ops::sum_to(ops::where(cond, g, zero), sa));
                  if (gr.wants(1)) gr.accumulate(1, ops::sum_to(ops::where(cond, zero, g), sb));
                });
}

Var where(const Tensor& cond, const Var& a, double b) {
  return record("where", ops::where(cond, a.data(), b), {&a}, [cond, sa = a.shape()](const Tensor& g, Grads& gr) {
    gr.accumulate(0, ops::sum_to(ops::where(cond, g, 0.0), sa));
  });
}

}  // namespace kdet
