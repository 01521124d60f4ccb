// kascade/tensor.h — element types and non-owning strided tensor views.
//
// A TensorView describes memory owned elsewhere (host or device): a base pointer, a dtype,
// up to 5 dimensions and strides in elements. Views never allocate or free.
//
//   kascade::TensorView q = kascade::TensorView::contiguous(ptr, DType::BF16, {B, Hq, D});
//   float x = kascade::load_as_float(q, {b, h, d});   // host only
//
// f16/bf16/e4m3 conversions here are the host-side, round-to-nearest-even ones used by the
// reference, the npy reader, the CPU engine and the tests; kernels use the CUDA intrinsics.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

#include "kascade/error.h"

namespace kascade {

// F8E4M3: OCP FP8 E4M3 ("e4m3fn", as __nv_fp8_e4m3 and torch.float8_e4m3fn): no infinities,
// one NaN code per sign, largest finite 448. Used for KV caches with per-head scales
// (kascade/kv_cache.h).
enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, I64 = 4, F8E4M3 = 5 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::F8E4M3: return 1;
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
    case DType::F8E4M3: return "f8e4m3";
  }
  return "?";
}

// Parses "f32" | "f16" | "bf16" | "i32" | "i64" | "f8e4m3" (also "fp16", "fp32", "float32", "fp8",
// "e4m3", ...).
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

// ---- FP8 E4M3 (OCP "e4m3fn") conversions (host) ----------------------------------------
// Code layout: sign (bit 7), exponent (bits 6..3, bias 7), mantissa (bits 2..0).
// Exponent 0 is subnormal (mantissa * 2^-9); S.1111.111 (0x7f, 0xff) is NaN; no infinities.
constexpr float kE4M3Max = 448.0f;  // S.1111.110 = 1.75 * 2^8
constexpr uint8_t kE4M3MaxCode = 0x7e;
constexpr uint8_t kE4M3NanCode = 0x7f;

// float -> e4m3, round to nearest even; beyond +-448 (infinities included) saturates to +-448
// (the "satfinite" conversion of CUDA's __nv_cvt_float_to_fp8); NaN -> the NaN code.
inline uint8_t float_to_e4m3(float f) {
  const uint32_t u = float_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint8_t>(sign | kE4M3NanCode);
  uint32_t code, rem, half;
  if (abs < 0x3c800000u) {
    // Below 2^-6: subnormal code m * 2^-9 (m rounds up to 8 = the smallest normal, code 0x08).
    if (abs < 0x3a800000u) return sign;  // below 2^-10, half the smallest subnormal: 0
    const uint32_t shift = 141u - (abs >> 23);  // 21..24: float mantissa with hidden bit -> m
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    code = mant >> shift;
    rem = mant & ((1u << shift) - 1u);
    half = 1u << (shift - 1u);
  } else {
    code = (abs - (120u << 23)) >> 20;  // rebias the exponent 127 -> 7, keep 3 mantissa bits
    rem = abs & 0xfffffu;
    half = 0x80000u;
  }
  if (rem > half || (rem == half && (code & 1u))) ++code;  // a carry moves into the exponent
  if (code > kE4M3MaxCode) code = kE4M3MaxCode;
  return static_cast<uint8_t>(sign | code);
}

inline float e4m3_to_float(uint8_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  const uint32_t exp = (c >> 3) & 0xfu;
  const uint32_t mant = c & 0x7u;
  if (exp == 0xfu && mant == 0x7u) return bits_float(sign | 0x7fc00000u);
  if (exp == 0) {
    const float v = static_cast<float>(mant) * (1.0f / 512.0f);  // m * 2^-9, exact
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 120u) << 23) | (mant << 20));
}

// Rounds a float through the storage type (what a kernel sees after the cast).
inline float round_to(DType t, float x) {
  switch (t) {
    case DType::F16: return f16_to_float(float_to_f16(x));
    case DType::BF16: return bf16_to_float(float_to_bf16(x));
    case DType::F8E4M3: return e4m3_to_float(float_to_e4m3(x));
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
