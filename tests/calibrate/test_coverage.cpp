// Tests of the streaming coverage statistics (SPEC 6): hand-computed tiny cases, the worst-tile
// minimum and the mean over prompts, a naive all-in-memory implementation, the CPU oracle's
// pooled masses and selections, and the errors of misuse.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "calibrate_test_util.h"
#include "kascade/budget.h"
#include "kascade/calibrate.h"
#include "kascade/reference.h"

using kascade::CalibrationStats;
using kascade::CoverageMatrix;
using kascade::testing::add_single_head_layer;
using kascade::testing::OwnedTensor;

TEST(Coverage, DiagonalTermEntersNumeratorAndDenominator) {
  // L = 2, one kv head, k_cal = 1, tile 2, n = 4: tile 0 (b = 0) has no candidates, tile 1 has {0, 1}.
  CalibrationStats stats(2, 1, /*k_cal=*/1, /*tile=*/2);
  stats.begin_prompt(2, 4);
  add_single_head_layer(stats, 0, 4, 2, {{}, {0.6f, 0.2f}}, {2.0f, 1.2f});  // selects key 0
  add_single_head_layer(stats, 1, 4, 2, {{}, {0.1f, 0.5f}}, {2.0f, 1.4f});  // selects key 1
  stats.end_prompt();
  const CoverageMatrix c = stats.coverage();
  // Reusing layer 0's {0} for layer 1: (0.1 + 1.4) / (0.5 + 1.4). Without the diagonal it would be 0.2.
  EXPECT_NEAR(c.at(0, 1, 0, 0), (0.1 + 1.4) / (0.5 + 1.4), 1e-7);
  EXPECT_EQ(c.at(0, 0, 0, 0), 1.0);
  EXPECT_EQ(c.at(1, 1, 0, 0), 1.0);
  const std::vector<double> share = stats.topk_mass_share();
  EXPECT_NEAR(share[0], (0.6 + 1.2) / (0.8 + 1.2), 1e-7);
  EXPECT_NEAR(share[1], (0.5 + 1.4) / (0.6 + 1.4), 1e-7);
  EXPECT_EQ(stats.counted_tiles(), 2);        // (layer, tile 1) for both layers
  EXPECT_EQ(stats.skipped_trivial_tiles(), 2);  // tile 0 of both layers
}

TEST(Coverage, TiesInTopKPreferLowerIndex) {
  CalibrationStats stats(2, 1, 1, 2);
  stats.begin_prompt(2, 4);
  add_single_head_layer(stats, 0, 4, 2, {{}, {0.3f, 0.3f}}, {1.0f, 1.4f});  // tie: selects key 0
  add_single_head_layer(stats, 1, 4, 2, {{}, {0.0f, 0.5f}}, {1.0f, 1.5f});
  stats.end_prompt();
  // Key 0 carries none of layer 1's mass: (0 + 1.5) / (0.5 + 1.5). Key 1 would have given 1.
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), 0.75, 1e-7);
}

TEST(Coverage, WorstTileThenMeanOverPrompts) {
  CalibrationStats stats(2, 1, 1, 2);
  // Prompt 1, n = 6: tiles start at b = 0, 2, 4.
  stats.begin_prompt(3, 6);
  add_single_head_layer(stats, 0, 6, 2, {{}, {0.6f, 0.2f}, {0.1f, 0.1f, 0.7f, 0.1f}}, {2.0f, 1.2f, 1.0f});
  add_single_head_layer(stats, 1, 6, 2, {{}, {0.3f, 0.5f}, {0.6f, 0.0f, 0.0f, 0.0f}}, {2.0f, 1.2f, 1.4f});
  stats.end_prompt();
  // Tile 1: layer 0 picks {0}, layer 1 picks {1}: (0.3 + 1.2) / (0.5 + 1.2) = 0.882...
  // Tile 2: layer 0 picks {2}, layer 1 picks {0}: (0.0 + 1.4) / (0.6 + 1.4) = 0.7  <- worst
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), 0.7, 1e-7);

  // Prompt 2, n = 4: both layers pick key 1 on tile 1: coverage 1.
  stats.begin_prompt(2, 4);
  add_single_head_layer(stats, 0, 4, 2, {{}, {0.2f, 0.6f}}, {2.0f, 1.2f});
  add_single_head_layer(stats, 1, 4, 2, {{}, {0.2f, 0.6f}}, {2.0f, 1.2f});
  stats.end_prompt();
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), (0.7 + 1.0) / 2, 1e-7);

  // Prompt 3, n = 2: its only tile has no candidates, so it adds no evidence and leaves the mean.
  stats.begin_prompt(1, 2);
  add_single_head_layer(stats, 0, 2, 2, {{}}, {3.0f});
  add_single_head_layer(stats, 1, 2, 2, {{}}, {3.0f});
  stats.end_prompt();
  EXPECT_EQ(stats.prompts(), 3);
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), 0.85, 1e-7);
}

TEST(Coverage, TilesWhoseSelectionIsTheWholePrefixDoNotCount) {
  CalibrationStats stats(2, 1, /*k_cal=*/2, /*tile=*/2);
  EXPECT_EQ(stats.first_informative_position(), 4);
  // n = 6: tiles start at b = 0, 2, 4; only b = 4 > k_cal leaves the selection a choice.
  stats.begin_prompt(3, 6);
  add_single_head_layer(stats, 0, 6, 2, {{}, {0.9f, 0.0f}, {0.5f, 0.1f, 0.0f, 0.3f}}, {2.0f, 1.0f, 1.0f});
  add_single_head_layer(stats, 1, 6, 2, {{}, {0.0f, 0.9f}, {0.0f, 0.4f, 0.4f, 0.1f}}, {2.0f, 1.0f, 1.1f});
  stats.end_prompt();
  // Tile 2: layer 0 picks {0, 3}, layer 1 picks {1, 2}: (0.0 + 0.1 + 1.1) / (0.4 + 0.4 + 1.1).
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), 1.2 / 1.9, 1e-7);
  EXPECT_EQ(stats.skipped_trivial_tiles(), 4);
  EXPECT_EQ(stats.counted_tiles(), 2);
  // A prompt of 4 tokens has only trivial tiles: its coverage would be 1 and is not averaged in.
  stats.begin_prompt(2, 4);
  add_single_head_layer(stats, 0, 4, 2, {{}, {0.9f, 0.0f}}, {2.0f, 1.0f});
  add_single_head_layer(stats, 1, 4, 2, {{}, {0.0f, 0.9f}}, {2.0f, 1.0f});
  stats.end_prompt();
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), 1.2 / 1.9, 1e-7);
  EXPECT_EQ(stats.counted_tiles(), 2);
}

TEST(Coverage, ZeroMassTilesDoNotCount) {
  CalibrationStats stats(2, 1, 1, 2);
  stats.begin_prompt(3, 6);
  // Tile 1 of layer 1 has no mass at all (0/0): left out; tile 2 decides alone.
  add_single_head_layer(stats, 0, 6, 2, {{}, {0.6f, 0.2f}, {0.0f, 0.0f, 0.5f, 0.0f}}, {2.0f, 1.2f, 1.0f});
  add_single_head_layer(stats, 1, 6, 2, {{}, {0.0f, 0.0f}, {0.5f, 0.0f, 0.0f, 0.0f}}, {2.0f, 0.0f, 1.5f});
  stats.end_prompt();
  EXPECT_NEAR(stats.coverage().at(0, 1, 0, 0), 1.5 / 2.0, 1e-7);
  EXPECT_EQ(stats.skipped_zero_mass_tiles(), 1);

  // A layer whose every tile is empty or massless has no coverage at all: asking is an error.
  CalibrationStats empty(1, 1, 1, 2);
  empty.begin_prompt(2, 4);
  add_single_head_layer(empty, 0, 4, 2, {{}, {0.0f, 0.0f}}, {0.0f, 0.0f});
  empty.end_prompt();
  EXPECT_KASCADE_ERROR(empty.coverage(), "no informative tile for layer 0 kv head 0 in 1 prompts (a prompt needs more than 2 tokens");
}

// ---- a naive, all-in-memory implementation to compare the streaming one with -----------------
namespace {

struct PromptData {
  int64_t n = 0, tiles = 0;
  std::vector<std::vector<float>> pooled;    // [L] of [H, tiles, n]
  std::vector<std::vector<float>> diagonal;  // [L] of [H, tiles]
};

PromptData random_prompt(std::mt19937& rng, int layers, int heads, int tile, int64_t n) {
  PromptData p;
  p.n = n;
  p.tiles = kascade::num_tiles(0, n, tile);
  std::uniform_int_distribution<int> eighths(0, 8);  // multiples of 1/8: many exact ties
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int l = 0; l < layers; ++l) {
    std::vector<float> pooled(static_cast<size_t>(heads * p.tiles * n));
    std::vector<float> diagonal(static_cast<size_t>(heads * p.tiles));
    for (float& x : pooled) x = unit(rng) < 0.2f ? 0.0f : static_cast<float>(eighths(rng)) / 8.0f;
    for (size_t i = 0; i < diagonal.size(); ++i) {
      const bool massless = unit(rng) < 0.05f;  // now and then a tile with no mass at all
      diagonal[i] = massless ? 0.0f : 0.05f + unit(rng);
      if (massless) std::fill_n(pooled.begin() + static_cast<std::ptrdiff_t>(i * static_cast<size_t>(n)), n, 0.0f);
    }
    p.pooled.push_back(std::move(pooled));
    p.diagonal.push_back(std::move(diagonal));
  }
  return p;
}

void feed(CalibrationStats& stats, PromptData& p, int64_t chunk) {
  const int H = stats.num_kv_heads();
  stats.begin_prompt(p.tiles, p.n);
  for (int l = 0; l < stats.num_layers(); ++l) {
    for (int64_t first = 0; first < p.tiles; first += chunk) {
      const int64_t count = std::min(chunk, p.tiles - first);
      // Views into the full arrays with the strides of the whole tensor: exercises strided input.
      kascade::TensorView pooled;
      pooled.data = p.pooled[static_cast<size_t>(l)].data() + first * p.n;
      pooled.dtype = kascade::DType::F32;
      pooled.rank = 3;
      pooled.shape[0] = H, pooled.shape[1] = count, pooled.shape[2] = p.n;
      pooled.stride[0] = p.tiles * p.n, pooled.stride[1] = p.n, pooled.stride[2] = 1;
      kascade::TensorView diagonal;
      diagonal.data = p.diagonal[static_cast<size_t>(l)].data() + first;
      diagonal.dtype = kascade::DType::F32;
      diagonal.rank = 2;
      diagonal.shape[0] = H, diagonal.shape[1] = count;
      diagonal.stride[0] = p.tiles, diagonal.stride[1] = 1;
      stats.add_layer_tiles(l, first, pooled, diagonal);
    }
  }
  stats.end_prompt();
}

// Selection by a full stable sort on mass (descending): equal masses keep the lower index first.
std::vector<int> naive_top_k(const float* row, int64_t b, int64_t k) {
  std::vector<int> order(static_cast<size_t>(b));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [row](int x, int y) { return row[x] > row[y]; });
  order.resize(static_cast<size_t>(k));
  return order;
}

struct NaiveResult {
  std::vector<double> sum;     // [L, L, H, H]
  std::vector<int> count;      // [L, H]
  std::vector<double> share_sum;
  std::vector<int> share_count;
};

NaiveResult naive_statistics(const std::vector<PromptData>& prompts, int L, int H, int k_cal, int tile) {
  auto at = [&](int l1, int l2, int g1, int g2) { return ((static_cast<size_t>(l1) * L + l2) * H + g1) * H + g2; };
  NaiveResult r;
  r.sum.assign(static_cast<size_t>(L * L * H * H), 0.0);
  r.count.assign(static_cast<size_t>(L * H), 0);
  r.share_sum.assign(static_cast<size_t>(L), 0.0);
  r.share_count.assign(static_cast<size_t>(L), 0);
  for (const PromptData& p : prompts) {
    auto row = [&](int l, int g, int64_t tau) { return p.pooled[static_cast<size_t>(l)].data() + (g * p.tiles + tau) * p.n; };
    for (int l2 = 0; l2 < L; ++l2) {
      for (int g2 = 0; g2 < H; ++g2) {
        std::vector<double> worst(static_cast<size_t>(L * H), INFINITY);
        bool any = false;
        for (int64_t tau = 1; tau < p.tiles; ++tau) {
          const int64_t b = tau * tile, k = k_cal;
          if (b <= k_cal) continue;  // every selection is the whole prefix
          const float* target = row(l2, g2, tau);
          const double d = p.diagonal[static_cast<size_t>(l2)][static_cast<size_t>(g2 * p.tiles + tau)];
          auto covered = [&](int l1, int g1) {
            double s = d;
            for (int i : naive_top_k(row(l1, g1, tau), b, k)) s += target[i];
            return s;
          };
          const double denominator = covered(l2, g2);
          if (denominator == 0.0) continue;
          any = true;
          double all = d;
          for (int64_t i = 0; i < b; ++i) all += target[i];
          r.share_sum[static_cast<size_t>(l2)] += denominator / all;
          r.share_count[static_cast<size_t>(l2)]++;
          for (int l1 = 0; l1 <= l2; ++l1)
            for (int g1 = 0; g1 < H; ++g1)
              worst[static_cast<size_t>(l1 * H + g1)] = std::min(worst[static_cast<size_t>(l1 * H + g1)], covered(l1, g1) / denominator);
        }
        if (!any) continue;
        r.count[static_cast<size_t>(l2 * H + g2)]++;
        for (int l1 = 0; l1 <= l2; ++l1)
          for (int g1 = 0; g1 < H; ++g1) r.sum[at(l1, l2, g1, g2)] += worst[static_cast<size_t>(l1 * H + g1)];
      }
    }
  }
  return r;
}

}  // namespace

TEST(Coverage, StreamingEqualsNaiveAndChunkingDoesNotMatter) {
  const int L = 4, H = 3, k_cal = 5, tile = 4;
  std::mt19937 rng(20261126);
  std::vector<PromptData> prompts;
  for (int64_t n : {1, 3, 4, 9, 17, 33, 40, 61}) prompts.push_back(random_prompt(rng, L, H, tile, n));
  const NaiveResult naive = naive_statistics(prompts, L, H, k_cal, tile);

  CalibrationStats whole(L, H, k_cal, tile), chunked(L, H, k_cal, tile);
  for (PromptData& p : prompts) {
    feed(whole, p, p.tiles);
    feed(chunked, p, 3);
  }
  const CoverageMatrix a = whole.coverage(), b = chunked.coverage();
  const std::vector<double> share = whole.topk_mass_share();
  int checked = 0;
  for (int l2 = 0; l2 < L; ++l2) {
    EXPECT_NEAR(share[static_cast<size_t>(l2)],
                naive.share_sum[static_cast<size_t>(l2)] / naive.share_count[static_cast<size_t>(l2)], 1e-12);
    for (int g2 = 0; g2 < H; ++g2) {
      const int count = naive.count[static_cast<size_t>(l2 * H + g2)];
      ASSERT_GT(count, 0);
      for (int l1 = 0; l1 <= l2; ++l1) {
        for (int g1 = 0; g1 < H; ++g1) {
          const double expected = naive.sum[((static_cast<size_t>(l1) * L + l2) * H + g1) * H + g2] / count;
          EXPECT_NEAR(a.at(l1, l2, g1, g2), expected, 1e-12) << l1 << " " << l2 << " " << g1 << " " << g2;
          EXPECT_EQ(a.at(l1, l2, g1, g2), b.at(l1, l2, g1, g2));
          EXPECT_LE(a.at(l1, l2, g1, g2), 1.0 + 1e-12);  // the oracle selection is the best k-set
          ++checked;
        }
      }
      EXPECT_EQ(a.at(l2, l2, g2, g2), 1.0);  // a selection covers itself
    }
  }
  EXPECT_EQ(checked, L * (L + 1) / 2 * H * H);
  EXPECT_EQ(whole.counted_tiles(), chunked.counted_tiles());
  EXPECT_GT(whole.skipped_zero_mass_tiles(), 0);  // the generator made some massless tiles
}

TEST(Coverage, MatchesOracleSelectionsAndPooledMass) {
  // Real attention: pooled masses from the CPU oracle, selections from the oracle's anchor with a
  // budget of exactly k_cal (rho = 0, k_min = k_cal), coverage from the oracle's covered_mass.
  const int L = 3, hq = 4, hkv = 2, d = 8, n = 50, tile = 8, k_cal = 6;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  kascade::ref::Call call;
  call.phase = kascade::Phase::Prefill;
  call.role = kascade::Role::Anchor;
  call.params.rho = 0.0;
  call.params.k_min = k_cal;
  call.params.tile = tile;
  std::vector<kascade::ref::Pooled> pooled;
  std::vector<kascade::ref::Selection> selection;
  CalibrationStats stats(L, hkv, k_cal, tile);
  const int tiles = static_cast<int>(kascade::num_tiles(0, n, tile));
  stats.begin_prompt(tiles, n);
  for (int l = 0; l < L; ++l) {
    std::vector<float> q(hq * n * d), k(hkv * n * d), v(hkv * n * d);
    for (float& x : q) x = normal(rng);
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    pooled.push_back(kascade::ref::pooled_mass(call, q.data(), k.data(), hq, hkv, n, n, d));
    selection.push_back(kascade::ref::attend(call, q.data(), k.data(), v.data(), hq, hkv, n, n, d).selection);
    OwnedTensor mass({hkv, tiles, n}), diagonal({hkv, tiles});
    for (int g = 0; g < hkv; ++g) {
      for (int tau = 0; tau < tiles; ++tau) {
        for (int i = 0; i < n; ++i) mass.at(g, tau, i) = static_cast<float>(pooled.back().tile_mass(g, tau)[i]);
        diagonal.at(g, tau) = static_cast<float>(pooled.back().tile_diagonal(g, tau));
      }
    }
    stats.add_layer(l, mass.view, diagonal.view);
  }
  stats.end_prompt();
  const CoverageMatrix c = stats.coverage();
  for (int l2 = 0; l2 < L; ++l2) {
    for (int l1 = 0; l1 <= l2; ++l1) {
      for (int g1 = 0; g1 < hkv; ++g1) {
        for (int g2 = 0; g2 < hkv; ++g2) {
          double worst = INFINITY;
          for (int tau = 1; tau < tiles; ++tau) {
            const auto& own = selection[static_cast<size_t>(l2)];
            const auto& borrowed = selection[static_cast<size_t>(l1)];
            const double best = kascade::ref::covered_mass(pooled[static_cast<size_t>(l2)], g2, tau, own.row(g2, tau),
                                                           own.row_count(g2, tau));
            const double kept = kascade::ref::covered_mass(pooled[static_cast<size_t>(l2)], g2, tau,
                                                           borrowed.row(g1, tau), borrowed.row_count(g1, tau));
            worst = std::min(worst, kept / best);
          }
          EXPECT_NEAR(c.at(l1, l2, g1, g2), worst, 1e-5) << l1 << " " << l2 << " " << g1 << " " << g2;
        }
      }
    }
  }
}

// ---- misuse ------------------------------------------------------------------------------------
TEST(CoverageErrors, OrderAndShapes) {
  CalibrationStats stats(2, 2, 4, 4);
  OwnedTensor pooled({2, 3, 10}, 0.1f), diagonal({2, 3}, 1.0f);
  EXPECT_KASCADE_ERROR(stats.add_layer(0, pooled.view, diagonal.view), "no open prompt");
  EXPECT_KASCADE_ERROR(stats.begin_prompt(2, 10), "expected ceil(n / 4) = 3");
  EXPECT_KASCADE_ERROR(stats.begin_prompt(0, 0), "prompt length n must be");
  stats.begin_prompt(3, 10);
  EXPECT_KASCADE_ERROR(stats.begin_prompt(3, 10), "previous prompt is still open");
  EXPECT_KASCADE_ERROR(stats.add_layer(1, pooled.view, diagonal.view), "got layer 1 from tile 0, expected layer 0");
  EXPECT_KASCADE_ERROR(stats.add_layer(2, pooled.view, diagonal.view), "layer 2 out of range");
  EXPECT_KASCADE_ERROR(stats.end_prompt(), "only 0 of 2 layers");

  OwnedTensor wrong_heads({1, 3, 10}), wrong_n({2, 3, 9}), wrong_tiles({2, 2, 10}), wrong_diagonal({2, 2});
  EXPECT_KASCADE_ERROR(stats.add_layer(0, wrong_heads.view, diagonal.view), "pooled has shape [1, 3, 10], expected [2");
  EXPECT_KASCADE_ERROR(stats.add_layer(0, wrong_n.view, diagonal.view), "pooled has shape [2, 3, 9]");
  EXPECT_KASCADE_ERROR(stats.add_layer(0, wrong_tiles.view, diagonal.view), "(all tiles)");
  EXPECT_KASCADE_ERROR(stats.add_layer(0, pooled.view, wrong_diagonal.view), "diagonal has shape [2, 2], expected [2, 3]");
  kascade::TensorView half = pooled.view;
  half.dtype = kascade::DType::BF16;
  EXPECT_KASCADE_ERROR(stats.add_layer(0, half, diagonal.view), "must be f32");

  stats.add_layer(0, pooled.view, diagonal.view);
  EXPECT_KASCADE_ERROR(stats.add_layer(0, pooled.view, diagonal.view), "got layer 0 from tile 0, expected layer 1");
  // Chunks must come in order and not run past the last tile.
  OwnedTensor two_tiles({2, 2, 10}, 0.1f), two_diagonal({2, 2}, 1.0f);
  EXPECT_KASCADE_ERROR(stats.add_layer_tiles(1, 1, two_tiles.view, two_diagonal.view), "expected layer 1 from tile 0");
  stats.add_layer_tiles(1, 0, two_tiles.view, two_diagonal.view);
  EXPECT_KASCADE_ERROR(stats.add_layer_tiles(1, 2, two_tiles.view, two_diagonal.view), "expected [2, 1..1, 10]");
}

TEST(CoverageErrors, BadValuesLeaveTheStateUntouched) {
  CalibrationStats stats(1, 1, 1, 2);
  stats.begin_prompt(2, 4);
  OwnedTensor pooled({1, 2, 4}, 0.25f), diagonal({1, 2}, 1.0f);
  pooled.at(0, 1, 1) = NAN;
  EXPECT_KASCADE_ERROR(stats.add_layer(0, pooled.view, diagonal.view), "pooled[g=0][tau=1][i=1] = nan");
  pooled.at(0, 1, 1) = 0.25f;
  diagonal.at(0, 1) = -1.0f;
  EXPECT_KASCADE_ERROR(stats.add_layer(0, pooled.view, diagonal.view), "diagonal[g=0][tau=1] = -1");
  diagonal.at(0, 1) = 1.0f;
  pooled.at(0, 1, 3) = NAN;  // not a candidate of tile 1 (b = 2): never read
  stats.add_layer(0, pooled.view, diagonal.view);
  stats.end_prompt();
  EXPECT_EQ(stats.counted_tiles(), 1);
  EXPECT_EQ(stats.coverage().at(0, 0, 0, 0), 1.0);
}

TEST(CoverageErrors, Construction) {
  EXPECT_KASCADE_ERROR(CalibrationStats(0, 1), "num_layers must be >= 1");
  EXPECT_KASCADE_ERROR(CalibrationStats(1, 0), "num_kv_heads must be >= 1");
  EXPECT_KASCADE_ERROR(CalibrationStats(1, 1, 0), "k_cal must be >= 1");
  EXPECT_KASCADE_ERROR(CalibrationStats(1, 1, 64, 0), "tile must be >= 1");
  CoverageMatrix c(2, 2);
  EXPECT_KASCADE_ERROR(c.at(1, 0, 0, 0), "need 0 <= l1 <= l2 < 2");
  EXPECT_KASCADE_ERROR(c.at(0, 1, 2, 0), "kv heads (2, 0) out of range");
}

TEST(Coverage, MergedAccumulatorsEqualOne) {
  const int L = 3, H = 2, k_cal = 3, tile = 4;
  std::mt19937 rng(4242);
  std::vector<PromptData> prompts;
  for (int64_t n : {9, 17, 30, 44, 5, 61}) prompts.push_back(random_prompt(rng, L, H, tile, n));
  CalibrationStats all(L, H, k_cal, tile), first(L, H, k_cal, tile), second(L, H, k_cal, tile);
  const float x[3] = {1.0f, 2.0f, 0.5f}, attn[3] = {0.5f, -1.0f, 2.0f};
  for (size_t p = 0; p < prompts.size(); ++p) {
    feed(all, prompts[p], prompts[p].tiles);
    feed(p < 2 ? first : second, prompts[p], 2);
    for (int l = 0; l < L; ++l) {
      all.add_importance(l, x, attn, 1, 3);
      (p < 2 ? first : second).add_importance(l, x, attn, 1, 3);
    }
  }
  first.merge(second);
  EXPECT_EQ(first.prompts(), all.prompts());
  EXPECT_EQ(first.counted_tiles(), all.counted_tiles());
  EXPECT_EQ(first.skipped_trivial_tiles(), all.skipped_trivial_tiles());
  EXPECT_EQ(first.importance_tokens(1), all.importance_tokens(1));
  const CoverageMatrix merged = first.coverage(), single = all.coverage();
  for (int l2 = 0; l2 < L; ++l2)
    for (int l1 = 0; l1 <= l2; ++l1)
      for (int g1 = 0; g1 < H; ++g1)
        for (int g2 = 0; g2 < H; ++g2) EXPECT_NEAR(merged.at(l1, l2, g1, g2), single.at(l1, l2, g1, g2), 1e-12);
  for (int l = 0; l < L; ++l) {
    EXPECT_NEAR(first.importance()[static_cast<size_t>(l)], all.importance()[static_cast<size_t>(l)], 1e-12);
    EXPECT_NEAR(first.topk_mass_share()[static_cast<size_t>(l)], all.topk_mass_share()[static_cast<size_t>(l)], 1e-12);
  }
  EXPECT_KASCADE_ERROR(first.merge(CalibrationStats(L, H, k_cal + 1, tile)), "shapes differ");
  CalibrationStats open(L, H, k_cal, tile);
  open.begin_prompt(1, 4);
  EXPECT_KASCADE_ERROR(first.merge(open), "no open prompt");
}
