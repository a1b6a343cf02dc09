// tools/cuda_emu/include/cub/device/device_radix_sort.cuh — CUDA EMULATION on the CPU:
// cub::DeviceRadixSort::SortPairs with cub's two-phase temp-storage protocol (a null d_temp_storage only
// sets temp_storage_bytes; the second call needs at least that many bytes of device memory) and its
// result: a stable ascending sort by the key bits [begin_bit, end_bit) (keys equal on those bits keep
// their input order; the output keys are the whole input keys). Done with std::stable_sort on the host.
#pragma once
#include <algorithm>
#include <numeric>
#include <vector>

#include "../../cuda_runtime.h"

namespace kdet_emu {
bool cub_check(const void* temp, size_t temp_bytes, size_t need, const void* const* ranges, const size_t* sizes,
               int nranges, int begin_bit, int end_bit, int key_bits);
}

namespace cub {

struct DeviceRadixSort {
  // What the emulated sort asks for: a size that grows with the item count, like cub's.
  static size_t temp_bytes_for(long long n) { return 256 + static_cast<size_t>(std::max(n, 0LL)) * 8; }

  template <class K, class V, class NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const K* d_keys_in, K* d_keys_out,
                               const V* d_values_in, V* d_values_out, NumItemsT num_items, int begin_bit = 0,
                               int end_bit = sizeof(K) * 8, cudaStream_t stream = 0) {
    static_assert(std::is_unsigned_v<K>, "the emulation models unsigned keys only (kdet's use)");
    const long long n = static_cast<long long>(num_items);
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = temp_bytes_for(n);
      return cudaSuccess;
    }
    const size_t nb = static_cast<size_t>(std::max(n, 0LL));
    const void* ranges[4] = {d_keys_in, d_keys_out, d_values_in, d_values_out};
    const size_t sizes[4] = {nb * sizeof(K), nb * sizeof(K), nb * sizeof(V), nb * sizeof(V)};
    if (n < 0 || !kdet_emu::cub_check(d_temp_storage, temp_storage_bytes, temp_bytes_for(n), ranges, sizes, 4,
                                      begin_bit, end_bit, static_cast<int>(sizeof(K) * 8)))
      return cudaErrorInvalidValue;
    kdet_emu::DeviceScope device;  // the sort reads and writes device memory
    const int width = end_bit - begin_bit;
    const unsigned long long mask = width >= 64 ? ~0ULL : ((1ULL << width) - 1ULL);
    auto digit = [&](const K& k) { return (static_cast<unsigned long long>(k) >> begin_bit) & mask; };
    std::vector<size_t> order(nb);
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return digit(d_keys_in[a]) < digit(d_keys_in[b]); });
    std::vector<K> k(nb);
    std::vector<V> v(nb);
    for (size_t i = 0; i < nb; ++i) k[i] = d_keys_in[order[i]], v[i] = d_values_in[order[i]];
    std::copy(k.begin(), k.end(), d_keys_out);
    std::copy(v.begin(), v.end(), d_values_out);
    return cudaSuccess;
  }
};

}  // namespace cub
