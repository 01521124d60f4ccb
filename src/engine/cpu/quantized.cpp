// Products against quantized weights (see quantized.h).
#include "quantized.h"

#include <algorithm>
#include <cstring>

#include "kascade/engine/gguf.h"
#include "kascade/error.h"
#include "kascade/tensor.h"
#include "simd.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace kascade::engine::cpu {

namespace {

constexpr int kTileRows = 16;  // rows per task unit of the fused decode products
// Products of at most this many tokens on fp32 weights use the row kernel (cpu_kernels.h).
constexpr int kFewTokens = 4;

typedef uint8_t u8x16 __attribute__((vector_size(16)));
typedef int8_t i8x16 __attribute__((vector_size(16)));
typedef float f32x16 __attribute__((vector_size(64)));

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_float(h);
}

inline void store16(float* dst, const f32x16& v) { std::memcpy(dst, &v, sizeof(v)); }

// Block layouts as in dequantize.cpp (ggml's): 32 values per block.
__attribute__((always_inline)) inline void dequantize_q4_0_row(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += 18, dst += 32) {
    const float d = load_f16(src);
    u8x16 q;
    std::memcpy(&q, src + 2, 16);
    const f32x16 lo = __builtin_convertvector(q & 0x0F, f32x16) - 8.0f;
    const f32x16 hi = __builtin_convertvector(q >> 4, f32x16) - 8.0f;
    store16(dst, lo * d);
    store16(dst + 16, hi * d);
  }
}

__attribute__((always_inline)) inline void dequantize_q4_1_row(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += 20, dst += 32) {
    const float d = load_f16(src), m = load_f16(src + 2);
    u8x16 q;
    std::memcpy(&q, src + 4, 16);
    store16(dst, __builtin_convertvector(q & 0x0F, f32x16) * d + m);
    store16(dst + 16, __builtin_convertvector(q >> 4, f32x16) * d + m);
  }
}

__attribute__((always_inline)) inline void dequantize_q8_0_row(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += 34, dst += 32) {
    const float d = load_f16(src);
    i8x16 q0, q1;
    std::memcpy(&q0, src + 2, 16);
    std::memcpy(&q1, src + 18, 16);
    store16(dst, __builtin_convertvector(q0, f32x16) * d);
    store16(dst + 16, __builtin_convertvector(q1, f32x16) * d);
  }
}

// The vector dequantizers of the three 32-value formats; false for any other type.
__attribute__((always_inline)) inline bool dequantize_vector_rows(GgmlType type, const uint8_t* src, int64_t blocks,
                                                                  float* dst) {
  switch (type) {
    case GgmlType::Q4_0: dequantize_q4_0_row(src, blocks, dst); return true;
    case GgmlType::Q4_1: dequantize_q4_1_row(src, blocks, dst); return true;
    case GgmlType::Q8_0: dequantize_q8_0_row(src, blocks, dst); return true;
    default: return false;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// Explicit AVX2: eight bytes widened to eight int32 lanes per instruction (the vector-extension
// code above is what the portable build runs; GCC scalarises its byte-to-float conversions).
#define KASCADE_AVX2 __attribute__((target("avx2,fma,f16c")))
// The blocks' f16 scales through F16C: the portable f16_to_float is an out-of-line call, which
// cost more than the block's arithmetic.
KASCADE_AVX2 inline float load_f16_f16c(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
KASCADE_AVX2 inline void store_bytes_as_floats(const __m128i bytes16, bool is_signed, __m256 scale, __m256 offset,
                                               float* dst) {
  const __m128i upper = _mm_srli_si128(bytes16, 8);
  const __m256i a = is_signed ? _mm256_cvtepi8_epi32(bytes16) : _mm256_cvtepu8_epi32(bytes16);
  const __m256i b = is_signed ? _mm256_cvtepi8_epi32(upper) : _mm256_cvtepu8_epi32(upper);
  _mm256_storeu_ps(dst, _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), scale, offset));
  _mm256_storeu_ps(dst + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(b), scale, offset));
}

KASCADE_AVX2 bool dequantize_vector_avx2(GgmlType type, const uint8_t* src, int64_t blocks, float* dst) {
  const __m128i low_nibbles = _mm_set1_epi8(0x0F);
  switch (type) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1: {
      const bool q4_1 = type == GgmlType::Q4_1;
      const int64_t bytes = q4_1 ? 20 : 18, quants = q4_1 ? 4 : 2;
      for (int64_t b = 0; b < blocks; ++b, src += bytes, dst += 32) {
        const float d = load_f16_f16c(src);
        const __m256 scale = _mm256_set1_ps(d);
        // Q4_0: d * (q - 8) = d * q - 8 d; Q4_1: d * q + m.
        const __m256 offset = _mm256_set1_ps(q4_1 ? load_f16_f16c(src + 2) : -8.0f * d);
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + quants));
        store_bytes_as_floats(_mm_and_si128(q, low_nibbles), false, scale, offset, dst);
        store_bytes_as_floats(_mm_and_si128(_mm_srli_epi16(q, 4), low_nibbles), false, scale, offset, dst + 16);
      }
      return true;
    }
    case GgmlType::Q8_0: {
      const __m256 zero = _mm256_setzero_ps();
      for (int64_t b = 0; b < blocks; ++b, src += 34, dst += 32) {
        const __m256 scale = _mm256_set1_ps(load_f16_f16c(src));
        store_bytes_as_floats(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2)), true, scale, zero, dst);
        store_bytes_as_floats(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 18)), true, scale, zero, dst + 16);
      }
      return true;
    }
    default: return false;
  }
}
// Decode (a few tokens): the weights are read once per product and each weight is used by at
// most a few tokens, so writing a dequantized tile and reading it back costs more than the
// products. Here each block's quants are widened to fp32 in registers and multiplied with the
// tokens directly, with the block's scale applied once per block:
//   sum_i (d q_i + m) x_i = d * sum_i q_i x_i + m * sum_i x_i   (Q4_0: m = -8 d, Q8_0: m = 0),
// the block sums of x computed once per product.
constexpr int kFusedMaxTokens = 4;

KASCADE_AVX2 inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// kTokens a template argument: the accumulators stay in registers.
template <GgmlType kType, int kTokens>
KASCADE_AVX2 void fused_rows_avx2(const QuantizedMatrix& m, const float* x, const float* block_sums, int r0, int r1,
                                  float* y, int out) {
  constexpr int tokens = kTokens;
  const int64_t blocks = m.cols / 32, in = m.cols;
  constexpr int64_t kBytes = kType == GgmlType::Q4_1 ? 20 : kType == GgmlType::Q4_0 ? 18 : 34;
  const __m128i low_nibbles = _mm_set1_epi8(0x0F);
  for (int r = r0; r < r1; ++r) {
    const uint8_t* src = m.row(r);
    __m256 total[kFusedMaxTokens];
    float offset[kFusedMaxTokens];
    for (int t = 0; t < tokens; ++t) {
      total[t] = _mm256_setzero_ps();
      offset[t] = 0.0f;
    }
    for (int64_t b = 0; b < blocks; ++b, src += kBytes) {
      const float d = load_f16_f16c(src);
      float shift = 0.0f;
      __m256i w0, w1, w2, w3;
      if (kType == GgmlType::Q8_0) {
        const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2));
        const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 18));
        w0 = _mm256_cvtepi8_epi32(lo);
        w1 = _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8));
        w2 = _mm256_cvtepi8_epi32(hi);
        w3 = _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8));
      } else {
        shift = kType == GgmlType::Q4_1 ? load_f16_f16c(src + 2) : -8.0f * d;
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (kType == GgmlType::Q4_1 ? 4 : 2)));
        const __m128i lo = _mm_and_si128(q, low_nibbles), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low_nibbles);
        w0 = _mm256_cvtepu8_epi32(lo);
        w1 = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
        w2 = _mm256_cvtepu8_epi32(hi);
        w3 = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
      }
      const __m256 q0 = _mm256_cvtepi32_ps(w0), q1 = _mm256_cvtepi32_ps(w1);
      const __m256 q2 = _mm256_cvtepi32_ps(w2), q3 = _mm256_cvtepi32_ps(w3);
      const __m256 scale = _mm256_set1_ps(d);
      for (int t = 0; t < tokens; ++t) {
        const float* xb = x + t * in + b * 32;
        __m256 a = _mm256_mul_ps(q0, _mm256_loadu_ps(xb));
        a = _mm256_fmadd_ps(q1, _mm256_loadu_ps(xb + 8), a);
        a = _mm256_fmadd_ps(q2, _mm256_loadu_ps(xb + 16), a);
        a = _mm256_fmadd_ps(q3, _mm256_loadu_ps(xb + 24), a);
        total[t] = _mm256_fmadd_ps(a, scale, total[t]);
        if (kType != GgmlType::Q8_0) offset[t] += shift * block_sums[t * blocks + b];
      }
    }
    for (int t = 0; t < tokens; ++t) y[static_cast<int64_t>(t) * out + r] = horizontal_sum(total[t]) + offset[t];
  }
}

using FusedRows = void (*)(const QuantizedMatrix&, const float*, const float*, int, int, float*, int);

template <GgmlType kType>
FusedRows fused_rows_of_type(int tokens) {
  switch (tokens) {
    case 1: return &fused_rows_avx2<kType, 1>;
    case 2: return &fused_rows_avx2<kType, 2>;
    case 3: return &fused_rows_avx2<kType, 3>;
    case 4: return &fused_rows_avx2<kType, 4>;
    default: return nullptr;
  }
}

FusedRows fused_rows_for(GgmlType type, int tokens) {
  static_assert(kFusedMaxTokens == 4, "fused_rows_of_type instantiates 1..4 tokens");
  switch (type) {
    case GgmlType::Q4_0: return fused_rows_of_type<GgmlType::Q4_0>(tokens);
    case GgmlType::Q4_1: return fused_rows_of_type<GgmlType::Q4_1>(tokens);
    case GgmlType::Q8_0: return fused_rows_of_type<GgmlType::Q8_0>(tokens);
    default: return nullptr;
  }
}

// True when the fused product ran (AVX2 CPU, a 32-value block type, at most kFusedMaxTokens).
bool fused_matmul_avx2(ThreadPool& pool, const float* x, int tokens, const QuantizedMatrix& m, float* y) {
  if (tokens > kFusedMaxTokens || !cpu_has_avx2_fma()) return false;
  const auto rows_fn = fused_rows_for(m.type, tokens);
  if (!rows_fn) return false;
  const int64_t blocks = m.cols / 32;
  std::vector<float> block_sums(static_cast<size_t>(tokens * blocks));
  for (int t = 0; t < tokens; ++t) {
    for (int64_t b = 0; b < blocks; ++b) {
      const float* xb = x + t * m.cols + b * 32;
      float sum = 0.0f;
      for (int i = 0; i < 32; ++i) sum += xb[i];
      block_sums[static_cast<size_t>(t * blocks + b)] = sum;
    }
  }
  const int out = static_cast<int>(m.rows);
  const int tiles = (out + kTileRows - 1) / kTileRows;
  const int tasks = std::min(tiles, pool.size() * 4);
  pool.parallel_for(tasks, [&](int task) {
    const int r0 = static_cast<int>(static_cast<int64_t>(tiles) * task / tasks) * kTileRows;
    const int r1 = std::min(out, static_cast<int>(static_cast<int64_t>(tiles) * (task + 1) / tasks) * kTileRows);
    rows_fn(m, x, block_sums.data(), r0, r1, y, out);
  });
  return true;
}
#define KASCADE_HAVE_AVX2_PATH 1
#endif

bool dequantize_vector_portable(GgmlType type, const uint8_t* src, int64_t blocks, float* dst) {
  return dequantize_vector_rows(type, src, blocks, dst);
}

}  // namespace

bool cpu_has_avx2_fma() {
#if defined(KASCADE_HAVE_AVX2_PATH)
  static const bool has =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return has;
#else
  return false;
#endif
}

void dequantize_rows(const QuantizedMatrix& m, int64_t r0, int rows, float* dst, SimdPath path) {
  const int64_t blocks = m.cols / ggml_block_elements(m.type) * rows;  // rows are contiguous
  const uint8_t* src = m.row(r0);
  bool done = false;
#if defined(KASCADE_HAVE_AVX2_PATH)
  if (path == SimdPath::Auto && cpu_has_avx2_fma()) done = dequantize_vector_avx2(m.type, src, blocks, dst);
#endif
  if (!done) done = dequantize_vector_portable(m.type, src, blocks, dst);
  if (!done) dequantize(m.type, src, m.cols * rows, dst);
}

WeightRef weight_ref(const std::vector<float>& fp32, const QuantizedMatrix& quantized) {
  WeightRef w;
  if (!quantized.empty()) {
    w.quantized = &quantized;
  } else {
    w.fp32 = fp32.data();
  }
  return w;
}

void matmul(ThreadPool& pool, const float* x, int tokens, int in, WeightRef w, int out, float* y, const float* bias,
            SimdPath path) {
  if (w.quantized) {
    const QuantizedMatrix& m = *w.quantized;
    KASCADE_CHECK(m.cols == in && m.rows == out, "quantized matmul: weight is [" << m.rows << ", " << m.cols
                                                                                 << "], expected [" << out << ", "
                                                                                 << in << "]");
  }
  bool done = false;
#if defined(KASCADE_HAVE_AVX2_PATH)
  if (w.quantized && path == SimdPath::Auto) done = fused_matmul_avx2(pool, x, tokens, *w.quantized, y);
#endif
  if (!done && !w.quantized && tokens <= kFewTokens) {
    // Decode on fp32 weights: each weight is used by a few tokens, packing it would cost more.
    matmul(pool, x, tokens, in, w.fp32, out, y);
    done = true;
  }
  if (!done) {
    // Each task packs panels of kPanelRows weight rows (dequantized first when quantized) and
    // streams every token past them.
    const int panels = (out + kPanelRows - 1) / kPanelRows;
    const int tasks = std::min(panels, pool.size() * 4);
    // A few tokens (decode of the types without a fused product) use the dequantized rows as
    // they are: packing would cost more than the products.
    const bool pack = tokens > kFewTokens;
    pool.parallel_for(tasks, [&](int task) {
      thread_local std::vector<float> tile, panel;
      tile.resize(static_cast<size_t>(kPanelRows) * in);
      panel.resize(static_cast<size_t>(kPanelRows) * in);
      const int p0 = static_cast<int>(static_cast<int64_t>(panels) * task / tasks);
      const int p1 = static_cast<int>(static_cast<int64_t>(panels) * (task + 1) / tasks);
      for (int p = p0; p < p1; ++p) {
        const int r0 = p * kPanelRows, rows = std::min(kPanelRows, out - r0);
        const float* rows_fp32 = w.fp32 ? w.fp32 + static_cast<int64_t>(r0) * in : tile.data();
        if (w.quantized) dequantize_rows(*w.quantized, r0, rows, tile.data(), path);
        if (pack) {
          pack_panel(rows_fp32, rows, in, panel.data());
          panel_product(x, tokens, in, panel.data(), rows, y + r0, out, path);
        } else {
          matmul_row_range(x, tokens, in, rows_fp32, out, y + r0, 0, rows);
        }
      }
    });
  }
  if (bias) {
    for (int t = 0; t < tokens; ++t) {
      float* yt = y + static_cast<int64_t>(t) * out;
      for (int o = 0; o < out; ++o) yt[o] += bias[o];
    }
  }
}

void weight_row(WeightRef w, int in, int64_t row, float* dst) {
  if (w.quantized) {
    dequantize_rows(*w.quantized, row, 1, dst);
  } else {
    std::memcpy(dst, w.fp32 + row * in, sizeof(float) * static_cast<size_t>(in));
  }
}

}  // namespace kascade::engine::cpu
