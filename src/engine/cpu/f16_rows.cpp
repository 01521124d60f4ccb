// f16 <-> fp32 conversion of KV-cache rows (see f16_rows.h).
#include "f16_rows.h"

#include "kascade/tensor.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace kascade::engine::cpu {

namespace {

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

bool use_f16c(SimdPath path) { return path == SimdPath::Auto && cpu_has_avx2_fma(); }
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

}  // namespace kascade::engine::cpu
