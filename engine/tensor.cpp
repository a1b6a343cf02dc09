#include "engine/tensor.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/backend.h"

namespace kdet {

Tensor Tensor::empty(const Shape& s, DType t, Device d) {
  for (int64_t e : s) KDET_CHECK(e >= 0, "Tensor::empty: negative extent in shape ", s);
  int64_t nbytes = 0;
  KDET_CHECK(!__builtin_mul_overflow(s.numel(), static_cast<int64_t>(dtype_size(t)), &nbytes),
             "Tensor::empty: shape ", s, " needs more than 2^63 bytes (tensor too large)");
  Tensor r;
  try {
    r.storage_ = std::make_shared<Storage>(static_cast<size_t>(nbytes), d);
  } catch (const Error& e) {
    KDET_FAIL("Tensor::empty(", s, ", ", nbytes, " bytes on ", d, "): ", e.what());
  }
  r.shape_ = s;
  r.strides_ = contiguous_strides(s);
  r.dtype_ = t;
  return r;
}

Tensor Tensor::zeros(const Shape& s, DType t, Device d) { return full(s, 0.0, t, d); }
Tensor Tensor::ones(const Shape& s, DType t, Device d) { return full(s, 1.0, t, d); }

Tensor Tensor::full(const Shape& s, double v, DType t, Device d) {
  Tensor r = empty(s, t, d);
  r.fill_(v);
  return r;
}

Tensor Tensor::arange(int64_t n, DType t) {
  Tensor r = empty({n}, t);
  dispatch_all(t, "arange", [&](auto tag) {
    using T = decltype(tag);
    T* p = r.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(i);
  });
  return r;
}

int64_t Tensor::size(int d) const { return shape_[normalize_axis(d, ndim(), "Tensor::size")]; }

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != acc) return false;
    acc *= shape_[i];
  }
  return true;
}

std::string Tensor::desc() const {
  if (!defined()) return "undefined";
  std::ostringstream o;
  o << dtype_name(dtype_) << shape_;
  if (!device().is_cpu()) o << " " << device();
  return o.str();
}

std::ostream& operator<<(std::ostream& o, const Tensor& t) { return o << t.desc(); }

void Tensor::check_access(DType t) const {
  KDET_CHECK(defined(), "access to an undefined tensor");
  KDET_CHECK(t == dtype_, "tensor data accessed as ", dtype_name(t), " but it holds ", dtype_name(dtype_));
}

double Tensor::item() const {
  KDET_CHECK(numel() == 1, "Tensor::item: tensor ", desc(), " has ", numel(), " elements, expected 1");
  Tensor c = to(Device::cpu());
  double v = 0;
  dispatch_all(dtype_, "item", [&](auto tag) {
    using T = decltype(tag);
    v = static_cast<double>(*c.data<T>());
  });
  return v;
}

Tensor Tensor::view(const Shape& s) const {
  KDET_CHECK(is_contiguous(), "view: tensor ", desc(), " is not contiguous (use reshape)");
  Shape ns = s;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < ns.ndim(); ++i) {
    if (ns[i] == -1) {
      KDET_CHECK(infer < 0, "view: more than one -1 in ", s);
      infer = i;
    } else {
      KDET_CHECK(ns[i] >= 0, "view: bad extent in ", s);
      known *= ns[i];
    }
  }
  if (infer >= 0) {
    KDET_CHECK(known > 0 && numel() % known == 0, "view: cannot view ", desc(), " as ", s);
    ns[infer] = numel() / known;
  }
  KDET_CHECK(ns.numel() == numel(), "view: cannot view ", desc(), " (", numel(), " elements) as ", s);
  Tensor r = *this;
  r.shape_ = ns;
  r.strides_ = contiguous_strides(ns);
  return r;
}

Tensor Tensor::reshape(const Shape& s) const { return is_contiguous() ? view(s) : contiguous().view(s); }

Tensor Tensor::permute(const std::vector<int>& order) const {
  KDET_CHECK(static_cast<int>(order.size()) == ndim(), "permute: order of length ", order.size(),
             " for tensor ", desc());
  std::vector<bool> seen(ndim(), false);
  Tensor r = *this;
  for (int i = 0; i < ndim(); ++i) {
    int a = normalize_axis(order[i], ndim(), "permute");
    KDET_CHECK(!seen[a], "permute: axis ", a, " repeated");
    seen[a] = true;
    r.shape_[i] = shape_[a];
    r.strides_[i] = strides_[a];
  }
  return r;
}

Tensor Tensor::transpose(int a, int b) const {
  a = normalize_axis(a, ndim(), "transpose");
  b = normalize_axis(b, ndim(), "transpose");
  Tensor r = *this;
  std::swap(r.shape_[a], r.shape_[b]);
  std::swap(r.strides_[a], r.strides_[b]);
  return r;
}

Tensor Tensor::slice(int dim, int64_t begin, int64_t end, int64_t step) const {
  dim = normalize_axis(dim, ndim(), "slice");
  KDET_CHECK(step > 0, "slice: step must be positive, got ", step);
  int64_t n = shape_[dim];
  if (begin < 0) begin += n;
  if (end < 0) end += n;
  begin = std::clamp<int64_t>(begin, 0, n);
  end = std::clamp<int64_t>(end, begin, n);
  Tensor r = *this;
  r.offset_ += begin * strides_[dim];
  r.shape_[dim] = (end - begin + step - 1) / step;
  r.strides_[dim] *= step;
  return r;
}

Tensor Tensor::select(int dim, int64_t index) const {
  dim = normalize_axis(dim, ndim(), "select");
  int64_t n = shape_[dim];
  if (index < 0) index += n;
  KDET_CHECK(index >= 0 && index < n, "select: index ", index, " out of range for dim ", dim, " of ", desc());
  Tensor r = *this;
  r.offset_ += index * strides_[dim];
  r.shape_.erase(r.shape_.begin() + dim);
  r.strides_.erase(r.strides_.begin() + dim);
  return r;
}

Tensor Tensor::unsqueeze(int dim) const {
  dim = normalize_axis(dim, ndim() + 1, "unsqueeze");
  Tensor r = *this;
  int64_t st = dim < ndim() ? strides_[dim] * shape_[dim] : 1;
  r.shape_.insert(r.shape_.begin() + dim, 1);
  r.strides_.insert(r.strides_.begin() + dim, st);
  return r;
}

Tensor Tensor::squeeze(int dim) const {
  dim = normalize_axis(dim, ndim(), "squeeze");
  KDET_CHECK(shape_[dim] == 1, "squeeze: dim ", dim, " of ", desc(), " is not 1");
  Tensor r = *this;
  r.shape_.erase(r.shape_.begin() + dim);
  r.strides_.erase(r.strides_.begin() + dim);
  return r;
}

Tensor Tensor::expand(const Shape& s) const {
  KDET_CHECK(s.ndim() >= ndim(), "expand: cannot expand ", desc(), " to ", s);
  Tensor r = *this;
  r.shape_ = s;
  r.strides_ = Shape(s.size(), 0);
  int lead = s.ndim() - ndim();
  for (int i = 0; i < ndim(); ++i) {
    int64_t want = s[lead + i];
    if (shape_[i] == want) {
      r.strides_[lead + i] = strides_[i];
    } else {
      KDET_CHECK(shape_[i] == 1, "expand: cannot expand ", desc(), " to ", s);
      r.strides_[lead + i] = 0;
    }
  }
  return r;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor r = empty(shape_, dtype_, device());
  r.copy_(*this);
  return r;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor src = contiguous();
  Tensor r = empty(shape_, dtype_, d);
  backend_copy_between_devices(r, src);
  return r;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype_) return *this;
  Tensor r = empty(shape_, t, device());
  r.copy_(*this);
  return r;
}

namespace {
template <class D, class S>
void copy_rows(D* dst, const S* src, const Shape& shape, const Shape& dst_st, const Shape& src_st) {
  std::array<const Shape*, 2> st{&dst_st, &src_st};
  for_each_strided_parallel<2>(shape, st, [&](const int64_t* off, int64_t n, const int64_t* inner) {
    D* d = dst + off[0];
    const S* s = src + off[1];
    if (inner[0] == 1 && inner[1] == 1) {
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<D>(s[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) d[i * inner[0]] = static_cast<D>(s[i * inner[1]]);
    }
  });
}
}  // namespace

void Tensor::copy_(const Tensor& src) {
  KDET_CHECK(defined() && src.defined(), "copy_: undefined tensor");
  Tensor s = src.shape() == shape_ ? src : src.expand(shape_);
  if (!device().is_cpu() || !s.device().is_cpu()) {
    KDET_CHECK(device() == s.device(), "copy_: from ", s.device(), " to ", device(),
               " (use Tensor::to for device copies)");
    backend_copy_same_device(*this, s);
    return;
  }
  dispatch_all(dtype_, "copy_", [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_all(s.dtype(), "copy_", [&](auto stag) {
      using S = decltype(stag);
      copy_rows<D, S>(static_cast<D*>(raw_data()), static_cast<const S*>(s.raw_data()), shape_, strides_,
                      s.strides());
    });
  });
}

void Tensor::fill_(double v) {
  KDET_CHECK(defined(), "fill_: undefined tensor");
  if (!device().is_cpu()) {
    backend_fill(*this, v);
    return;
  }
  dispatch_all(dtype_, "fill_", [&](auto tag) {
    using T = decltype(tag);
    T x = static_cast<T>(v);
    T* p = static_cast<T*>(raw_data());
    std::array<const Shape*, 1> st{&strides_};
    for_each_strided_parallel<1>(shape_, st, [&](const int64_t* off, int64_t n, const int64_t* inner) {
      T* d = p + off[0];
      for (int64_t i = 0; i < n; ++i) d[i * inner[0]] = x;
    });
  });
}

}  // namespace kdet
