// add_layer_attention: dense q/k of a layer -> SPEC 6 statistics through the oracle's pooled
// masses. Layers built as head permutations of each other have known coverage and head maps.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "calibrate_test_util.h"
#include "kascade/budget.h"
#include "kascade/calibrate.h"
#include "kascade/calibrate_collect.h"
#include "kascade/reference.h"

namespace {

using kascade::CalibrationStats;
using kascade::LayerAttentionShape;
using kascade::Pooling;

constexpr int kHkv = 3, kGroup = 2, kHq = kHkv * kGroup, kD = 16, kN = 224;

struct LayerQK {
  std::vector<float> q;  // [Hq, n, D]
  std::vector<float> k;  // [Hkv, n, D]
};

// Peaked random attention: large-norm vectors so that each head's top keys are its own.
LayerQK random_layer(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  LayerQK l;
  l.q.resize(static_cast<size_t>(kHq) * kN * kD);
  l.k.resize(static_cast<size_t>(kHkv) * kN * kD);
  for (float& x : l.q) x = normal(rng);
  for (float& x : l.k) x = normal(rng);
  return l;
}

// The same attention with kv heads permuted: new kv head g is old kv head perm[g] (with its
// query heads), so new head g's pooled masses equal old head perm[g]'s.
LayerQK permute_heads(const LayerQK& src, const std::vector<int>& perm) {
  LayerQK l = src;
  const size_t krow = static_cast<size_t>(kN) * kD;
  for (int g = 0; g < kHkv; ++g) {
    std::copy_n(&src.k[perm[g] * krow], krow, &l.k[g * krow]);
    for (int j = 0; j < kGroup; ++j) {
      std::copy_n(&src.q[(perm[g] * kGroup + j) * krow], krow, &l.q[(g * kGroup + j) * krow]);
    }
  }
  return l;
}

// Runs the prompt of the given layers through fresh statistics.
CalibrationStats collect(const std::vector<LayerQK>& layers, Pooling pooling) {
  CalibrationStats stats(static_cast<int>(layers.size()), pooling == Pooling::All ? 1 : kHkv);
  stats.begin_prompt(kascade::num_tiles(0, kN, stats.tile()), kN);
  const LayerAttentionShape shape{kHq, kHkv, kN, kD, NAN, pooling};
  for (size_t l = 0; l < layers.size(); ++l) {
    kascade::add_layer_attention(stats, static_cast<int>(l), layers[l].q.data(), layers[l].k.data(), shape);
  }
  stats.end_prompt();
  return stats;
}

// pooled_masses (fp32, vectorised, threaded) against the oracle's fp64 ref::pooled_mass.
void expect_matches_oracle(int hq, int hkv, int n, int d, int tile, Pooling pooling, float spread, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> q(static_cast<size_t>(hq) * n * d), k(static_cast<size_t>(hkv) * n * d);
  for (float& x : q) x = normal(rng);
  for (float& x : k) x = normal(rng);
  const kascade::PooledMasses fast = kascade::pooled_masses(q.data(), k.data(), {hq, hkv, n, d, NAN, pooling}, tile);
  kascade::ref::Call call;
  call.phase = kascade::Phase::Prefill;
  call.role = kascade::Role::Anchor;
  call.params.tile = tile;
  call.params.pooling = pooling;
  const kascade::ref::Pooled oracle = kascade::ref::pooled_mass(call, q.data(), k.data(), hq, hkv, n, n, d);
  ASSERT_EQ(fast.sets, oracle.num_sets);
  ASSERT_EQ(fast.tiles, oracle.num_tiles);
  ASSERT_EQ(fast.n, n);
  // Each entry sums at most T * (heads per set) probabilities: fp32 keeps it to ~1e-6 of that.
  const double tolerance = 2e-6 * tile * (hq / fast.sets);
  for (int s = 0; s < fast.sets; ++s) {
    for (int tau = 0; tau < fast.tiles; ++tau) {
      const size_t row = static_cast<size_t>(s) * fast.tiles + tau;
      ASSERT_NEAR(fast.diagonal[row], oracle.tile_diagonal(s, tau), tolerance) << "set " << s << " tile " << tau;
      const double* expected = oracle.tile_mass(s, tau);
      for (int i = 0; i < n; ++i) {
        ASSERT_NEAR(fast.mass[row * n + i], expected[i], tolerance) << "set " << s << " tile " << tau << " key " << i;
      }
    }
  }
}

TEST(CollectAttention, PooledMassesMatchTheOracle) {
  expect_matches_oracle(6, 3, 200, 16, 32, Pooling::Group, 1.0f, 11);   // n not a multiple of the tile
  expect_matches_oracle(4, 1, 77, 8, 16, Pooling::Group, 3.0f, 12);     // one kv head, peaked
  expect_matches_oracle(6, 2, 130, 16, 32, Pooling::All, 1.0f, 13);     // all-heads pooling
  expect_matches_oracle(3, 3, 64, 64, 32, Pooling::Group, 0.5f, 14);    // G = 1, D = 64, flat
  expect_matches_oracle(9, 3, 31, 64, 32, Pooling::Group, 1.0f, 15);    // one partial tile
}

TEST(CollectAttention, PermutedHeadsAreFoundByTheHeadMap) {
  const LayerQK base = random_layer(1);
  const std::vector<int> perm = {2, 0, 1};
  const CalibrationStats stats = collect({base, permute_heads(base, perm), random_layer(2)}, Pooling::Group);
  const kascade::CoverageMatrix c = stats.coverage();
  for (int g2 = 0; g2 < kHkv; ++g2) {
    // Layer 1's kv head g2 is layer 0's kv head perm[g2]: reusing it loses nothing.
    EXPECT_DOUBLE_EQ(c.at(0, 1, perm[g2], g2), 1.0) << g2;
    for (int g1 = 0; g1 < kHkv; ++g1) {
      if (g1 != perm[g2]) {
        EXPECT_LT(c.at(0, 1, g1, g2), 1.0) << g1 << " " << g2;
      }
    }
  }
  const kascade::HeadMap map = kascade::choose_head_map(c, {0});
  EXPECT_EQ(map[1], perm);
  // Layer 2 is unrelated: reusing layer 0 or 1 costs coverage.
  for (int g = 0; g < kHkv; ++g) EXPECT_LT(c.at(0, 2, g, g), 1.0);
}

TEST(CollectAttention, AllHeadsPoolingIsBlindToHeadOrder) {
  const LayerQK base = random_layer(3);
  const CalibrationStats stats = collect({base, permute_heads(base, {1, 2, 0}), random_layer(4)}, Pooling::All);
  const kascade::CoverageMatrix c = stats.coverage();
  EXPECT_EQ(c.num_kv_heads(), 1);
  EXPECT_DOUBLE_EQ(c.at(0, 1, 0, 0), 1.0);
  EXPECT_LT(c.at(0, 2, 0, 0), 1.0);
}

TEST(CollectAttention, CountsEveryTileBeyondKCal) {
  const CalibrationStats stats = collect({random_layer(5), random_layer(6)}, Pooling::Group);
  // Tiles start at 0, 32, ..., 192; those with b > k_cal = 64 are 96, 128, 160, 192.
  EXPECT_EQ(stats.counted_tiles(), 2 * kHkv * 4);
  EXPECT_EQ(stats.skipped_trivial_tiles(), 2 * kHkv * 3);
  for (double share : stats.topk_mass_share()) {
    EXPECT_GT(share, 0.0);
    EXPECT_LE(share, 1.0);
  }
}

TEST(CollectAttention, RejectsStatisticsOfTheWrongPooling) {
  const LayerQK l = random_layer(7);
  CalibrationStats group_stats(1, kHkv);
  group_stats.begin_prompt(kascade::num_tiles(0, kN, group_stats.tile()), kN);
  EXPECT_KASCADE_ERROR(kascade::add_layer_attention(group_stats, 0, l.q.data(), l.k.data(),
                                                    {kHq, kHkv, kN, kD, NAN, Pooling::All}),
                       "statistics have 3 selection sets but pooling all over 3 kv heads makes 1");
  EXPECT_KASCADE_ERROR(kascade::add_layer_attention(group_stats, 0, nullptr, l.k.data(),
                                                    {kHq, kHkv, kN, kD, NAN, Pooling::Group}),
                       "null q or k");
}

}  // namespace
