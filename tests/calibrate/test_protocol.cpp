// Calibration on the engine (kascade/calibrate/protocol.h), end to end on the tiny test model
// (tests/data/engine/tiny_llama.gguf: 2 layers, 4 query / 2 kv heads, 40 tokens, context 256)
// with a word-level stand-in tokenizer and a tiny dev set: both statistics, the held-out
// scorer against dense, the choice, the plan and the report; bad input.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "calibrate_test_util.h"
#include "dev_test_util.h"
#include "kascade/calibrate/protocol.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/gguf.h"
#include "kascade/engine/model.h"

using namespace kascade;
using kascade::testing::dev_documents;
using kascade::testing::word_tokenizer;

namespace {

const engine::Model& tiny_model() {
  static const engine::Model model =
      engine::load_model(engine::GgufFile::open(std::string(KASCADE_TEST_DATA) + "/engine/tiny_llama.gguf"));
  return model;
}

const DevMix& tiny_mix() {
  static const DevMix mix = [] {
    DevMixConfig c;
    c.prompts = 12;
    c.length = 200;
    c.continuation_rows = 8;
    return make_dev_mix(c, word_tokenizer(tiny_model().config.vocab), dev_documents());
  }();
  return mix;
}

// A small budget so that sparse plans really differ from dense at these lengths.
SparsityParams sparse_params(double rho = 0.1) {
  SparsityParams p;
  p.rho = rho;
  p.k_min = 16;
  return p;
}

CalibrationRunConfig tiny_run_config() {
  CalibrationRunConfig c;
  c.threads = 2;
  c.m_lo = 1;
  c.m_hi = 2;
  c.params = sparse_params();
  c.statistics.generated_rows = 4;
  return c;
}

CalibrationTarget tiny_target() {
  const engine::ModelConfig& c = tiny_model().config;
  return {"tiny-llama", c.layers, c.hq, c.hkv, c.head_dim};
}

}  // namespace

TEST(Protocol, StatisticsCountTilesAndTheGeneratedRows) {
  const engine::ModelConfig& c = tiny_model().config;
  engine::BackendOptions options;
  options.threads = 2;
  options.prefill_chunk = 256;
  auto backend = engine::make_backend("cpu", tiny_model(), nullptr, options);
  int steps = 0;
  const CollectedStatistics s = collect_statistics(*backend, c, tiny_mix().statistics, StatisticsConfig{},
                                                   [](int32_t) { return false; }, [&](int, int) { ++steps; });
  EXPECT_EQ(steps, 6);
  EXPECT_EQ(s.spec.prompts(), 6);
  EXPECT_EQ(s.paper.prompts(), 6);
  EXPECT_EQ(s.spec.k_cal(), 64);
  EXPECT_EQ(s.paper.k_cal(), 32);
  EXPECT_EQ(s.generated_rows, 6 * 16);       // nothing stops: every prompt gets 16 rows
  EXPECT_EQ(s.spec.counted_rows(), 0);       // spec: prefill tiles only
  EXPECT_EQ(s.paper.counted_rows(), 6 * 16 * c.layers * c.hkv);
  EXPECT_GT(s.paper.counted_tiles(), s.spec.counted_tiles());  // k_cal 32 counts tiles from b = 64 on
  EXPECT_EQ(s.paper.minima_total(), 6 * c.hkv * c.hkv);        // one reuse pair (0 -> 1) per prompt
  EXPECT_LE(s.paper.minima_from_decode_rows(), s.paper.minima_total());
  EXPECT_EQ(s.spec.importance(), s.paper.importance());
  // A stop token ends the answer: no rows at all when every token stops.
  const CollectedStatistics stopped = collect_statistics(*backend, c, tiny_mix().statistics, StatisticsConfig{},
                                                         [](int32_t) { return true; });
  EXPECT_EQ(stopped.generated_rows, 0);
  EXPECT_EQ(stopped.paper.counted_rows(), 0);
  EXPECT_EQ(stopped.paper.minima_from_decode_rows(), 0);
}

TEST(Protocol, HeldOutScorerIsZeroAtFullBudgetAndPositiveWhenSparse) {
  const engine::Model& model = tiny_model();
  const std::vector<int> anchors = {0};
  HeadMap identity(2, std::vector<int>{0, 1});
  HeldOutConfig full;
  full.threads = 2;
  full.params = sparse_params(1.0);  // rho 1: every selection is every key, so the plan is dense
  HeldOutScorer dense_equal(model, tiny_mix().held_out, full);
  const CandidateLoss zero = dense_equal.score(anchors, identity, Pooling::Group);
  EXPECT_LT(zero.kl, 1e-6);
  EXPECT_NEAR(zero.answer_loss, dense_equal.dense_loss().answer_loss, 1e-4);
  ASSERT_EQ(zero.kinds.size(), 3u);
  EXPECT_EQ(zero.kinds[0].kind, "retrieval");
  EXPECT_EQ(zero.kinds[0].prompts, 2);

  HeldOutConfig sparse = full;
  sparse.params = sparse_params(0.1);
  HeldOutScorer scorer(model, tiny_mix().held_out, sparse);
  const CandidateLoss group = scorer.score(anchors, identity, Pooling::Group);
  EXPECT_GT(group.kl, 1e-4);
  EXPECT_TRUE(std::isfinite(group.answer_loss));
  // Scoring leaves every prompt's cache as it was: the same plan scores the same again.
  const CandidateLoss again = scorer.score(anchors, identity, Pooling::Group);
  EXPECT_EQ(again.kl, group.kl);
  // Reusing kv head 1's selection for kv head 0 is another plan with another loss.
  const HeadMap swapped = {{0, 1}, {1, 0}};
  EXPECT_NE(scorer.score(anchors, swapped, Pooling::Group).kl, group.kl);
  EXPECT_EQ(scorer.make_plan(anchors, swapped, Pooling::Group).head_map, swapped);
  EXPECT_EQ(scorer.make_plan(anchors, swapped, Pooling::All).head_map, identity);
}

TEST(Protocol, EndToEndOnTheTinyModel) {
  const engine::Model& model = tiny_model();
  std::vector<std::string> stages;
  PlanProvenance provenance;
  provenance.tool_version = "test";
  const CalibrationRun run =
      run_calibration(model, tiny_mix(), tiny_run_config(), [](int32_t) { return false; }, tiny_target(), provenance,
                      [&](const std::string& stage, int, int, const std::string&) {
                        if (stages.empty() || stages.back() != stage) stages.push_back(stage);
                      });
  // Two layers leave no anchor to move: no search, so no pooling stage after it (both poolings
  // of every candidate were scored as candidates).
  EXPECT_EQ(stages, (std::vector<std::string>{"statistics", "held-out", "candidates"}));
  const Plan& plan = run.plan;
  check_plan_matches(plan, 2, 4, 2, 8);
  EXPECT_EQ(plan.model_name, "tiny-llama");
  EXPECT_EQ(plan.sparsity.k_min, 16);
  ASSERT_TRUE(plan.calibration && plan.calibration->selection);
  const PlanSelection& sel = *plan.calibration->selection;
  ASSERT_EQ(sel.evaluated.size(), run.choice.evaluations.size());
  // The plan is the evaluation with the lowest loss.
  const Evaluation& chosen = run.choice.evaluations[static_cast<size_t>(run.choice.chosen)];
  for (const Evaluation& e : run.choice.evaluations) EXPECT_FALSE(better_loss(e.loss, chosen.loss));
  EXPECT_EQ(plan.anchors, chosen.anchors);
  EXPECT_EQ(plan.sparsity.pooling, chosen.pooling);
  EXPECT_EQ(sel.statistic, to_string(chosen.statistic));
  EXPECT_EQ(*plan.calibration->k_cal, chosen.statistic == Statistic::Spec ? 64 : 32);
  // Candidates: {0} under each statistic's map (m = 1) and {0, 1} (m = 2, every layer an anchor).
  int m1 = 0, m2 = 0;
  for (const CandidatePlan& c : run.candidates) (c.anchors.size() == 1 ? m1 : m2)++;
  EXPECT_GE(m1, 1);
  EXPECT_EQ(m2, 1);
  for (const Evaluation& e : run.choice.evaluations) {
    EXPECT_GE(e.loss.kl, 0.0);
    EXPECT_EQ(e.loss.kinds.size(), 3u);
  }
  EXPECT_EQ(run.choice.search_evaluations, 0);  // two layers leave no anchor to move
  EXPECT_EQ(run.spec.prompts, 6);
  EXPECT_GT(run.paper.counted_rows, 0);
  EXPECT_EQ(run.paper_generated_rows, 6 * 4);
  int64_t rows = 0;
  for (const DevExample& ex : tiny_mix().held_out) rows += static_cast<int64_t>(ex.rows.size());
  EXPECT_EQ(run.held_out_rows, rows);

  const nlohmann::json report = run_report_json(run);
  EXPECT_EQ(report["format"], "kascade-calibration-report");
  EXPECT_EQ(report["version"], 2);
  EXPECT_EQ(report["evaluations"].size(), run.choice.evaluations.size());
  EXPECT_EQ(report["chosen"], run.choice.chosen);
  EXPECT_EQ(report["statistics"]["paper"]["k_cal"], 32);
  EXPECT_EQ(report["statistics"]["paper"]["decode_rows"]["generated"], 24);
  EXPECT_TRUE(report["statistics"]["spec"].contains("layer_scores"));
  EXPECT_TRUE(report["statistics"]["spec"].contains("importance"));
  EXPECT_EQ(report["dev_set"]["held_out_prompts"].size(), 6u);
  EXPECT_EQ(report["dense"]["kinds"].size(), 3u);
  // The plan writes and reads back with its choice.
  const Plan reread = parse_plan(to_json(plan), "tiny plan");
  EXPECT_EQ(reread.calibration->selection->chosen, run.choice.chosen);

  // Every candidate's anchors were scored pooled too.
  for (const CandidatePlan& c : run.candidates) {
    bool pooled = false;
    for (const Evaluation& e : run.choice.evaluations) pooled = pooled || (e.anchors == c.anchors && e.pooling == Pooling::All);
    EXPECT_TRUE(pooled);
  }
  // The best plan of each anchor count: m = 1 and m = 2, each the lowest of its count, its plan
  // naming it as chosen.
  const std::vector<int> best = best_evaluation_per_anchor_count(run.choice);
  ASSERT_EQ(best.size(), 3u);
  EXPECT_EQ(best[0], -1);
  for (size_t m = 1; m <= 2; ++m) {
    ASSERT_GE(best[m], 0);
    const Evaluation& b = run.choice.evaluations[static_cast<size_t>(best[m])];
    EXPECT_EQ(b.anchors.size(), m);
    for (const Evaluation& e : run.choice.evaluations) {
      if (e.anchors.size() == m) {
        EXPECT_FALSE(better_loss(e.loss, b.loss));
      }
    }
    const Plan pm = evaluation_plan(run, best[m], tiny_target(), provenance);
    EXPECT_EQ(pm.anchors, b.anchors);
    EXPECT_EQ(pm.sparsity.pooling, b.pooling);
    EXPECT_EQ(pm.calibration->selection->chosen, best[m]);
    EXPECT_EQ(*pm.calibration->k_cal, b.statistic == Statistic::Spec ? 64 : 32);
  }
  EXPECT_EQ(report["best_per_anchor_count"].size(), 2u);
  EXPECT_EQ(report["best_per_anchor_count"][1]["index"], best[2]);
  EXPECT_KASCADE_ERROR(evaluation_plan(run, -1, tiny_target(), provenance), "no evaluation -1");
}

TEST(Protocol, BadInput) {
  const engine::Model& model = tiny_model();
  CalibrationRunConfig c = tiny_run_config();
  c.m_hi = 3;
  EXPECT_KASCADE_ERROR(run_calibration(model, tiny_mix(), c, nullptr, tiny_target(), {}),
                       "anchor counts 1..3 must be within 1..2");
  c = tiny_run_config();
  CalibrationTarget other = tiny_target();
  other.hkv = 1;
  EXPECT_KASCADE_ERROR(run_calibration(model, tiny_mix(), c, nullptr, other, {}), "target shape differs");
  c.statistics.tile = 16;
  EXPECT_KASCADE_ERROR(run_calibration(model, tiny_mix(), c, nullptr, tiny_target(), {}),
                       "the statistics' tile 16 differs from the plan's tile 32");
  // Prompts beyond the model's context (256 tokens).
  DevMixConfig long_config;
  long_config.prompts = 12;
  long_config.length = 300;
  long_config.continuation_rows = 8;
  const DevMix too_long = make_dev_mix(long_config, word_tokenizer(40), dev_documents());
  HeldOutConfig held;
  held.params = sparse_params();
  EXPECT_KASCADE_ERROR(HeldOutScorer(model, too_long.held_out, held), "beyond the model's context of 256");
  engine::BackendOptions options;
  options.prefill_chunk = 512;
  auto backend = engine::make_backend("cpu", model, nullptr, options);
  EXPECT_KASCADE_ERROR(collect_statistics(*backend, model.config, too_long.statistics, StatisticsConfig{}, nullptr),
                       "beyond the model's context of 256");
  // Prompts too short for the statistics.
  DevExample short_prompt = tiny_mix().statistics[0];
  short_prompt.context.resize(40);
  short_prompt.first_answer_row = 0;
  EXPECT_KASCADE_ERROR(collect_statistics(*backend, model.config, {short_prompt}, StatisticsConfig{}, nullptr),
                       "the statistics need more than 96");
}
