// engine/random.h — explicit, seeded random numbers. There is no global generator: every function that
// draws takes a Generator&, so the same seed gives bit-identical results on the CPU.
// Generator is xoshiro256** seeded through splitmix64; normal() uses Box–Muller.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace kdet {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { seed_(seed); }
  void seed_(uint64_t seed);
  uint64_t next_u64();
  double uniform();                        // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal(double mean = 0.0, double std = 1.0);
  int64_t randint(int64_t lo, int64_t hi);  // [lo, hi)
  // An independent stream derived from this one (e.g. one per loader worker or per image).
  Generator fork(uint64_t stream_id);

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0;
};

Tensor rand_uniform(const Shape& s, Generator& g, double lo = 0.0, double hi = 1.0, DType t = DType::F32);
Tensor rand_normal(const Shape& s, Generator& g, double mean = 0.0, double std = 1.0, DType t = DType::F32);
// Random permutation of [0, n) (Fisher–Yates).
std::vector<int64_t> randperm(int64_t n, Generator& g);

}  // namespace kdet
