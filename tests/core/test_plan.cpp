// Tests of the plan: JSON round trips, the example plans, layer roles, and one malformed input
// per validation rule (each checked by the JSON path and problem its error names).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../temp_dir.h"
#include "kascade/plan.h"

using namespace kascade;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string plan_fixture(const std::string& name) { return std::string(KASCADE_TEST_DATA) + "/plans/" + name; }

// A valid 4-layer plan using every field: the base that each malformed case changes in one place.
Json base_plan_json() {
  return Json::parse(R"({
    "format": "kascade-plan", "version": 1,
    "model": {"name": "tiny", "layers": 4, "hq": 4, "hkv": 2, "head_dim": 8},
    "anchors": [0, 2],
    "head_map": [[0, 1], [1, 0], [0, 1], [1, 1]],
    "sparsity": {"rho": 0.25, "k_min": 16, "k_multiple": 8, "tile": 32, "budget": "fixed", "pooling": "group"},
    "provenance": {"dev_set": "unit", "date": "2026-01-01", "tool_version": "0.1.0", "notes": "hand-made"},
    "calibration": {"k_cal": 64, "importance": [0.5, 0.25, 0.125, 0.0625],
                    "layer_scores": [[1, 2, 3, 4], [0, 1, 2, 3], [0, 0, 1, 2], [0, 0, 0, 1]],
                    "objective": 3.5, "candidates": [{"anchors": [0, 2], "score": 3.5}]}
  })");
}

std::string parse_error(const std::string& text) {
  try {
    parse_plan(text, "x.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string validate_error(const Plan& plan) {
  try {
    validate_plan(plan, "p");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A scratch directory named after this file's tests.
struct TempDir : kascade::testing::TempDir {
  TempDir() : kascade::testing::TempDir("plan") {}
};

}  // namespace

// ---- valid plans ---------------------------------------------------------------------------------------

TEST(Plan, ParsesEveryField) {
  const Plan p = parse_plan(base_plan_json().dump(), "base");
  EXPECT_EQ(p.model_name, "tiny");
  EXPECT_EQ(p.layers, 4);
  EXPECT_EQ(p.hq, 4);
  EXPECT_EQ(p.hkv, 2);
  EXPECT_EQ(p.head_dim, 8);
  EXPECT_EQ(p.anchors, (std::vector<int>{0, 2}));
  EXPECT_EQ(p.head_map[1], (std::vector<int>{1, 0}));
  EXPECT_EQ(p.sparsity.rho, 0.25);
  EXPECT_EQ(p.sparsity.k_min, 16);
  EXPECT_EQ(p.sparsity.k_multiple, 8);
  EXPECT_EQ(p.sparsity.tile, 32);
  EXPECT_EQ(p.sparsity.budget, BudgetMode::Fixed);
  EXPECT_EQ(p.sparsity.pooling, Pooling::Group);
  EXPECT_EQ(p.provenance.dev_set, "unit");
  EXPECT_EQ(p.provenance.date, "2026-01-01");
  EXPECT_EQ(p.provenance.tool_version, "0.1.0");
  EXPECT_EQ(p.provenance.notes, "hand-made");
  ASSERT_TRUE(p.calibration.has_value());
  EXPECT_EQ(p.calibration->k_cal, 64);
  EXPECT_EQ(p.calibration->importance, (std::vector<double>{0.5, 0.25, 0.125, 0.0625}));
  EXPECT_EQ(p.calibration->layer_scores[0], (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(p.calibration->objective, 3.5);
  ASSERT_EQ(p.calibration->candidates.size(), 1u);
  EXPECT_EQ(p.calibration->candidates[0].anchors, (std::vector<int>{0, 2}));
}

TEST(Plan, OptionalPartsMayBeAbsent) {
  Json j = base_plan_json();
  j.erase("calibration");
  j["provenance"] = Json::object();
  const Plan p = parse_plan(j.dump(), "minimal");
  EXPECT_FALSE(p.calibration.has_value());
  EXPECT_TRUE(p.provenance.dev_set.empty());
  j["calibration"] = Json::object();
  const Plan q = parse_plan(j.dump(), "empty calibration");
  ASSERT_TRUE(q.calibration.has_value());
  EXPECT_FALSE(q.calibration->k_cal.has_value());
  EXPECT_FALSE(q.calibration->objective.has_value());
}

TEST(Plan, JsonRoundTripIsExact) {
  Plan p = parse_plan(base_plan_json().dump(), "base");
  p.sparsity.rho = 0.1;  // not exactly representable: must survive the text round trip bit for bit
  p.calibration->importance[1] = 1.0 / 3.0;
  const std::string text = to_json(p);
  const Plan q = parse_plan(text, "round trip");
  EXPECT_EQ(q.sparsity.rho, p.sparsity.rho);
  EXPECT_EQ(q.calibration->importance, p.calibration->importance);
  EXPECT_EQ(q.head_map, p.head_map);
  EXPECT_EQ(q.anchors, p.anchors);
  EXPECT_EQ(to_json(q), text);
  // Rows of the head map stay on one line each.
  EXPECT_NE(text.find("\"head_map\": [\n    [0, 1],\n    [1, 0],\n"), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');
}

TEST(Plan, SaveAndLoad) {
  TempDir dir;
  const std::string path = dir.file("plan.json");
  const Plan p = make_uniform_plan("m", 6, 8, 2, 64, {0, 3});
  save_plan(path, p);
  const Plan q = load_plan(path);
  EXPECT_EQ(to_json(q), to_json(p));
  EXPECT_EQ(dir.entries(), 1u);  // no plan.json.tmp left behind
  Plan bad = p;
  bad.anchors = {1, 3};
  EXPECT_THROW(save_plan(dir.file("bad.json"), bad), Error);
  EXPECT_EQ(dir.entries(), 1u);
  EXPECT_THROW(load_plan(dir.file("missing.json")), Error);
}

TEST(Plan, LoadRejectsDirectoriesAndHugeFiles) {
  TempDir dir;
  try {
    load_plan(dir.file(""));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
  const std::string huge = dir.file("huge.json");
  std::ofstream(huge) << "{}";
  fs::resize_file(huge, (16u << 20) + 1);  // sparse: cheap to make, one byte over the cap
  try {
    load_plan(huge);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("huge.json: larger than 16777216 bytes"), std::string::npos) << e.what();
  }
}

TEST(Plan, RolesAnchorsAndHeadMap) {
  const Plan p = parse_plan(base_plan_json().dump(), "base");
  EXPECT_EQ(p.role_of(0), Role::Layer0);
  EXPECT_EQ(p.role_of(1), Role::Reuse);
  EXPECT_EQ(p.role_of(2), Role::Anchor);
  EXPECT_EQ(p.role_of(3), Role::Reuse);
  EXPECT_EQ(p.anchor_of(0), 0);
  EXPECT_EQ(p.anchor_of(1), 0);
  EXPECT_EQ(p.anchor_of(2), 2);
  EXPECT_EQ(p.anchor_of(3), 2);
  EXPECT_EQ(p.anchor_slot(1), 0);
  EXPECT_EQ(p.anchor_slot(3), 1);
  EXPECT_EQ(p.source_head(1, 0), 1);
  EXPECT_EQ(p.source_head(3, 0), 1);
  EXPECT_THROW(p.role_of(4), Error);
  EXPECT_THROW(p.anchor_of(-1), Error);
  EXPECT_THROW(p.source_head(1, 2), Error);
}

TEST(Plan, ParamsCarryTheSparsityPolicy) {
  const SparsityParams s = parse_plan(base_plan_json().dump(), "base").params();
  EXPECT_EQ(s.rho, 0.25);
  EXPECT_EQ(s.k_min, 16);
  EXPECT_EQ(s.k_multiple, 8);
  EXPECT_EQ(s.tile, 32);
  EXPECT_EQ(s.budget, BudgetMode::Fixed);
  EXPECT_EQ(s.pooling, Pooling::Group);
  EXPECT_TRUE(std::isnan(s.scale));
  EXPECT_EQ(s.scale_for(64), 0.125f);
}

TEST(Plan, UniformPlan) {
  const Plan p = make_uniform_plan("smollm2-135m", 30, 9, 3, 64, {0, 10, 20});
  EXPECT_EQ(p.head_map.size(), 30u);
  for (const auto& row : p.head_map) EXPECT_EQ(row, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(p.sparsity.rho, kDefaultRho);
  EXPECT_EQ(p.sparsity.k_min, kDefaultKMin);
  EXPECT_EQ(p.sparsity.tile, kDefaultTile);
  EXPECT_EQ(p.role_of(10), Role::Anchor);
  EXPECT_EQ(p.anchor_of(29), 20);
  EXPECT_THROW(make_uniform_plan("m", 4, 4, 2, 8, {1}), Error);        // no layer 0
  EXPECT_THROW(make_uniform_plan("m", 4, 4, 3, 8, {0}), Error);        // 4 % 3
  EXPECT_THROW(make_uniform_plan("m", 0, 4, 2, 8, {0}), Error);        // no layers
  EXPECT_THROW(make_uniform_plan("m", 1 << 30, 4, 2, 8, {0}), Error);  // refused before allocating
}

TEST(Plan, ExamplePlansLoad) {
  const Plan smol = load_plan(plan_fixture("smollm2-135m.json"));
  EXPECT_NO_THROW(check_plan_matches(smol, 30, 9, 3, 64));
  EXPECT_EQ(smol.role_of(0), Role::Layer0);
  const Plan tiny = load_plan(plan_fixture("tiny-fixed-budget.json"));
  EXPECT_EQ(tiny.sparsity.budget, BudgetMode::Fixed);
  const Plan pooled = load_plan(plan_fixture("llama3-8b-all-pooled.json"));
  EXPECT_EQ(pooled.sparsity.pooling, Pooling::All);
  EXPECT_NO_THROW(check_plan_matches(pooled, 32, 32, 8, 128));
}

TEST(Plan, MatchingNamesTheMismatchedField) {
  const Plan p = make_uniform_plan("m", 30, 9, 3, 64, {0, 10});
  EXPECT_NO_THROW(check_plan_matches(p, 30, 9, 3, 64));
  const struct {
    int l, hq, hkv, d;
    const char* fragment;
  } cases[] = {{32, 9, 3, 64, "model.layers is 30 but the model has 32"},
               {30, 12, 3, 64, "model.hq is 9 but the model has 12"},
               {30, 9, 1, 64, "model.hkv is 3 but the model has 1"},
               {30, 9, 3, 128, "model.head_dim is 64 but the model has 128"}};
  for (const auto& c : cases) {
    try {
      check_plan_matches(p, c.l, c.hq, c.hkv, c.d);
      ADD_FAILURE() << c.fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.fragment), std::string::npos) << e.what();
    }
  }
}

// ---- malformed plans: one rule each --------------------------------------------------------------------

struct Malformed {
  const char* what;
  std::function<void(Json&)> mutate;
  const char* fragment;  // the error must contain it (after "x.json: ")
};

TEST(PlanMalformed, EachRuleNamesItsField) {
  ASSERT_EQ(parse_error(base_plan_json().dump()), "");
  const std::vector<Malformed> cases = {
      // Document.
      {"top level array", [](Json& j) { j = Json::array(); }, "(top level): expected an object, got an array"},
      {"unknown top key", [](Json& j) { j["extra"] = 1; }, "extra: unknown key"},
      {"format missing", [](Json& j) { j.erase("format"); }, "format: missing"},
      {"format wrong", [](Json& j) { j["format"] = "kascade"; }, "format: 'kascade' is not 'kascade-plan'"},
      {"version mismatch", [](Json& j) { j["version"] = 2; }, "version: version 2 is not supported"},
      {"version type", [](Json& j) { j["version"] = "1"; }, "version: expected an integer, got a string"},
      // Model.
      {"model missing", [](Json& j) { j.erase("model"); }, "model: missing"},
      {"model type", [](Json& j) { j["model"] = 3; }, "model: expected an object, got an integer"},
      {"model unknown key", [](Json& j) { j["model"]["vocab"] = 5; }, "model.vocab: unknown key"},
      {"name missing", [](Json& j) { j["model"].erase("name"); }, "model.name: missing"},
      {"name type", [](Json& j) { j["model"]["name"] = 1; }, "model.name: expected a string, got an integer"},
      {"name empty", [](Json& j) { j["model"]["name"] = ""; }, "model.name: must not be empty"},
      {"layers zero", [](Json& j) { j["model"]["layers"] = 0; }, "model.layers: 0 is out of range [1, 4096]"},
      {"layers huge", [](Json& j) { j["model"]["layers"] = 5000; }, "model.layers: 5000 is out of range"},
      {"layers float", [](Json& j) { j["model"]["layers"] = 4.0; }, "model.layers: expected an integer, got a number"},
      {"layers object", [](Json& j) { j["model"]["layers"] = Json::object(); },
       "model.layers: expected an integer, got an object"},
      {"layers bool", [](Json& j) { j["model"]["layers"] = true; }, "model.layers: expected an integer, got a boolean"},
      {"layers int64", [](Json& j) { j["model"]["layers"] = int64_t{1} << 40; }, "model.layers: 1099511627776 does not fit"},
      {"layers uint64", [](Json& j) { j["model"]["layers"] = uint64_t{1} << 63; }, "model.layers: 9223372036854775808 does not fit in a 32-bit integer"},
      {"hq zero", [](Json& j) { j["model"]["hq"] = 0; }, "model.hq: 0 is out of range"},
      {"hq huge", [](Json& j) { j["model"]["hq"] = 8192; }, "model.hq: 8192 is out of range [1, 4096]"},
      {"hkv zero", [](Json& j) { j["model"]["hkv"] = 0; }, "model.hkv: 0 is out of range [1, 4]"},
      {"hkv above hq", [](Json& j) { j["model"]["hkv"] = 8; }, "model.hkv: 8 is out of range [1, 4]"},
      {"hq not multiple", [](Json& j) { j["model"]["hkv"] = 3; }, "model.hq: 4 is not a multiple of hkv = 3"},
      {"head_dim zero", [](Json& j) { j["model"]["head_dim"] = 0; }, "model.head_dim: 0 is out of range"},
      {"head_dim huge", [](Json& j) { j["model"]["head_dim"] = 8192; }, "model.head_dim: 8192 is out of range"},
      // Anchors.
      {"anchors missing", [](Json& j) { j.erase("anchors"); }, "anchors: missing"},
      {"anchors type", [](Json& j) { j["anchors"] = 0; }, "anchors: expected an array"},
      {"anchors empty", [](Json& j) { j["anchors"] = Json::array(); }, "anchors: must start with layer 0"},
      {"anchors no zero", [](Json& j) { j["anchors"] = {1, 2}; }, "anchors: must start with layer 0"},
      {"anchors unsorted", [](Json& j) { j["anchors"] = {0, 3, 2}; }, "anchors[2]: 2 is not greater than 3"},
      {"anchors duplicate", [](Json& j) { j["anchors"] = {0, 2, 2}; }, "anchors[2]: 2 is not greater than 2"},
      {"anchors out of range", [](Json& j) { j["anchors"] = {0, 4}; }, "anchors[1]: 4 is not a layer (layers = 4)"},
      {"anchors negative", [](Json& j) { j["anchors"] = {0, -1}; }, "anchors[1]: -1 is not a layer"},
      {"anchors element type", [](Json& j) { j["anchors"] = {0, "2"}; }, "anchors[1]: expected an integer, got a string"},
      // Head map.
      {"head_map missing", [](Json& j) { j.erase("head_map"); }, "head_map: missing"},
      {"head_map rows", [](Json& j) { j["head_map"].erase(3); }, "head_map: 3 rows, expected one per layer (layers = 4)"},
      {"head_map row type", [](Json& j) { j["head_map"][1] = 0; }, "head_map[1]: expected an array"},
      {"head_map row size", [](Json& j) { j["head_map"][3] = {1}; }, "head_map[3]: 1 entries, expected one per kv head (hkv = 2)"},
      {"head_map high", [](Json& j) { j["head_map"][3][1] = 2; }, "head_map[3][1]: 2 is not a kv head (hkv = 2)"},
      {"head_map negative", [](Json& j) { j["head_map"][1][0] = -1; }, "head_map[1][0]: -1 is not a kv head"},
      {"head_map type", [](Json& j) { j["head_map"][1][0] = 0.5; }, "head_map[1][0]: expected an integer, got a number"},
      {"anchor not identity", [](Json& j) { j["head_map"][2] = {1, 0}; }, "head_map[2][0]: 1: layer 2 is an anchor"},
      {"layer 0 not identity", [](Json& j) { j["head_map"][0][1] = 0; }, "head_map[0][1]: 0: layer 0 is an anchor"},
      {"pooling all needs identity", [](Json& j) { j["sparsity"]["pooling"] = "all"; },
       "head_map[1][0]: 1: with pooling 'all'"},
      // Sparsity.
      {"sparsity missing", [](Json& j) { j.erase("sparsity"); }, "sparsity: missing"},
      {"sparsity field missing", [](Json& j) { j["sparsity"].erase("tile"); }, "sparsity.tile: missing"},
      {"sparsity unknown", [](Json& j) { j["sparsity"]["k_max"] = 1; }, "sparsity.k_max: unknown key"},
      {"rho zero", [](Json& j) { j["sparsity"]["rho"] = 0; }, "sparsity.rho: 0 is out of range (0, 1]"},
      {"rho above one", [](Json& j) { j["sparsity"]["rho"] = 1.5; }, "sparsity.rho: 1.5 is out of range"},
      {"rho negative", [](Json& j) { j["sparsity"]["rho"] = -0.1; }, "sparsity.rho: -0.10000000000000001 is out of range"},
      {"rho type", [](Json& j) { j["sparsity"]["rho"] = "0.1"; }, "sparsity.rho: expected a number, got a string"},
      {"k_min zero", [](Json& j) { j["sparsity"]["k_min"] = 0; }, "sparsity.k_min: 0 is out of range"},
      {"k_multiple zero", [](Json& j) { j["sparsity"]["k_multiple"] = 0; }, "sparsity.k_multiple: 0 is out of range"},
      {"tile zero", [](Json& j) { j["sparsity"]["tile"] = 0; }, "sparsity.tile: 0 is out of range"},
      {"budget unknown", [](Json& j) { j["sparsity"]["budget"] = "sliding"; }, "sparsity.budget: unknown budget 'sliding'"},
      {"pooling unknown", [](Json& j) { j["sparsity"]["pooling"] = "head"; }, "sparsity.pooling: unknown pooling 'head'"},
      // Provenance.
      {"provenance missing", [](Json& j) { j.erase("provenance"); }, "provenance: missing"},
      {"provenance type", [](Json& j) { j["provenance"] = "x"; }, "provenance: expected an object, got a string"},
      {"provenance field type", [](Json& j) { j["provenance"]["date"] = 2026; }, "provenance.date: expected a string"},
      {"provenance unknown", [](Json& j) { j["provenance"]["author"] = "x"; }, "provenance.author: unknown key"},
      // Calibration.
      {"calibration type", [](Json& j) { j["calibration"] = Json::array(); }, "calibration: expected an object"},
      {"calibration unknown", [](Json& j) { j["calibration"]["coverage"] = 1; }, "calibration.coverage: unknown key"},
      {"k_cal zero", [](Json& j) { j["calibration"]["k_cal"] = 0; }, "calibration.k_cal: 0 is out of range"},
      {"importance length", [](Json& j) { j["calibration"]["importance"].erase(0); },
       "calibration.importance: 3 values, expected one per layer"},
      {"importance type", [](Json& j) { j["calibration"]["importance"][2] = "x"; },
       "calibration.importance[2]: expected a number"},
      {"layer_scores rows", [](Json& j) { j["calibration"]["layer_scores"].erase(0); },
       "calibration.layer_scores: 3 rows"},
      {"layer_scores cols", [](Json& j) { j["calibration"]["layer_scores"][1].erase(0); },
       "calibration.layer_scores[1]: 3 values"},
      {"layer_scores type", [](Json& j) { j["calibration"]["layer_scores"][1][1] = nullptr; },
       "calibration.layer_scores[1][1]: expected a number, got null"},
      {"objective type", [](Json& j) { j["calibration"]["objective"] = "high"; }, "calibration.objective: expected a number"},
      {"candidate anchors", [](Json& j) { j["calibration"]["candidates"][0]["anchors"] = {0, 9}; },
       "calibration.candidates[0].anchors[1]: 9 is not a layer"},
      {"candidate score missing", [](Json& j) { j["calibration"]["candidates"][0].erase("score"); },
       "calibration.candidates[0].score: missing"},
      {"candidate unknown", [](Json& j) { j["calibration"]["candidates"][0]["m"] = 2; },
       "calibration.candidates[0].m: unknown key"},
      {"candidate type", [](Json& j) { j["calibration"]["candidates"][0] = 1; },
       "calibration.candidates[0]: expected an object"},
  };
  for (const Malformed& c : cases) {
    Json j = base_plan_json();
    c.mutate(j);
    const std::string msg = parse_error(j.dump());
    EXPECT_NE(msg.find(std::string("x.json: ") + c.fragment), std::string::npos)
        << c.what << ": expected '" << c.fragment << "', got '" << msg << "'";
  }
}

TEST(PlanMalformed, JsonSyntax) {
  const std::string base = base_plan_json().dump();
  EXPECT_NE(parse_error(base.substr(0, base.size() - 1)).find("x.json: invalid JSON: "), std::string::npos);
  EXPECT_NE(parse_error("").find("x.json: invalid JSON"), std::string::npos);
  EXPECT_NE(parse_error(base + " x").find("x.json: invalid JSON"), std::string::npos);
  // Comments and NaN are not JSON.
  EXPECT_NE(parse_error("// plan\n" + base).find("invalid JSON"), std::string::npos);
  std::string with_nan = base;
  with_nan.replace(with_nan.find("0.25"), 4, "NaN");
  EXPECT_NE(parse_error(with_nan).find("invalid JSON"), std::string::npos);
}

TEST(PlanMalformed, DuplicateKeys) {
  std::string text = base_plan_json().dump();
  // nlohmann would keep the last value silently; a plan must say which one it means.
  text.insert(text.find("\"version\""), "\"version\":1,");
  EXPECT_EQ(parse_error(text), "x.json: duplicate key 'version'");
  std::string nested = base_plan_json().dump();
  nested.insert(nested.find("\"rho\""), "\"rho\":0.5,");
  EXPECT_EQ(parse_error(nested), "x.json: duplicate key 'rho'");
}

TEST(PlanMalformed, DepthAndSize) {
  Json j = base_plan_json();
  Json deep = 1;
  for (int i = 0; i < 20; ++i) deep = Json::array({deep});
  j["provenance"]["notes"] = deep;
  EXPECT_NE(parse_error(j.dump()).find("nested deeper than 16 levels"), std::string::npos);
  std::string huge = base_plan_json().dump();
  huge.append((16u << 20) + 1 - huge.size(), ' ');
  EXPECT_NE(parse_error(huge).find("too large for a plan"), std::string::npos);
}

TEST(PlanMalformed, NonFiniteValuesInCode) {
  // JSON cannot spell NaN, but a plan built in code can hold one: validate_plan rejects it.
  Plan p = parse_plan(base_plan_json().dump(), "base");
  ASSERT_EQ(validate_error(p), "");
  Plan a = p;
  a.sparsity.rho = NAN;
  EXPECT_EQ(validate_error(a), "p: sparsity.rho: nan is out of range (0, 1]");
  Plan b = p;
  b.calibration->importance[1] = INFINITY;
  EXPECT_EQ(validate_error(b), "p: calibration.importance[1]: must be finite");
  Plan c = p;
  c.calibration->layer_scores[2][3] = NAN;
  EXPECT_EQ(validate_error(c), "p: calibration.layer_scores[2][3]: must be finite");
  Plan d = p;
  d.calibration->objective = -INFINITY;
  EXPECT_EQ(validate_error(d), "p: calibration.objective: must be finite");
  Plan e = p;
  e.calibration->candidates[0].score = NAN;
  EXPECT_EQ(validate_error(e), "p: calibration.candidates[0].score: must be finite");
  Plan f = p;
  f.sparsity.budget = static_cast<BudgetMode>(7);
  EXPECT_EQ(validate_error(f), "p: sparsity.budget: invalid budget mode");
  Plan g = p;
  g.sparsity.pooling = static_cast<Pooling>(7);
  EXPECT_EQ(validate_error(g), "p: sparsity.pooling: invalid pooling mode");
  Plan h = p;  // the JSON has no scale: a plan that sets one could not round-trip
  h.sparsity.scale = 0.5f;
  EXPECT_EQ(validate_error(h), "p: sparsity.scale: is not part of a plan (the model's own scale applies)");
  EXPECT_THROW(to_json(a), Error);
}

// ---- the held-out choice (calibration.selection) ---------------------------------------------------------

namespace {

// The base plan with the record of a choice among three scored plans, the last one chosen.
Json plan_with_selection_json() {
  Json j = base_plan_json();
  j["calibration"]["selection"] = Json::parse(R"({
    "statistic": "paper", "held_out": "16 held-out prompts",
    "evaluated": [
      {"anchors": [0, 1], "pooling": "group", "stage": "candidate", "source": "spec dp m=2", "kl": 0.5, "answer_loss": 2.0},
      {"anchors": [0, 3], "pooling": "group", "stage": "search", "source": "search: anchor 1 -> 3", "kl": 0.25, "answer_loss": 1.5},
      {"anchors": [0, 2], "pooling": "group", "stage": "search", "source": "search: anchor 3 -> 2", "kl": 0.125, "answer_loss": 1.25}
    ],
    "search_path": [0, 1, 2], "chosen": 2})");
  return j;
}

}  // namespace

TEST(PlanSelection, ParsesAndRoundTrips) {
  const Plan p = parse_plan(plan_with_selection_json().dump(), "selection");
  ASSERT_TRUE(p.calibration && p.calibration->selection);
  const PlanSelection& s = *p.calibration->selection;
  EXPECT_EQ(s.statistic, "paper");
  EXPECT_EQ(s.held_out, "16 held-out prompts");
  ASSERT_EQ(s.evaluated.size(), 3u);
  EXPECT_EQ(s.evaluated[1].anchors, (std::vector<int>{0, 3}));
  EXPECT_EQ(s.evaluated[1].stage, "search");
  EXPECT_EQ(s.evaluated[1].source, "search: anchor 1 -> 3");
  EXPECT_EQ(s.evaluated[1].kl, 0.25);
  EXPECT_EQ(s.evaluated[1].answer_loss, 1.5);
  EXPECT_EQ(s.search_path, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(s.chosen, 2);
  const Plan q = parse_plan(to_json(p), "again");
  ASSERT_TRUE(q.calibration && q.calibration->selection);
  EXPECT_EQ(to_json(q), to_json(p));
  // Plans written before the selection existed still load, without one.
  EXPECT_FALSE(parse_plan(base_plan_json().dump(), "old").calibration->selection.has_value());
}

TEST(PlanSelection, PooledChoiceMatchesAPooledPlan) {
  Json j = plan_with_selection_json();
  j["sparsity"]["pooling"] = "all";
  j["head_map"] = Json::parse("[[0, 1], [0, 1], [0, 1], [0, 1]]");
  j["calibration"]["selection"]["evaluated"][2]["pooling"] = "all";
  j["calibration"]["selection"]["evaluated"][2]["stage"] = "pooling";
  EXPECT_EQ(parse_error(j.dump()), "");
}

TEST(PlanSelection, EachRuleNamesItsField) {
  ASSERT_EQ(parse_error(plan_with_selection_json().dump()), "");
  const std::vector<Malformed> cases = {
      {"type", [](Json& j) { j["calibration"]["selection"] = 1; }, "calibration.selection: expected an object"},
      {"unknown", [](Json& j) { j["calibration"]["selection"]["best"] = 1; }, "calibration.selection.best: unknown key"},
      {"statistic missing", [](Json& j) { j["calibration"]["selection"].erase("statistic"); },
       "calibration.selection.statistic: missing"},
      {"statistic empty", [](Json& j) { j["calibration"]["selection"]["statistic"] = ""; },
       "calibration.selection.statistic: must not be empty"},
      {"evaluated empty", [](Json& j) { j["calibration"]["selection"]["evaluated"] = Json::array(); },
       "calibration.selection.evaluated: must list at least the chosen plan"},
      {"entry unknown", [](Json& j) { j["calibration"]["selection"]["evaluated"][0]["m"] = 2; },
       "calibration.selection.evaluated[0].m: unknown key"},
      {"entry anchors", [](Json& j) { j["calibration"]["selection"]["evaluated"][0]["anchors"] = {1, 2}; },
       "calibration.selection.evaluated[0].anchors: must start with layer 0"},
      {"entry pooling", [](Json& j) { j["calibration"]["selection"]["evaluated"][0]["pooling"] = "heads"; },
       "calibration.selection.evaluated[0].pooling: "},
      {"entry stage", [](Json& j) { j["calibration"]["selection"]["evaluated"][0]["stage"] = "guess"; },
       "calibration.selection.evaluated[0].stage: 'guess' is not candidate, search or pooling"},
      {"entry kl negative", [](Json& j) { j["calibration"]["selection"]["evaluated"][1]["kl"] = -0.5; },
       "calibration.selection.evaluated[1].kl: -0.5 is negative"},
      {"entry kl missing", [](Json& j) { j["calibration"]["selection"]["evaluated"][1].erase("kl"); },
       "calibration.selection.evaluated[1].kl: missing"},
      {"entry answer type", [](Json& j) { j["calibration"]["selection"]["evaluated"][1]["answer_loss"] = "low"; },
       "calibration.selection.evaluated[1].answer_loss: expected a number"},
      {"path out of range", [](Json& j) { j["calibration"]["selection"]["search_path"] = {0, 3}; },
       "calibration.selection.search_path[1]: 3 is out of range [0, 2]"},
      {"chosen out of range", [](Json& j) { j["calibration"]["selection"]["chosen"] = 5; },
       "calibration.selection.chosen: 5 is out of range [0, 2]"},
      {"chosen is another plan", [](Json& j) { j["calibration"]["selection"]["chosen"] = 1; },
       "calibration.selection.chosen: evaluated[1] (pooling 'group') is not this plan"},
      {"chosen pooling differs", [](Json& j) { j["calibration"]["selection"]["evaluated"][2]["pooling"] = "all"; },
       "calibration.selection.chosen: evaluated[2] (pooling 'all') is not this plan (its anchors and pooling 'group')"},
  };
  for (const Malformed& c : cases) {
    Json j = plan_with_selection_json();
    c.mutate(j);
    const std::string msg = parse_error(j.dump());
    EXPECT_NE(msg.find(std::string("x.json: ") + c.fragment), std::string::npos)
        << c.what << ": expected '" << c.fragment << "', got '" << msg << "'";
  }
  // A plan built in code with a non-finite loss.
  Plan p = parse_plan(plan_with_selection_json().dump(), "base");
  p.calibration->selection->evaluated[0].kl = NAN;
  EXPECT_EQ(validate_error(p), "p: calibration.selection.evaluated[0].kl: must be finite");
}
