// Panel products of prefill (see gemm.h).
#include "gemm.h"

#include <cstring>

#include "simd.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace kascade::engine::cpu {

namespace {

constexpr int kTileTokens = 6;  // 6 x 2 accumulators + 2 weight vectors + 1 broadcast: 15 of 16 registers

static_assert(kPanelRows == 16, "the register tiles hold 16 rows as two eight-lane vectors");

// M tokens x 16 rows, the accumulators in registers (M a template argument). The sum over k
// runs in blocks of kSumBlock products added to the running sums at each block's end: the
// rounding error grows with the block length plus the number of blocks rather than with `in`,
// as in the row kernel's eight lanes, so prefill and decode of the same tokens stay as close
// as they were.
constexpr int kSumBlock = 64;

template <int M>
void tile_portable(const float* x, int in, const float* panel, int rows, float* y, int64_t y_stride) {
  using simd::v8;
  v8 s0[M], s1[M];
  for (int m = 0; m < M; ++m) s0[m] = s1[m] = v8{};
  for (int k0 = 0; k0 < in; k0 += kSumBlock) {
    const int k1 = k0 + kSumBlock < in ? k0 + kSumBlock : in;
    v8 c0[M], c1[M];
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) c0[m] = c1[m] = v8{};
    for (int k = k0; k < k1; ++k) {
      const v8 b0 = simd::load8(panel + k * kPanelRows), b1 = simd::load8(panel + k * kPanelRows + 8);
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const v8 a = simd::splat8(x[static_cast<int64_t>(m) * in + k]);
        c0[m] += a * b0;
        c1[m] += a * b1;
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      s0[m] += c0[m];
      s1[m] += c1[m];
    }
  }
  for (int m = 0; m < M; ++m) {
    float full[kPanelRows];
    simd::store8(full, s0[m]);
    simd::store8(full + 8, s1[m]);
    std::memcpy(y + m * y_stride, full, sizeof(float) * static_cast<size_t>(rows));
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define KASCADE_HAVE_AVX2_GEMM 1
#define KASCADE_AVX2 __attribute__((target("avx2,fma")))

template <int M>
KASCADE_AVX2 void tile_avx2(const float* x, int in, const float* panel, int rows, float* y, int64_t y_stride) {
  // The running sums live in memory (L1): the block accumulators take the registers.
  alignas(32) float sums[M][kPanelRows];
  for (int k0 = 0; k0 < in; k0 += kSumBlock) {
    const int k1 = k0 + kSumBlock < in ? k0 + kSumBlock : in;
    __m256 c0[M], c1[M];
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) c0[m] = c1[m] = _mm256_setzero_ps();
    for (int k = k0; k < k1; ++k) {
      const __m256 b0 = _mm256_loadu_ps(panel + k * kPanelRows), b1 = _mm256_loadu_ps(panel + k * kPanelRows + 8);
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const __m256 a = _mm256_broadcast_ss(x + static_cast<int64_t>(m) * in + k);
        c0[m] = _mm256_fmadd_ps(a, b0, c0[m]);
        c1[m] = _mm256_fmadd_ps(a, b1, c1[m]);
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      if (k0 > 0) {
        c0[m] = _mm256_add_ps(c0[m], _mm256_load_ps(sums[m]));
        c1[m] = _mm256_add_ps(c1[m], _mm256_load_ps(sums[m] + 8));
      }
      _mm256_store_ps(sums[m], c0[m]);
      _mm256_store_ps(sums[m] + 8, c1[m]);
    }
  }
  for (int m = 0; m < M; ++m) std::memcpy(y + m * y_stride, sums[m], sizeof(float) * static_cast<size_t>(rows));
}
#endif

using TileFn = void (*)(const float*, int, const float*, int, float*, int64_t);

// The kernels for 1..kTileTokens tokens of one path.
TileFn tile_for(int tokens, bool avx2) {
#if defined(KASCADE_HAVE_AVX2_GEMM)
  if (avx2) {
    switch (tokens) {
      case 1: return &tile_avx2<1>;
      case 2: return &tile_avx2<2>;
      case 3: return &tile_avx2<3>;
      case 4: return &tile_avx2<4>;
      case 5: return &tile_avx2<5>;
      default: return &tile_avx2<6>;
    }
  }
#endif
  (void)avx2;
  switch (tokens) {
    case 1: return &tile_portable<1>;
    case 2: return &tile_portable<2>;
    case 3: return &tile_portable<3>;
    case 4: return &tile_portable<4>;
    case 5: return &tile_portable<5>;
    default: return &tile_portable<6>;
  }
}

}  // namespace

void pack_panel(const float* w, int rows, int in, float* panel) {
  for (int k = 0; k < in; ++k) {
    float* p = panel + static_cast<int64_t>(k) * kPanelRows;
    for (int r = 0; r < rows; ++r) p[r] = w[static_cast<int64_t>(r) * in + k];
    for (int r = rows; r < kPanelRows; ++r) p[r] = 0.0f;
  }
}

void panel_product(const float* x, int tokens, int in, const float* panel, int rows, float* y, int64_t y_stride,
                   SimdPath path) {
  const bool avx2 = path == SimdPath::Auto && cpu_has_avx2_fma();
  const TileFn full = tile_for(kTileTokens, avx2);
  int t = 0;
  for (; t + kTileTokens <= tokens; t += kTileTokens) {
    full(x + static_cast<int64_t>(t) * in, in, panel, rows, y + t * y_stride, y_stride);
  }
  if (t < tokens) tile_for(tokens - t, avx2)(x + static_cast<int64_t>(t) * in, in, panel, rows, y + t * y_stride, y_stride);
}

}  // namespace kascade::engine::cpu
