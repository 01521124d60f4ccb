// From statistics to the calibration report, its JSON form, and the plan it implies.
#include <cmath>
#include <cstdio>
#include <fstream>

#include "kascade/calibrate.h"
#include "kascade/error.h"

namespace kascade {

namespace {

// Per layer j: mean over g2 of C[a(j)][j][map[j][g2]][g2], the coverage the plan actually gets.
std::vector<double> coverage_under_map(const CoverageMatrix& coverage, const std::vector<int>& anchors,
                                       const HeadMap& map) {
  const int L = coverage.num_layers(), H = coverage.num_kv_heads();
  std::vector<double> result(static_cast<size_t>(L));
  size_t next = 0;
  int anchor = 0;
  for (int j = 0; j < L; ++j) {
    if (next < anchors.size() && anchors[next] == j) anchor = anchors[next++];
    double sum = 0.0;
    for (int g2 = 0; g2 < H; ++g2) sum += coverage.at(anchor, j, map[static_cast<size_t>(j)][static_cast<size_t>(g2)], g2);
    result[static_cast<size_t>(j)] = sum / H;
  }
  return result;
}

nlohmann::json anchor_choice_json(const AnchorChoice& choice) {
  return nlohmann::json{{"m", choice.anchors.size()}, {"anchors", choice.anchors}, {"score", choice.score}};
}

}  // namespace

CalibrationReport make_report(const CalibrationStats& stats, int m_lo, int m_hi, int chosen_m) {
  KASCADE_CHECK(m_lo <= chosen_m && chosen_m <= m_hi,
                "make_report: chosen anchor count " << chosen_m << " is outside the range " << m_lo << ".." << m_hi);
  CalibrationReport report;
  report.num_layers = stats.num_layers();
  report.num_kv_heads = stats.num_kv_heads();
  report.k_cal = stats.k_cal();
  report.tile = stats.tile();
  report.prompts = stats.prompts();
  report.counted_tiles = stats.counted_tiles();
  report.skipped_trivial_tiles = stats.skipped_trivial_tiles();
  report.skipped_zero_mass_tiles = stats.skipped_zero_mass_tiles();
  report.coverage = stats.coverage();
  report.importance = stats.importance();
  report.topk_mass_share = stats.topk_mass_share();
  report.scores = layer_scores(report.coverage, report.importance);
  report.choices = choose_anchors_range(report.scores, m_lo, m_hi);
  report.chosen = chosen_m - m_lo;
  const std::vector<int>& anchors = report.choices[static_cast<size_t>(report.chosen)].anchors;
  report.head_map = choose_head_map(report.coverage, anchors);
  report.plan_coverage = coverage_under_map(report.coverage, anchors, report.head_map);
  return report;
}

nlohmann::json report_to_json(const CalibrationReport& report) {
  const int L = report.num_layers, H = report.num_kv_heads;
  KASCADE_CHECK(L >= 1 && report.chosen >= 0 && static_cast<size_t>(report.chosen) < report.choices.size(),
                "report_to_json: incomplete report (build it with make_report)");
  // Matrices indexed [l1][l2] hold null where l1 > l2: those pairs do not exist (a layer only
  // reuses an earlier anchor), and null keeps them apart from a real 0 in plots.
  nlohmann::json scores = nlohmann::json::array();
  nlohmann::json coverage = nlohmann::json::array();
  for (int l1 = 0; l1 < L; ++l1) {
    nlohmann::json score_row = nlohmann::json::array();
    nlohmann::json coverage_row = nlohmann::json::array();
    for (int l2 = 0; l2 < L; ++l2) {
      if (l1 > l2) {
        score_row.push_back(nullptr);
        coverage_row.push_back(nullptr);
        continue;
      }
      score_row.push_back(report.scores.at(l1, l2));
      nlohmann::json heads = nlohmann::json::array();
      for (int g1 = 0; g1 < H; ++g1) {
        nlohmann::json per_g2 = nlohmann::json::array();
        for (int g2 = 0; g2 < H; ++g2) per_g2.push_back(report.coverage.at(l1, l2, g1, g2));
        heads.push_back(std::move(per_g2));
      }
      coverage_row.push_back(std::move(heads));
    }
    scores.push_back(std::move(score_row));
    coverage.push_back(std::move(coverage_row));
  }
  nlohmann::json candidates = nlohmann::json::array();
  for (const AnchorChoice& choice : report.choices) candidates.push_back(anchor_choice_json(choice));
  nlohmann::json chosen = anchor_choice_json(report.choices[static_cast<size_t>(report.chosen)]);
  chosen["head_map"] = report.head_map;
  chosen["coverage"] = report.plan_coverage;
  return nlohmann::json{
      {"format", "kascade-calibration-report"},
      {"version", 1},
      {"layers", L},
      {"hkv", H},
      {"k_cal", report.k_cal},
      {"tile", report.tile},
      {"prompts", report.prompts},
      {"tiles", {{"counted", report.counted_tiles},
                 {"skipped_trivial", report.skipped_trivial_tiles},
                 {"skipped_zero_mass", report.skipped_zero_mass_tiles}}},
      {"importance", report.importance},
      {"topk_mass_share", report.topk_mass_share},
      {"layer_scores", std::move(scores)},
      {"coverage", std::move(coverage)},  // [l1][l2][g1][g2]
      {"candidates", std::move(candidates)},
      {"chosen", std::move(chosen)},
  };
}

void save_report(const CalibrationReport& report, const std::string& path) {
  const std::string text = report_to_json(report).dump(2) + "\n";
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    KASCADE_CHECK(out.good(), "save_report: cannot open " << tmp << " for writing");
    out << text;
    out.close();
    KASCADE_CHECK(!out.fail(), "save_report: writing " << tmp << " failed");
  }
  KASCADE_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "save_report: cannot rename " << tmp << " to " << path);
}

Plan make_plan(const CalibrationReport& report, const CalibrationTarget& model, const SparsityParams& params,
               const PlanProvenance& provenance) {
  KASCADE_CHECK(report.chosen >= 0 && static_cast<size_t>(report.chosen) < report.choices.size(),
                "make_plan: incomplete report (build it with make_report)");
  KASCADE_CHECK(model.layers == report.num_layers, "make_plan: model has " << model.layers
                                                                           << " layers, the calibration saw "
                                                                           << report.num_layers);
  KASCADE_CHECK(params.tile == report.tile, "make_plan: plan tile " << params.tile << " differs from the calibration tile "
                                                                    << report.tile);
  // Group pooling reuses per-kv-head selections: the statistics must be per kv head. All-heads
  // pooling has one selection per anchor: the statistics must have been pooled the same way (one
  // set), and the plan's head map is the identity.
  const bool per_group = params.pooling == Pooling::Group;
  const int expected_sets = per_group ? model.hkv : 1;
  KASCADE_CHECK(report.num_kv_heads == expected_sets,
                "make_plan: pooling '" << to_string(params.pooling) << "' needs statistics over " << expected_sets
                                       << " selection set(s) per layer, the calibration has " << report.num_kv_heads);
  const AnchorChoice& choice = report.choices[static_cast<size_t>(report.chosen)];
  Plan plan = make_uniform_plan(model.name, model.layers, model.hq, model.hkv, model.head_dim, choice.anchors);
  if (per_group) plan.head_map = report.head_map;
  plan.rho = params.rho;
  plan.k_min = params.k_min;
  plan.k_multiple = params.k_multiple;
  plan.tile = params.tile;
  plan.budget = params.budget;
  plan.pooling = params.pooling;
  plan.provenance = provenance;
  PlanCalibration calibration;
  calibration.k_cal = report.k_cal;
  calibration.importance = report.importance;
  // The plan stores the square S; pairs l1 > l2 do not exist and are written as 0.
  const int L = report.num_layers;
  calibration.layer_scores.assign(static_cast<size_t>(L), std::vector<double>(static_cast<size_t>(L), 0.0));
  for (int l1 = 0; l1 < L; ++l1)
    for (int l2 = l1; l2 < L; ++l2)
      calibration.layer_scores[static_cast<size_t>(l1)][static_cast<size_t>(l2)] = report.scores.at(l1, l2);
  calibration.objective = choice.score;
  for (const AnchorChoice& candidate : report.choices) calibration.candidates.push_back({candidate.anchors, candidate.score});
  plan.calibration = std::move(calibration);
  validate_plan(plan, "make_plan");
  return plan;
}

}  // namespace kascade
