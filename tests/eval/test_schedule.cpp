// Layer schedules of the selection policies (kascade/eval/scoring.h make_attention_schedule):
// executed on the host (make_schedule_policy), every policy's schedule selects exactly what the
// policy itself selects, layer by layer, in decode and prefill. The GPU backend runs the same
// schedules on its kernels (policy-gpu-check compares those with the host).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kascade/engine/attention_schedule.h"
#include "kascade/error.h"
#include "kascade/eval/policy.h"
#include "kascade/eval/scoring.h"
#include "kascade/plan.h"

namespace kascade::eval {
namespace {

constexpr int kLayers = 8, kHq = 4, kHkv = 2, kD = 8;

struct LayerData {
  std::vector<float> q, k, v;
};

// One random q/k/v per layer for a call of nq queries over n keys.
std::vector<LayerData> random_layers(int nq, int n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.5f);
  std::vector<LayerData> layers(kLayers);
  for (LayerData& l : layers) {
    l.q.resize(static_cast<size_t>(kHq) * nq * kD);
    l.k.resize(static_cast<size_t>(kHkv) * n * kD);
    l.v.resize(l.k.size());
    for (float& x : l.q) x = dist(gen);
    for (float& x : l.k) x = dist(gen);
    for (float& x : l.v) x = dist(gen);
  }
  return layers;
}

Plan test_plan() {
  Plan plan = make_uniform_plan("schedule-test", kLayers, kHq, kHkv, kD, {0, 3, 5});
  plan.head_map[1] = {1, 0};
  plan.head_map[4] = {1, 1};
  plan.head_map[7] = {0, 0};
  return plan;
}

void expect_same(const KeySet& a, const KeySet& b, const std::string& where) {
  ASSERT_EQ(a.dense, b.dense) << where;
  if (a.dense) return;
  ASSERT_EQ(a.selection.num_sets, b.selection.num_sets) << where;
  ASSERT_EQ(a.selection.num_tiles, b.selection.num_tiles) << where;
  for (int s = 0; s < a.selection.num_sets; ++s) {
    for (int tau = 0; tau < a.selection.num_tiles; ++tau) {
      ASSERT_EQ(a.selection.row_count(s, tau), b.selection.row_count(s, tau)) << where << " set " << s;
      for (int j = 0; j < a.selection.row_count(s, tau); ++j) {
        ASSERT_EQ(a.selection.row(s, tau)[j], b.selection.row(s, tau)[j]) << where << " set " << s << " key " << j;
      }
    }
  }
}

void check_policy(const std::string& name, Phase phase, int nq, int n) {
  const Plan plan = test_plan();
  PolicySpec spec{name, {}, &plan};
  spec.params.rho = 0.1;
  spec.params.k_min = 8;
  spec.params.tile = 16;
  const PolicyContext ctx{spec.params, kLayers, &plan};
  auto policy = make_policy(name, ctx);
  const engine::AttentionSchedule schedule = make_attention_schedule(spec, kLayers);
  schedule.validate(kLayers, kHkv);
  auto executed = make_schedule_policy(schedule);
  const std::vector<LayerData> data = random_layers(nq, n, 17);
  for (int l = 0; l < kLayers; ++l) {
    const LayerData& d = data[static_cast<size_t>(l)];
    const LayerInputs in{l, phase, kHq, kHkv, nq, n, kD, d.q.data(), d.k.data(), d.v.data()};
    expect_same(policy->select(in), executed->select(in),
                name + (phase == Phase::Decode ? " decode" : " prefill") + " layer " + std::to_string(l));
  }
}

TEST(Schedule, EveryPolicySelectsAsItsScheduleInDecode) {
  for (const std::string& name : policy_names()) check_policy(name, Phase::Decode, 1, 300);
}

TEST(Schedule, EveryPolicySelectsAsItsScheduleInPrefill) {
  for (const std::string& name : policy_names()) {
    if (name == "streaming") continue;  // its prefill rule has no GPU kernel; checked below
    check_policy(name, Phase::Prefill, 70, 200);
  }
  check_policy("streaming", Phase::Prefill, 70, 200);  // the host semantics still agree
}

// The keys the GPU path reports (computed from the schedule) are the keys the host policies count.
TEST(Schedule, KeysAttendedMatchTheHostPolicies) {
  const Plan plan = test_plan();
  const int n = 300;
  const std::vector<LayerData> data = random_layers(1, n, 5);
  for (const std::string& name : policy_names()) {
    PolicySpec spec{name, {}, &plan};
    spec.params.rho = 0.1;
    spec.params.k_min = 8;
    const PolicyContext ctx{spec.params, kLayers, &plan};
    auto policy = make_policy(name, ctx);
    double host = 0;
    std::vector<float> out(static_cast<size_t>(kHq) * kD);
    for (int l = 0; l < kLayers; ++l) {
      const LayerData& d = data[static_cast<size_t>(l)];
      const LayerInputs in{l, Phase::Decode, kHq, kHkv, 1, n, kD, d.q.data(), d.k.data(), d.v.data()};
      host += attend_layer(*policy, spec.params, in, out.data());
    }
    const double scheduled = schedule_keys_attended(make_attention_schedule(spec, kLayers), n - 1, 1, kHq);
    EXPECT_DOUBLE_EQ(host, scheduled) << name;
  }
}

// "kascade" is the plan as calibrated: with an all-heads-pooled plan it is kascade-pooled, and its
// schedule pools all heads too.
TEST(Schedule, KascadeFollowsThePlansPooling) {
  Plan plan = test_plan();
  plan.sparsity.pooling = Pooling::All;
  SparsityParams params;
  params.rho = 0.1;
  params.k_min = 8;
  const PolicyContext ctx{params, kLayers, &plan};
  auto as_planned = make_policy("kascade", ctx);
  auto pooled = make_policy("kascade-pooled", ctx);
  const engine::AttentionSchedule schedule = make_attention_schedule(PolicySpec{"kascade", params, &plan}, kLayers);
  auto executed = make_schedule_policy(schedule);
  const std::vector<LayerData> data = random_layers(1, 300, 23);
  for (int l = 0; l < kLayers; ++l) {
    const LayerData& d = data[static_cast<size_t>(l)];
    const LayerInputs in{l, Phase::Decode, kHq, kHkv, 1, 300, kD, d.q.data(), d.k.data(), d.v.data()};
    const KeySet a = as_planned->select(in);
    expect_same(a, pooled->select(in), "pooled plan, layer " + std::to_string(l));
    expect_same(a, executed->select(in), "pooled plan schedule, layer " + std::to_string(l));
    EXPECT_EQ(schedule.layers[static_cast<size_t>(l)].pooling, Pooling::All);
  }
}

TEST(Schedule, PlanScheduleHasThePlansRoles) {
  const Plan plan = test_plan();
  const engine::AttentionSchedule s = engine::schedule_from_plan(plan);
  s.validate(kLayers, kHkv);
  EXPECT_EQ(s.layers[0].rule, engine::LayerRule::DenseSelect);
  EXPECT_EQ(s.layers[3].rule, engine::LayerRule::Select);
  EXPECT_EQ(s.layers[4].rule, engine::LayerRule::Reuse);
  EXPECT_EQ(s.layers[4].slot, 1);
  EXPECT_EQ(s.layers[4].head_map, (std::vector<int>{1, 1}));
  EXPECT_EQ(s.slots, 3);
  EXPECT_FALSE(s.attends_selection(0));
  EXPECT_TRUE(s.attends_selection(3));
  EXPECT_FALSE(s.reads_selection_only(3));  // an anchor ranks every key
  EXPECT_TRUE(s.reads_selection_only(4));
}

TEST(Schedule, ValidateNamesTheProblem) {
  engine::AttentionSchedule s = engine::dense_schedule(kLayers);
  s.slots = 1;
  s.layers[2].rule = engine::LayerRule::Reuse;
  s.layers[2].slot = 0;
  EXPECT_THROW(s.validate(kLayers, kHkv), Error);  // reads a slot nobody wrote
  s.layers[1].rule = engine::LayerRule::Select;
  s.layers[1].slot = 0;
  s.validate(kLayers, kHkv);
  s.layers[2].head_map = {0, 2};
  EXPECT_THROW(s.validate(kLayers, kHkv), Error);  // head map entry out of range
  s.layers[2].head_map = {};
  s.layers[2].pooling = Pooling::All;
  EXPECT_THROW(s.validate(kLayers, kHkv), Error);  // pooling differs from the writer's
  EXPECT_THROW(s.validate(kLayers + 1, kHkv), Error);
}

TEST(Schedule, PoliciesWithoutAPlanAreRefused) {
  PolicySpec spec{"kascade", {}, nullptr};
  EXPECT_THROW(make_attention_schedule(spec, kLayers), Error);
  spec.name = "no-such-policy";
  EXPECT_THROW(make_attention_schedule(spec, kLayers), Error);
}

}  // namespace
}  // namespace kascade::eval
