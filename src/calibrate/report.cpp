// From statistics to the calibration report, its JSON form, and the plan it implies.
#include <cmath>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

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

// Matrices indexed [l1][l2] hold null where l1 > l2: those pairs do not exist (a layer only
// reuses an earlier anchor), and null keeps them apart from a real 0 in plots.
nlohmann::json coverage_to_json(const CoverageMatrix& coverage) {
  const int L = coverage.num_layers(), H = coverage.num_kv_heads();
  nlohmann::json rows = nlohmann::json::array();
  for (int l1 = 0; l1 < L; ++l1) {
    nlohmann::json row = nlohmann::json::array();
    for (int l2 = 0; l2 < L; ++l2) {
      if (l1 > l2) {
        row.push_back(nullptr);
        continue;
      }
      nlohmann::json heads = nlohmann::json::array();
      for (int g1 = 0; g1 < H; ++g1) {
        nlohmann::json per_g2 = nlohmann::json::array();
        for (int g2 = 0; g2 < H; ++g2) per_g2.push_back(coverage.at(l1, l2, g1, g2));
        heads.push_back(std::move(per_g2));
      }
      row.push_back(std::move(heads));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// The inverse of coverage_to_json for a model of L layers and H selection sets per layer.
CoverageMatrix coverage_from_json(const nlohmann::json& rows, int L, int H, const std::string& what) {
  KASCADE_CHECK(rows.is_array() && rows.size() == static_cast<size_t>(L), what << ": expected " << L << " rows");
  CoverageMatrix coverage(L, H);
  for (int l1 = 0; l1 < L; ++l1) {
    const nlohmann::json& row = rows[static_cast<size_t>(l1)];
    KASCADE_CHECK(row.is_array() && row.size() == static_cast<size_t>(L), what << "[" << l1 << "]: expected " << L << " entries");
    for (int l2 = l1; l2 < L; ++l2) {
      const nlohmann::json& heads = row[static_cast<size_t>(l2)];
      KASCADE_CHECK(heads.is_array() && heads.size() == static_cast<size_t>(H),
                    what << "[" << l1 << "][" << l2 << "]: expected " << H << " x " << H << " numbers");
      for (int g1 = 0; g1 < H; ++g1) {
        const nlohmann::json& per_g2 = heads[static_cast<size_t>(g1)];
        KASCADE_CHECK(per_g2.is_array() && per_g2.size() == static_cast<size_t>(H),
                      what << "[" << l1 << "][" << l2 << "][" << g1 << "]: expected " << H << " numbers");
        for (int g2 = 0; g2 < H; ++g2) {
          const nlohmann::json& v = per_g2[static_cast<size_t>(g2)];
          KASCADE_CHECK(v.is_number() && std::isfinite(v.get<double>()),
                        what << "[" << l1 << "][" << l2 << "][" << g1 << "][" << g2 << "] is not a finite number");
          coverage.at(l1, l2, g1, g2) = v.get<double>();
        }
      }
    }
  }
  return coverage;
}

nlohmann::json anchor_choice_json(const AnchorChoice& choice) {
  return nlohmann::json{{"m", choice.anchors.size()}, {"anchors", choice.anchors}, {"score", choice.score}};
}

}  // namespace

std::string to_string(LayerWeight weight) {
  switch (weight) {
    case LayerWeight::Spec: return "spec";
    case LayerWeight::Uniform: return "uniform";
    case LayerWeight::Sqrt: return "sqrt";
  }
  KASCADE_FAIL("to_string: unknown LayerWeight " << static_cast<int>(weight));
}

std::string to_string(TileAggregate aggregate) {
  switch (aggregate) {
    case TileAggregate::Min: return "min";
    case TileAggregate::Mean: return "mean";
  }
  KASCADE_FAIL("to_string: unknown TileAggregate " << static_cast<int>(aggregate));
}

LayerWeight parse_layer_weight(const std::string& text, const std::string& what) {
  for (LayerWeight w : {LayerWeight::Spec, LayerWeight::Uniform, LayerWeight::Sqrt})
    if (text == to_string(w)) return w;
  KASCADE_FAIL(what << ": expected spec, uniform or sqrt, got '" << text << "'");
}

TileAggregate parse_tile_aggregate(const std::string& text, const std::string& what) {
  for (TileAggregate a : {TileAggregate::Min, TileAggregate::Mean})
    if (text == to_string(a)) return a;
  KASCADE_FAIL(what << ": expected min or mean, got '" << text << "'");
}

std::string describe(const CalibrationObjective& objective) {
  return "layer weight " + to_string(objective.layer_weight) + ", tile aggregate " +
         to_string(objective.tile_aggregate) + (objective.is_spec() ? " (SPEC 6)" : " (deviates from SPEC 6)");
}

std::vector<double> layer_weights(const std::vector<double>& importance, LayerWeight weight) {
  std::vector<double> result(importance.size());
  for (size_t l = 0; l < importance.size(); ++l) {
    const double w = importance[l];
    KASCADE_CHECK(std::isfinite(w), "layer_weights: importance of layer " << l << " is " << w);
    switch (weight) {
      case LayerWeight::Spec: result[l] = w; break;
      case LayerWeight::Uniform: result[l] = 1.0; break;
      case LayerWeight::Sqrt:
        KASCADE_CHECK(w >= 0.0, "layer_weights: sqrt weighting needs importance >= 0, layer " << l << " has " << w);
        result[l] = std::sqrt(w);
        break;
    }
  }
  return result;
}

namespace {

// S, the DP over m_lo..m_hi, the head map and the plan's coverage from the report's w and coverage.
void solve(CalibrationReport& report, int m_lo, int m_hi, int chosen_m, const CalibrationObjective& objective) {
  KASCADE_CHECK(m_lo <= chosen_m && chosen_m <= m_hi,
                "make_report: chosen anchor count " << chosen_m << " is outside the range " << m_lo << ".." << m_hi);
  const bool mean = objective.tile_aggregate == TileAggregate::Mean;
  KASCADE_CHECK(!mean || report.coverage_mean_tile.num_layers() == report.num_layers,
                "replan: the report has no mean-tile coverage (made by an older version); re-run calibration "
                "for --tile-aggregate mean");
  const CoverageMatrix& coverage = mean ? report.coverage_mean_tile : report.coverage;
  report.objective = objective;
  report.scores = layer_scores(coverage, layer_weights(report.importance, objective.layer_weight));
  report.choices = choose_anchors_range(report.scores, m_lo, m_hi);
  report.chosen = chosen_m - m_lo;
  const std::vector<int>& anchors = report.choices[static_cast<size_t>(report.chosen)].anchors;
  report.head_map = choose_head_map(coverage, anchors);
  report.plan_coverage = coverage_under_map(coverage, anchors, report.head_map);
}

}  // namespace

CalibrationReport make_report(const CalibrationStats& stats, int m_lo, int m_hi, int chosen_m,
                              const CalibrationObjective& objective) {
  CalibrationReport report;
  report.num_layers = stats.num_layers();
  report.num_kv_heads = stats.num_kv_heads();
  report.k_cal = stats.k_cal();
  report.tile = stats.tile();
  report.prompts = stats.prompts();
  report.counted_tiles = stats.counted_tiles();
  report.skipped_trivial_tiles = stats.skipped_trivial_tiles();
  report.skipped_zero_mass_tiles = stats.skipped_zero_mass_tiles();
  report.counted_rows = stats.counted_rows();
  report.skipped_trivial_rows = stats.skipped_trivial_rows();
  report.minima_from_decode_rows = stats.minima_from_decode_rows();
  report.minima_total = stats.minima_total();
  report.coverage = stats.coverage(TileAggregate::Min);
  report.coverage_mean_tile = stats.coverage(TileAggregate::Mean);
  report.importance = stats.importance();
  report.topk_mass_share = stats.topk_mass_share();
  solve(report, m_lo, m_hi, chosen_m, objective);
  return report;
}

CalibrationReport replan(const CalibrationReport& report, int m_lo, int m_hi, int chosen_m,
                         const CalibrationObjective& objective) {
  KASCADE_CHECK(report.num_layers >= 1 && report.coverage.num_layers() == report.num_layers &&
                    report.importance.size() == static_cast<size_t>(report.num_layers),
                "replan: incomplete report (no coverage or importance)");
  CalibrationReport result = report;
  solve(result, m_lo, m_hi, chosen_m, objective);
  return result;
}

nlohmann::json report_to_json(const CalibrationReport& report) {
  const int L = report.num_layers, H = report.num_kv_heads;
  KASCADE_CHECK(L >= 1 && report.chosen >= 0 && static_cast<size_t>(report.chosen) < report.choices.size(),
                "report_to_json: incomplete report (build it with make_report)");
  // Matrices indexed [l1][l2] hold null where l1 > l2: those pairs do not exist (a layer only
  // reuses an earlier anchor), and null keeps them apart from a real 0 in plots.
  nlohmann::json scores = nlohmann::json::array();
  for (int l1 = 0; l1 < L; ++l1) {
    nlohmann::json score_row = nlohmann::json::array();
    for (int l2 = 0; l2 < L; ++l2) {
      if (l1 > l2) {
        score_row.push_back(nullptr);
      } else {
        score_row.push_back(report.scores.at(l1, l2));
      }
    }
    scores.push_back(std::move(score_row));
  }
  nlohmann::json candidates = nlohmann::json::array();
  for (const AnchorChoice& choice : report.choices) candidates.push_back(anchor_choice_json(choice));
  nlohmann::json chosen = anchor_choice_json(report.choices[static_cast<size_t>(report.chosen)]);
  chosen["head_map"] = report.head_map;
  chosen["coverage"] = report.plan_coverage;
  nlohmann::json json{
      {"format", "kascade-calibration-report"},
      {"version", 1},
      {"dev_set", report.dev_set},
      {"objective", {{"layer_weight", to_string(report.objective.layer_weight)},
                     {"tile_aggregate", to_string(report.objective.tile_aggregate)}}},
      {"layers", L},
      {"hkv", H},
      {"k_cal", report.k_cal},
      {"tile", report.tile},
      {"prompts", report.prompts},
      {"tiles", {{"counted", report.counted_tiles},
                 {"skipped_trivial", report.skipped_trivial_tiles},
                 {"skipped_zero_mass", report.skipped_zero_mass_tiles}}},
      {"decode_rows", {{"counted", report.counted_rows},
                       {"skipped_trivial", report.skipped_trivial_rows},
                       {"minima_from_decode_rows", report.minima_from_decode_rows},
                       {"minima_total", report.minima_total},
                       {"minima_share", report.minima_total > 0 ? static_cast<double>(report.minima_from_decode_rows) /
                                                                      static_cast<double>(report.minima_total)
                                                                : 0.0}}},
      {"importance", report.importance},
      {"topk_mass_share", report.topk_mass_share},
      {"layer_scores", std::move(scores)},
      {"coverage", coverage_to_json(report.coverage)},  // [l1][l2][g1][g2], worst tile
      {"candidates", std::move(candidates)},
      {"chosen", std::move(chosen)},
  };
  if (report.coverage_mean_tile.num_layers() == L) json["coverage_mean_tile"] = coverage_to_json(report.coverage_mean_tile);
  return json;
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

CalibrationReport report_from_json(const nlohmann::json& json, const std::string& what) {
  KASCADE_CHECK(json.is_object() && json.value("format", "") == "kascade-calibration-report",
                what << ": not a calibration report (format is not kascade-calibration-report)");
  KASCADE_CHECK(json.value("version", 0) == 1, what << ": unsupported report version " << json.value("version", 0));
  CalibrationReport report;
  try {
    report.num_layers = json.at("layers").get<int>();
    report.num_kv_heads = json.at("hkv").get<int>();
    KASCADE_CHECK(report.num_layers >= 1 && report.num_kv_heads >= 1,
                  what << ": layers and hkv must be >= 1, got " << report.num_layers << " and " << report.num_kv_heads);
    const int L = report.num_layers, H = report.num_kv_heads;
    report.k_cal = json.at("k_cal").get<int>();
    report.tile = json.at("tile").get<int>();
    report.prompts = json.at("prompts").get<int64_t>();
    report.counted_tiles = json.at("tiles").at("counted").get<int64_t>();
    report.skipped_trivial_tiles = json.at("tiles").at("skipped_trivial").get<int64_t>();
    report.skipped_zero_mass_tiles = json.at("tiles").at("skipped_zero_mass").get<int64_t>();
    report.dev_set = json.value("dev_set", "");
    if (json.contains("decode_rows")) {  // reports made before decode rows existed have none
      const nlohmann::json& rows = json.at("decode_rows");
      report.counted_rows = rows.at("counted").get<int64_t>();
      report.skipped_trivial_rows = rows.at("skipped_trivial").get<int64_t>();
      report.minima_from_decode_rows = rows.at("minima_from_decode_rows").get<int64_t>();
      report.minima_total = rows.at("minima_total").get<int64_t>();
    }
    if (json.contains("objective")) {
      report.objective.layer_weight =
          parse_layer_weight(json.at("objective").at("layer_weight").get<std::string>(), what + ": objective.layer_weight");
      report.objective.tile_aggregate = parse_tile_aggregate(json.at("objective").at("tile_aggregate").get<std::string>(),
                                                             what + ": objective.tile_aggregate");
    }
    report.importance = json.at("importance").get<std::vector<double>>();
    report.topk_mass_share = json.at("topk_mass_share").get<std::vector<double>>();
    KASCADE_CHECK(report.importance.size() == static_cast<size_t>(L) && report.topk_mass_share.size() == static_cast<size_t>(L),
                  what << ": importance and topk_mass_share need " << L << " values each");
    report.coverage = coverage_from_json(json.at("coverage"), L, H, what + ": coverage");
    if (json.contains("coverage_mean_tile"))
      report.coverage_mean_tile = coverage_from_json(json.at("coverage_mean_tile"), L, H, what + ": coverage_mean_tile");
    // The choices and head map as recorded; replan re-makes them (and S) for another objective.
    const CoverageMatrix& used =
        report.objective.tile_aggregate == TileAggregate::Mean ? report.coverage_mean_tile : report.coverage;
    KASCADE_CHECK(used.num_layers() == L, what << ": the objective needs coverage_mean_tile, which is missing");
    report.scores = layer_scores(used, layer_weights(report.importance, report.objective.layer_weight));
    for (const nlohmann::json& c : json.at("candidates")) {
      AnchorChoice choice;
      choice.anchors = c.at("anchors").get<std::vector<int>>();
      choice.score = c.at("score").get<double>();
      report.choices.push_back(std::move(choice));
    }
    const std::vector<int> chosen = json.at("chosen").at("anchors").get<std::vector<int>>();
    for (size_t i = 0; i < report.choices.size(); ++i)
      if (report.choices[i].anchors == chosen) report.chosen = static_cast<int>(i);
    KASCADE_CHECK(report.chosen >= 0, what << ": the chosen anchor set is not among the candidates");
    report.head_map = json.at("chosen").at("head_map").get<HeadMap>();
    report.plan_coverage = json.at("chosen").at("coverage").get<std::vector<double>>();
  } catch (const nlohmann::json::exception& e) {
    KASCADE_FAIL(what << ": malformed calibration report: " << e.what());
  }
  return report;
}

CalibrationReport load_report(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KASCADE_CHECK(in.good(), "load_report: cannot open " << path);
  nlohmann::json json;
  try {
    in >> json;
  } catch (const nlohmann::json::exception& e) {
    KASCADE_FAIL(path << ": not valid JSON: " << e.what());
  }
  return report_from_json(json, path);
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
  plan.sparsity = params;
  plan.sparsity.scale = NAN;  // not part of a plan: the model's own scale applies
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
