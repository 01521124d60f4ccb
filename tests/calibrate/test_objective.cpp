// Tests of the calibration objective's variants (layer weighting, tile aggregate), of re-planning
// from a report, and of the report's JSON round trip that --from-report relies on.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calibrate_test_util.h"
#include "kascade/calibrate.h"

using kascade::CalibrationObjective;
using kascade::CalibrationReport;
using kascade::CalibrationStats;
using kascade::CoverageMatrix;
using kascade::LayerWeight;
using kascade::TileAggregate;
using kascade::testing::add_single_head_layer;
using kascade::testing::OwnedTensor;

namespace {

// A four-layer, one-kv-head report whose best pair of anchors is {0, 2} under SPEC 6's weights w,
// {0, 3} under uniform weights and {0, 1} under sqrt(w), each by a margin of at least 0.05:
//   w = 0.09 0.25 0.81 0.04      sqrt(w) = 0.3 0.5 0.9 0.2
//   C(0,1) 0.4  C(0,2) 0.7  C(0,3) 0.7  C(1,2) 0.7  C(1,3) 0.3  C(2,3) 0.2
//   spec:    {0,1} 0.919   {0,2} 1.008   {0,3} 0.797
//   uniform: {0,1} 3.0     {0,2} 2.6     {0,3} 3.1
//   sqrt:    {0,1} 1.49    {0,2} 1.44    {0,3} 1.33
// The mean-tile matrix differs in C(0,2) = 0.99, C(0,1) = C(0,3) = 0.9: under w the best pair
// becomes {0, 3} (1.1569 against {0,2} 1.129).
CalibrationReport crafted_report() {
  CalibrationReport r;
  r.num_layers = 4;
  r.num_kv_heads = 1;
  r.k_cal = 1;
  r.tile = 2;
  r.prompts = 1;
  r.importance = {0.09, 0.25, 0.81, 0.04};
  r.topk_mass_share = {1.0, 1.0, 1.0, 1.0};
  r.coverage = CoverageMatrix(4, 1);
  r.coverage_mean_tile = CoverageMatrix(4, 1);
  for (int l = 0; l < 4; ++l) {
    r.coverage.at(l, l, 0, 0) = 1.0;
    r.coverage_mean_tile.at(l, l, 0, 0) = 1.0;
  }
  const double worst[][3] = {{0, 1, 0.4}, {0, 2, 0.7}, {0, 3, 0.7}, {1, 2, 0.7}, {1, 3, 0.3}, {2, 3, 0.2}};
  const double mean[][3] = {{0, 1, 0.9}, {0, 2, 0.99}, {0, 3, 0.9}, {1, 2, 0.95}, {1, 3, 0.1}, {2, 3, 0.1}};
  for (const auto& e : worst) r.coverage.at(static_cast<int>(e[0]), static_cast<int>(e[1]), 0, 0) = e[2];
  for (const auto& e : mean) r.coverage_mean_tile.at(static_cast<int>(e[0]), static_cast<int>(e[1]), 0, 0) = e[2];
  return r;
}

std::vector<int> chosen_anchors(const CalibrationReport& r) { return r.choices[static_cast<size_t>(r.chosen)].anchors; }

}  // namespace

TEST(Objective, LayerWeightsAndNames) {
  const std::vector<double> w = {0.25, 0.0, 0.04};
  EXPECT_EQ(kascade::layer_weights(w, LayerWeight::Spec), w);
  EXPECT_EQ(kascade::layer_weights(w, LayerWeight::Uniform), (std::vector<double>{1.0, 1.0, 1.0}));
  EXPECT_EQ(kascade::layer_weights(w, LayerWeight::Sqrt), (std::vector<double>{0.5, 0.0, 0.2}));
  EXPECT_KASCADE_ERROR(kascade::layer_weights({0.1, -0.01}, LayerWeight::Sqrt), "layer 1 has -0.01");
  EXPECT_KASCADE_ERROR(kascade::layer_weights({NAN}, LayerWeight::Uniform), "importance of layer 0 is nan");
  for (LayerWeight lw : {LayerWeight::Spec, LayerWeight::Uniform, LayerWeight::Sqrt})
    EXPECT_EQ(kascade::parse_layer_weight(kascade::to_string(lw), "x"), lw);
  for (TileAggregate ta : {TileAggregate::Min, TileAggregate::Mean})
    EXPECT_EQ(kascade::parse_tile_aggregate(kascade::to_string(ta), "x"), ta);
  EXPECT_KASCADE_ERROR(kascade::parse_layer_weight("linear", "--layer-weight"),
                       "--layer-weight: expected spec, uniform or sqrt, got 'linear'");
  EXPECT_KASCADE_ERROR(kascade::parse_tile_aggregate("max", "--tile-aggregate"),
                       "--tile-aggregate: expected min or mean, got 'max'");
  EXPECT_EQ(kascade::describe({}), "layer weight spec, tile aggregate min (SPEC 6)");
  EXPECT_EQ(kascade::describe({LayerWeight::Sqrt, TileAggregate::Mean}),
            "layer weight sqrt, tile aggregate mean (deviates from SPEC 6)");
}

TEST(Objective, EachLayerWeightGivesItsKnownAnchors) {
  const CalibrationReport base = crafted_report();
  const CalibrationReport spec = kascade::replan(base, 2, 2, 2, {});
  const CalibrationReport uniform = kascade::replan(base, 2, 2, 2, {LayerWeight::Uniform, TileAggregate::Min});
  const CalibrationReport sqrt_w = kascade::replan(base, 2, 2, 2, {LayerWeight::Sqrt, TileAggregate::Min});
  EXPECT_EQ(chosen_anchors(spec), (std::vector<int>{0, 2}));
  EXPECT_NEAR(spec.choices[0].score, 1.008, 1e-12);
  EXPECT_EQ(chosen_anchors(uniform), (std::vector<int>{0, 3}));
  EXPECT_NEAR(uniform.choices[0].score, 3.1, 1e-12);
  EXPECT_EQ(chosen_anchors(sqrt_w), (std::vector<int>{0, 1}));
  EXPECT_NEAR(sqrt_w.choices[0].score, 1.49, 1e-12);
  EXPECT_EQ(uniform.objective.layer_weight, LayerWeight::Uniform);
  // S is recorded for the objective used: under uniform weights S is the coverage itself.
  EXPECT_NEAR(uniform.scores.at(1, 3), 0.3, 1e-12);
  EXPECT_NEAR(spec.scores.at(1, 3), 0.04 * 0.3, 1e-12);
}

TEST(Objective, MeanTileAggregateUsesItsOwnCoverage) {
  const CalibrationReport mean = kascade::replan(crafted_report(), 2, 2, 2, {LayerWeight::Spec, TileAggregate::Mean});
  EXPECT_EQ(chosen_anchors(mean), (std::vector<int>{0, 3}));
  EXPECT_NEAR(mean.choices[0].score, 0.09 + 0.25 * 0.9 + 0.81 * 0.99 + 0.04, 1e-12);
  EXPECT_NEAR(mean.plan_coverage[2], 0.99, 1e-12);

  // The head map follows the objective's matrix too: two kv heads, anchors {0}; the worst tile
  // prefers source head 0 for layer 1's head 0, the tile mean source head 1.
  CalibrationReport two_heads;
  two_heads.num_layers = 2;
  two_heads.num_kv_heads = 2;
  two_heads.importance = {0.5, 0.5};
  two_heads.coverage = CoverageMatrix(2, 2);
  two_heads.coverage_mean_tile = CoverageMatrix(2, 2);
  two_heads.coverage.at(0, 1, 0, 0) = 0.6;
  two_heads.coverage.at(0, 1, 1, 0) = 0.5;
  two_heads.coverage_mean_tile.at(0, 1, 0, 0) = 0.7;
  two_heads.coverage_mean_tile.at(0, 1, 1, 0) = 0.8;
  EXPECT_EQ(kascade::replan(two_heads, 1, 1, 1, {}).head_map[1][0], 0);
  EXPECT_EQ(kascade::replan(two_heads, 1, 1, 1, {LayerWeight::Spec, TileAggregate::Mean}).head_map[1][0], 1);

  CalibrationReport without_mean = crafted_report();
  without_mean.coverage_mean_tile = CoverageMatrix();
  EXPECT_KASCADE_ERROR(kascade::replan(without_mean, 2, 2, 2, {LayerWeight::Spec, TileAggregate::Mean}),
                       "the report has no mean-tile coverage");
  EXPECT_KASCADE_ERROR(kascade::replan(crafted_report(), 2, 3, 4, {}), "chosen anchor count 4 is outside the range 2..3");
}

TEST(Objective, StatsKeepTheMeanOverTilesBesideTheWorstTile) {
  // The data of Coverage.WorstTileThenMeanOverPrompts: prompt 1 has tiles of coverage 1.5/1.7 and
  // 0.7, prompt 2 one tile of coverage 1, prompt 3 no informative tile.
  CalibrationStats stats(2, 1, 1, 2);
  stats.begin_prompt(3, 6);
  add_single_head_layer(stats, 0, 6, 2, {{}, {0.6f, 0.2f}, {0.1f, 0.1f, 0.7f, 0.1f}}, {2.0f, 1.2f, 1.0f});
  add_single_head_layer(stats, 1, 6, 2, {{}, {0.3f, 0.5f}, {0.6f, 0.0f, 0.0f, 0.0f}}, {2.0f, 1.2f, 1.4f});
  stats.end_prompt();
  stats.begin_prompt(2, 4);
  add_single_head_layer(stats, 0, 4, 2, {{}, {0.2f, 0.6f}}, {2.0f, 1.2f});
  add_single_head_layer(stats, 1, 4, 2, {{}, {0.2f, 0.6f}}, {2.0f, 1.2f});
  stats.end_prompt();
  stats.begin_prompt(1, 2);
  add_single_head_layer(stats, 0, 2, 2, {{}}, {3.0f});
  add_single_head_layer(stats, 1, 2, 2, {{}}, {3.0f});
  stats.end_prompt();
  const double tile1 = (0.3 + 1.2) / (0.5 + 1.2), tile2 = 0.7;
  EXPECT_NEAR(stats.coverage(TileAggregate::Min).at(0, 1, 0, 0), (tile2 + 1.0) / 2, 1e-7);
  EXPECT_NEAR(stats.coverage(TileAggregate::Mean).at(0, 1, 0, 0), ((tile1 + tile2) / 2 + 1.0) / 2, 1e-7);
  EXPECT_EQ(stats.coverage(TileAggregate::Mean).at(1, 1, 0, 0), 1.0);

  // Merging two halves keeps the mean-tile statistics too.
  CalibrationStats first(2, 1, 1, 2), second(2, 1, 1, 2);
  first.begin_prompt(3, 6);
  add_single_head_layer(first, 0, 6, 2, {{}, {0.6f, 0.2f}, {0.1f, 0.1f, 0.7f, 0.1f}}, {2.0f, 1.2f, 1.0f});
  add_single_head_layer(first, 1, 6, 2, {{}, {0.3f, 0.5f}, {0.6f, 0.0f, 0.0f, 0.0f}}, {2.0f, 1.2f, 1.4f});
  first.end_prompt();
  second.begin_prompt(2, 4);
  add_single_head_layer(second, 0, 4, 2, {{}, {0.2f, 0.6f}}, {2.0f, 1.2f});
  add_single_head_layer(second, 1, 4, 2, {{}, {0.2f, 0.6f}}, {2.0f, 1.2f});
  second.end_prompt();
  first.merge(second);
  EXPECT_NEAR(first.coverage(TileAggregate::Mean).at(0, 1, 0, 0), ((tile1 + tile2) / 2 + 1.0) / 2, 1e-7);
}

TEST(Objective, ReportRoundTripThenReplan) {
  CalibrationReport saved = kascade::replan(crafted_report(), 1, 3, 2, {});
  saved.dev_set = "four crafted layers";
  const std::string path = ::testing::TempDir() + "kascade_objective_report.json";
  kascade::save_report(saved, path);
  const CalibrationReport loaded = kascade::load_report(path);
  std::remove(path.c_str());
  EXPECT_EQ(loaded.dev_set, "four crafted layers");
  EXPECT_TRUE(loaded.objective.is_spec());
  EXPECT_EQ(chosen_anchors(loaded), (std::vector<int>{0, 2}));
  ASSERT_EQ(loaded.choices.size(), 3u);
  EXPECT_EQ(loaded.head_map, saved.head_map);
  for (int l1 = 0; l1 < 4; ++l1) {
    for (int l2 = l1; l2 < 4; ++l2) {
      EXPECT_EQ(loaded.coverage.at(l1, l2, 0, 0), saved.coverage.at(l1, l2, 0, 0));
      EXPECT_EQ(loaded.coverage_mean_tile.at(l1, l2, 0, 0), saved.coverage_mean_tile.at(l1, l2, 0, 0));
      EXPECT_EQ(loaded.scores.at(l1, l2), saved.scores.at(l1, l2));
    }
  }
  // Re-planning the loaded report gives what re-planning the original gives.
  const CalibrationObjective uniform{LayerWeight::Uniform, TileAggregate::Min};
  EXPECT_EQ(chosen_anchors(kascade::replan(loaded, 2, 2, 2, uniform)), (std::vector<int>{0, 3}));
  const nlohmann::json written = kascade::report_to_json(kascade::replan(loaded, 2, 2, 2, uniform));
  EXPECT_EQ(written.at("objective").at("layer_weight"), "uniform");
  EXPECT_EQ(written.at("objective").at("tile_aggregate"), "min");
  EXPECT_EQ(kascade::report_from_json(written, "variant").objective.layer_weight, LayerWeight::Uniform);

  // A report of an older version (no mean-tile coverage, no objective) still loads, as SPEC 6.
  nlohmann::json old = kascade::report_to_json(saved);
  old.erase("coverage_mean_tile");
  old.erase("objective");
  old.erase("dev_set");
  const CalibrationReport from_old = kascade::report_from_json(old, "old");
  EXPECT_TRUE(from_old.objective.is_spec());
  EXPECT_EQ(from_old.coverage_mean_tile.num_layers(), 0);
  EXPECT_KASCADE_ERROR(kascade::replan(from_old, 2, 2, 2, {LayerWeight::Spec, TileAggregate::Mean}),
                       "no mean-tile coverage");

  nlohmann::json bad = kascade::report_to_json(saved);
  bad["objective"]["layer_weight"] = "cubic";
  EXPECT_KASCADE_ERROR(kascade::report_from_json(bad, "bad.json"),
                       "bad.json: objective.layer_weight: expected spec, uniform or sqrt, got 'cubic'");
  bad = kascade::report_to_json(saved);
  bad["coverage"][0][2][0][0] = "x";
  EXPECT_KASCADE_ERROR(kascade::report_from_json(bad, "bad.json"), "bad.json: coverage[0][2][0][0] is not a finite number");
  bad = kascade::report_to_json(saved);
  bad["format"] = "kascade-plan";
  EXPECT_KASCADE_ERROR(kascade::report_from_json(bad, "bad.json"), "bad.json: not a calibration report");
  EXPECT_KASCADE_ERROR(kascade::load_report("/nonexistent/report.json"), "cannot open /nonexistent/report.json");
}
