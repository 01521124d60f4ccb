// Tests of dtype conversions, tensor views and the SPEC budget/tile arithmetic.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kascade/budget.h"
#include "kascade/tensor.h"
#include "kascade/types.h"

using namespace kascade;

TEST(Budget, SpecFormula) {
  EXPECT_EQ(budget_k(0, 0.1, 128), 0);
  EXPECT_EQ(budget_k(50, 0.1, 128), 50);      // n < k_min: everything
  EXPECT_EQ(budget_k(128, 0.1, 128), 128);
  EXPECT_EQ(budget_k(1279, 0.1, 128), 128);   // floor(127.9) < k_min
  EXPECT_EQ(budget_k(1290, 0.1, 128), 129);
  EXPECT_EQ(budget_k(131072, 0.1, 128), 13107);
  EXPECT_EQ(budget_k(1000, 1.0, 128), 1000);
  EXPECT_EQ(budget_k(1000, 0.0, 0), 0);
}

TEST(Budget, FloorInDouble) {
  // 0.1 * 30 = 3.0000000000000004 in double: floor is 3, not 2.
  EXPECT_EQ(budget_k(30, 0.1, 0), 3);
  // 0.7 * 10 = 7.000000000000001 (double) -> 7
  EXPECT_EQ(budget_k(10, 0.7, 0), 7);
  // 0.29 * 100 = 28.999999999999996 (double) -> 28
  EXPECT_EQ(budget_k(100, 0.29, 0), 28);
}

TEST(Budget, KMultipleRoundsUpButNotAboveN) {
  EXPECT_EQ(budget_k(2000, 0.1, 128, 64), 256);  // 200 -> 256
  EXPECT_EQ(budget_k(150, 0.1, 128, 100), 150);  // 128 -> 200 capped at 150
  EXPECT_EQ(budget_k(1280, 0.1, 128, 64), 128);
}

TEST(Tiles, Arithmetic) {
  EXPECT_EQ(num_tiles(0, 100, 32), 4);
  EXPECT_EQ(num_tiles(5, 5, 32), 0);
  EXPECT_EQ(num_tiles(7, 40, 32), 2);
  EXPECT_EQ(tile_begin(7, 1, 32), 39);
  EXPECT_EQ(tile_end(7, 40, 1, 32), 40);
  EXPECT_EQ(tile_budget(true, 0, 1000, 0.1, 128), 0);
  EXPECT_EQ(tile_budget(true, 64, 1000, 0.1, 128), 64);
  EXPECT_EQ(tile_budget(false, 64, 4000, 0.1, 128), 64);
  EXPECT_EQ(tile_budget(false, 3000, 4000, 0.1, 128), 400);
  EXPECT_EQ(tile_budget(true, 3000, 4000, 0.1, 128), 300);
  EXPECT_EQ(max_tile_budget(true, 0, 4000, 32, 0.1, 128), budget_k(3968, 0.1, 128));
}

TEST(Float16, RoundTripAndRounding) {
  for (float x : {0.f, -0.f, 1.f, -2.5f, 65504.f, 6.1035156e-05f, 5.9604645e-08f, 0.333333f}) {
    EXPECT_EQ(f16_to_float(float_to_f16(x)), round_to(DType::F16, x));
  }
  EXPECT_EQ(float_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_f16(65504.f), 0x7bff);
  EXPECT_EQ(float_to_f16(65520.f), 0x7c00);            // rounds to Inf
  EXPECT_EQ(float_to_f16(5.9604645e-08f), 0x0001);     // smallest subnormal
  EXPECT_EQ(float_to_f16(2.9802322e-08f), 0x0000);     // half of it: ties to even (0)
  EXPECT_EQ(float_to_f16(1.0f + 1.0f / 2048), 0x3c00); // tie -> even
  EXPECT_EQ(float_to_f16(1.0f + 3.0f / 2048), 0x3c02); // tie -> even (up)
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  // Every half value converts back exactly.
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = f16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(float_to_f16(f), h) << h;
  }
}

TEST(BFloat16, Rounding) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(float_to_bf16(3.140625f)), 3.140625f);
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(float_to_bf16(bits_float(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

// The OCP FP8 E4M3 value of a code, from the spec's formula (independent of the bit tricks).
double e4m3_spec_value(int c) {
  const int sign = c >> 7, exp = (c >> 3) & 15, mant = c & 7;
  const double magnitude = exp == 0 ? std::ldexp(mant / 8.0, -6) : std::ldexp(1.0 + mant / 8.0, exp - 7);
  return sign ? -magnitude : magnitude;
}

TEST(E4M3, EveryCodeDecodesAsTheSpecSays) {
  for (int c = 0; c < 256; ++c) {
    const float f = e4m3_to_float(static_cast<uint8_t>(c));
    if ((c & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(f)) << c;
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), e4m3_spec_value(c)) << c;
    EXPECT_EQ(std::signbit(f), c >= 0x80) << c;
  }
  EXPECT_EQ(e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_float(0xfe), -448.0f);
  EXPECT_EQ(e4m3_to_float(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(kE4M3Max, e4m3_to_float(kE4M3MaxCode));
}

TEST(E4M3, EncodeInvertsDecodeForEveryNonNanCode) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    EXPECT_EQ(float_to_e4m3(e4m3_to_float(static_cast<uint8_t>(c))), c) << c;
  }
}

TEST(E4M3, MidpointsTieToEvenAndNeighboursRoundToNearest) {
  for (int c = 0; c < kE4M3MaxCode; ++c) {
    for (int sign : {0, 0x80}) {
      const float a = e4m3_to_float(static_cast<uint8_t>(sign | c));
      const float b = e4m3_to_float(static_cast<uint8_t>(sign | (c + 1)));
      const float mid = (a + b) / 2;  // exact in fp32
      const int even = (c & 1) ? c + 1 : c;
      EXPECT_EQ(float_to_e4m3(mid), sign | even) << c;
      EXPECT_EQ(float_to_e4m3(std::nextafter(mid, a)), sign | c) << c;
      EXPECT_EQ(float_to_e4m3(std::nextafter(mid, b)), sign | (c + 1)) << c;
    }
  }
  EXPECT_EQ(float_to_e4m3(1.0f + 1.0f / 16), 0x38);  // between 1 and 1.125: even (1)
  EXPECT_EQ(float_to_e4m3(1.0f + 3.0f / 16), 0x3a);  // between 1.125 and 1.25: even (1.25)
}

TEST(E4M3, EncodeIsNearestOverRandomFloats) {
  uint32_t state = 12345u;  // fixed seed
  for (int i = 0; i < 20000; ++i) {
    state = state * 1664525u + 1013904223u;
    const float x = std::ldexp(static_cast<float>(state >> 8) / 16777216.0f, static_cast<int>(state % 24) - 13) *
                    ((state & 0x100u) ? -1.0f : 1.0f);  // |x| in [0, 2^10): subnormal to saturated
    const int got = float_to_e4m3(x);
    const double got_error = std::fabs(e4m3_spec_value(got) - x);
    for (int c = 0; c < 256; ++c) {
      if ((c & 0x7f) == 0x7f) continue;
      if (std::fabs(x) >= 448.0f) break;  // saturation, checked below
      ASSERT_LE(got_error, std::fabs(e4m3_spec_value(c) - x)) << "x=" << x << " code " << got << " vs " << c;
    }
    if (std::fabs(x) >= 448.0f) {
      EXPECT_EQ(got & 0x7f, kE4M3MaxCode) << x;
    }
  }
}

TEST(E4M3, SaturatesNanSubnormalsAndSignedZero) {
  for (float big : {448.0f, 449.0f, 464.0f, 480.0f, 1e30f, std::numeric_limits<float>::max(),
                    std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(float_to_e4m3(big), 0x7e) << big;
    EXPECT_EQ(float_to_e4m3(-big), 0xfe) << big;
  }
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::quiet_NaN()), kE4M3NanCode);
  EXPECT_EQ(float_to_e4m3(-std::numeric_limits<float>::quiet_NaN()), 0x80 | kE4M3NanCode);
  EXPECT_TRUE(std::isnan(round_to(DType::F8E4M3, std::numeric_limits<float>::quiet_NaN())));
  const float sub = std::ldexp(1.0f, -9);  // the smallest subnormal
  EXPECT_EQ(float_to_e4m3(sub), 0x01);
  EXPECT_EQ(float_to_e4m3(sub / 2), 0x00);           // tie between 0 and 2^-9: even (0)
  EXPECT_EQ(float_to_e4m3(-sub / 2), 0x80);          // -0
  EXPECT_EQ(float_to_e4m3(std::nextafter(sub / 2, 1.0f)), 0x01);
  EXPECT_EQ(float_to_e4m3(sub * 1.5f), 0x02);        // tie between 1 and 2: even (2)
  EXPECT_EQ(float_to_e4m3(sub * 2.5f), 0x02);        // tie between 2 and 3: even (2)
  EXPECT_EQ(float_to_e4m3(sub * 7.5f), 0x08);        // rounds up into the smallest normal
  EXPECT_EQ(float_to_e4m3(1e-30f), 0x00);
  EXPECT_EQ(float_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(float_to_e4m3(-0.0f), 0x80);
  EXPECT_TRUE(std::signbit(e4m3_to_float(0x80)));
  EXPECT_EQ(e4m3_to_float(0x80), 0.0f);
  EXPECT_EQ(round_to(DType::F8E4M3, 0.3f), 0.3125f);
}

TEST(E4M3, DTypeNameSizeParseAndElementAccess) {
  EXPECT_EQ(dtype_size(DType::F8E4M3), 1u);
  EXPECT_STREQ(dtype_name(DType::F8E4M3), "f8e4m3");
  for (const char* name : {"f8e4m3", "fp8", "e4m3"}) EXPECT_EQ(parse_dtype(name), DType::F8E4M3) << name;
  EXPECT_THROW(parse_dtype("e5m2"), Error);
  uint8_t buf[2] = {0, 0};
  const TensorView t = TensorView::contiguous(buf, DType::F8E4M3, {2});
  store_from_float(t, 1, -3.3f);
  EXPECT_EQ(buf[1], float_to_e4m3(-3.3f));
  EXPECT_EQ(load_as_float(t, 1), -3.25f);
}

TEST(TensorView, ContiguousStridesAndChecks) {
  float buf[24];
  auto t = TensorView::contiguous(buf, DType::F32, {2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.stride[0], 12);
  EXPECT_EQ(t.offset({1, 2, 3}), 23);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_NO_THROW(check_shape(t, "q", {2, -1, 4}));
  EXPECT_THROW(check_shape(t, "q", {2, 3}), Error);
  try {
    check_shape(t, "q", {2, 5, 4});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q: expected shape [2, 5, 4], got [2, 3, 4]"), std::string::npos);
  }
}

TEST(Types, ParseStrict) {
  EXPECT_EQ(parse_role("anchor"), Role::Anchor);
  EXPECT_THROW(parse_role("Anchor"), Error);
  for (Role r : {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse}) EXPECT_EQ(parse_role(to_string(r)), r);
  EXPECT_EQ(parse_budget("fixed"), BudgetMode::Fixed);
  EXPECT_THROW(parse_pooling("heads"), Error);
  EXPECT_EQ(parse_dtype("bf16"), DType::BF16);
  EXPECT_THROW(parse_dtype("f8"), Error);
  SparsityParams p;
  EXPECT_FLOAT_EQ(p.scale_for(64), 0.125f);
}
