// Selection policies of the accuracy study (SPEC 8) on small hand cases, and the shared
// attention they feed (kascade/eval/policy.h).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kascade/error.h"
#include "kascade/eval/policy.h"
#include "kascade/plan.h"
#include "kascade/reference.h"

namespace kascade::eval {
namespace {

// Random q/k/v for one layer call, kept alive with the LayerInputs that point into them.
struct Case {
  std::vector<float> q, k, v;
  LayerInputs in;
  Case(Phase phase, int hq, int hkv, int nq, int n, int d, unsigned seed, int layer = 1) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> dist(0.f, 1.f);
    q.resize(static_cast<size_t>(hq) * nq * d);
    k.resize(static_cast<size_t>(hkv) * n * d);
    v.resize(k.size());
    for (float& x : q) x = dist(gen);
    for (float& x : k) x = dist(gen);
    for (float& x : v) x = dist(gen);
    in = LayerInputs{layer, phase, hq, hkv, nq, n, d, q.data(), k.data(), v.data()};
  }
};

SparsityParams budget(double rho, int k_min, int tile = 32) {
  SparsityParams p;
  p.rho = rho;
  p.k_min = k_min;
  p.tile = tile;
  return p;
}

std::vector<int32_t> row(const ref::Selection& s, int set, int tau) {
  return std::vector<int32_t>(s.row(set, tau), s.row(set, tau) + s.row_count(set, tau));
}

std::vector<int32_t> range(int from, int to) {
  std::vector<int32_t> r;
  for (int i = from; i < to; ++i) r.push_back(i);
  return r;
}

TEST(StreamingSelection, DecodeKeepsSinksAndTheMostRecentKeys) {
  Case c(Phase::Decode, 4, 2, 1, 300, 8, 1);
  // k(300) = max(8, floor(0.1 * 300)) = 30: 4 sinks and the 26 most recent keys (274..299).
  const ref::Selection s = streaming_selection(c.in, budget(0.1, 8));
  std::vector<int32_t> expected = range(0, 4);
  for (int32_t i : range(274, 300)) expected.push_back(i);
  ASSERT_EQ(s.num_sets, 2);
  EXPECT_EQ(row(s, 0, 0), expected);
  EXPECT_EQ(row(s, 1, 0), expected);
}

TEST(StreamingSelection, PrefillTilesSelectBeforeTheirOwnStart) {
  // p0 = 64, queries 64..127 in two tiles of 32 starting at b = 64 and b = 96; k_min 16, rho 0:
  // every tile keeps 4 sinks and the 12 keys just before b.
  Case c(Phase::Prefill, 2, 1, 64, 128, 4, 2);
  const ref::Selection s = streaming_selection(c.in, budget(0.0, 16));
  ASSERT_EQ(s.num_tiles, 2);
  std::vector<int32_t> t0 = range(0, 4), t1 = range(0, 4);
  for (int32_t i : range(52, 64)) t0.push_back(i);
  for (int32_t i : range(84, 96)) t1.push_back(i);
  EXPECT_EQ(row(s, 0, 0), t0);
  EXPECT_EQ(row(s, 0, 1), t1);
}

TEST(StreamingSelection, BudgetSmallerThanTheSinksKeepsOnlySinks) {
  Case c(Phase::Decode, 1, 1, 1, 10, 4, 3);
  const ref::Selection s = streaming_selection(c.in, budget(0.0, 2));
  EXPECT_EQ(row(s, 0, 0), range(0, 2));
}

// Quest hand case: one kv head, two query heads, D = 2, n = 48 (three pages of 16). Keys of
// page 1 reach far along dimension 0, which query head 1 points at; page 2 along dimension 1
// (smaller); page 0 is near zero.
struct QuestCase {
  std::vector<float> q = {0.f, 1.f, 1.f, 0.f};  // head 0 -> dim 1, head 1 -> dim 0
  std::vector<float> k, v;
  LayerInputs in;
  QuestCase() {
    for (int i = 0; i < 48; ++i) {
      const int page = i / 16;
      k.push_back(page == 1 ? 5.f : 0.01f);
      k.push_back(page == 2 ? 2.f : 0.01f);
    }
    v.assign(k.size(), 1.f);
    in = LayerInputs{1, Phase::Decode, 2, 1, 1, 48, 2, q.data(), k.data(), v.data()};
  }
};

TEST(QuestSelection, RanksWholePagesByTheirUpperBound) {
  QuestCase c;
  // k = 16: page 1 (bound 5 for head 1) wins over page 2 (bound 2 for head 0).
  EXPECT_EQ(row(quest_selection(c.in, budget(0.0, 16)), 0, 0), range(16, 32));
  // k = 20: page 1, then the first 4 keys of page 2.
  std::vector<int32_t> expected = range(16, 36);
  EXPECT_EQ(row(quest_selection(c.in, budget(0.0, 20)), 0, 0), expected);
}

TEST(QuestSelection, UsesTheMaximumOverTheGroupsHeads) {
  QuestCase c;
  // Without head 1 (it points at dimension 0) page 2 wins: the group's maximum decides.
  c.q = {0.f, 1.f, 0.f, 1.f};
  c.in.q = c.q.data();
  EXPECT_EQ(row(quest_selection(c.in, budget(0.0, 16)), 0, 0), range(32, 48));
}

TEST(QuestSelection, NegativeQueryUsesThePageMinimum) {
  QuestCase c;
  // q = -1 along dimension 0: the bound is -min, largest for pages whose minimum is lowest.
  for (int i = 32; i < 48; ++i) c.k[static_cast<size_t>(i) * 2] = -3.f;
  c.q = {-1.f, 0.f, -1.f, 0.f};
  c.in.q = c.q.data();
  EXPECT_EQ(row(quest_selection(c.in, budget(0.0, 16)), 0, 0), range(32, 48));
}

TEST(QuestSelection, RejectsPrefill) {
  Case c(Phase::Prefill, 2, 1, 8, 8, 4, 4);
  EXPECT_THROW(quest_selection(c.in, budget(0.1, 2)), Error);
}

TEST(PooledTopK, MatchesTheOracleAnchorSelection) {
  for (Phase phase : {Phase::Decode, Phase::Prefill}) {
    for (Pooling pooling : {Pooling::Group, Pooling::All}) {
      Case c(phase, 6, 2, phase == Phase::Decode ? 1 : 70, 200, 8, 5);
      const SparsityParams p = budget(0.1, 12, 16);
      const ref::Selection mine = pooled_top_k(c.in, p, pooling);
      const ref::Call call = make_call(c.in, p, Role::Anchor, pooling);
      const ref::Result r = ref::attend(call, c.q.data(), c.k.data(), c.v.data(), 6, 2, c.in.nq, 200, 8);
      ASSERT_EQ(mine.num_sets, 2);  // one row per kv head, also with all-heads pooling
      for (int g = 0; g < 2; ++g) {
        const int set = pooling == Pooling::All ? 0 : g;
        for (int tau = 0; tau < mine.num_tiles; ++tau) EXPECT_EQ(row(mine, g, tau), row(r.selection, set, tau));
      }
    }
  }
}

TEST(RemapSets, RowGReadsTheMappedRow) {
  ref::Selection s = ref::Selection::empty(3, 1, 2);
  for (int g = 0; g < 3; ++g) {
    s.row(g, 0)[0] = g;
    s.count[static_cast<size_t>(g)] = 1;
  }
  const ref::Selection m = remap_sets(s, {2, 2, 0});
  EXPECT_EQ(row(m, 0, 0), std::vector<int32_t>{2});
  EXPECT_EQ(row(m, 1, 0), std::vector<int32_t>{2});
  EXPECT_EQ(row(m, 2, 0), std::vector<int32_t>{0});
  EXPECT_THROW(remap_sets(s, {3, 0, 0}), Error);
}

TEST(EvenlySpacedLayers, StartsAtZero) {
  EXPECT_EQ(evenly_spaced_layers(30, 5), (std::vector<int>{0, 6, 12, 18, 24}));
  EXPECT_EQ(evenly_spaced_layers(30, 4), (std::vector<int>{0, 7, 15, 22}));
  EXPECT_THROW(evenly_spaced_layers(4, 5), Error);
}

Plan two_anchor_plan() {
  // 4 layers, anchors 0 and 2; layer 1 reads anchor 0 with kv heads swapped, layer 3 identity.
  Plan plan = make_uniform_plan("test", 4, 4, 2, 8, {0, 2});
  plan.head_map[1] = {1, 0};
  return plan;
}

std::vector<float> attend(SelectionPolicy& policy, const SparsityParams& p, const LayerInputs& in) {
  std::vector<float> out(static_cast<size_t>(in.hq) * in.nq * in.d);
  attend_layer(policy, p, in, out.data());
  return out;
}

std::vector<float> dense_reference(const LayerInputs& in) {
  ref::Call call;
  call.phase = in.phase;
  call.role = Role::Dense;
  call.p0 = in.phase == Phase::Prefill ? in.p0() : 0;
  return ref::attend(call, in.q, in.k, in.v, in.hq, in.hkv, in.nq, in.n, in.d).out;
}

TEST(KascadePolicy, ReuseLayerReadsItsAnchorThroughTheHeadMap) {
  const Plan plan = two_anchor_plan();
  const SparsityParams p = budget(0.1, 16, 32);
  PolicyContext ctx{p, 4, &plan};
  auto policy = make_policy("kascade", ctx);
  for (Phase phase : {Phase::Decode, Phase::Prefill}) {
    policy->reset();
    const int nq = phase == Phase::Decode ? 1 : 96;
    Case l0(phase, 4, 2, nq, 256, 8, 10, 0), l1(phase, 4, 2, nq, 256, 8, 11, 1);
    // Layer 0 is dense and selects for layer 1.
    EXPECT_EQ(attend(*policy, p, l0.in), dense_reference(l0.in));
    const std::vector<float> out1 = attend(*policy, p, l1.in);
    ref::Call reuse = make_call(l1.in, p, Role::Reuse, Pooling::Group);
    reuse.head_map = {1, 0};
    const ref::Selection anchor = pooled_top_k(l0.in, p, Pooling::Group);
    const ref::Result expected = ref::attend(reuse, l1.q.data(), l1.k.data(), l1.v.data(), 4, 2, nq, 256, 8, &anchor);
    EXPECT_EQ(out1, expected.out);
  }
}

TEST(KascadePolicy, AnchorAttendsToItsOwnSelection) {
  const Plan plan = two_anchor_plan();
  const SparsityParams p = budget(0.1, 16, 32);
  PolicyContext ctx{p, 4, &plan};
  auto policy = make_policy("kascade", ctx);
  Case l0(Phase::Decode, 4, 2, 1, 256, 8, 20, 0), l1(Phase::Decode, 4, 2, 1, 256, 8, 21, 1),
      l2(Phase::Decode, 4, 2, 1, 256, 8, 22, 2);
  attend(*policy, p, l0.in);
  attend(*policy, p, l1.in);
  ref::Call anchor = make_call(l2.in, p, Role::Anchor, Pooling::Group);
  EXPECT_EQ(attend(*policy, p, l2.in),
            ref::attend(anchor, l2.q.data(), l2.k.data(), l2.v.data(), 4, 2, 1, 256, 8).out);
}

TEST(KascadePolicy, ReuseWithoutItsAnchorIsAnError) {
  const Plan plan = two_anchor_plan();
  PolicyContext ctx{budget(0.1, 16), 4, &plan};
  auto policy = make_policy("kascade", ctx);
  Case l1(Phase::Decode, 4, 2, 1, 64, 8, 30, 1);
  EXPECT_THROW(attend(*policy, ctx.params, l1.in), Error);
}

TEST(KascadePooledPolicy, EveryKvHeadReadsOneSelection) {
  const Plan plan = two_anchor_plan();
  const SparsityParams p = budget(0.05, 8);
  PolicyContext ctx{p, 4, &plan};
  auto policy = make_policy("kascade-pooled", ctx);
  Case l0(Phase::Decode, 4, 2, 1, 300, 8, 40, 0), l1(Phase::Decode, 4, 2, 1, 300, 8, 41, 1);
  policy->select(l0.in);
  const KeySet keys = policy->select(l1.in);
  ASSERT_FALSE(keys.dense);
  EXPECT_EQ(row(keys.selection, 0, 0), row(keys.selection, 1, 0));
  EXPECT_EQ(keys.selection.row_count(0, 0), 15);  // k(300) = floor(0.05 * 300)
}

TEST(OmniKvPolicy, FilterLayersAreDenseAndShareOnePooledSelection) {
  const Plan plan = two_anchor_plan();  // 2 anchors -> filter layers 0 and 2
  const SparsityParams p = budget(0.1, 16);
  PolicyContext ctx{p, 4, &plan};
  auto policy = make_policy("omnikv", ctx);
  Case l0(Phase::Decode, 4, 2, 1, 256, 8, 50, 0), l1(Phase::Decode, 4, 2, 1, 256, 8, 51, 1),
      l2(Phase::Decode, 4, 2, 1, 256, 8, 52, 2);
  EXPECT_TRUE(policy->select(l0.in).dense);
  const KeySet k1 = policy->select(l1.in);
  ASSERT_FALSE(k1.dense);
  const ref::Selection pooled = pooled_top_k(l0.in, p, Pooling::All);
  EXPECT_EQ(row(k1.selection, 0, 0), row(pooled, 0, 0));
  EXPECT_EQ(row(k1.selection, 1, 0), row(pooled, 0, 0));
  EXPECT_TRUE(policy->select(l2.in).dense);
  // Decode only: a prefill call is dense at every layer.
  Case prefill(Phase::Prefill, 4, 2, 64, 64, 8, 53, 1);
  EXPECT_TRUE(policy->select(prefill.in).dense);
}

TEST(TidalSelectionLayers, EvenlySpacedFromLayerTwoOverTwoThirdsOfTheRest) {
  // L = 30: S = floor(2 * 28 / 3) = 18; 4 layers at 2 + floor(i * 18 / 4).
  EXPECT_EQ(tidal_selection_layers(30, 4), (std::vector<int>{2, 6, 11, 15}));
  EXPECT_EQ(tidal_selection_layers(30, 1), (std::vector<int>{2}));
  EXPECT_EQ(tidal_selection_layers(32, 2), (std::vector<int>{2, 12}));  // S = 20
  // Fewer layers than requested: the count is lowered to S (each layer at most once).
  EXPECT_EQ(tidal_selection_layers(7, 10), (std::vector<int>{2, 3, 4}));  // S = 3
  EXPECT_EQ(tidal_selection_layers(3, 4), (std::vector<int>{2}));         // S = 0: layer 2 alone
  EXPECT_TRUE(tidal_selection_layers(2, 1).empty());                      // only dense layers
  EXPECT_THROW(tidal_selection_layers(30, 0), Error);
}

TEST(TidalPolicy, DenseEarlyLayersThenSelectionLayersSharedByEveryKvHead) {
  // 8 layers, a plan of 3 anchors: m = 2 selection layers, S = floor(2 * 6 / 3) = 4: layers 2, 4.
  const Plan plan = make_uniform_plan("t", 8, 4, 2, 8, {0, 3, 6});
  const SparsityParams p = budget(0.1, 16);
  PolicyContext ctx{p, 8, &plan};
  auto policy = make_policy("tidal", ctx);
  std::vector<Case> layers;
  for (int l = 0; l < 8; ++l) layers.emplace_back(Phase::Decode, 4, 2, 1, 300, 8, 90 + l, l);
  const ref::Selection from2 = pooled_top_k(layers[2].in, p, Pooling::All);
  const ref::Selection from4 = pooled_top_k(layers[4].in, p, Pooling::All);
  ASSERT_NE(row(from2, 0, 0), row(from4, 0, 0));
  for (int l = 0; l < 8; ++l) {
    const KeySet keys = policy->select(layers[static_cast<size_t>(l)].in);
    const bool dense_layer = l == 0 || l == 1 || l == 2 || l == 4;
    ASSERT_EQ(keys.dense, dense_layer) << "layer " << l;
    if (dense_layer) continue;
    const ref::Selection& expected = l < 4 ? from2 : from4;
    ASSERT_EQ(keys.selection.num_sets, 2) << "layer " << l;
    for (int g = 0; g < 2; ++g) EXPECT_EQ(row(keys.selection, g, 0), row(expected, 0, 0)) << "layer " << l;
    EXPECT_EQ(keys.selection.row_count(0, 0), 30);  // k(300) = floor(0.1 * 300)
  }
  // A reading layer whose selection layer did not run in this step is an error.
  policy->reset();
  EXPECT_THROW(policy->select(layers[3].in), Error);
  // Decode only: every layer of a prefill call is dense.
  for (int l = 0; l < 8; ++l) {
    Case prefill(Phase::Prefill, 4, 2, 64, 64, 8, 99, l);
    EXPECT_TRUE(policy->select(prefill.in).dense) << "layer " << l;
  }
}

TEST(TidalPolicy, TwoLayerModelIsDense) {
  const Plan plan = make_uniform_plan("t", 2, 4, 2, 8, {0, 1});
  PolicyContext ctx{budget(0.05, 4), 2, &plan};
  auto policy = make_policy("tidal", ctx);
  for (int l = 0; l < 2; ++l) {
    Case c(Phase::Decode, 4, 2, 1, 200, 8, 100 + l, l);
    EXPECT_TRUE(policy->select(c.in).dense);
  }
}

TEST(Policies, AtFullBudgetEveryPolicyEqualsDense) {
  const Plan plan = two_anchor_plan();
  const SparsityParams p = budget(1.0, 0, 32);
  PolicyContext ctx{p, 4, &plan};
  for (Phase phase : {Phase::Decode, Phase::Prefill}) {
    const int nq = phase == Phase::Decode ? 1 : 80;
    std::vector<Case> layers;
    for (int l = 0; l < 4; ++l) layers.emplace_back(phase, 4, 2, nq, 150, 8, 60 + l, l);
    for (const std::string& name : policy_names()) {
      auto policy = make_policy(name, ctx);
      for (const Case& c : layers) {
        const std::vector<float> out = attend(*policy, p, c.in);
        const std::vector<float> dense = dense_reference(c.in);
        EXPECT_LE(ref::relative_l2_error(dense.data(), out.data(), out.size()), 1e-12)
            << name << " layer " << c.in.layer << " " << to_string(phase);
      }
    }
  }
}

TEST(Policies, SparsePoliciesDifferFromDenseAtASmallBudget) {
  // Layer 3 of the 4-layer plan is sparse under every policy: a reuse layer of kascade, read from
  // filter layer 2 by omnikv, from selection layer 2 by tidal, its own selection for the others.
  const Plan plan = two_anchor_plan();
  const SparsityParams p = budget(0.05, 4);
  PolicyContext ctx{p, 4, &plan};
  std::vector<Case> layers;
  for (int l = 0; l < 4; ++l) layers.emplace_back(Phase::Decode, 4, 2, 1, 400, 8, 70 + l, l);
  for (const std::string& name : policy_names()) {
    if (name == "dense") continue;
    auto policy = make_policy(name, ctx);
    std::vector<float> out;
    for (const Case& c : layers) out = attend(*policy, p, c.in);
    EXPECT_GT(ref::relative_l2_error(dense_reference(layers[3].in).data(), out.data(), out.size()), 1e-3) << name;
  }
}

TEST(Policies, KeysAttendedCountTheSelectionAndTheDiagonal) {
  const Plan plan = two_anchor_plan();
  const SparsityParams p = budget(0.0, 10, 32);
  PolicyContext ctx{p, 4, &plan};
  auto streaming = make_policy("streaming", ctx);
  std::vector<float> out(4 * 64 * 8);
  // Prefill p0 = 64 over n = 128: tiles at b = 64 and 96, 10 selected keys each, diagonal 1..32
  // per query: per kv head 2 * 32 * 10 + 2 * (32 * 33 / 2), times G = 2 heads per kv head.
  Case c(Phase::Prefill, 4, 2, 64, 128, 8, 80, 1);
  EXPECT_EQ(attend_layer(*streaming, p, c.in, out.data()), 2.0 * 2 * (2 * 32 * 10 + 2 * 528));
  auto dense = make_policy("dense", ctx);
  double causal = 0;
  for (int t = 64; t < 128; ++t) causal += t + 1;
  EXPECT_EQ(attend_layer(*dense, p, c.in, out.data()), 4 * causal);
}

TEST(MakePolicy, UnknownNameAndMissingPlanAreErrors) {
  PolicyContext ctx{budget(0.1, 16), 4, nullptr};
  EXPECT_THROW(make_policy("h2o", ctx), Error);
  EXPECT_THROW(make_policy("kascade", ctx), Error);
  EXPECT_THROW(make_policy("omnikv", ctx), Error);
  EXPECT_THROW(make_policy("tidal", ctx), Error);
  EXPECT_NO_THROW(make_policy("quest", ctx));
}

}  // namespace
}  // namespace kascade::eval
