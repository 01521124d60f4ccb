// The plan: strict JSON parsing, validation, serialisation (see kascade/plan.h).
//
// Parsing is two steps. The reader below turns JSON into a Plan, checking only what the C++
// types need (object/array/string/integer/number, every key known, every required key
// present). validate_plan then checks every rule of the plan itself; it names fields by their
// JSON path, so a plan built in code and a plan read from a file fail with the same message.
#include "kascade/plan.h"

#include "file_io.h"
#include "kascade/json.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace kascade {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

// A plan is a few kilobytes; anything far larger is not a plan.
constexpr size_t kMaxPlanBytes = 16u << 20;
// The plan's deepest value is calibration.selection.evaluated[i].anchors[j] (depth 6).
constexpr int kMaxJsonDepth = 16;

[[noreturn]] void fail_at(const std::string& name, const std::string& path, const std::string& what) {
  KASCADE_FAIL(name << ": " << path << ": " << what);
}

std::string join_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}
std::string index_path(const std::string& parent, size_t i) { return parent + "[" + std::to_string(i) + "]"; }

const char* json_type_name(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::object: return "an object";
    case Json::value_t::array: return "an array";
    case Json::value_t::string: return "a string";
    case Json::value_t::boolean: return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "an integer";
    case Json::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

// Reads one JSON object: every key must be taken exactly once by required()/optional() before
// finish(), which rejects the keys nobody asked for.
class ObjectReader {
 public:
  ObjectReader(const Json& j, std::string path, const std::string& name)
      : object_(j), path_(std::move(path)), name_(name) {
    if (!j.is_object()) fail_at(name_, path_.empty() ? "(top level)" : path_, std::string("expected an object, got ") + json_type_name(j));
  }
  const Json& required(const char* key) {
    const Json* v = optional(key);
    if (!v) fail_at(name_, join_path(path_, key), "missing");
    return *v;
  }
  const Json* optional(const char* key) {
    taken_.insert(key);
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  void finish() const {
    for (auto it = object_.begin(); it != object_.end(); ++it)
      if (!taken_.count(it.key())) fail_at(name_, join_path(path_, it.key()), "unknown key");
  }
  std::string path(const char* key) const { return join_path(path_, key); }

 private:
  const Json& object_;
  std::string path_;
  const std::string& name_;
  std::set<std::string> taken_;
};

int read_int(const Json& j, const std::string& path, const std::string& name) {
  if (!j.is_number_integer()) fail_at(name, path, std::string("expected an integer, got ") + json_type_name(j));
  // number_unsigned above INT64_MAX and anything outside int are both out of range.
  if (j.is_number_unsigned() ? j.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int>::max())
                             : (j.get<int64_t>() < std::numeric_limits<int>::min() ||
                                j.get<int64_t>() > std::numeric_limits<int>::max()))
    fail_at(name, path, j.dump() + " does not fit in a 32-bit integer");
  return static_cast<int>(j.get<int64_t>());
}

double read_number(const Json& j, const std::string& path, const std::string& name) {
  if (!j.is_number()) fail_at(name, path, std::string("expected a number, got ") + json_type_name(j));
  return j.get<double>();
}

std::string read_string(const Json& j, const std::string& path, const std::string& name) {
  if (!j.is_string()) fail_at(name, path, std::string("expected a string, got ") + json_type_name(j));
  return j.get<std::string>();
}

const Json& read_array(const Json& j, const std::string& path, const std::string& name) {
  if (!j.is_array()) fail_at(name, path, std::string("expected an array, got ") + json_type_name(j));
  return j;
}

std::vector<int> read_int_array(const Json& j, const std::string& path, const std::string& name) {
  std::vector<int> out;
  for (size_t i = 0; i < read_array(j, path, name).size(); ++i) out.push_back(read_int(j[i], index_path(path, i), name));
  return out;
}

std::vector<double> read_number_array(const Json& j, const std::string& path, const std::string& name) {
  std::vector<double> out;
  for (size_t i = 0; i < read_array(j, path, name).size(); ++i)
    out.push_back(read_number(j[i], index_path(path, i), name));
  return out;
}

void validate_anchor_list(const std::vector<int>& anchors, int layers, const std::string& path,
                          const std::string& name) {
  if (anchors.empty() || anchors[0] != 0)
    fail_at(name, path, "must start with layer 0 (layer 0 is always an anchor and computes dense attention)");
  for (size_t i = 0; i < anchors.size(); ++i) {
    const int a = anchors[i];
    if (a < 0 || a >= layers)
      fail_at(name, index_path(path, i), std::to_string(a) + " is not a layer (layers = " + std::to_string(layers) + ")");
    if (i > 0 && a <= anchors[i - 1])
      fail_at(name, index_path(path, i),
              std::to_string(a) + " is not greater than " + std::to_string(anchors[i - 1]) +
                  " (anchors must be sorted and unique)");
  }
}

void check_finite(double v, const std::string& path, const std::string& name) {
  if (!std::isfinite(v)) fail_at(name, path, "must be finite");
}

void check_range(int v, int lo, int hi, const std::string& path, const std::string& name) {
  if (v < lo || v > hi)
    fail_at(name, path, std::to_string(v) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

std::string format_double(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

Plan plan_from_json(const Json& root, const std::string& name) {
  Plan plan;
  ObjectReader top(root, "", name);
  const std::string format = read_string(top.required("format"), "format", name);
  if (format != kPlanFormat) fail_at(name, "format", "'" + format + "' is not '" + kPlanFormat + "'");
  const int version = read_int(top.required("version"), "version", name);
  if (version != kPlanVersion)
    fail_at(name, "version", "version " + std::to_string(version) + " is not supported (this build reads version " +
                                 std::to_string(kPlanVersion) + ")");

  ObjectReader model(top.required("model"), "model", name);
  plan.model_name = read_string(model.required("name"), model.path("name"), name);
  plan.layers = read_int(model.required("layers"), model.path("layers"), name);
  plan.hq = read_int(model.required("hq"), model.path("hq"), name);
  plan.hkv = read_int(model.required("hkv"), model.path("hkv"), name);
  plan.head_dim = read_int(model.required("head_dim"), model.path("head_dim"), name);
  model.finish();

  plan.anchors = read_int_array(top.required("anchors"), "anchors", name);
  const Json& map = read_array(top.required("head_map"), "head_map", name);
  for (size_t j = 0; j < map.size(); ++j) plan.head_map.push_back(read_int_array(map[j], index_path("head_map", j), name));

  ObjectReader sparsity(top.required("sparsity"), "sparsity", name);
  plan.sparsity.rho = read_number(sparsity.required("rho"), sparsity.path("rho"), name);
  plan.sparsity.k_min = read_int(sparsity.required("k_min"), sparsity.path("k_min"), name);
  plan.sparsity.k_multiple = read_int(sparsity.required("k_multiple"), sparsity.path("k_multiple"), name);
  plan.sparsity.tile = read_int(sparsity.required("tile"), sparsity.path("tile"), name);
  const std::string budget = read_string(sparsity.required("budget"), sparsity.path("budget"), name);
  const std::string pooling = read_string(sparsity.required("pooling"), sparsity.path("pooling"), name);
  try {
    plan.sparsity.budget = parse_budget(budget);
  } catch (const Error& e) {
    fail_at(name, sparsity.path("budget"), e.what());
  }
  try {
    plan.sparsity.pooling = parse_pooling(pooling);
  } catch (const Error& e) {
    fail_at(name, sparsity.path("pooling"), e.what());
  }
  sparsity.finish();

  ObjectReader provenance(top.required("provenance"), "provenance", name);
  auto optional_string = [&](const char* key, std::string& out) {
    if (const Json* v = provenance.optional(key)) out = read_string(*v, provenance.path(key), name);
  };
  optional_string("dev_set", plan.provenance.dev_set);
  optional_string("date", plan.provenance.date);
  optional_string("tool_version", plan.provenance.tool_version);
  optional_string("notes", plan.provenance.notes);
  provenance.finish();

  if (const Json* cal_json = top.optional("calibration")) {
    ObjectReader cal(*cal_json, "calibration", name);
    PlanCalibration c;
    if (const Json* v = cal.optional("k_cal")) c.k_cal = read_int(*v, cal.path("k_cal"), name);
    if (const Json* v = cal.optional("importance")) c.importance = read_number_array(*v, cal.path("importance"), name);
    if (const Json* v = cal.optional("layer_scores")) {
      const std::string path = cal.path("layer_scores");
      for (size_t i = 0; i < read_array(*v, path, name).size(); ++i)
        c.layer_scores.push_back(read_number_array((*v)[i], index_path(path, i), name));
    }
    if (const Json* v = cal.optional("objective")) c.objective = read_number(*v, cal.path("objective"), name);
    if (const Json* v = cal.optional("candidates")) {
      const std::string path = cal.path("candidates");
      for (size_t i = 0; i < read_array(*v, path, name).size(); ++i) {
        ObjectReader entry((*v)[i], index_path(path, i), name);
        PlanCandidate candidate;
        candidate.anchors = read_int_array(entry.required("anchors"), entry.path("anchors"), name);
        candidate.score = read_number(entry.required("score"), entry.path("score"), name);
        entry.finish();
        c.candidates.push_back(std::move(candidate));
      }
    }
    if (const Json* v = cal.optional("selection")) {
      ObjectReader sel(*v, cal.path("selection"), name);
      PlanSelection selection;
      selection.statistic = read_string(sel.required("statistic"), sel.path("statistic"), name);
      if (const Json* h = sel.optional("held_out")) selection.held_out = read_string(*h, sel.path("held_out"), name);
      const std::string path = sel.path("evaluated");
      const Json& list = read_array(sel.required("evaluated"), path, name);
      for (size_t i = 0; i < list.size(); ++i) {
        ObjectReader entry(list[i], index_path(path, i), name);
        PlanEvaluation e;
        e.anchors = read_int_array(entry.required("anchors"), entry.path("anchors"), name);
        const std::string pooling_name = read_string(entry.required("pooling"), entry.path("pooling"), name);
        try {
          e.pooling = parse_pooling(pooling_name);
        } catch (const Error& error) {
          fail_at(name, entry.path("pooling"), error.what());
        }
        e.stage = read_string(entry.required("stage"), entry.path("stage"), name);
        e.source = read_string(entry.required("source"), entry.path("source"), name);
        e.kl = read_number(entry.required("kl"), entry.path("kl"), name);
        e.answer_loss = read_number(entry.required("answer_loss"), entry.path("answer_loss"), name);
        entry.finish();
        selection.evaluated.push_back(std::move(e));
      }
      selection.search_path = read_int_array(sel.required("search_path"), sel.path("search_path"), name);
      selection.chosen = read_int(sel.required("chosen"), sel.path("chosen"), name);
      sel.finish();
      c.selection = std::move(selection);
    }
    cal.finish();
    plan.calibration = std::move(c);
  }
  top.finish();
  return plan;
}

// The held-out choice: well-formed entries, indices in range, and the chosen entry is this plan.
void validate_selection(const Plan& plan, const PlanSelection& s, const std::string& name) {
  const std::string base = "calibration.selection";
  if (s.statistic.empty()) fail_at(name, base + ".statistic", "must not be empty");
  if (s.evaluated.empty()) fail_at(name, base + ".evaluated", "must list at least the chosen plan");
  for (size_t i = 0; i < s.evaluated.size(); ++i) {
    const PlanEvaluation& e = s.evaluated[i];
    const std::string path = index_path(base + ".evaluated", i);
    validate_anchor_list(e.anchors, plan.layers, path + ".anchors", name);
    if (e.pooling != Pooling::Group && e.pooling != Pooling::All) fail_at(name, path + ".pooling", "invalid pooling mode");
    if (e.stage != "candidate" && e.stage != "search" && e.stage != "pooling")
      fail_at(name, path + ".stage", "'" + e.stage + "' is not candidate, search or pooling");
    check_finite(e.kl, path + ".kl", name);
    if (e.kl < 0) fail_at(name, path + ".kl", format_double(e.kl) + " is negative (a KL divergence is >= 0)");
    check_finite(e.answer_loss, path + ".answer_loss", name);
  }
  const int count = static_cast<int>(s.evaluated.size());
  for (size_t i = 0; i < s.search_path.size(); ++i)
    check_range(s.search_path[i], 0, count - 1, index_path(base + ".search_path", i), name);
  check_range(s.chosen, 0, count - 1, base + ".chosen", name);
  const PlanEvaluation& chosen = s.evaluated[static_cast<size_t>(s.chosen)];
  if (chosen.anchors != plan.anchors || chosen.pooling != plan.sparsity.pooling)
    fail_at(name, base + ".chosen",
            "evaluated[" + std::to_string(s.chosen) + "] (pooling '" + to_string(chosen.pooling) +
                "') is not this plan (its anchors and pooling '" + to_string(plan.sparsity.pooling) + "')");
}

}  // namespace

// ---- rules ------------------------------------------------------------------------------------

void validate_plan(const Plan& plan, const std::string& name) {
  if (plan.model_name.empty()) fail_at(name, "model.name", "must not be empty");
  check_range(plan.layers, 1, kPlanMaxLayers, "model.layers", name);
  check_range(plan.hq, 1, kPlanMaxHeads, "model.hq", name);
  check_range(plan.hkv, 1, plan.hq, "model.hkv", name);
  if (plan.hq % plan.hkv != 0)
    fail_at(name, "model.hq", std::to_string(plan.hq) + " is not a multiple of hkv = " + std::to_string(plan.hkv));
  check_range(plan.head_dim, 1, kPlanMaxHeadDim, "model.head_dim", name);

  validate_anchor_list(plan.anchors, plan.layers, "anchors", name);

  if (plan.head_map.size() != static_cast<size_t>(plan.layers))
    fail_at(name, "head_map",
            std::to_string(plan.head_map.size()) + " rows, expected one per layer (layers = " +
                std::to_string(plan.layers) + ")");
  size_t next_anchor = 0;
  for (int j = 0; j < plan.layers; ++j) {
    const std::string row_path = index_path("head_map", j);
    const std::vector<int>& row = plan.head_map[j];
    if (row.size() != static_cast<size_t>(plan.hkv))
      fail_at(name, row_path,
              std::to_string(row.size()) + " entries, expected one per kv head (hkv = " + std::to_string(plan.hkv) + ")");
    const bool is_anchor = next_anchor < plan.anchors.size() && plan.anchors[next_anchor] == j;
    if (is_anchor) ++next_anchor;
    for (int g = 0; g < plan.hkv; ++g) {
      const int src = row[g];
      const std::string path = index_path(row_path, g);
      if (src < 0 || src >= plan.hkv)
        fail_at(name, path, std::to_string(src) + " is not a kv head (hkv = " + std::to_string(plan.hkv) + ")");
      if (is_anchor && src != g)
        fail_at(name, path,
                std::to_string(src) + ": layer " + std::to_string(j) + " is an anchor and must map kv head " +
                    std::to_string(g) + " to itself");
      if (plan.sparsity.pooling == Pooling::All && src != g)
        fail_at(name, path,
                std::to_string(src) + ": with pooling 'all' every layer shares one selection, so the head map must "
                                      "be the identity");
    }
  }

  if (!(plan.sparsity.rho > 0.0 && plan.sparsity.rho <= 1.0))  // also rejects NaN
    fail_at(name, "sparsity.rho", format_double(plan.sparsity.rho) + " is out of range (0, 1]");
  check_range(plan.sparsity.k_min, 1, std::numeric_limits<int>::max(), "sparsity.k_min", name);
  check_range(plan.sparsity.k_multiple, 1, std::numeric_limits<int>::max(), "sparsity.k_multiple", name);
  check_range(plan.sparsity.tile, 1, std::numeric_limits<int>::max(), "sparsity.tile", name);
  if (plan.sparsity.budget != BudgetMode::Rolling && plan.sparsity.budget != BudgetMode::Fixed)
    fail_at(name, "sparsity.budget", "invalid budget mode");
  if (plan.sparsity.pooling != Pooling::Group && plan.sparsity.pooling != Pooling::All)
    fail_at(name, "sparsity.pooling", "invalid pooling mode");
  if (!std::isnan(plan.sparsity.scale))
    fail_at(name, "sparsity.scale", "is not part of a plan (the model's own scale applies)");

  if (plan.calibration) {
    const PlanCalibration& c = *plan.calibration;
    if (c.k_cal) check_range(*c.k_cal, 1, std::numeric_limits<int>::max(), "calibration.k_cal", name);
    if (!c.importance.empty()) {
      if (c.importance.size() != static_cast<size_t>(plan.layers))
        fail_at(name, "calibration.importance",
                std::to_string(c.importance.size()) + " values, expected one per layer (layers = " +
                    std::to_string(plan.layers) + ")");
      for (size_t l = 0; l < c.importance.size(); ++l)
        check_finite(c.importance[l], index_path("calibration.importance", l), name);
    }
    if (!c.layer_scores.empty()) {
      if (c.layer_scores.size() != static_cast<size_t>(plan.layers))
        fail_at(name, "calibration.layer_scores",
                std::to_string(c.layer_scores.size()) + " rows, expected one per layer (layers = " +
                    std::to_string(plan.layers) + ")");
      for (size_t a = 0; a < c.layer_scores.size(); ++a) {
        const std::string row_path = index_path("calibration.layer_scores", a);
        if (c.layer_scores[a].size() != static_cast<size_t>(plan.layers))
          fail_at(name, row_path,
                  std::to_string(c.layer_scores[a].size()) + " values, expected one per layer (layers = " +
                      std::to_string(plan.layers) + ")");
        for (size_t b = 0; b < c.layer_scores[a].size(); ++b) check_finite(c.layer_scores[a][b], index_path(row_path, b), name);
      }
    }
    if (c.objective) check_finite(*c.objective, "calibration.objective", name);
    for (size_t i = 0; i < c.candidates.size(); ++i) {
      const std::string path = index_path("calibration.candidates", i);
      validate_anchor_list(c.candidates[i].anchors, plan.layers, path + ".anchors", name);
      check_finite(c.candidates[i].score, path + ".score", name);
    }
    if (c.selection) validate_selection(plan, *c.selection, name);
  }
}

void check_plan_matches(const Plan& plan, int layers, int hq, int hkv, int head_dim) {
  auto check = [&](const char* field, int planned, int actual) {
    KASCADE_CHECK(planned == actual, "plan for '" << plan.model_name << "': " << field << " is " << planned
                                                  << " but the model has " << actual);
  };
  check("model.layers", plan.layers, layers);
  check("model.hq", plan.hq, hq);
  check("model.hkv", plan.hkv, hkv);
  check("model.head_dim", plan.head_dim, head_dim);
}

// ---- queries -----------------------------------------------------------------------------------

int Plan::anchor_slot(int layer) const {
  KASCADE_CHECK(layer >= 0 && layer < layers,
                "plan: layer " << layer << " is out of range (layers = " << layers << ")");
  KASCADE_CHECK(!anchors.empty() && anchors[0] == 0, "plan: anchors must start with layer 0");
  // Anchors are few (a handful): a linear scan is clearer than a binary search.
  int slot = 0;
  for (size_t i = 1; i < anchors.size() && anchors[i] <= layer; ++i) slot = static_cast<int>(i);
  return slot;
}

int Plan::anchor_of(int layer) const { return anchors[anchor_slot(layer)]; }

Role Plan::role_of(int layer) const {
  if (anchor_of(layer) != layer) return Role::Reuse;
  return layer == 0 ? Role::Layer0 : Role::Anchor;
}

int Plan::source_head(int layer, int kv_head) const {
  KASCADE_CHECK(layer >= 0 && layer < layers && static_cast<size_t>(layer) < head_map.size(),
                "plan: layer " << layer << " is out of range (layers = " << layers << ")");
  KASCADE_CHECK(kv_head >= 0 && static_cast<size_t>(kv_head) < head_map[layer].size(),
                "plan: kv head " << kv_head << " is out of range (hkv = " << hkv << ")");
  return head_map[layer][kv_head];
}


// ---- I/O ----------------------------------------------------------------------------------------

Plan parse_plan(const std::string& text, const std::string& name) {
  KASCADE_CHECK(text.size() <= kMaxPlanBytes,
                name << ": " << text.size() << " bytes is too large for a plan (limit " << kMaxPlanBytes << ")");
  Plan plan = plan_from_json(parse_json_strict(text, name, kMaxJsonDepth), name);
  validate_plan(plan, name);
  return plan;
}

Plan load_plan(const std::string& path) {
  const std::vector<uint8_t> bytes = detail::read_file(path, kMaxPlanBytes);
  return parse_plan(std::string(bytes.begin(), bytes.end()), path);
}

std::string to_json(const Plan& plan) {
  validate_plan(plan);
  OrderedJson j;
  j["format"] = kPlanFormat;
  j["version"] = kPlanVersion;
  j["model"] = {{"name", plan.model_name},
                {"layers", plan.layers},
                {"hq", plan.hq},
                {"hkv", plan.hkv},
                {"head_dim", plan.head_dim}};
  j["anchors"] = plan.anchors;
  j["head_map"] = plan.head_map;
  j["sparsity"] = {{"rho", plan.sparsity.rho},
                   {"k_min", plan.sparsity.k_min},
                   {"k_multiple", plan.sparsity.k_multiple},
                   {"tile", plan.sparsity.tile},
                   {"budget", to_string(plan.sparsity.budget)},
                   {"pooling", to_string(plan.sparsity.pooling)}};
  OrderedJson provenance = OrderedJson::object();
  // Optional strings: an empty one is the same as an absent one and is not written.
  if (!plan.provenance.dev_set.empty()) provenance["dev_set"] = plan.provenance.dev_set;
  if (!plan.provenance.date.empty()) provenance["date"] = plan.provenance.date;
  if (!plan.provenance.tool_version.empty()) provenance["tool_version"] = plan.provenance.tool_version;
  if (!plan.provenance.notes.empty()) provenance["notes"] = plan.provenance.notes;
  j["provenance"] = provenance;
  if (plan.calibration) {
    const PlanCalibration& c = *plan.calibration;
    OrderedJson cal = OrderedJson::object();
    if (c.k_cal) cal["k_cal"] = *c.k_cal;
    if (!c.importance.empty()) cal["importance"] = c.importance;
    if (!c.layer_scores.empty()) cal["layer_scores"] = c.layer_scores;
    if (c.objective) cal["objective"] = *c.objective;
    if (!c.candidates.empty()) {
      OrderedJson list = OrderedJson::array();
      for (const PlanCandidate& candidate : c.candidates)
        list.push_back(OrderedJson{{"anchors", candidate.anchors}, {"score", candidate.score}});
      cal["candidates"] = list;
    }
    if (c.selection) {
      const PlanSelection& s = *c.selection;
      OrderedJson sel = OrderedJson::object();
      sel["statistic"] = s.statistic;
      if (!s.held_out.empty()) sel["held_out"] = s.held_out;
      OrderedJson list = OrderedJson::array();
      for (const PlanEvaluation& e : s.evaluated) {
        list.push_back(OrderedJson{{"anchors", e.anchors},
                                   {"pooling", to_string(e.pooling)},
                                   {"stage", e.stage},
                                   {"source", e.source},
                                   {"kl", e.kl},
                                   {"answer_loss", e.answer_loss}});
      }
      sel["evaluated"] = list;
      sel["search_path"] = s.search_path;
      sel["chosen"] = s.chosen;
      cal["selection"] = sel;
    }
    j["calibration"] = cal;
  }
  std::string text;
  append_pretty_json(j, 0, text);
  return text + "\n";
}

void save_plan(const std::string& path, const Plan& plan) {
  std::string text;
  try {
    text = to_json(plan);
  } catch (const Error& e) {
    KASCADE_FAIL(path << ": not saved: " << e.what());
  }
  detail::write_file_atomically(path, text.data(), text.size());
}

Plan make_uniform_plan(const std::string& model_name, int layers, int hq, int hkv, int head_dim,
                       const std::vector<int>& anchors) {
  // Check the sizes before allocating the head map from them.
  check_range(layers, 1, kPlanMaxLayers, "model.layers", "make_uniform_plan");
  check_range(hkv, 1, kPlanMaxHeads, "model.hkv", "make_uniform_plan");
  Plan plan;
  plan.model_name = model_name;
  plan.layers = layers;
  plan.hq = hq;
  plan.hkv = hkv;
  plan.head_dim = head_dim;
  plan.anchors = anchors;
  std::vector<int> identity(static_cast<size_t>(hkv));
  for (int g = 0; g < hkv; ++g) identity[g] = g;
  plan.head_map.assign(static_cast<size_t>(layers), identity);
  validate_plan(plan, "make_uniform_plan");
  return plan;
}

}  // namespace kascade
