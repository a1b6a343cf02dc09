// engine/backend.h — the few places where the core tensor type needs a device backend: copies between
// devices, copies/fills on a device. With CUDA=0 these throw a clear "built without CUDA" error.
// This file and the per-op dispatch files are the only places that test KDET_CUDA.
#pragma once
#include "engine/tensor.h"

namespace kdet {

// Copies contiguous src into contiguous dst of the same shape and dtype on another device.
void backend_copy_between_devices(Tensor& dst, const Tensor& src);
// Strided copy (with dtype conversion) on a non-CPU device.
void backend_copy_same_device(Tensor& dst, const Tensor& src);
void backend_fill(Tensor& dst, double v);

// Throws the standard error for an op that has no kernel for device d.
[[noreturn]] void no_kernel(const char* op, Device d);

}  // namespace kdet
