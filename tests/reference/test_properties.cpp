// SPEC 7 properties of the oracle, checked exactly over a grid of random cases, plus the
// behaviour of the selection comparison (covered mass) and the output comparison helpers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "helpers.h"
#include "kascade/reference.h"

namespace kascade::ref {
namespace {

using testing::make_call;

struct Shape {
  Phase phase;
  int hq, hkv, nq, n, d, tile;
  Pooling pooling;
  BudgetMode budget;
};

// Awkward sizes: G = 1..8, partial last tiles, unaligned chunks, n below and above k_min.
std::vector<Shape> grid() {
  std::vector<Shape> shapes;
  for (Pooling pooling : {Pooling::Group, Pooling::All}) {
    for (BudgetMode budget : {BudgetMode::Rolling, BudgetMode::Fixed}) {
      shapes.push_back({Phase::Decode, 8, 1, 1, 97, 16, 32, pooling, budget});
      shapes.push_back({Phase::Decode, 6, 2, 1, 17, 8, 32, pooling, budget});
      shapes.push_back({Phase::Decode, 3, 3, 1, 1, 4, 32, pooling, budget});
      shapes.push_back({Phase::Prefill, 4, 2, 70, 70, 16, 16, pooling, budget});
      shapes.push_back({Phase::Prefill, 8, 2, 45, 113, 8, 8, pooling, budget});
      shapes.push_back({Phase::Prefill, 5, 5, 13, 40, 4, 4, pooling, budget});
    }
  }
  return shapes;
}

Call call_for(const Shape& s, Role role) {
  Call c = make_call(s.phase, role, s.phase == Phase::Prefill ? s.n - s.nq : 0);
  c.params.tile = s.tile;
  c.params.pooling = s.pooling;
  c.params.budget = s.budget;
  c.params.k_min = 6;
  c.params.rho = 0.1;
  return c;
}

std::string describe(const Shape& s) {
  return std::string(to_string(s.phase)) + " Hq=" + std::to_string(s.hq) + " Hkv=" + std::to_string(s.hkv) +
         " nq=" + std::to_string(s.nq) + " n=" + std::to_string(s.n) + " D=" + std::to_string(s.d) + " T=" +
         std::to_string(s.tile) + " " + to_string(s.pooling) + " " + to_string(s.budget);
}

TEST(ReferenceProperties, RhoOneEqualsDenseBitwise) {
  uint32_t seed = 100;
  for (const Shape& s : grid()) {
    SCOPED_TRACE(describe(s));
    testing::Case c(s.hq, s.hkv, s.nq, s.n, s.d, seed++);
    Call anchor = call_for(s, Role::Anchor);
    anchor.params.rho = 1.0;
    const Result sparse = c.run(anchor);
    const Result dense = c.run(call_for(s, Role::Dense));
    EXPECT_EQ(sparse.out, dense.out);
    for (int set = 0; set < sparse.selection.num_sets; ++set)
      for (int tau = 0; tau < sparse.selection.num_tiles; ++tau)
        EXPECT_EQ(sparse.selection.row_count(set, tau), tile_prefix(anchor, tau, s.n));
  }
}

TEST(ReferenceProperties, IdentityReuseOfOwnSelectionEqualsAnchor) {
  uint32_t seed = 200;
  for (const Shape& s : grid()) {
    SCOPED_TRACE(describe(s));
    testing::Case c(s.hq, s.hkv, s.nq, s.n, s.d, seed++);
    const Result anchor = c.run(call_for(s, Role::Anchor));
    Call reuse = call_for(s, Role::Reuse);
    EXPECT_EQ(c.run(reuse, &anchor.selection).out, anchor.out);
    if (s.pooling == Pooling::Group) {
      reuse.head_map.resize(s.hkv);
      for (int g = 0; g < s.hkv; ++g) reuse.head_map[g] = g;  // explicit identity
      EXPECT_EQ(c.run(reuse, &anchor.selection).out, anchor.out);
    }
  }
}

TEST(ReferenceProperties, DecodePooledMassOfAGroupSumsToG) {
  uint32_t seed = 300;
  for (const Shape& s : grid()) {
    if (s.phase != Phase::Decode) continue;
    SCOPED_TRACE(describe(s));
    testing::Case c(s.hq, s.hkv, 1, s.n, s.d, seed++, 4.0f);
    const Pooled p = c.pooled(call_for(s, Role::Anchor));
    const int heads_per_set = s.pooling == Pooling::All ? s.hq : s.hq / s.hkv;
    for (int set = 0; set < p.num_sets; ++set) {
      double total = 0;
      for (int i = 0; i < s.n; ++i) total += p.tile_mass(set, 0)[i];
      EXPECT_NEAR(total, heads_per_set, 1e-12);
      EXPECT_EQ(p.tile_diagonal(set, 0), 0.0);
    }
  }
}

TEST(ReferenceProperties, PrefillTileCandidateMassAtMostTG) {
  uint32_t seed = 400;
  for (const Shape& s : grid()) {
    if (s.phase != Phase::Prefill) continue;
    SCOPED_TRACE(describe(s));
    testing::Case c(s.hq, s.hkv, s.nq, s.n, s.d, seed++, 4.0f);
    const Call call = call_for(s, Role::Anchor);
    const Pooled p = c.pooled(call);
    const int heads_per_set = s.pooling == Pooling::All ? s.hq : s.hq / s.hkv;
    for (int set = 0; set < p.num_sets; ++set) {
      for (int tau = 0; tau < p.num_tiles; ++tau) {
        const int b = p.prefix[tau];
        const int rows = std::min(s.tile, s.n - b);  // the last tile may be partial
        double candidates = 0;
        for (int i = 0; i < s.n; ++i) {
          if (i >= b) {
            EXPECT_EQ(p.tile_mass(set, tau)[i], 0.0) << "key " << i << " is not a candidate";
          }
          candidates += p.tile_mass(set, tau)[i];
        }
        EXPECT_LE(candidates, static_cast<double>(s.tile) * heads_per_set);
        // Each row is a full softmax: candidates + diagonal = rows * heads.
        EXPECT_NEAR(candidates + p.tile_diagonal(set, tau), static_cast<double>(rows) * heads_per_set, 1e-11);
      }
    }
  }
}

TEST(ReferenceProperties, SelectionIsTheTopKOfThePooledMass) {
  uint32_t seed = 500;
  for (const Shape& s : grid()) {
    SCOPED_TRACE(describe(s));
    testing::Case c(s.hq, s.hkv, s.nq, s.n, s.d, seed++, 3.0f);
    const Call call = call_for(s, Role::Anchor);
    const Result r = c.run(call);
    const Pooled p = c.pooled(call);
    for (int set = 0; set < p.num_sets; ++set) {
      for (int tau = 0; tau < p.num_tiles; ++tau) {
        const int k = tile_budget(call, tau, s.n);
        ASSERT_EQ(r.selection.row_count(set, tau), k);
        const std::vector<int32_t> keys = testing::row_keys(r.selection, set, tau);
        const double* mass = p.tile_mass(set, tau);
        double smallest_selected = std::numeric_limits<double>::infinity();
        for (int32_t key : keys) smallest_selected = std::min(smallest_selected, mass[key]);
        for (int i = 0; i < p.prefix[tau]; ++i) {
          if (!std::binary_search(keys.begin(), keys.end(), i)) {
            EXPECT_LE(mass[i], smallest_selected) << "key " << i;
          }
        }
      }
    }
  }
}

TEST(ReferenceProperties, ShortPrefixTilesEqualDense) {
  // k_min = 64 covers every prefix b <= 64: all tiles but the later ones of n = 113 are dense.
  testing::Case c(4, 2, 100, 113, 8, 600);
  Call anchor = make_call(Phase::Prefill, Role::Anchor, 13);
  anchor.params.k_min = 64;
  anchor.params.tile = 16;
  const Result a = c.run(anchor);
  Call dense = anchor;
  dense.role = Role::Dense;
  const Result d = c.run(dense);
  int dense_rows = 0;
  for (int tau = 0; tau < a.selection.num_tiles; ++tau) {
    const int b = tile_prefix(anchor, tau, c.n);
    if (b > tile_budget(anchor, tau, c.n)) continue;
    for (int h = 0; h < c.hq; ++h)
      for (int t = b; t < std::min(b + 16, c.n); ++t, ++dense_rows)
        for (int e = 0; e < c.d; ++e) {
          const size_t at = (static_cast<size_t>(h) * c.nq + (t - 13)) * c.d + e;
          ASSERT_EQ(a.out[at], d.out[at]) << "h=" << h << " t=" << t;
        }
  }
  EXPECT_GT(dense_rows, 0);
  EXPECT_NE(a.out, d.out);  // the tiles past b = 64 are sparse
}

TEST(ReferenceProperties, ChunkedPrefillMatchesTheFullPrefillWhenTilesAlign) {
  // A chunk starting at p0 = 32 with T = 16 has the tiles b = 32, 48, ... of the full prefill.
  testing::Case full(6, 3, 80, 80, 8, 700);
  Call call = make_call(Phase::Prefill, Role::Anchor, 0);
  call.params.k_min = 10;
  call.params.tile = 16;
  const Result whole = full.run(call);
  testing::Case chunk = full;
  chunk.nq = 48;
  chunk.q.clear();
  for (int h = 0; h < 6; ++h)
    chunk.q.insert(chunk.q.end(), full.q.begin() + (static_cast<size_t>(h) * 80 + 32) * 8,
                   full.q.begin() + (static_cast<size_t>(h) * 80 + 80) * 8);
  call.p0 = 32;
  const Result part = chunk.run(call);
  for (int h = 0; h < 6; ++h)
    for (int t = 32; t < 80; ++t)
      for (int e = 0; e < 8; ++e)
        ASSERT_EQ(part.out[(static_cast<size_t>(h) * 48 + t - 32) * 8 + e], whole.out[(static_cast<size_t>(h) * 80 + t) * 8 + e]);
  for (int g = 0; g < 3; ++g)
    for (int tau = 0; tau < 3; ++tau)
      EXPECT_EQ(testing::row_keys(part.selection, g, tau), testing::row_keys(whole.selection, g, tau + 2));
}

TEST(ReferenceProperties, LargeMagnitudeScoresStayFinite) {
  testing::Case c(4, 1, 40, 64, 16, 800, 300.0f);  // scores up to ~1e6
  Call call = make_call(Phase::Prefill, Role::Anchor, 24);
  call.params.k_min = 8;
  call.params.tile = 8;
  const Result r = c.run(call);
  for (float x : r.out) ASSERT_TRUE(std::isfinite(x));
  const Pooled p = c.pooled(call);
  for (double m : p.mass) ASSERT_TRUE(std::isfinite(m));
}

TEST(ReferenceProperties, RepeatedRunsAreBitwiseIdentical) {
  testing::Case c(8, 2, 50, 120, 32, 900);
  Call call = make_call(Phase::Prefill, Role::Anchor, 70);
  call.params.k_min = 16;
  const Result a = c.run(call);
  const Result b = c.run(call);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.selection.index, b.selection.index);
}

// ---- selection comparison ------------------------------------------------------------------

TEST(ReferenceCompare, SelectionEqualsItselfAndTieSwapsAreEquivalent) {
  // q = 1 everywhere; keys 0..5 are all 1 (score 2, an exact tie at the top), the rest are
  // small, and key 8 is far below: k = 3 picks {0, 1, 2}, and {3, 4, 5} covers the same mass.
  testing::Case c(2, 1, 1, 12, 4, 1000, 0.2f);
  std::fill(c.q.begin(), c.q.end(), 1.0f);
  std::fill(c.k.begin(), c.k.begin() + 6 * 4, 1.0f);
  std::fill(c.k.begin() + 8 * 4, c.k.begin() + 9 * 4, -5.0f);
  Call call = make_call(Phase::Decode, Role::Anchor);
  call.params.k_min = 3;
  const Result r = c.run(call);
  const Pooled p = c.pooled(call);
  EXPECT_EQ(compare_selections(p, r.selection, r.selection), "");
  const std::vector<int32_t> keys = testing::row_keys(r.selection, 0, 0);
  ASSERT_EQ(keys, (std::vector<int32_t>{0, 1, 2}));
  Selection swapped = r.selection;
  const std::vector<int32_t> other_tied{3, 4, 5};
  std::copy(other_tied.begin(), other_tied.end(), swapped.row(0, 0));
  EXPECT_EQ(compare_selections(p, r.selection, swapped), "");
  // Swapping the best key for the worst one is a real difference.
  Selection worse = r.selection;
  const double* mass = p.tile_mass(0, 0);
  const int32_t best = *std::max_element(keys.begin(), keys.end(), [&](int32_t a, int32_t b) { return mass[a] < mass[b]; });
  std::vector<int32_t> changed;
  for (int32_t key : keys)
    if (key != best) changed.push_back(key);
  changed.push_back(8);
  std::sort(changed.begin(), changed.end());
  std::copy(changed.begin(), changed.end(), worse.row(0, 0));
  const std::string msg = compare_selections(p, r.selection, worse);
  EXPECT_NE(msg.find("set 0, tile 0"), std::string::npos) << msg;
}

TEST(ReferenceCompare, CountMismatchAndMalformedRowsAreReported) {
  testing::Case c(2, 1, 1, 10, 4, 1100);
  Call call = make_call(Phase::Decode, Role::Anchor);
  call.params.k_min = 3;
  const Result r = c.run(call);
  const Pooled p = c.pooled(call);
  Selection fewer = r.selection;
  fewer.row(0, 0)[2] = -1;
  fewer.count[0] = 2;
  EXPECT_NE(compare_selections(p, r.selection, fewer).find("2 keys"), std::string::npos);
  Selection duplicate = r.selection;
  duplicate.row(0, 0)[1] = duplicate.row(0, 0)[0];
  EXPECT_NE(compare_selections(p, r.selection, duplicate).find("ascending"), std::string::npos);
  Selection out_of_range = r.selection;
  out_of_range.row(0, 0)[2] = 10;
  EXPECT_NE(compare_selections(p, r.selection, out_of_range).find("not a candidate"), std::string::npos);
  EXPECT_NE(compare_selections(p, r.selection, Selection::empty(2, 1, 3)).find("shape"), std::string::npos);
}

TEST(ReferenceCompare, RelativeL2AndNaN) {
  const float ref3[] = {3, 4, 0};
  const float same[] = {3, 4, 0};
  const float off[] = {3, 5, 0};
  EXPECT_EQ(relative_l2_error(ref3, same, 3), 0.0);
  EXPECT_DOUBLE_EQ(relative_l2_error(ref3, off, 3), 0.2);
  const float nan_vals[] = {3, NAN, 0};
  const float inf_vals[] = {3, 4, INFINITY};
  EXPECT_TRUE(std::isinf(relative_l2_error(ref3, nan_vals, 3)));
  EXPECT_TRUE(std::isinf(relative_l2_error(inf_vals, same, 3)));
  const float zeros[] = {0, 0, 0};
  EXPECT_DOUBLE_EQ(relative_l2_error(zeros, off, 3), std::sqrt(9.0 + 25.0));
  EXPECT_EQ(check_close("out", ref3, same, 3, 1e-5), "");
  EXPECT_NE(check_close("out", ref3, off, 3, 0.1).find("exceeds tolerance"), std::string::npos);
  EXPECT_EQ(check_close("out", ref3, off, 3, 0.25), "");
  EXPECT_NE(check_close("out", ref3, nan_vals, 3, 1e9).find("element 1"), std::string::npos);
  EXPECT_EQ(output_tolerance(DType::BF16), 1e-2);
  EXPECT_EQ(output_tolerance(DType::F16), 2e-3);
  EXPECT_EQ(output_tolerance(DType::F32), 1e-5);
  EXPECT_THROW(output_tolerance(DType::I32), Error);
}

}  // namespace
}  // namespace kascade::ref
