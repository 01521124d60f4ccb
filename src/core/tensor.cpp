// Host-side dtype helpers and tensor view utilities (see kascade/tensor.h).
#include "kascade/tensor.h"

#include <cmath>
#include <sstream>

namespace kascade {

DType parse_dtype(const std::string& name) {
  if (name == "f32" || name == "fp32" || name == "float32") return DType::F32;
  if (name == "f16" || name == "fp16" || name == "float16") return DType::F16;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  if (name == "i32" || name == "int32") return DType::I32;
  if (name == "i64" || name == "int64") return DType::I64;
  if (name == "f8e4m3" || name == "fp8" || name == "e4m3") return DType::F8E4M3;
  KASCADE_FAIL("unknown dtype '" << name << "' (expected f32, f16, bf16, i32, i64 or f8e4m3)");
}

uint16_t float_to_f16(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u); // rounds to >= 65520: Inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = m * 2^-24, round to nearest even.
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to 0
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // 14..24 so that result < 2^10
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

std::string TensorView::shape_str() const {
  std::ostringstream os;
  os << '[';
  for (int i = 0; i < rank; ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

float load_as_float(const TensorView& t, int64_t o) {
  switch (t.dtype) {
    case DType::F32: return static_cast<const float*>(t.data)[o];
    case DType::F16: return f16_to_float(static_cast<const uint16_t*>(t.data)[o]);
    case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(t.data)[o]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(t.data)[o]);
    case DType::I64: return static_cast<float>(static_cast<const int64_t*>(t.data)[o]);
    case DType::F8E4M3: return e4m3_to_float(static_cast<const uint8_t*>(t.data)[o]);
  }
  return 0.f;
}

void store_from_float(const TensorView& t, int64_t o, float x) {
  switch (t.dtype) {
    case DType::F32: static_cast<float*>(t.data)[o] = x; return;
    case DType::F16: static_cast<uint16_t*>(t.data)[o] = float_to_f16(x); return;
    case DType::BF16: static_cast<uint16_t*>(t.data)[o] = float_to_bf16(x); return;
    case DType::I32: static_cast<int32_t*>(t.data)[o] = static_cast<int32_t>(x); return;
    case DType::I64: static_cast<int64_t*>(t.data)[o] = static_cast<int64_t>(x); return;
    case DType::F8E4M3: static_cast<uint8_t*>(t.data)[o] = float_to_e4m3(x); return;
  }
}

void check_shape(const TensorView& t, const char* what, std::initializer_list<int64_t> expected) {
  bool ok = t.rank == static_cast<int>(expected.size());
  int i = 0;
  for (int64_t e : expected) {
    if (ok && e >= 0 && t.shape[i] != e) ok = false;
    ++i;
  }
  if (!ok) {
    std::ostringstream want;
    want << '[';
    i = 0;
    for (int64_t e : expected) {
      want << (i++ ? ", " : "");
      if (e >= 0) want << e; else want << '*';
    }
    want << ']';
    KASCADE_FAIL(what << ": expected shape " << want.str() << ", got " << t.shape_str());
  }
}

}  // namespace kascade
