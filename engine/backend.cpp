#include "engine/backend.h"

#if KDET_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace kdet {

bool cuda_built() { return KDET_CUDA != 0; }

#if KDET_CUDA
int cuda_device_count() { return cuda::device_count(); }
void backend_copy_between_devices(Tensor& dst, const Tensor& src) { cuda::copy_between_devices(dst, src); }
void backend_copy_same_device(Tensor& dst, const Tensor& src) { cuda::copy_strided(dst, src); }
void backend_fill(Tensor& dst, double v) { cuda::fill(dst, v); }
#else
int cuda_device_count() { return 0; }
void backend_copy_between_devices(Tensor& dst, const Tensor& src) {
  KDET_FAIL("copy from ", src.device(), " to ", dst.device(),
            ": this build of kdet has no CUDA backend (rebuild with make CUDA=1)");
}
void backend_copy_same_device(Tensor& dst, const Tensor&) {
  KDET_FAIL("copy on ", dst.device(), ": this build of kdet has no CUDA backend");
}
void backend_fill(Tensor& dst, double) { KDET_FAIL("fill on ", dst.device(), ": this build of kdet has no CUDA backend"); }
#endif

void no_kernel(const char* op, Device d) {
  if (d.is_cuda() && !cuda_built())
    KDET_FAIL(op, ": tensor on ", d, " but this build of kdet has no CUDA backend (rebuild with make CUDA=1)");
  KDET_FAIL(op, ": no kernel for device ", d);
}

}  // namespace kdet
