// Tests of the calibration report (its consistency, its JSON form) and of the plan made from it.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calibrate_test_util.h"
#include "kascade/calibrate.h"
#include "kascade/plan.h"

using kascade::CalibrationReport;
using kascade::CalibrationStats;
using kascade::testing::OwnedTensor;

namespace {

// Statistics of a few random prompts: pooled masses with a random scale per (layer, kv head) so
// that layers and heads differ, and random residual/attention vectors for the importance.
CalibrationStats random_stats(int L, int H, int k_cal, int tile, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  CalibrationStats stats(L, H, k_cal, tile);
  for (int64_t n : {13, 29, 40}) {
    const int64_t tiles = kascade::num_tiles(0, n, tile);
    stats.begin_prompt(tiles, n);
    for (int l = 0; l < L; ++l) {
      OwnedTensor pooled({H, tiles, n}), diagonal({H, tiles});
      for (int g = 0; g < H; ++g) {
        for (int64_t tau = 0; tau < tiles; ++tau) {
          for (int64_t i = 0; i < n; ++i) pooled.at(g, tau, i) = unit(rng) * unit(rng) * unit(rng);
          diagonal.at(g, tau) = 0.1f + unit(rng);
        }
      }
      stats.add_layer(l, pooled.view, diagonal.view);
      const int64_t hidden = 8;
      std::vector<float> x(static_cast<size_t>(n * hidden)), attn(x.size());
      for (float& v : x) v = normal(rng);
      for (float& v : attn) v = 0.3f * normal(rng) * static_cast<float>(l + 1);
      stats.add_importance(l, x.data(), attn.data(), n, hidden);
    }
    stats.end_prompt();
  }
  return stats;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST(Report, IsConsistentWithItsParts) {
  const int L = 6, H = 2;
  const CalibrationStats stats = random_stats(L, H, 3, 4, 1);
  const CalibrationReport report = kascade::make_report(stats, 2, 4, 3);
  EXPECT_EQ(report.prompts, 3);
  ASSERT_EQ(report.choices.size(), 3u);
  EXPECT_EQ(report.chosen, 1);
  const std::vector<int>& anchors = report.choices[1].anchors;
  ASSERT_EQ(anchors.size(), 3u);
  EXPECT_EQ(report.head_map, kascade::choose_head_map(report.coverage, anchors));
  EXPECT_EQ(report.importance, stats.importance());
  ASSERT_EQ(report.plan_coverage.size(), static_cast<size_t>(L));
  // The head map takes the best source head, so w[j] * plan coverage[j] is exactly S[a(j)][j].
  int anchor = 0;
  for (int j = 0; j < L; ++j) {
    for (int a : anchors)
      if (a <= j) anchor = a;
    EXPECT_NEAR(report.importance[static_cast<size_t>(j)] * report.plan_coverage[static_cast<size_t>(j)],
                report.scores.at(anchor, j), 1e-12);
    if (anchor == j) {
      EXPECT_EQ(report.plan_coverage[static_cast<size_t>(j)], 1.0);
    }
    EXPECT_GT(report.topk_mass_share[static_cast<size_t>(j)], 0.0);
    EXPECT_LE(report.topk_mass_share[static_cast<size_t>(j)], 1.0);
  }
  EXPECT_NEAR(kascade::anchor_score(report.scores, anchors), report.choices[1].score, 1e-12);
  EXPECT_KASCADE_ERROR(kascade::make_report(stats, 2, 4, 5), "chosen anchor count 5 is outside the range 2..4");
  EXPECT_KASCADE_ERROR(kascade::make_report(stats, 2, 7, 3), "2..7 must satisfy 1 <= m_lo <= m_hi <= L = 6");
}

TEST(Report, JsonHasEveryMatrixAndSurvivesAFile) {
  const int L = 4, H = 2;
  const CalibrationReport report = kascade::make_report(random_stats(L, H, 3, 4, 2), 1, 4, 2);
  const nlohmann::json j = kascade::report_to_json(report);
  EXPECT_EQ(j.at("format"), "kascade-calibration-report");
  EXPECT_EQ(j.at("layers"), L);
  EXPECT_EQ(j.at("hkv"), H);
  EXPECT_EQ(j.at("importance").size(), static_cast<size_t>(L));
  EXPECT_TRUE(j.at("layer_scores").at(2).at(1).is_null());  // l1 > l2 does not exist
  EXPECT_EQ(j.at("layer_scores").at(1).at(2).get<double>(), report.scores.at(1, 2));
  EXPECT_EQ(j.at("coverage").at(0).at(3).at(1).at(0).get<double>(), report.coverage.at(0, 3, 1, 0));
  EXPECT_TRUE(j.at("coverage").at(3).at(0).is_null());
  EXPECT_EQ(j.at("candidates").size(), 4u);
  EXPECT_EQ(j.at("candidates").at(3).at("anchors"), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(j.at("chosen").at("m"), 2);
  EXPECT_EQ(j.at("chosen").at("head_map").get<kascade::HeadMap>(), report.head_map);
  EXPECT_EQ(j.at("tiles").at("counted").get<int64_t>(), report.counted_tiles);

  const std::string path = std::string(KASCADE_BINARY_DIR) + "/test_calibration_report.json";
  kascade::save_report(report, path);
  EXPECT_EQ(nlohmann::json::parse(read_text(path)), j);
  std::remove(path.c_str());
  EXPECT_KASCADE_ERROR(kascade::save_report(report, "/nonexistent-dir/report.json"),
                       "cannot open /nonexistent-dir/report.json.tmp");
}

TEST(MakePlan, GroupPoolingCarriesAnchorsHeadMapAndCalibration) {
  const int L = 5, H = 3;
  const CalibrationReport report = kascade::make_report(random_stats(L, H, 4, 4, 3), 2, 3, 3);
  kascade::SparsityParams params;
  params.rho = 0.2;
  params.tile = 4;
  kascade::PlanProvenance provenance;
  provenance.dev_set = "random";
  const kascade::Plan plan = kascade::make_plan(report, {"tiny", L, 6, H, 16}, params, provenance);
  EXPECT_EQ(plan.anchors, report.choices[1].anchors);
  EXPECT_EQ(plan.head_map, report.head_map);
  EXPECT_EQ(plan.sparsity.rho, 0.2);
  EXPECT_EQ(plan.sparsity.tile, 4);
  EXPECT_EQ(plan.provenance.dev_set, "random");
  ASSERT_TRUE(plan.calibration.has_value());
  EXPECT_EQ(plan.calibration->k_cal, 4);
  EXPECT_EQ(plan.calibration->objective, report.choices[1].score);
  EXPECT_EQ(plan.calibration->candidates.size(), 2u);
  EXPECT_EQ(plan.calibration->layer_scores[1][3], report.scores.at(1, 3));
  EXPECT_EQ(plan.calibration->layer_scores[3][1], 0.0);
  // The plan survives its own JSON and matches the model it was made for.
  const kascade::Plan reread = kascade::parse_plan(kascade::to_json(plan), "plan");
  EXPECT_EQ(reread.anchors, plan.anchors);
  EXPECT_EQ(reread.head_map, plan.head_map);
  kascade::check_plan_matches(reread, L, 6, H, 16);
}

TEST(MakePlan, AllHeadsPoolingNeedsOneSelectionSet) {
  kascade::SparsityParams params;
  params.tile = 4;
  params.pooling = kascade::Pooling::All;
  const CalibrationReport per_head = kascade::make_report(random_stats(4, 2, 3, 4, 4), 2, 2, 2);
  EXPECT_KASCADE_ERROR(kascade::make_plan(per_head, {"tiny", 4, 4, 2, 16}, params),
                       "pooling 'all' needs statistics over 1 selection set(s) per layer, the calibration has 2");
  // Statistics pooled over all heads (one set) give a plan whose head map is the identity.
  const CalibrationReport pooled = kascade::make_report(random_stats(4, 1, 3, 4, 5), 2, 2, 2);
  const kascade::Plan plan = kascade::make_plan(pooled, {"tiny", 4, 4, 2, 16}, params);
  for (const std::vector<int>& row : plan.head_map) EXPECT_EQ(row, (std::vector<int>{0, 1}));
  EXPECT_EQ(plan.sparsity.pooling, kascade::Pooling::All);
}

TEST(MakePlan, Mismatches) {
  const CalibrationReport report = kascade::make_report(random_stats(4, 2, 3, 4, 6), 2, 2, 2);
  kascade::SparsityParams params;  // tile 32
  EXPECT_KASCADE_ERROR(kascade::make_plan(report, {"tiny", 4, 4, 2, 16}, params),
                       "plan tile 32 differs from the calibration tile 4");
  params.tile = 4;
  EXPECT_KASCADE_ERROR(kascade::make_plan(report, {"tiny", 5, 4, 2, 16}, params),
                       "model has 5 layers, the calibration saw 4");
  EXPECT_KASCADE_ERROR(kascade::make_plan(report, {"tiny", 4, 6, 3, 16}, params),
                       "pooling 'group' needs statistics over 3 selection set(s)");
  EXPECT_KASCADE_ERROR(kascade::make_plan(CalibrationReport{}, {"tiny", 4, 4, 2, 16}, params), "incomplete report");
}
