// kascade/tensor.h — element types and non-owning strided tensor views.
//
// A TensorView describes memory owned elsewhere (host or device): a base pointer, a dtype,
// up to 5 dimensions and strides in elements. Views never allocate or free.
//
//   kascade::TensorView q = kascade::TensorView::contiguous(ptr, DType::BF16, {B, Hq, D});
//   float x = kascade::load_as_float(q, {b, h, d});   // host only
//
// f16/bf16 conversions here are the host-side, round-to-nearest-even ones used by the
// reference, the npy reader and the tests; kernels use the CUDA intrinsics.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

#include "kascade/error.h"

namespace kascade {

enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, I64 = 4 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
  }
  return "?";
}

// Parses "f32" | "f16" | "bf16" | "i32" | "i64" (also "fp16", "fp32", "float32", ...).
DType parse_dtype(const std::string& name);

// ---- 16-bit float conversions (host) ---------------------------------------------------
inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// float -> bf16, round to nearest even; NaN stays NaN.
inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// float -> IEEE half, round to nearest even, overflow to Inf, NaN preserved.
uint16_t float_to_f16(float f);
float f16_to_float(uint16_t h);

// Rounds a float through the storage type (what a kernel sees after the cast).
inline float round_to(DType t, float x) {
  switch (t) {
    case DType::F16: return f16_to_float(float_to_f16(x));
    case DType::BF16: return bf16_to_float(float_to_bf16(x));
    default: return x;
  }
}

// ---- views -------------------------------------------------------------------------------
constexpr int kMaxRank = 5;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  int rank = 0;
  int64_t shape[kMaxRank] = {0, 0, 0, 0, 0};
  int64_t stride[kMaxRank] = {0, 0, 0, 0, 0};  // in elements

  static TensorView contiguous(void* data, DType dtype, std::initializer_list<int64_t> dims) {
    TensorView v;
    v.data = data;
    v.dtype = dtype;
    KASCADE_CHECK(dims.size() <= static_cast<size_t>(kMaxRank),
                  "TensorView: rank " << dims.size() << " exceeds " << kMaxRank);
    v.rank = static_cast<int>(dims.size());
    int i = 0;
    for (int64_t d : dims) v.shape[i++] = d;
    int64_t s = 1;
    for (int k = v.rank - 1; k >= 0; --k) {
      v.stride[k] = s;
      s *= v.shape[k];
    }
    return v;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const {
    int64_t s = 1;
    for (int k = rank - 1; k >= 0; --k) {
      if (shape[k] != 1 && stride[k] != s) return false;
      s *= shape[k];
    }
    return true;
  }
  int64_t offset(std::initializer_list<int64_t> idx) const {
    int64_t o = 0;
    int i = 0;
    for (int64_t x : idx) o += x * stride[i++];
    return o;
  }
  std::string shape_str() const;
};

// Host-side element access (the view must point to host memory).
float load_as_float(const TensorView& t, int64_t elem_offset);
void store_from_float(const TensorView& t, int64_t elem_offset, float x);

// Throws unless `t` has the given rank and, where expected[i] >= 0, that extent.
void check_shape(const TensorView& t, const char* what, std::initializer_list<int64_t> expected);

}  // namespace kascade
