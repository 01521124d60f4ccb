// src/engine/cpu/f16_rows.h — IEEE half (f16) and FP8 e4m3 <-> fp32 conversion of the CPU KV
// cache's rows: the cache stores f16 bit patterns (uint16_t) or e4m3 codes (uint8_t) with one
// scale per kv head, attention widens the rows it reads to fp32 and accumulates in fp32. F16C
// (vcvtph2ps / vcvtps2ph) where the CPU has it, else the host conversions of kascade/tensor.h;
// both round to nearest even and give the same bits (NaN payloads aside). e4m3 rows widen to
// exactly dequantize_e4m3(code, scale) (kascade/kv_cache.h) on either path. Internal to the engine.
//
//   cpu::narrow_f16(k, n, cache_row);              // store
//   cpu::widen_f16_rows(head, nullptr, j0, count, d, scratch);  // rows j0..j0+count-1
//   cpu::widen_f16_rows(head, keys, 0, count, d, scratch);      // rows keys[0..count)
//   cpu::narrow_e4m3(k, n, k_scale[g], cache_row);               // e4m3 store, x / scale
//   cpu::widen_e4m3_rows(head, keys, 0, count, d, k_scale[g], scratch);
#pragma once

#include <cstdint>

#include "gemm.h"

namespace kascade::engine::cpu {

// dst[i] = src[i] as fp32 for i < n.
void widen_f16(const uint16_t* src, int64_t n, float* dst, SimdPath path = SimdPath::Auto);

// dst[i] = src[i] rounded to f16 (nearest even; beyond the f16 range: infinity) for i < n.
void narrow_f16(const float* src, int64_t n, uint16_t* dst, SimdPath path = SimdPath::Auto);

// Rows of d values: row r of dst is row idx[r] (idx non-null) or first + r of base, widened,
// for r < count; dst holds count * d floats.
void widen_f16_rows(const uint16_t* base, const int32_t* idx, int64_t first, int count, int d, float* dst,
                    SimdPath path = SimdPath::Auto);

// dst[i] = the e4m3 code of src[i] / scale (nearest even; beyond +-448 saturated) for i < n.
void narrow_e4m3(const float* src, int64_t n, float scale, uint8_t* dst);

// dst[i] = dequantize_e4m3(src[i], scale) for i < n.
void widen_e4m3(const uint8_t* src, int64_t n, float scale, float* dst, SimdPath path = SimdPath::Auto);

// widen_f16_rows for e4m3 rows of one kv head (its scale).
void widen_e4m3_rows(const uint8_t* base, const int32_t* idx, int64_t first, int count, int d, float scale,
                     float* dst, SimdPath path = SimdPath::Auto);

}  // namespace kascade::engine::cpu
