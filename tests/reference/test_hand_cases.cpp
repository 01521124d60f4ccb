// Hand-computed tiny cases of the CPU oracle: every expected number below is written from
// SPEC 3-5 by hand (closed-form softmax sums), not produced by the code under test.
#include <gtest/gtest.h>

#include <cmath>

#include "helpers.h"
#include "kascade/reference.h"

namespace kascade::ref {
namespace {

using testing::make_call;
using testing::row_keys;

constexpr double kRel = 1e-6;  // fp64 math rounded once to fp32

void expect_close(float actual, double expected) { EXPECT_NEAR(actual, expected, kRel * std::fabs(expected) + 1e-7); }

// softmax-weighted mean of values under scores (the closed form every case below uses).
double weighted(std::initializer_list<std::pair<double, double>> score_value) {
  double num = 0, den = 0;
  for (auto [s, v] : score_value) {
    num += std::exp(s) * v;
    den += std::exp(s);
  }
  return num / den;
}

// Decode, D = 1, Hq = 2, Hkv = 1 (G = 2), scale 1: head 0 scores [0,1,2,3], head 1 [0,2,4,6].
struct TinyDecode {
  std::vector<float> q{1.0f, 2.0f}, k{0, 1, 2, 3}, v{10, 20, 30, 40};
  Call call = make_call(Phase::Decode, Role::Anchor);
  TinyDecode() {
    call.params.k_min = 2;
    call.params.scale = 1.0f;
  }
  Result run() const { return attend(call, q.data(), k.data(), v.data(), 2, 1, 1, 4, 1); }
};

TEST(ReferenceHand, DecodeAnchorSelectsTopTwoPooledKeys) {
  TinyDecode c;
  const Result r = c.run();
  ASSERT_EQ(r.selection.num_sets, 1);
  ASSERT_EQ(r.selection.num_tiles, 1);
  ASSERT_EQ(r.selection.k_max, 2);  // k(4) = min(4, max(2, floor(0.4))) = 2
  EXPECT_EQ(row_keys(r.selection, 0, 0), (std::vector<int32_t>{2, 3}));
  expect_close(r.out[0], weighted({{2, 30}, {3, 40}}));
  expect_close(r.out[1], weighted({{4, 30}, {6, 40}}));
}

TEST(ReferenceHand, DecodeLayer0IsFullSoftmaxAndStillSelects) {
  TinyDecode c;
  c.call.role = Role::Layer0;
  const Result r = c.run();
  EXPECT_EQ(row_keys(r.selection, 0, 0), (std::vector<int32_t>{2, 3}));
  expect_close(r.out[0], weighted({{0, 10}, {1, 20}, {2, 30}, {3, 40}}));
  expect_close(r.out[1], weighted({{0, 10}, {2, 20}, {4, 30}, {6, 40}}));
  // Dense: the same output, nothing selected.
  c.call.role = Role::Dense;
  const Result d = c.run();
  EXPECT_EQ(d.out, r.out);
  EXPECT_EQ(d.selection.num_sets, 0);
  EXPECT_TRUE(d.selection.index.empty());
}

TEST(ReferenceHand, DecodePooledMassIsSumOfGroupSoftmaxes) {
  TinyDecode c;
  const Pooled p = pooled_mass(c.call, c.q.data(), c.k.data(), 2, 1, 1, 4, 1);
  const double z0 = 1 + std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  const double z1 = 1 + std::exp(2.0) + std::exp(4.0) + std::exp(6.0);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(p.tile_mass(0, 0)[i], std::exp(1.0 * i) / z0 + std::exp(2.0 * i) / z1, 1e-14);
  }
  EXPECT_EQ(p.tile_diagonal(0, 0), 0.0);
  EXPECT_EQ(p.prefix, (std::vector<int>{4}));
}

TEST(ReferenceHand, TiesBreakTowardLowerIndex) {
  // D = 1, q = 1: scores equal the keys; keys 1, 2 and 4 tie for the top.
  const std::vector<float> q{1}, k{1, 2, 2, 0, 2, 1}, v{1, 2, 3, 4, 5, 6};
  Call call = make_call(Phase::Decode, Role::Anchor);
  call.params.k_min = 2;
  const Result r = attend(call, q.data(), k.data(), v.data(), 1, 1, 1, 6, 1);
  EXPECT_EQ(row_keys(r.selection, 0, 0), (std::vector<int32_t>{1, 2}));
  // All-equal scores (scale 0): the first k keys.
  call.params.scale = 0.0f;
  call.params.k_min = 3;
  const Result u = attend(call, q.data(), k.data(), v.data(), 1, 1, 1, 6, 1);
  EXPECT_EQ(row_keys(u.selection, 0, 0), (std::vector<int32_t>{0, 1, 2}));
  expect_close(u.out[0], (1 + 2 + 3) / 3.0);  // scale 0: the plain mean over the selection
}

TEST(ReferenceHand, PoolingAllSharesOneSelectionAcrossKvHeads) {
  // Hq = Hkv = 2 (G = 1), D = 1, q = 1. kv head 0 peaks at key 0 (score 5), kv head 1 at key 3 (score 1).
  const std::vector<float> q{1, 1}, k{5, 0, 0, 0, 0, 0, 0, 1}, v{1, 2, 3, 4, 5, 6, 7, 8};
  Call call = make_call(Phase::Decode, Role::Anchor);
  call.params.k_min = 1;
  const Result group = attend(call, q.data(), k.data(), v.data(), 2, 2, 1, 4, 1);
  ASSERT_EQ(group.selection.num_sets, 2);
  EXPECT_EQ(row_keys(group.selection, 0, 0), (std::vector<int32_t>{0}));
  EXPECT_EQ(row_keys(group.selection, 1, 0), (std::vector<int32_t>{3}));
  EXPECT_EQ(group.out[1], 8.0f);  // one selected key: its value exactly
  call.params.pooling = Pooling::All;
  // Pooled over both heads: key 0 has e^5/(e^5+3) + 1/(3+e) > key 3's 1/(e^5+3) + e/(3+e).
  const Result all = attend(call, q.data(), k.data(), v.data(), 2, 2, 1, 4, 1);
  ASSERT_EQ(all.selection.num_sets, 1);
  EXPECT_EQ(row_keys(all.selection, 0, 0), (std::vector<int32_t>{0}));
  EXPECT_EQ(all.out[0], 1.0f);
  EXPECT_EQ(all.out[1], 5.0f);  // kv head 1 reads the shared selection {0}
}

// Prefill, D = 1, Hq = Hkv = 1, T = 2, p0 = 0, n = 5, q = 1, scores = keys [0, 3, 1, 0, 2].
// Tiles: b = 0 (t 0,1; k = 0), b = 2 (t 2,3; k(2) = 1), b = 4 (t 4, partial; k(4) = 1).
struct TinyPrefill {
  std::vector<float> q{1, 1, 1, 1, 1}, k{0, 3, 1, 0, 2}, v{1, 2, 3, 4, 5};
  Call call = make_call(Phase::Prefill, Role::Anchor, 0);
  TinyPrefill() {
    call.params.k_min = 1;
    call.params.tile = 2;
    call.params.scale = 1.0f;
  }
  Result run() const { return attend(call, q.data(), k.data(), v.data(), 1, 1, 5, 5, 1); }
};

TEST(ReferenceHand, PrefillAnchorTilesDiagonalAndPartialLastTile) {
  TinyPrefill c;
  const Result r = c.run();
  const Selection& s = r.selection;
  ASSERT_EQ(s.num_tiles, 3);
  ASSERT_EQ(s.k_max, 1);
  EXPECT_EQ(s.index, (std::vector<int32_t>{-1, 1, 1}));
  EXPECT_EQ(s.count, (std::vector<int32_t>{0, 1, 1}));
  expect_close(r.out[0], 1.0);
  expect_close(r.out[1], weighted({{0, 1}, {3, 2}}));
  expect_close(r.out[2], weighted({{3, 2}, {1, 3}}));          // {1} + diagonal {2}
  expect_close(r.out[3], weighted({{3, 2}, {1, 3}, {0, 4}}));  // {1} + diagonal {2, 3}
  expect_close(r.out[4], weighted({{3, 2}, {2, 5}}));          // {1} + diagonal {4}
}

TEST(ReferenceHand, PrefillLayer0AndPooledMasses) {
  TinyPrefill c;
  c.call.role = Role::Layer0;
  const Result r = c.run();
  EXPECT_EQ(r.selection.index, (std::vector<int32_t>{-1, 1, 1}));
  expect_close(r.out[4], weighted({{0, 1}, {3, 2}, {1, 3}, {0, 4}, {2, 5}}));
  const Pooled p = pooled_mass(c.call, c.q.data(), c.k.data(), 1, 1, 5, 5, 1);
  EXPECT_EQ(p.prefix, (std::vector<int>{0, 2, 4}));
  const double e = std::exp(1.0), e3 = std::exp(3.0);
  const double z2 = 1 + e3 + e, z3 = 2 + e3 + e;  // rows t = 2 and t = 3
  EXPECT_NEAR(p.tile_mass(0, 1)[0], 1 / z2 + 1 / z3, 1e-14);
  EXPECT_NEAR(p.tile_mass(0, 1)[1], e3 / z2 + e3 / z3, 1e-14);
  EXPECT_EQ(p.tile_mass(0, 1)[2], 0.0);  // not a candidate of tile b = 2
  EXPECT_NEAR(p.tile_diagonal(0, 1), e / z2 + (e + 1) / z3, 1e-14);
  EXPECT_NEAR(p.tile_diagonal(0, 0), 2.0, 1e-14);  // b = 0: every row is all diagonal
  const int32_t key1 = 1;
  EXPECT_NEAR(covered_mass(p, 0, 1, &key1, 1), (e3 + e) / z2 + (e3 + e + 1) / z3, 1e-14);
}

TEST(ReferenceHand, PrefillUnalignedChunkTiles) {
  // p0 = 3, n = 8, T = 2: tiles b = 3 (t 3,4), 5 (t 5,6), 7 (t 7, partial).
  testing::Case c(2, 1, 5, 8, 4, 11);
  Call call = make_call(Phase::Prefill, Role::Anchor, 3);
  call.params.k_min = 2;
  call.params.tile = 2;
  EXPECT_EQ(num_query_tiles(call, 5, 8), 3);
  EXPECT_EQ(tile_prefix(call, 1, 8), 5);
  const Result r = c.run(call);
  ASSERT_EQ(r.selection.num_tiles, 3);
  ASSERT_EQ(r.selection.k_max, 2);
  for (int tau = 0; tau < 3; ++tau) {
    const std::vector<int32_t> keys = row_keys(r.selection, 0, tau);
    ASSERT_EQ(keys.size(), 2u);
    for (int32_t key : keys) EXPECT_LT(key, 3 + 2 * tau);
  }
}

TEST(ReferenceHand, BudgetModesAndSizesPerTile) {
  // n = 8, T = 2, rho = 0.5, k_min = 1. Rolling k(b) for b = 0,2,4,6: 0,1,2,3.
  // Fixed min(b, k(8) = 4): 0,2,4,4.
  testing::Case c(1, 1, 8, 8, 2, 3);
  Call call = make_call(Phase::Prefill, Role::Anchor);
  call.params.tile = 2;
  call.params.rho = 0.5;
  call.params.k_min = 1;
  const Result rolling = c.run(call);
  EXPECT_EQ(rolling.selection.count, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(rolling.selection.k_max, 3);
  call.params.budget = BudgetMode::Fixed;
  const Result fixed = c.run(call);
  EXPECT_EQ(fixed.selection.count, (std::vector<int32_t>{0, 2, 4, 4}));
  EXPECT_EQ(fixed.selection.k_max, 4);
  // A fixed budget covering the whole prefix is dense attention.
  Call dense = call;
  dense.role = Role::Dense;
  const Result d = c.run(dense);
  for (int t = 0; t < 6; ++t) EXPECT_EQ(fixed.out[t * 2], d.out[t * 2]) << "t=" << t;
}

TEST(ReferenceHand, KMultipleRoundsUpButNeverAboveN) {
  testing::Case c(1, 1, 1, 10, 2, 5);
  Call call = make_call(Phase::Decode, Role::Anchor);
  call.params.k_min = 3;
  call.params.k_multiple = 4;
  EXPECT_EQ(c.run(call).selection.count[0], 4);
  call.params.k_min = 9;  // 9 -> 12 -> capped at n = 10
  const Result r = c.run(call);
  EXPECT_EQ(r.selection.count[0], 10);
  EXPECT_EQ(r.selection.k_max, 10);
}

TEST(ReferenceHand, CustomScaleEqualsScaledQueries) {
  testing::Case c(2, 1, 1, 9, 4, 21);
  Call call = make_call(Phase::Decode, Role::Anchor);
  call.params.k_min = 3;
  call.params.scale = 2.0f;
  const Result scaled = c.run(call);
  testing::Case doubled = c;
  for (float& x : doubled.q) x *= 2.0f;  // exact in binary floating point
  call.params.scale = 1.0f;
  const Result r = doubled.run(call);
  EXPECT_EQ(scaled.out, r.out);
  EXPECT_EQ(scaled.selection.index, r.selection.index);
}

TEST(ReferenceHand, ShortContextBelowKMinIsDense) {
  testing::Case c(4, 2, 1, 5, 8, 31);
  Call call = make_call(Phase::Decode, Role::Anchor);  // k_min 128 > n = 5
  const Result anchor = c.run(call);
  EXPECT_EQ(row_keys(anchor.selection, 1, 0), (std::vector<int32_t>{0, 1, 2, 3, 4}));
  call.role = Role::Dense;
  EXPECT_EQ(anchor.out, c.run(call).out);
}

TEST(ReferenceHand, ReuseFollowsHeadMap) {
  // Hq = 4, Hkv = 2, D = 3. Set 0 = {0}, set 1 = {2}; map [1, 0]: kv head 0 reads {2}, kv head 1 reads {0}.
  testing::Case c(4, 2, 1, 6, 3, 41);
  Call call = make_call(Phase::Decode, Role::Reuse);
  call.params.k_min = 2;
  call.head_map = {1, 0};
  Selection sel = Selection::empty(2, 1, 2);
  sel.row(0, 0)[0] = 0;
  sel.row(1, 0)[0] = 2;
  sel.count = {1, 1};
  const Result r = c.run(call, &sel);
  EXPECT_TRUE(r.selection.index.empty());
  for (int e = 0; e < 3; ++e) {
    EXPECT_EQ(r.out[0 * 3 + e], c.v[(0 * 6 + 2) * 3 + e]);
    EXPECT_EQ(r.out[1 * 3 + e], c.v[(0 * 6 + 2) * 3 + e]);
    EXPECT_EQ(r.out[2 * 3 + e], c.v[(1 * 6 + 0) * 3 + e]);
    EXPECT_EQ(r.out[3 * 3 + e], c.v[(1 * 6 + 0) * 3 + e]);
  }
  // Pooling all: one set, head_map ignored.
  call.params.pooling = Pooling::All;
  Selection shared = Selection::empty(1, 1, 2);
  shared.row(0, 0)[0] = 4;
  shared.count = {1};
  const Result all = c.run(call, &shared);
  for (int e = 0; e < 3; ++e) {
    EXPECT_EQ(all.out[0 * 3 + e], c.v[(0 * 6 + 4) * 3 + e]);
    EXPECT_EQ(all.out[3 * 3 + e], c.v[(1 * 6 + 4) * 3 + e]);
  }
}

TEST(ReferenceHand, EmptySelectionGivesZeroRows) {
  testing::Case c(2, 1, 1, 6, 4, 51);
  Call call = make_call(Phase::Decode, Role::Anchor);
  call.params.k_min = 0;
  call.params.rho = 0.0;
  const Result r = c.run(call);
  EXPECT_EQ(r.selection.k_max, 0);
  EXPECT_EQ(r.selection.count, (std::vector<int32_t>{0}));
  EXPECT_EQ(r.out, std::vector<float>(8, 0.0f));
}

TEST(ReferenceHand, DenseAndAnchorMakeTheSameSelection) {
  testing::Case c(6, 2, 20, 50, 8, 61);
  Call call = make_call(Phase::Prefill, Role::Anchor, 30);
  call.params.k_min = 5;
  call.params.tile = 8;
  const Result anchor = c.run(call);
  call.role = Role::Layer0;
  const Result dense = c.run(call);
  EXPECT_EQ(anchor.selection.index, dense.selection.index);
  EXPECT_EQ(anchor.selection.count, dense.selection.count);
  EXPECT_NE(anchor.out, dense.out);
}

// ---- errors --------------------------------------------------------------------------------

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ReferenceHand, RejectsInconsistentCalls) {
  testing::Case c(3, 2, 1, 6, 4, 71);
  Call call = make_call(Phase::Decode, Role::Anchor);
  EXPECT_NE(error_of([&] { c.run(call); }).find("not a multiple of Hkv"), std::string::npos);
  testing::Case p(2, 1, 4, 6, 4, 72);
  Call prefill = make_call(Phase::Prefill, Role::Anchor, 1);
  EXPECT_NE(error_of([&] { p.run(prefill); }).find("does not match n - nq"), std::string::npos);
  Call decode = make_call(Phase::Decode, Role::Anchor);
  EXPECT_NE(error_of([&] { p.run(decode); }).find("exactly one query"), std::string::npos);
  Call reuse = make_call(Phase::Prefill, Role::Reuse, 2);
  EXPECT_NE(error_of([&] { p.run(reuse); }).find("needs the anchor's selection"), std::string::npos);
  Call mapped = make_call(Phase::Prefill, Role::Anchor, 2);
  mapped.head_map = {0};
  EXPECT_NE(error_of([&] { p.run(mapped); }).find("reuse only"), std::string::npos);
  Call bad_rho = make_call(Phase::Prefill, Role::Anchor, 2);
  bad_rho.params.rho = 1.5;
  EXPECT_NE(error_of([&] { p.run(bad_rho); }).find("rho"), std::string::npos);
  testing::Case nan_case = p;
  nan_case.k[5] = NAN;
  EXPECT_NE(error_of([&] { nan_case.run(mapped = make_call(Phase::Prefill, Role::Dense, 2)); }).find("k element 5"),
            std::string::npos);
}

TEST(ReferenceHand, RejectsMalformedSelections) {
  testing::Case c(2, 2, 1, 6, 4, 81);
  Call call = make_call(Phase::Decode, Role::Reuse);
  call.params.k_min = 2;
  auto with_rows = [](std::vector<int32_t> index, std::vector<int32_t> count) {
    Selection s = Selection::empty(2, 1, 3);
    s.index = std::move(index);
    s.count = std::move(count);
    return s;
  };
  const Selection out_of_range = with_rows({0, 6, -1, 0, -1, -1}, {2, 1});
  EXPECT_NE(error_of([&] { c.run(call, &out_of_range); }).find("not a candidate"), std::string::npos);
  const Selection descending = with_rows({3, 1, -1, 0, -1, -1}, {2, 1});
  EXPECT_NE(error_of([&] { c.run(call, &descending); }).find("ascending"), std::string::npos);
  const Selection gap = with_rows({1, -1, 2, 0, -1, -1}, {1, 1});
  EXPECT_NE(error_of([&] { c.run(call, &gap); }).find("padding must come last"), std::string::npos);
  const Selection too_many = with_rows({0, 1, 2, 0, -1, -1}, {3, 1});
  EXPECT_NE(error_of([&] { c.run(call, &too_many); }).find("budget"), std::string::npos);
  const Selection miscounted = with_rows({0, 1, -1, 0, -1, -1}, {2, 2});
  EXPECT_NE(error_of([&] { c.run(call, &miscounted); }).find("disagrees"), std::string::npos);
  const Selection wrong_shape = Selection::empty(1, 1, 3);
  EXPECT_NE(error_of([&] { c.run(call, &wrong_shape); }).find("expected [2, 1, k_max]"), std::string::npos);
}

}  // namespace
}  // namespace kascade::ref
