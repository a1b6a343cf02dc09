#include <omp.h>

#include <cstdio>

#include "engine/allocator.h"
#include "engine/device.h"
#include "tools/commands.h"

namespace kdet::cli {

int cmd_info(int argc, char** argv) {
  std::printf("kdet\n");
  std::printf("  CUDA backend built: %s\n", cuda_built() ? "yes" : "no");
  std::printf("  CUDA devices:       %d\n", cuda_device_count());
  std::printf("  OpenMP threads:     %d\n", omp_get_max_threads());
#if defined(__AVX512F__)
  std::printf("  SIMD:               AVX-512\n");
#elif defined(__AVX2__)
  std::printf("  SIMD:               AVX2%s\n", defined(__FMA__) ? " + FMA" : "");
#else
  std::printf("  SIMD:               baseline\n");
#endif
  return 0;
}

}  // namespace kdet::cli
