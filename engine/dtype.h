// engine/dtype.h — element types. f32 is the default everywhere; f64 exists on the CPU so that every
// kernel can be gradchecked in double precision (CPU kernels are templates over float and double).
#pragma once
#include <cstddef>
#include <cstdint>
#include <ostream>

#include "engine/check.h"

namespace kdet {

enum class DType : uint8_t { F32, F64, I64, U8, Bool };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I64: return 8;
    case DType::U8: return 1;
    case DType::Bool: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
    case DType::Bool: return "bool";
  }
  return "?";
}

inline std::ostream& operator<<(std::ostream& o, DType t) { return o << dtype_name(t); }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<bool>() { return DType::Bool; }

inline bool is_floating(DType t) { return t == DType::F32 || t == DType::F64; }

// dispatch_float(x.dtype(), "relu", [&](auto tag) { using T = decltype(tag); kernel<T>(...); });
template <class F>
void dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    default: KDET_FAIL(op, ": unsupported dtype ", dtype_name(t), " (expected f32 or f64)");
  }
}

// Any dtype (bool as bool).
template <class F>
void dispatch_all(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    case DType::I64: f(int64_t{}); return;
    case DType::U8: f(uint8_t{}); return;
    case DType::Bool: f(bool{}); return;
  }
  KDET_FAIL(op, ": bad dtype");
}

}  // namespace kdet
