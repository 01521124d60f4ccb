// The `paper` statistic of SPEC 6: decode rows of a generated answer after the prompt's tiles,
// hand-computed coverage with rows and tiles sharing a prompt's minimum, the share of minima that
// rows set, trivial rows, the order rules, and decode_row_masses against tile-pooled masses.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "calibrate_test_util.h"
#include "kascade/calibrate.h"
#include "kascade/calibrate_collect.h"

using kascade::CalibrationStats;
using kascade::testing::add_single_head_layer;
using kascade::testing::OwnedTensor;

namespace {

// One decode row of a one-kv-head model: pooled [1, n].
void add_single_head_row(CalibrationStats& stats, int layer, const std::vector<float>& mass) {
  OwnedTensor pooled({1, static_cast<int64_t>(mass.size())});
  for (size_t i = 0; i < mass.size(); ++i) pooled.at(0, static_cast<int64_t>(i)) = mass[i];
  stats.add_decode_row(layer, pooled.view);
}

// The prompt of n = 4 tokens used below: on tile 1 layer 0 selects key 0 and layer 1 key 1,
// coverage (0.3 + 1.2) / (0.5 + 1.2).
void add_prompt_tiles(CalibrationStats& stats) {
  stats.begin_prompt(2, 4);
  add_single_head_layer(stats, 0, 4, 2, {{}, {0.6f, 0.2f}}, {2.0f, 1.2f});
  add_single_head_layer(stats, 1, 4, 2, {{}, {0.3f, 0.5f}}, {2.0f, 1.2f});
}
constexpr double kTileCoverage = (0.3 + 1.2) / (0.5 + 1.2);

}  // namespace

TEST(DecodeRows, ARowBelowEveryTileSetsThePromptMinimum) {
  CalibrationStats stats(2, 1, /*k_cal=*/1, /*tile=*/2);
  add_prompt_tiles(stats);
  // Row 0 (position 4, keys 0..4): layer 0 selects key 2, layer 1 key 0; reuse keeps 0.1 of 0.5.
  add_single_head_row(stats, 0, {0.1f, 0.1f, 0.6f, 0.1f, 0.1f});
  add_single_head_row(stats, 1, {0.5f, 0.1f, 0.1f, 0.2f, 0.1f});
  stats.end_prompt();
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), 0.1 / 0.5, 1e-7);
  EXPECT_EQ(stats.counted_rows(), 2);  // (layer, row) for both layers
  EXPECT_EQ(stats.minima_total(), 1);  // one reuse pair (0 -> 1), one prompt
  EXPECT_EQ(stats.minima_from_decode_rows(), 1);
  // Layer 1's top-1 share: the tile (0.5 + 1.2) / (0.8 + 1.2) and the row 0.5 / 1.0, averaged.
  EXPECT_NEAR(stats.topk_mass_share()[1], ((0.5 + 1.2) / 2.0 + 0.5) / 2, 1e-7);

  // A second prompt whose row agrees across layers: its minimum is the tile's.
  add_prompt_tiles(stats);
  add_single_head_row(stats, 0, {0.1f, 0.1f, 0.6f, 0.1f, 0.1f});
  add_single_head_row(stats, 1, {0.1f, 0.1f, 0.6f, 0.1f, 0.1f});
  stats.end_prompt();
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), (0.2 + kTileCoverage) / 2, 1e-7);
  EXPECT_EQ(stats.minima_total(), 2);
  EXPECT_EQ(stats.minima_from_decode_rows(), 1);
}

TEST(DecodeRows, WithoutRowsTheStatisticIsTheTilesAlone) {
  CalibrationStats stats(2, 1, 1, 2);
  add_prompt_tiles(stats);
  stats.end_prompt();
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), kTileCoverage, 1e-7);
  EXPECT_EQ(stats.counted_rows(), 0);
  EXPECT_EQ(stats.minima_total(), 1);
  EXPECT_EQ(stats.minima_from_decode_rows(), 0);
}

TEST(DecodeRows, RowsAreCountedInTheMeanOverTilesAndRows) {
  CalibrationStats stats(2, 1, 1, 2);
  add_prompt_tiles(stats);
  add_single_head_row(stats, 0, {0.1f, 0.1f, 0.6f, 0.1f, 0.1f});
  add_single_head_row(stats, 1, {0.5f, 0.1f, 0.1f, 0.2f, 0.1f});
  stats.end_prompt();
  EXPECT_NEAR(stats.coverage(kascade::TileAggregate::Mean).at(0, 1, 0, 0), (kTileCoverage + 0.2) / 2, 1e-7);
}

TEST(DecodeRows, RowsWithAtMostKCalKeysAreTrivial) {
  // k_cal 5, tile 2: every tile of a 4-token prompt is trivial (b <= 5), row 0 has 5 keys
  // (trivial), row 1 has 6 and is the prompt's only evidence.
  CalibrationStats stats(2, 1, /*k_cal=*/5, /*tile=*/2);
  stats.begin_prompt(2, 4);
  add_single_head_layer(stats, 0, 4, 2, {{}, {0.6f, 0.2f}}, {2.0f, 1.2f});
  add_single_head_layer(stats, 1, 4, 2, {{}, {0.3f, 0.5f}}, {2.0f, 1.2f});
  add_single_head_row(stats, 0, {0.2f, 0.2f, 0.2f, 0.2f, 0.2f});
  add_single_head_row(stats, 1, {0.2f, 0.2f, 0.2f, 0.2f, 0.2f});
  // Row 1: layer 0's five largest leave out key 5 (0.0); layer 1 puts 0.5 there.
  add_single_head_row(stats, 0, {0.3f, 0.2f, 0.2f, 0.1f, 0.2f, 0.0f});
  add_single_head_row(stats, 1, {0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.5f});
  stats.end_prompt();
  EXPECT_EQ(stats.skipped_trivial_rows(), 2);
  EXPECT_EQ(stats.counted_rows(), 2);
  EXPECT_EQ(stats.counted_tiles(), 0);
  // Layer 0's set {0, 1, 2, 3, 4} keeps 0.5 of layer 1's mass; layer 1's own set holds 0.9 (key 5
  // and four of the 0.1s).
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), 0.5 / 0.9, 1e-6);
  EXPECT_EQ(stats.minima_from_decode_rows(), 1);
}

TEST(DecodeRows, OrderAndShapeAreChecked) {
  CalibrationStats stats(2, 1, 1, 2);
  stats.begin_prompt(2, 4);
  add_single_head_layer(stats, 0, 4, 2, {{}, {0.6f, 0.2f}}, {2.0f, 1.2f});
  EXPECT_KASCADE_ERROR(add_single_head_row(stats, 0, {0.2f, 0.2f, 0.2f, 0.2f, 0.2f}), "tiles are incomplete");
  add_single_head_layer(stats, 1, 4, 2, {{}, {0.3f, 0.5f}}, {2.0f, 1.2f});
  EXPECT_KASCADE_ERROR(add_single_head_row(stats, 1, {0.2f, 0.2f, 0.2f, 0.2f, 0.2f}), "expected layer 0 of decode row 0");
  EXPECT_KASCADE_ERROR(add_single_head_row(stats, 0, {0.2f, 0.2f, 0.2f, 0.2f}), "expected [1, 5]");
  EXPECT_KASCADE_ERROR(add_single_head_row(stats, 0, {0.2f, 0.2f, -0.2f, 0.2f, 0.2f}), "not a finite non-negative mass");
  add_single_head_row(stats, 0, {0.2f, 0.2f, 0.2f, 0.2f, 0.2f});
  EXPECT_KASCADE_ERROR(stats.end_prompt(), "decode row 0 has only 1 of 2 layers");
  add_single_head_row(stats, 1, {0.2f, 0.2f, 0.2f, 0.2f, 0.2f});
  // Row 1 has one key more.
  EXPECT_KASCADE_ERROR(add_single_head_row(stats, 0, {0.2f, 0.2f, 0.2f, 0.2f, 0.2f}), "expected [1, 6]");
  stats.end_prompt();
  EXPECT_EQ(stats.prompts(), 1);
}

TEST(DecodeRows, MergeAddsRowCounts) {
  CalibrationStats a(2, 1, 1, 2), b(2, 1, 1, 2);
  for (CalibrationStats* s : {&a, &b}) {
    add_prompt_tiles(*s);
    add_single_head_row(*s, 0, {0.1f, 0.1f, 0.6f, 0.1f, 0.1f});
    add_single_head_row(*s, 1, {0.5f, 0.1f, 0.1f, 0.2f, 0.1f});
    s->end_prompt();
  }
  a.merge(b);
  EXPECT_EQ(a.counted_rows(), 4);
  EXPECT_EQ(a.minima_total(), 2);
  EXPECT_EQ(a.minima_from_decode_rows(), 2);
}

TEST(DecodeRows, RowMassesEqualOneQueryTilesOwnRowAndDiagonal) {
  // With tile 1, tile t of the prefill pooling is the row at position t: its candidates are the
  // keys before it and its diagonal is its own key, which is exactly what a decode row sees.
  const int hq = 4, hkv = 2, d = 8, n = 11;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(hq) * n * d), k(static_cast<size_t>(hkv) * n * d);
  for (float& x : q) x = normal(rng);
  for (float& x : k) x = normal(rng);
  for (kascade::Pooling pooling : {kascade::Pooling::Group, kascade::Pooling::All}) {
    const kascade::LayerAttentionShape shape{hq, hkv, n, d, NAN, pooling};
    const kascade::PooledMasses tiles = kascade::pooled_masses(q.data(), k.data(), shape, /*tile=*/1);
    const int sets = tiles.sets;
    for (int t : {0, 5, n - 1}) {
      // The row's query [Hq * D] and the keys 0..t token-major [t + 1][Hkv * D].
      std::vector<float> q_row(static_cast<size_t>(hq) * d), keys(static_cast<size_t>(t + 1) * hkv * d);
      for (int h = 0; h < hq; ++h)
        for (int j = 0; j < d; ++j) q_row[static_cast<size_t>(h * d + j)] = q[(static_cast<size_t>(h) * n + t) * d + j];
      for (int i = 0; i <= t; ++i)
        for (int g = 0; g < hkv; ++g)
          for (int j = 0; j < d; ++j)
            keys[(static_cast<size_t>(i) * hkv + g) * d + j] = k[(static_cast<size_t>(g) * n + i) * d + j];
      const kascade::LayerAttentionShape row_shape{hq, hkv, t + 1, d, NAN, pooling};
      const std::vector<float> row = kascade::decode_row_masses(q_row.data(), keys.data(), row_shape);
      ASSERT_EQ(row.size(), static_cast<size_t>(sets) * (t + 1));
      for (int s = 0; s < sets; ++s) {
        double total = 0;
        for (int i = 0; i < t; ++i) {
          EXPECT_NEAR(row[static_cast<size_t>(s) * (t + 1) + i], tiles.mass[(static_cast<size_t>(s) * n + t) * n + i], 1e-5);
          total += row[static_cast<size_t>(s) * (t + 1) + i];
        }
        EXPECT_NEAR(row[static_cast<size_t>(s) * (t + 1) + t], tiles.diagonal[static_cast<size_t>(s) * n + t], 1e-5);
        total += row[static_cast<size_t>(s) * (t + 1) + t];
        EXPECT_NEAR(total, hq / sets, 1e-5);  // each head's softmax sums to 1
      }
    }
  }
}
