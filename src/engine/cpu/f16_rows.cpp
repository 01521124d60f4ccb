// f16 and e4m3 <-> fp32 conversion of KV-cache rows (see f16_rows.h).
#include "f16_rows.h"

#include <array>

#include "kascade/kv_cache.h"
#include "kascade/tensor.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace kascade::engine::cpu {

namespace {

// e4m3 values of the 256 codes: the portable widening is a table lookup and a multiply.
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[static_cast<size_t>(c)] = e4m3_to_float(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

void widen_e4m3_portable(const uint8_t* src, int64_t n, float scale, float* dst) {
  const float* table = e4m3_table().data();
  for (int64_t i = 0; i < n; ++i) dst[i] = table[src[i]] * scale;
}

void widen_portable(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_float(src[i]);
}

void narrow_portable(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_f16(src[i]);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define KASCADE_HAVE_F16C_PATH 1
// Explicit F16C: GCC 12 scalarises vector conversions of _Float16 (one vcvtph2ps per value).
#define KASCADE_F16C __attribute__((target("avx2,fma,f16c")))

KASCADE_F16C void widen_f16c(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  widen_portable(src + i, n - i, dst + i);
}

KASCADE_F16C void narrow_f16c(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  narrow_portable(src + i, n - i, dst + i);
}

// Rows of a multiple of 8 values (head dims 64, 128, ...) in one call: the per-row dispatch
// would cost as much as a row's eight conversions.
KASCADE_F16C void widen_rows_f16c(const uint16_t* base, const int32_t* idx, int64_t first, int count, int d,
                                  float* dst) {
  for (int r = 0; r < count; ++r, dst += d) {
    const uint16_t* row = base + (idx ? idx[r] : first + r) * static_cast<int64_t>(d);
    for (int i = 0; i < d; i += 8) {
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i))));
    }
  }
}

// e4m3 code c as an f16 bit pattern of value e4m3(c) * 2^-8: sign to bit 15, exponent and
// mantissa shifted by 7 (exponent bias 7 -> 15 is the factor 2^8; e4m3 subnormals land on f16
// subnormals), exact for every finite code; the NaN codes get f16's exponent 31 (NaN). Widened
// by F16C and multiplied by scale * 2^8, the product is the exact real e4m3(c) * scale rounded
// once: dequantize_e4m3's bits.
KASCADE_F16C inline __m256 widen_e4m3_8(const uint8_t* src, __m256 scale_256) {
  const __m128i c = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
  const __m128i magnitude = _mm_and_si128(c, _mm_set1_epi16(0x7f));
  const __m128i sign = _mm_slli_epi16(_mm_and_si128(c, _mm_set1_epi16(0x80)), 8);
  const __m128i nan = _mm_and_si128(_mm_cmpeq_epi16(magnitude, _mm_set1_epi16(0x7f)), _mm_set1_epi16(0x7c00));
  const __m128i half = _mm_or_si128(_mm_or_si128(sign, _mm_slli_epi16(magnitude, 7)), nan);
  return _mm256_mul_ps(_mm256_cvtph_ps(half), scale_256);
}

KASCADE_F16C void widen_e4m3_f16c(const uint8_t* src, int64_t n, float scale, float* dst) {
  const __m256 scale_256 = _mm256_set1_ps(scale * 256.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, widen_e4m3_8(src + i, scale_256));
  widen_e4m3_portable(src + i, n - i, scale, dst + i);
}

KASCADE_F16C void widen_e4m3_rows_f16c(const uint8_t* base, const int32_t* idx, int64_t first, int count, int d,
                                       float scale, float* dst) {
  const __m256 scale_256 = _mm256_set1_ps(scale * 256.0f);
  for (int r = 0; r < count; ++r, dst += d) {
    const uint8_t* row = base + (idx ? idx[r] : first + r) * static_cast<int64_t>(d);
    for (int i = 0; i < d; i += 8) _mm256_storeu_ps(dst + i, widen_e4m3_8(row + i, scale_256));
  }
}

bool use_f16c(SimdPath path) { return path == SimdPath::Auto && cpu_has_avx2_fma(); }
// scale * 2^8 must stay finite (it is then exact) for the F16C path's single rounding.
bool f16c_scale_ok(float scale) { return scale < 1e30f; }
#endif

}  // namespace

void widen_f16(const uint16_t* src, int64_t n, float* dst, SimdPath path) {
#if defined(KASCADE_HAVE_F16C_PATH)
  if (use_f16c(path)) return widen_f16c(src, n, dst);
#endif
  widen_portable(src, n, dst);
}

void narrow_f16(const float* src, int64_t n, uint16_t* dst, SimdPath path) {
#if defined(KASCADE_HAVE_F16C_PATH)
  if (use_f16c(path)) return narrow_f16c(src, n, dst);
#endif
  narrow_portable(src, n, dst);
}

void widen_f16_rows(const uint16_t* base, const int32_t* idx, int64_t first, int count, int d, float* dst,
                    SimdPath path) {
#if defined(KASCADE_HAVE_F16C_PATH)
  if (d % 8 == 0 && use_f16c(path)) return widen_rows_f16c(base, idx, first, count, d, dst);
#endif
  for (int r = 0; r < count; ++r) {
    widen_f16(base + (idx ? idx[r] : first + r) * static_cast<int64_t>(d), d, dst + static_cast<int64_t>(r) * d, path);
  }
}

void narrow_e4m3(const float* src, int64_t n, float scale, uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_e4m3(src[i] / scale);
}

void widen_e4m3(const uint8_t* src, int64_t n, float scale, float* dst, SimdPath path) {
#if defined(KASCADE_HAVE_F16C_PATH)
  if (use_f16c(path) && f16c_scale_ok(scale)) return widen_e4m3_f16c(src, n, scale, dst);
#endif
  (void)path;
  widen_e4m3_portable(src, n, scale, dst);
}

void widen_e4m3_rows(const uint8_t* base, const int32_t* idx, int64_t first, int count, int d, float scale,
                     float* dst, SimdPath path) {
#if defined(KASCADE_HAVE_F16C_PATH)
  if (d % 8 == 0 && use_f16c(path) && f16c_scale_ok(scale)) {
    return widen_e4m3_rows_f16c(base, idx, first, count, d, scale, dst);
  }
#endif
  for (int r = 0; r < count; ++r) {
    widen_e4m3(base + (idx ? idx[r] : first + r) * static_cast<int64_t>(d), d, scale,
               dst + static_cast<int64_t>(r) * d, path);
  }
}

}  // namespace kascade::engine::cpu
