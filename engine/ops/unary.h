// engine/ops/unary.h — pointwise math (abs/exp/log/sqrt/pow/clamp/sigmoid/relu/tanh) and where.
//
//   ops::*  plain Tensor kernels (no graph; f32/f64; any strides in, contiguous out).
//   kdet::* differentiable Var versions; backward is written next to forward in unary.cpp.
// Semantics follow torch: clamp passes the gradient where lo <= x <= hi (inclusive), 0 outside;
// relu passes it where x > 0; abs uses sign(x) (0 at 0). sigmoid is evaluated in the overflow-free
// form (no NaN/Inf for |x| large); pow(x, p) for non-integer p needs x >= 0 (NaN otherwise, as torch).
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "engine/autograd.h"

namespace kdet {

namespace cpu {
// exp for f32 written branch-free so that `#pragma omp simd` loops vectorise (glibc's expf is a scalar
// call). Cephes polynomial on r = x - n ln2, |r| <= ln2/2; measured max error 1 ulp against a double
// reference (tests/engine/test_pointwise.cpp). +inf above 88.72, 0 below -103.97, gradual underflow
// in between, NaN propagates. Every element goes through the same formula, so results do not depend
// on position, alignment or thread count.
inline float exp_f32(float x) {
  constexpr float kHi = 88.72283935546875f, kLo = -103.97208404541015625f;
  const float xc = x != x ? 0.0f : std::min(std::max(x, kLo), kHi);
  // Round to nearest with the 1.5*2^23 trick: pure float arithmetic, so GCC if-converts and vectorises
  // the loop (a float->int conversion may trap and keeps the clamps as branches).
  constexpr float kMagic = 12582912.0f;
  const float tm = xc * 1.44269504088896341f + kMagic;
  const float n = tm - kMagic;
  const int32_t ni = std::bit_cast<int32_t>(tm) - std::bit_cast<int32_t>(kMagic);
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  const int32_t n1 = ni >> 1, n2 = ni - n1;  // 2^n split in two so that n down to -150 stays exact
  const float s1 = std::bit_cast<float>((n1 + 127) << 23);
  const float s2 = std::bit_cast<float>((n2 + 127) << 23);
  float res = (y * s1) * s2;
  res = x > kHi ? std::numeric_limits<float>::infinity() : res;
  res = x < kLo ? 0.0f : res;
  return x != x ? x : res;
}
inline double exp_f32(double x) { return std::exp(x); }  // f64 keeps the C library's exp

// Overflow-free logistic: with e = exp(-|x|), sigmoid = 1/(1+e) for x >= 0, e/(1+e) otherwise.
template <class T>
inline T sigmoid_scalar(T x) {
  const T e = exp_f32(-std::abs(x));
  const T s = T(1) / (T(1) + e);
  return x >= T(0) ? s : e * s;
}
}  // namespace cpu

namespace ops {
Tensor abs(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor pow(const Tensor& x, double p);
Tensor clamp(const Tensor& x, double lo, double hi);
Tensor clamp_min(const Tensor& x, double lo);
Tensor clamp_max(const Tensor& x, double hi);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sign(const Tensor& x);  // -1, 0, +1
// cond: bool tensor; cond, a and b broadcast together; a and b share dtype (any non-bool dtype).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// where(cond, a, scalar) — e.g. masked fill with a constant.
Tensor where(const Tensor& cond, const Tensor& a, double b);
}  // namespace ops

Var abs(const Var& x);
Var exp(const Var& x);
Var log(const Var& x);
Var sqrt(const Var& x);
Var pow(const Var& x, double p);
Var clamp(const Var& x, double lo, double hi);
Var clamp_min(const Var& x, double lo);
Var clamp_max(const Var& x, double hi);
Var sigmoid(const Var& x);
Var relu(const Var& x);
Var tanh(const Var& x);
Var where(const Tensor& cond, const Var& a, const Var& b);
Var where(const Tensor& cond, const Var& a, double b);

}  // namespace kdet
