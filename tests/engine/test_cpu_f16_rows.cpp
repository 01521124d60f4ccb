// The CPU KV cache's f16 conversions (src/engine/cpu/f16_rows.h): the F16C path and the
// portable path give the bits of kascade::f16_to_float / float_to_f16 (round to nearest even,
// overflow to infinity) for every f16 value and for the floats around every rounding boundary;
// row gathers read the rows they name. The e4m3 rows (FP8 cache) widen to dequantize_e4m3 exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../../src/engine/cpu/f16_rows.h"
#include "kascade/kv_cache.h"
#include "kascade/tensor.h"

namespace cpu = kascade::engine::cpu;
using cpu::SimdPath;

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

bool is_nan_f16(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

// Every f16 bit pattern.
std::vector<uint16_t> all_f16() {
  std::vector<uint16_t> h(65536);
  for (size_t i = 0; i < h.size(); ++i) h[i] = static_cast<uint16_t>(i);
  return h;
}

// Floats that exercise rounding to f16: each finite f16 value, the midpoints to its neighbour
// (ties), one float ulp either side of them, the overflow boundary, infinities and random
// floats over the whole exponent range.
std::vector<float> rounding_cases() {
  std::vector<float> x;
  for (uint32_t h = 0; h < 0x7c00u; ++h) {
    const float lo = kascade::f16_to_float(static_cast<uint16_t>(h));
    const float hi = h + 1 < 0x7c00u ? kascade::f16_to_float(static_cast<uint16_t>(h + 1)) : 65536.0f;
    const float mid = lo + (hi - lo) / 2;
    for (float v : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      x.push_back(v);
      x.push_back(-v);
    }
  }
  for (float v : {65504.0f, 65519.0f, 65519.996f, 65520.0f, 1e6f, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min(), 1e-30f}) {
    x.push_back(v);
    x.push_back(-v);
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> any_bits(0, 0xffffffffu);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t u = any_bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    if (!std::isnan(f)) x.push_back(f);
  }
  return x;
}

}  // namespace

TEST(CpuF16Rows, WidenGivesTheHostConversionForEveryValue) {
  const std::vector<uint16_t> h = all_f16();
  for (SimdPath path : {SimdPath::Auto, SimdPath::Portable}) {
    std::vector<float> out(h.size(), -1.0f);
    cpu::widen_f16(h.data(), static_cast<int64_t>(h.size()), out.data(), path);
    for (size_t i = 0; i < h.size(); ++i) {
      const float want = kascade::f16_to_float(h[i]);
      if (is_nan_f16(h[i])) {
        ASSERT_TRUE(std::isnan(out[i])) << "f16 0x" << std::hex << h[i];
      } else {
        ASSERT_EQ(bits(out[i]), bits(want)) << "f16 0x" << std::hex << h[i] << (path == SimdPath::Auto ? " auto" : " portable");
      }
    }
  }
}

TEST(CpuF16Rows, NarrowRoundsToNearestEvenLikeTheHostConversion) {
  const std::vector<float> x = rounding_cases();
  for (SimdPath path : {SimdPath::Auto, SimdPath::Portable}) {
    std::vector<uint16_t> out(x.size());
    cpu::narrow_f16(x.data(), static_cast<int64_t>(x.size()), out.data(), path);
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(out[i], kascade::float_to_f16(x[i]))
          << x[i] << " (float bits 0x" << std::hex << bits(x[i]) << ")" << (path == SimdPath::Auto ? " auto" : " portable");
    }
  }
  uint16_t nan_bits = 0;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  cpu::narrow_f16(&nan, 1, &nan_bits);
  EXPECT_TRUE(is_nan_f16(nan_bits));
}

TEST(CpuF16Rows, RowsAreReadByRangeAndByIndex) {
  for (int d : {64, 40}) {  // 40: not a multiple of 8, the portable row loop
    SCOPED_TRACE("d=" + std::to_string(d));
    const int rows = 50;
    std::vector<uint16_t> cache(static_cast<size_t>(rows) * d);
    for (size_t i = 0; i < cache.size(); ++i) cache[i] = kascade::float_to_f16(static_cast<float>(i) * 0.25f - 100.0f);
    auto expect_row = [&](const float* got, int row) {
      for (int e = 0; e < d; ++e) {
        ASSERT_EQ(got[e], kascade::f16_to_float(cache[static_cast<size_t>(row) * d + e])) << "row " << row << " element " << e;
      }
    };
    for (SimdPath path : {SimdPath::Auto, SimdPath::Portable}) {
      std::vector<float> out(static_cast<size_t>(rows) * d, NAN);
      cpu::widen_f16_rows(cache.data(), nullptr, 7, 5, d, out.data(), path);
      for (int r = 0; r < 5; ++r) expect_row(&out[static_cast<size_t>(r) * d], 7 + r);
      const std::vector<int32_t> idx = {49, 0, 13, 13, 2};
      cpu::widen_f16_rows(cache.data(), idx.data(), 0, 5, d, out.data(), path);
      for (int r = 0; r < 5; ++r) expect_row(&out[static_cast<size_t>(r) * d], idx[static_cast<size_t>(r)]);
    }
  }
}

// e4m3 rows: both paths give dequantize_e4m3(code, scale)'s bits for every code, at scales that
// are not powers of two, tiny (products in fp32's subnormals) and 1.
TEST(CpuE4M3Rows, WidenGivesDequantizeForEveryCodeAndScale) {
  std::vector<uint8_t> codes(256 + 5);  // + 5: a tail past the last group of eight
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>(i < 256 ? i : i * 37 % 256);
  for (float scale : {1.0f, 0.0123f, 3.7e-3f, 17.25f, 1e-40f * 1e5f, 2e-38f}) {
    for (SimdPath path : {SimdPath::Auto, SimdPath::Portable}) {
      std::vector<float> out(codes.size(), -1.0f);
      cpu::widen_e4m3(codes.data(), static_cast<int64_t>(codes.size()), scale, out.data(), path);
      for (size_t i = 0; i < codes.size(); ++i) {
        const float want = kascade::dequantize_e4m3(codes[i], scale);
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(out[i])) << "code " << static_cast<int>(codes[i]);
        } else {
          ASSERT_EQ(bits(out[i]), bits(want)) << "code " << static_cast<int>(codes[i]) << " scale " << scale
                                              << (path == SimdPath::Auto ? " auto" : " portable");
        }
      }
    }
  }
}

TEST(CpuE4M3Rows, NarrowDividesByTheScaleAndSaturates) {
  const float scale = 0.05f;
  const std::vector<float> x = {0.0f, -0.0f, 1.0f, -3.3f, 22.4f, 22.5f, 1e9f, -1e9f, 1e-9f};
  std::vector<uint8_t> out(x.size());
  cpu::narrow_e4m3(x.data(), static_cast<int64_t>(x.size()), scale, out.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(out[i], kascade::float_to_e4m3(x[i] / scale)) << x[i];
  EXPECT_EQ(out[4], kascade::kE4M3MaxCode);  // 22.4 / 0.05 = 448
  EXPECT_EQ(out[6], kascade::kE4M3MaxCode);  // beyond: saturated, never NaN
  EXPECT_EQ(out[7], 0x80 | kascade::kE4M3MaxCode);
}

TEST(CpuE4M3Rows, RowsAreReadByRangeAndByIndex) {
  for (int d : {64, 40}) {
    SCOPED_TRACE("d=" + std::to_string(d));
    const int rows = 50;
    const float scale = 0.37f;
    std::vector<uint8_t> cache(static_cast<size_t>(rows) * d);
    for (size_t i = 0; i < cache.size(); ++i) cache[i] = static_cast<uint8_t>((i * 7) % 255);
    auto expect_row = [&](const float* got, int row) {
      for (int e = 0; e < d; ++e) {
        const float want = kascade::dequantize_e4m3(cache[static_cast<size_t>(row) * d + e], scale);
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(got[e]));
        } else {
          ASSERT_EQ(got[e], want) << "row " << row << " element " << e;
        }
      }
    };
    for (SimdPath path : {SimdPath::Auto, SimdPath::Portable}) {
      std::vector<float> out(static_cast<size_t>(rows) * d, -1.0f);
      cpu::widen_e4m3_rows(cache.data(), nullptr, 7, 5, d, scale, out.data(), path);
      for (int r = 0; r < 5; ++r) expect_row(&out[static_cast<size_t>(r) * d], 7 + r);
      const std::vector<int32_t> idx = {49, 0, 13, 13, 2};
      cpu::widen_e4m3_rows(cache.data(), idx.data(), 0, 5, d, scale, out.data(), path);
      for (int r = 0; r < 5; ++r) expect_row(&out[static_cast<size_t>(r) * d], idx[static_cast<size_t>(r)]);
    }
  }
}
