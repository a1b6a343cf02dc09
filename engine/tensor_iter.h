// engine/tensor_iter.h — N-d strided iteration shared by copy and elementwise kernels.
// Dimensions that are contiguous in every operand are merged first, so the common cases (contiguous
// tensors, broadcast of a bias over H*W) become one or two long inner loops.
#pragma once
#include <array>
#include <cstdint>

#include "engine/shape.h"

namespace kdet {

namespace detail {
template <size_t K>
struct IterLayout {
  std::vector<int64_t> shape;                   // merged shape, outermost first
  std::array<std::vector<int64_t>, K> strides;  // per operand
};

template <size_t K>
IterLayout<K> coalesce(const Shape& shape, const std::array<const Shape*, K>& strides) {
  IterLayout<K> L;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;  // size-1 dims never move
    bool merge = !L.shape.empty();
    if (merge) {
      for (size_t k = 0; k < K; ++k) {
        // previous (outer) dim can merge with this one if outer stride == inner stride * inner size
        if (L.strides[k].back() != (*strides[k])[d] * shape[d]) merge = false;
      }
    }
    if (merge) {
      L.shape.back() *= shape[d];
      for (size_t k = 0; k < K; ++k) L.strides[k].back() = (*strides[k])[d];
    } else {
      L.shape.push_back(shape[d]);
      for (size_t k = 0; k < K; ++k) L.strides[k].push_back((*strides[k])[d]);
    }
  }
  if (L.shape.empty()) {
    L.shape.push_back(1);
    for (size_t k = 0; k < K; ++k) L.strides[k].push_back(0);
  }
  return L;
}
}  // namespace detail

// Calls f(const int64_t* offsets /*K*/, int64_t inner_len, const int64_t* inner_strides /*K*/) for
// every row of the innermost (merged) dimension, in row-major order. Serial; callers parallelise
// over outer rows with for_each_strided_rows when the work is large.
template <size_t K, class F>
void for_each_strided(const Shape& shape, const std::array<const Shape*, K>& strides, F&& f) {
  for (int64_t d : shape)
    if (d == 0) return;
  auto L = detail::coalesce<K>(shape, strides);
  const int nd = static_cast<int>(L.shape.size());
  const int64_t inner = L.shape[nd - 1];
  std::array<int64_t, K> inner_st, off{};
  for (size_t k = 0; k < K; ++k) inner_st[k] = L.strides[k][nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= L.shape[d];
  std::vector<int64_t> idx(nd, 0);
  for (int64_t r = 0; r < rows; ++r) {
    f(off.data(), inner, inner_st.data());
    for (int d = nd - 2; d >= 0; --d) {  // odometer increment of the outer index
      if (++idx[d] < L.shape[d]) {
        for (size_t k = 0; k < K; ++k) off[k] += L.strides[k][d];
        break;
      }
      for (size_t k = 0; k < K; ++k) off[k] -= L.strides[k][d] * (L.shape[d] - 1);
      idx[d] = 0;
    }
  }
}

// Same as for_each_strided, but rows are split over OpenMP threads (static schedule, so results are
// identical for a given thread count). Use only when f writes disjoint outputs per row.
template <size_t K, class F>
void for_each_strided_parallel(const Shape& shape, const std::array<const Shape*, K>& strides, F&& f) {
  for (int64_t d : shape)
    if (d == 0) return;
  auto L = detail::coalesce<K>(shape, strides);
  const int nd = static_cast<int>(L.shape.size());
  const int64_t inner = L.shape[nd - 1];
  std::array<int64_t, K> inner_st;
  for (size_t k = 0; k < K; ++k) inner_st[k] = L.strides[k][nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= L.shape[d];
  const bool par = rows > 1 && rows * inner >= (1 << 15);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t r = 0; r < rows; ++r) {
    std::array<int64_t, K> off{};
    int64_t rem = r;
    for (int d = nd - 2; d >= 0; --d) {
      int64_t i = rem % L.shape[d];
      rem /= L.shape[d];
      for (size_t k = 0; k < K; ++k) off[k] += i * L.strides[k][d];
    }
    f(off.data(), inner, inner_st.data());
  }
}

}  // namespace kdet
