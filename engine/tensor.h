// engine/tensor.h — the Tensor value type: a shape/strides/offset view over shared Storage.
//
// A Tensor knows nothing about autograd (see engine/autograd.h for Var). Copying a Tensor copies the
// handle, not the data: use clone() for a deep copy, to(device) for a cross-device copy. Shape order is
// PyTorch's (NCHW activations, OIHW weights, row-major), so safetensors files load without transposes.
#pragma once
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/shape.h"

namespace kdet {

class Tensor {
 public:
  Tensor() = default;  // undefined tensor (defined() == false)

  // --- factories -------------------------------------------------------------------------------
  static Tensor empty(const Shape& s, DType t = DType::F32, Device d = Device::cpu());
  static Tensor zeros(const Shape& s, DType t = DType::F32, Device d = Device::cpu());
  static Tensor ones(const Shape& s, DType t = DType::F32, Device d = Device::cpu());
  static Tensor full(const Shape& s, double v, DType t = DType::F32, Device d = Device::cpu());
  static Tensor scalar(double v, DType t = DType::F32) { return full({}, v, t); }
  static Tensor arange(int64_t n, DType t = DType::I64);
  template <class T>
  static Tensor from_vector(const std::vector<T>& v, const Shape& s) {
    KDET_CHECK(static_cast<int64_t>(v.size()) == s.numel(), "Tensor::from_vector: ", v.size(),
               " values for shape ", s);
    Tensor t = empty(s, dtype_of<T>());
    if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
    return t;
  }
  // Wraps the values in a 1-D tensor.
  template <class T>
  static Tensor from_vector(const std::vector<T>& v) {
    return from_vector(v, Shape{static_cast<int64_t>(v.size())});
  }

  // --- metadata --------------------------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int ndim() const { return shape_.ndim(); }
  int64_t size(int d) const;  // negative d counts from the end
  int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  std::string desc() const;  // "f32[2, 3] cpu"

  // --- data access (CPU pointers; offset applied; dtype checked) -------------------------------
  template <class T>
  T* data() {
    check_access(dtype_of<T>());
    return static_cast<T*>(storage_->data()) + offset_;
  }
  template <class T>
  const T* data() const {
    check_access(dtype_of<T>());
    return static_cast<const T*>(storage_->data()) + offset_;
  }
  void* raw_data() { return static_cast<char*>(storage_->data()) + offset_ * dtype_size(dtype_); }
  const void* raw_data() const {
    return static_cast<const char*>(storage_->data()) + offset_ * dtype_size(dtype_);
  }
  double item() const;  // one-element tensor -> double
  template <class T>
  std::vector<T> to_vector() const {
    Tensor c = to(Device::cpu()).to(dtype_of<T>()).contiguous();
    const T* p = c.data<T>();
    return std::vector<T>(p, p + c.numel());
  }

  // --- views (share storage) -------------------------------------------------------------------
  Tensor view(const Shape& s) const;  // contiguous only; one extent may be -1
  Tensor reshape(const Shape& s) const;  // view if contiguous, else copies
  Tensor permute(const std::vector<int>& order) const;
  Tensor transpose(int a, int b) const;
  Tensor slice(int dim, int64_t begin, int64_t end, int64_t step = 1) const;
  Tensor select(int dim, int64_t index) const;  // drops dim
  Tensor unsqueeze(int dim) const;
  Tensor squeeze(int dim) const;
  Tensor expand(const Shape& s) const;  // broadcast view (stride 0)

  // --- copies ----------------------------------------------------------------------------------
  Tensor contiguous() const;  // returns *this when already contiguous
  Tensor clone() const;       // always a fresh contiguous copy
  Tensor to(Device d) const;  // explicit device copy (returns *this if already there)
  Tensor to(DType t) const;   // dtype conversion (returns *this if already that dtype)
  void copy_(const Tensor& src);  // same shape (src may broadcast); converts dtype
  void fill_(double v);
  void zero_() { fill_(0.0); }

 private:
  void check_access(DType t) const;
  std::shared_ptr<Storage> storage_;
  Shape shape_, strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::F32;
};

std::ostream& operator<<(std::ostream& o, const Tensor& t);  // prints desc()

// Iterates over all elements of an N-d strided layout, calling f(offset_a, offset_b, ...) style
// callbacks on the innermost dimension. Used by copy and the elementwise kernels.
// `shape` is the iteration shape; strides[k] are the element strides of operand k (0 = broadcast).
// f(ptr_offsets[K], inner_len, inner_strides[K]).
template <size_t K, class F>
void for_each_strided(const Shape& shape, const std::array<const Shape*, K>& strides, F&& f);

}  // namespace kdet

#include "engine/tensor_iter.h"
