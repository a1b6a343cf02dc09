// engine/shape.h — Shape is a vector of extents, outermost first (PyTorch order: NCHW, OIHW).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <sstream>
#include <vector>

#include "engine/check.h"

namespace kdet {

struct Shape : std::vector<int64_t> {
  using std::vector<int64_t>::vector;
  Shape() = default;
  Shape(const std::vector<int64_t>& v) : std::vector<int64_t>(v) {}
  // Throws (naming the shape) when the product does not fit in int64 instead of wrapping around.
  int64_t numel() const {
    int64_t n = 1;
    bool overflow = false;
    for (auto d : *this) overflow |= __builtin_mul_overflow(n, d, &n);
    if (overflow) [[unlikely]]
      throw_overflow();
    return n;
  }
  [[noreturn]] void throw_overflow() const;
  int ndim() const { return static_cast<int>(size()); }
};

inline std::ostream& operator<<(std::ostream& o, const Shape& s) {
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  return o << "]";
}

inline void Shape::throw_overflow() const {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < size(); ++i) o << (i ? ", " : "") << (*this)[i];
  o << "]";
  KDET_FAIL("shape ", o.str(), ": number of elements overflows int64 (tensor too large)");
}

// Row-major strides of a contiguous tensor of shape s.
inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int i = static_cast<int>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    if (__builtin_mul_overflow(acc, s[i], &acc)) [[unlikely]]
      s.throw_overflow();
  }
  return st;
}

// Normalises a possibly negative axis; throws naming the op when out of range.
inline int normalize_axis(int axis, int ndim, const char* op) {
  int a = axis < 0 ? axis + ndim : axis;
  KDET_CHECK(a >= 0 && a < ndim, op, ": axis ", axis, " out of range for a tensor of rank ", ndim);
  return a;
}

// NumPy broadcasting of two shapes; throws with both shapes named.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    KDET_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b, " cannot be broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace kdet
