// engine/device.h — where a tensor lives. Copies between devices are always explicit (Tensor::to).
#pragma once
#include <ostream>

namespace kdet {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

inline std::ostream& operator<<(std::ostream& o, const Device& d) {
  return d.is_cpu() ? (o << "cpu") : (o << "cuda:" << d.index);
}

// True when this binary was built with the CUDA backend (make CUDA=1). Whether a GPU is present at
// run time is a separate question (cuda_device_count()).
bool cuda_built();
int cuda_device_count();

}  // namespace kdet
