#include "engine/random.h"

#include <cmath>
#include <numeric>

namespace kdet {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Generator::seed_(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
  has_spare_ = false;
}

uint64_t Generator::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Generator::normal(double mean, double std) {
  if (has_spare_) {
    has_spare_ = false;
    return mean + std * spare_;
  }
  double u1 = 0;
  while (u1 <= 0) u1 = uniform();
  double u2 = uniform();
  double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2 * M_PI * u2);
  has_spare_ = true;
  return mean + std * r * std::cos(2 * M_PI * u2);
}

int64_t Generator::randint(int64_t lo, int64_t hi) {
  KDET_CHECK(hi > lo, "randint: empty range [", lo, ", ", hi, ")");
  uint64_t range = static_cast<uint64_t>(hi - lo);
  // Rejection sampling for an unbiased result.
  uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  uint64_t v;
  do v = next_u64();
  while (v >= limit);
  return lo + static_cast<int64_t>(v % range);
}

Generator Generator::fork(uint64_t stream_id) {
  uint64_t x = next_u64() ^ (stream_id * 0xd1b54a32d192ed03ULL);
  return Generator(splitmix64(x));
}

Tensor rand_uniform(const Shape& s, Generator& g, double lo, double hi, DType t) {
  Tensor r = Tensor::empty(s, t);
  dispatch_float(t, "rand_uniform", [&](auto tag) {
    using T = decltype(tag);
    T* p = r.data<T>();
    for (int64_t i = 0; i < r.numel(); ++i) p[i] = static_cast<T>(g.uniform(lo, hi));
  });
  return r;
}

Tensor rand_normal(const Shape& s, Generator& g, double mean, double std, DType t) {
  Tensor r = Tensor::empty(s, t);
  dispatch_float(t, "rand_normal", [&](auto tag) {
    using T = decltype(tag);
    T* p = r.data<T>();
    for (int64_t i = 0; i < r.numel(); ++i) p[i] = static_cast<T>(g.normal(mean, std));
  });
  return r;
}

std::vector<int64_t> randperm(int64_t n, Generator& g) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[g.randint(0, i + 1)]);
  return p;
}

}  // namespace kdet
