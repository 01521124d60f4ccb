// Tests of layer importance, layer scores, the anchor dynamic program (against brute force over
// every subset) and the head map.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>
#include <vector>

#include "calibrate_test_util.h"
#include "kascade/calibrate.h"

using kascade::AnchorChoice;
using kascade::CalibrationStats;
using kascade::CoverageMatrix;
using kascade::LayerScores;

// ---- importance --------------------------------------------------------------------------------
TEST(Importance, KnownVectors) {
  CalibrationStats stats(4, 1);
  const float x[2] = {1.0f, 0.0f};
  const float orthogonal[2] = {0.0f, 1.0f};  // x + a = (1, 1): cos = 1/sqrt(2)
  const float same[2] = {1.0f, 0.0f};        // x + a = 2x: cos = 1
  const float zero[2] = {0.0f, 0.0f};        // x + a = x: cos = 1
  const float reverse[2] = {-2.0f, 0.0f};    // x + a = -x: cos = -1
  stats.add_importance(0, x, orthogonal, 1, 2);
  stats.add_importance(1, x, same, 1, 2);
  stats.add_importance(2, x, zero, 1, 2);
  stats.add_importance(3, x, reverse, 1, 2);
  const std::vector<double> w = stats.importance();
  EXPECT_NEAR(w[0], 1.0 - 1.0 / std::sqrt(2.0), 1e-12);
  EXPECT_NEAR(w[1], 0.0, 1e-12);
  EXPECT_NEAR(w[2], 0.0, 1e-12);
  EXPECT_NEAR(w[3], 2.0, 1e-12);
}

TEST(Importance, MeanOverTokensAndCalls) {
  CalibrationStats stats(1, 1);
  // Two tokens in one call (orthogonal, identical), one in a second call (opposite).
  const float x[4] = {0.0f, 3.0f, 0.5f, 0.5f};
  const float a[4] = {3.0f, 0.0f, 0.5f, 0.5f};
  stats.add_importance(0, x, a, 2, 2);
  const float x2[2] = {1.0f, 1.0f};
  const float a2[2] = {-3.0f, -3.0f};
  stats.add_importance(0, x2, a2, 1, 2);
  EXPECT_EQ(stats.importance_tokens(0), 3);
  EXPECT_NEAR(stats.importance()[0], ((1.0 - 1.0 / std::sqrt(2.0)) + 0.0 + 2.0) / 3.0, 1e-12);
}

TEST(Importance, Errors) {
  CalibrationStats stats(2, 1);
  const float x[2] = {1.0f, 0.0f}, minus_x[2] = {-1.0f, 0.0f}, zero[2] = {0.0f, 0.0f}, bad[2] = {NAN, 0.0f};
  EXPECT_KASCADE_ERROR(stats.add_importance(0, x, minus_x, 1, 2), "x + attn_out is the zero vector");
  EXPECT_KASCADE_ERROR(stats.add_importance(0, zero, x, 1, 2), "x is the zero vector");
  EXPECT_KASCADE_ERROR(stats.add_importance(0, x, bad, 1, 2), "non-finite value");
  EXPECT_KASCADE_ERROR(stats.add_importance(2, x, x, 1, 2), "layer 2 out of range");
  EXPECT_KASCADE_ERROR(stats.add_importance(0, x, x, 0, 2), "tokens >= 1");
  EXPECT_KASCADE_ERROR(stats.add_importance(0, nullptr, x, 1, 2), "null data pointer");
  EXPECT_EQ(stats.importance_tokens(0), 0);  // failed calls added nothing
  stats.add_importance(0, x, x, 1, 2);
  EXPECT_KASCADE_ERROR(stats.add_importance(1, x, x, 2, 1), "hidden size 1 differs from the earlier 2");
  EXPECT_KASCADE_ERROR(stats.importance(), "no tokens were given for layer 1");
}

// ---- layer scores ------------------------------------------------------------------------------
TEST(LayerScores, MeanOverTargetHeadsOfBestSourceHead) {
  CoverageMatrix c(2, 2);
  for (int l = 0; l < 2; ++l)
    for (int g = 0; g < 2; ++g) c.at(l, l, g, g) = 1.0, c.at(l, l, g, 1 - g) = 0.5;
  // Layer 1 reusing layer 0: for g2 = 0 the best source is g1 = 1 (0.9), for g2 = 1 it is g1 = 0 (0.6).
  c.at(0, 1, 0, 0) = 0.4, c.at(0, 1, 1, 0) = 0.9;
  c.at(0, 1, 0, 1) = 0.6, c.at(0, 1, 1, 1) = 0.3;
  const LayerScores s = kascade::layer_scores(c, {0.5, 2.0});
  EXPECT_DOUBLE_EQ(s.at(0, 0), 0.5);
  EXPECT_DOUBLE_EQ(s.at(1, 1), 2.0);
  EXPECT_DOUBLE_EQ(s.at(0, 1), 2.0 * (0.9 + 0.6) / 2);
  EXPECT_KASCADE_ERROR(kascade::layer_scores(c, {1.0}), "1 importance values for 2 layers");
  EXPECT_KASCADE_ERROR(kascade::layer_scores(c, {1.0, NAN}), "importance of layer 1 is nan");
  EXPECT_KASCADE_ERROR(s.at(1, 0), "need 0 <= l1 <= l2 < 2");
}

// ---- the dynamic program -----------------------------------------------------------------------
namespace {

LayerScores random_scores(std::mt19937& rng, int L, bool integers) {
  std::uniform_real_distribution<double> real(-0.5, 2.0);
  std::uniform_int_distribution<int> small(0, 3);  // integer scores: many exact ties
  LayerScores s(L);
  for (int l1 = 0; l1 < L; ++l1)
    for (int l2 = l1; l2 < L; ++l2) s.at(l1, l2) = integers ? small(rng) : real(rng);
  return s;
}

// Best score over every anchor set of size m that contains layer 0 (bit j of `mask`: layer j).
double brute_force_best(const LayerScores& s, int m) {
  const int L = s.num_layers();
  double best = -INFINITY;
  for (unsigned mask = 1; mask < (1u << L); mask += 2) {  // odd masks: layer 0 always in
    if (__builtin_popcount(mask) != m) continue;
    std::vector<int> anchors;
    for (int j = 0; j < L; ++j)
      if (mask & (1u << j)) anchors.push_back(j);
    best = std::max(best, kascade::anchor_score(s, anchors));
  }
  return best;
}

}  // namespace

TEST(ChooseAnchors, EqualsBruteForceForEveryMUpToTenLayers) {
  std::mt19937 rng(12345);
  int compared = 0;
  for (int L = 1; L <= 10; ++L) {
    for (int trial = 0; trial < 40; ++trial) {
      const bool integers = trial % 2 == 1;
      const LayerScores s = random_scores(rng, L, integers);
      const std::vector<AnchorChoice> all = kascade::choose_anchors_range(s, 1, L);
      ASSERT_EQ(all.size(), static_cast<size_t>(L));
      for (int m = 1; m <= L; ++m) {
        const AnchorChoice& choice = all[static_cast<size_t>(m - 1)];
        ASSERT_EQ(choice.anchors.size(), static_cast<size_t>(m));
        EXPECT_EQ(choice.anchors.front(), 0);
        EXPECT_NEAR(choice.score, brute_force_best(s, m), 1e-9) << "L=" << L << " m=" << m;
        // The reported score is the score of the reported set.
        EXPECT_NEAR(kascade::anchor_score(s, choice.anchors), choice.score, 1e-9);
        const AnchorChoice single = kascade::choose_anchors(s, m);
        EXPECT_EQ(single.anchors, choice.anchors);
        EXPECT_EQ(single.score, choice.score);
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 40 * 55);
}

TEST(ChooseAnchors, KnownOptimumAndTieRule) {
  // Layers 0..5; reusing an anchor is worth 1 except across the "break" before layer 3, where it
  // is worth 0: two anchors should be {0, 3}.
  LayerScores s(6);
  for (int l1 = 0; l1 < 6; ++l1)
    for (int l2 = l1; l2 < 6; ++l2) s.at(l1, l2) = (l1 < 3 && l2 >= 3) ? 0.0 : 1.0;
  const AnchorChoice two = kascade::choose_anchors(s, 2);
  EXPECT_EQ(two.anchors, (std::vector<int>{0, 3}));
  EXPECT_EQ(two.score, 6.0);
  // Every set of three scores 6 once 3 is in it, else less: the tie rule takes the latest anchor
  // as early as possible, then the one before it: {0, 1, 3}.
  EXPECT_EQ(kascade::choose_anchors(s, 3).anchors, (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(kascade::choose_anchors(s, 6).anchors, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(kascade::choose_anchors(s, 1).anchors, (std::vector<int>{0}));
  EXPECT_EQ(kascade::choose_anchors(s, 1).score, 3.0);
}

TEST(ChooseAnchors, OneHundredTwentyEightLayersEveryMIsFast) {
  std::mt19937 rng(99);
  const LayerScores s = random_scores(rng, 128, false);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<AnchorChoice> all = kascade::choose_anchors_range(s, 1, 128);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(all.size(), 128u);
  // m L^2 = 2.1M steps: milliseconds. Enumerating subsets (2^127) would never finish.
  EXPECT_LT(seconds, 1.0);
  // Each reported score is the score of the reported set.
  for (int m = 1; m <= 128; ++m) EXPECT_NEAR(kascade::anchor_score(s, all[static_cast<size_t>(m - 1)].anchors),
                                             all[static_cast<size_t>(m - 1)].score, 1e-9);
  EXPECT_EQ(all.back().anchors.size(), 128u);
}

TEST(ChooseAnchors, Errors) {
  LayerScores s(4);
  EXPECT_KASCADE_ERROR(kascade::choose_anchors(s, 0), "m = 0 must satisfy 1 <= m <= L = 4");
  EXPECT_KASCADE_ERROR(kascade::choose_anchors(s, 5), "m = 5 must satisfy 1 <= m <= L = 4");
  EXPECT_KASCADE_ERROR(kascade::choose_anchors_range(s, 3, 2), "3..2 must satisfy");
  EXPECT_KASCADE_ERROR(kascade::choose_anchors_range(s, 3, 8), "3..8 must satisfy 1 <= m_lo <= m_hi <= L = 4");
  s.at(1, 2) = NAN;
  EXPECT_KASCADE_ERROR(kascade::choose_anchors(s, 2), "S[1][2] is nan");
  EXPECT_KASCADE_ERROR(kascade::anchor_score(s, {1, 2}), "must start with layer 0");
  EXPECT_KASCADE_ERROR(kascade::anchor_score(s, {0, 2, 2}), "strictly increasing");
  EXPECT_KASCADE_ERROR(kascade::anchor_score(s, {0, 4}), "anchor 4 out of range 0..3");
  EXPECT_KASCADE_ERROR(LayerScores(0), "num_layers must be >= 1");
}

// ---- head map ----------------------------------------------------------------------------------
TEST(HeadMap, ArgmaxWithTiesToLowestHeadAndIdentityOnAnchors) {
  const int L = 4, H = 3;
  CoverageMatrix c(L, H);
  // Anchor 2 would prefer head 0 for everything, but anchors always map to themselves.
  for (int l1 = 0; l1 < L; ++l1)
    for (int l2 = l1; l2 < L; ++l2)
      for (int g1 = 0; g1 < H; ++g1)
        for (int g2 = 0; g2 < H; ++g2) c.at(l1, l2, g1, g2) = g1 == 0 ? 0.9 : 0.1;
  // Layer 1 (reuses anchor 0): g2 = 0 -> g1 = 2 (unique max); g2 = 1 -> tie between 1 and 2 -> 1;
  // g2 = 2 -> all equal -> 0.
  c.at(0, 1, 0, 0) = 0.2, c.at(0, 1, 1, 0) = 0.3, c.at(0, 1, 2, 0) = 0.8;
  c.at(0, 1, 0, 1) = 0.2, c.at(0, 1, 1, 1) = 0.7, c.at(0, 1, 2, 1) = 0.7;
  c.at(0, 1, 0, 2) = 0.5, c.at(0, 1, 1, 2) = 0.5, c.at(0, 1, 2, 2) = 0.5;
  // Layer 3 reuses anchor 2: C[2][3] says head 1 for every g2.
  for (int g2 = 0; g2 < H; ++g2) c.at(2, 3, 1, g2) = 0.95;
  const kascade::HeadMap map = kascade::choose_head_map(c, {0, 2});
  ASSERT_EQ(map.size(), 4u);
  EXPECT_EQ(map[0], (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(map[1], (std::vector<int>{2, 1, 0}));
  EXPECT_EQ(map[2], (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(map[3], (std::vector<int>{1, 1, 1}));
  EXPECT_KASCADE_ERROR(kascade::choose_head_map(c, {0, 4}), "anchor 4 out of range");
  EXPECT_KASCADE_ERROR(kascade::choose_head_map(c, {}), "must start with layer 0");
}
