#include "engine/ops/shape_ops.h"

#include "engine/backend.h"
#include "engine/ops/elementwise.h"

namespace kdet {

namespace ops {

Tensor concat(const std::vector<Tensor>& xs, int axis) {
  KDET_CHECK(!xs.empty(), "concat: empty list of tensors");
  const Tensor& x0 = xs[0];
  KDET_CHECK(x0.defined() && x0.ndim() > 0, "concat: tensor 0 is ", x0.defined() ? x0.desc() : "undefined",
             " (needs at least one dimension)");
  const int ax = normalize_axis(axis, x0.ndim(), "concat");
  Shape os = x0.shape();
  os[ax] = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    const Tensor& x = xs[k];
    KDET_CHECK(x.defined(), "concat: tensor ", k, " is undefined");
    bool ok = x.ndim() == x0.ndim() && x.dtype() == x0.dtype() && x.device() == x0.device();
    for (int d = 0; ok && d < x.ndim(); ++d)
      if (d != ax && x.shape()[d] != x0.shape()[d]) ok = false;
    KDET_CHECK(ok, "concat: along axis ", axis, " tensor ", k, " is ", x.desc(), " but tensor 0 is ", x0.desc());
    os[ax] += x.shape()[ax];
  }
  Tensor out = Tensor::empty(os, x0.dtype(), x0.device());
  int64_t at = 0;
  for (const Tensor& x : xs) {
    const int64_t n = x.shape()[ax];
    if (n > 0) {
      Tensor dst = out.slice(ax, at, at + n);
      dst.copy_(x);
    }
    at += n;
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int axis) {
  KDET_CHECK(!xs.empty(), "stack: empty list of tensors");
  KDET_CHECK(xs[0].defined(), "stack: tensor 0 is undefined");
  const int ax = normalize_axis(axis, xs[0].ndim() + 1, "stack");
  std::vector<Tensor> us;
  for (size_t k = 0; k < xs.size(); ++k) {
    KDET_CHECK(xs[k].defined() && xs[k].shape() == xs[0].shape(), "stack: tensor ", k, " is ",
               xs[k].defined() ? xs[k].desc() : "undefined", " but tensor 0 is ", xs[0].desc());
    us.push_back(xs[k].unsqueeze(ax));
  }
  return concat(us, ax);
}

Tensor flatten(const Tensor& x, int start_dim, int end_dim) {
  if (x.ndim() == 0) return x.reshape({1});
  const int s = normalize_axis(start_dim, x.ndim(), "flatten");
  const int e = normalize_axis(end_dim, x.ndim(), "flatten");
  KDET_CHECK(s <= e, "flatten: start_dim ", start_dim, " after end_dim ", end_dim, " for ", x.desc());
  Shape ns;
  for (int d = 0; d < s; ++d) ns.push_back(x.shape()[d]);
  int64_t m = 1;
  for (int d = s; d <= e; ++d) m *= x.shape()[d];
  ns.push_back(m);
  for (int d = e + 1; d < x.ndim(); ++d) ns.push_back(x.shape()[d]);
  return x.reshape(ns);
}

Tensor slice_backward(const Tensor& g, const Shape& shape, int dim, int64_t begin, int64_t end, int64_t step) {
  Tensor gx = Tensor::zeros(shape, g.dtype(), g.device());
  Tensor dst = gx.slice(dim, begin, end, step);
  KDET_CHECK(dst.shape() == g.shape(), "slice_backward: gradient ", g.desc(), " for slice of shape ", dst.shape());
  if (dst.numel() > 0) dst.copy_(g);
  return gx;
}

}  // namespace ops

Var reshape(const Var& x, const Shape& s) {
  return record("reshape", x.data().reshape(s), {&x},
                [xs = x.shape()](const Tensor& g, Grads& gr) { gr.accumulate(0, g.reshape(xs)); });
}

Var view(const Var& x, const Shape& s) { return reshape(x, s); }

Var permute(const Var& x, const std::vector<int>& order) {
  Tensor y = x.data().permute(order);
  std::vector<int> inv(order.size());
  for (size_t i = 0; i < order.size(); ++i) inv[normalize_axis(order[i], x.ndim(), "permute")] = static_cast<int>(i);
  return record("permute", y, {&x},
                [inv](const Tensor& g, Grads& gr) { gr.accumulate(0, g.permute(inv).contiguous()); });
}

Var transpose(const Var& x, int a, int b) {
  Tensor y = x.data().transpose(a, b);
  return record("transpose", y, {&x},
                [a, b](const Tensor& g, Grads& gr) { gr.accumulate(0, g.transpose(a, b).contiguous()); });
}

Var flatten(const Var& x, int start_dim, int end_dim) {
  return record("flatten", ops::flatten(x.data(), start_dim, end_dim), {&x},
                [xs = x.shape()](const Tensor& g, Grads& gr) { gr.accumulate(0, g.reshape(xs)); });
}

Var concat(const std::vector<Var>& xs, int axis) {
  std::vector<Tensor> ts;
  std::vector<const Var*> in;
  for (const Var& v : xs) {
    ts.push_back(v.data());
    in.push_back(&v);
  }
  Tensor out = ops::concat(ts, axis);
  const int ax = normalize_axis(axis, out.ndim(), "concat");
  std::vector<int64_t> sizes;
  for (const Var& v : xs) sizes.push_back(v.shape()[ax]);
  return record("concat", out, in, [ax, sizes](const Tensor& g, Grads& gr) {
    int64_t at = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (gr.wants(k)) gr.accumulate(k, g.slice(ax, at, at + sizes[k]).contiguous());
      at += sizes[k];
    }
  });
}

Var stack(const std::vector<Var>& xs, int axis) {
  KDET_CHECK(!xs.empty(), "stack: empty list of tensors");
  const int ax = normalize_axis(axis, xs[0].ndim() + 1, "stack");
  std::vector<Var> us;
  for (const Var& v : xs) us.push_back(unsqueeze(v, ax));
  return concat(us, ax);
}

Var slice(const Var& x, int dim, int64_t begin, int64_t end, int64_t step) {
  Tensor y = x.data().slice(dim, begin, end, step);
  return record("slice", y, {&x}, [xs = x.shape(), dim, begin, end, step](const Tensor& g, Grads& gr) {
    gr.accumulate(0, ops::slice_backward(g, xs, dim, begin, end, step));
  });
}

Var select(const Var& x, int dim, int64_t index) {
  Tensor y = x.data().select(dim, index);
  const int d = normalize_axis(dim, x.ndim(), "select");
  const int64_t i = index < 0 ? index + x.shape()[d] : index;
  return record("select", y, {&x}, [xs = x.shape(), d, i](const Tensor& g, Grads& gr) {
    gr.accumulate(0, ops::slice_backward(g.unsqueeze(d), xs, d, i, i + 1, 1));
  });
}

Var unsqueeze(const Var& x, int dim) {
  return record("unsqueeze", x.data().unsqueeze(dim), {&x},
                [xs = x.shape()](const Tensor& g, Grads& gr) { gr.accumulate(0, g.reshape(xs)); });
}

Var squeeze(const Var& x, int dim) {
  return record("squeeze", x.data().squeeze(dim), {&x},
                [xs = x.shape()](const Tensor& g, Grads& gr) { gr.accumulate(0, g.reshape(xs)); });
}

Var expand(const Var& x, const Shape& s) {
  return record("expand", x.data().expand(s), {&x},
                [xs = x.shape()](const Tensor& g, Grads& gr) { gr.accumulate(0, ops::sum_to(g, xs).contiguous()); });
}

Var contiguous(const Var& x) {
  return record("contiguous", x.data().contiguous(), {&x},
                [](const Tensor& g, Grads& gr) { gr.accumulate(0, g); });
}

}  // namespace kdet
