// `kascade plan`: inspect and check plan files (kascade/plan.h).
//
//   kascade plan show FILE
//       A human summary: model shape, anchors, the role of every layer, the head-map entries
//       that differ from the identity, the sparsity policy, provenance and calibration results.
//   kascade plan check FILE --layers L --hq H --hkv K --head-dim D
//       Loads FILE strictly and checks it against a model shape: prints one "ok" line and exits
//       0, or prints one error line and exits 1.
#include <cstdio>
#include <sstream>
#include <string>

#include "command.h"
#include "kascade/error.h"
#include "kascade/plan.h"

namespace kascade::cli {
namespace {

constexpr const char* kPlanUsage =
    "usage: kascade plan show FILE\n"
    "       kascade plan check FILE --layers L --hq H --hkv K --head-dim D\n";

// One character per layer, in groups of ten: D = layer 0 (dense), A = anchor, . = reuse.
std::string role_strip(const Plan& plan) {
  std::string strip;
  for (int layer = 0; layer < plan.layers; ++layer) {
    if (layer > 0 && layer % 10 == 0) strip += ' ';
    const Role role = plan.role_of(layer);
    strip += role == Role::Layer0 ? 'D' : role == Role::Anchor ? 'A' : '.';
  }
  return strip;
}

std::string join_ints(const std::vector<int>& values) {
  std::ostringstream os;
  for (size_t i = 0; i < values.size(); ++i) os << (i ? " " : "") << values[i];
  return os.str();
}

std::string join_doubles(const std::vector<double>& values) {
  std::ostringstream os;
  os.precision(4);
  for (size_t i = 0; i < values.size(); ++i) os << (i ? " " : "") << values[i];
  return os.str();
}

void show(const std::string& path) {
  const Plan plan = load_plan(path);
  std::ostringstream out;
  out << "plan: " << path << " (" << kPlanFormat << " version " << kPlanVersion << ")\n";
  out << "model: " << plan.model_name << ": " << plan.layers << " layers, hq " << plan.hq << ", hkv " << plan.hkv
      << " (group " << plan.hq / plan.hkv << "), head_dim " << plan.head_dim << "\n";
  out << "anchors (" << plan.anchors.size() << "): " << join_ints(plan.anchors) << "\n";
  out << "roles (D dense layer 0, A anchor, . reuse): " << role_strip(plan) << "\n";

  // Only what differs from "kv head g reads the selection of kv head g of its anchor".
  std::ostringstream borrowed;
  int borrowed_count = 0;
  for (int layer = 0; layer < plan.layers; ++layer) {
    std::ostringstream row;
    for (int g = 0; g < plan.hkv; ++g) {
      const int src = plan.source_head(layer, g);
      if (src == g) continue;
      row << " kv" << g << "<-kv" << src;
      ++borrowed_count;
    }
    if (!row.str().empty())
      borrowed << "  layer " << layer << " (anchor " << plan.anchor_of(layer) << "):" << row.str() << "\n";
  }
  if (borrowed_count == 0) {
    out << "head map: identity\n";
  } else {
    out << "head map: " << borrowed_count << " of " << plan.layers * plan.hkv
        << " entries borrow another kv head's selection:\n"
        << borrowed.str();
  }
  out << "sparsity: rho " << plan.sparsity.rho << ", k_min " << plan.sparsity.k_min << ", k_multiple " << plan.sparsity.k_multiple << ", tile "
      << plan.sparsity.tile << ", budget " << to_string(plan.sparsity.budget) << ", pooling " << to_string(plan.sparsity.pooling) << "\n";

  const PlanProvenance& p = plan.provenance;
  out << "provenance:";
  if (p.dev_set.empty() && p.date.empty() && p.tool_version.empty() && p.notes.empty()) out << " (none)";
  out << "\n";
  if (!p.dev_set.empty()) out << "  dev_set: " << p.dev_set << "\n";
  if (!p.date.empty()) out << "  date: " << p.date << "\n";
  if (!p.tool_version.empty()) out << "  tool_version: " << p.tool_version << "\n";
  if (!p.notes.empty()) out << "  notes: " << p.notes << "\n";

  if (plan.calibration) {
    const PlanCalibration& c = *plan.calibration;
    out << "calibration:\n";
    if (c.k_cal) out << "  k_cal: " << *c.k_cal << "\n";
    if (c.objective) out << "  objective: " << *c.objective << "\n";
    if (!c.importance.empty()) out << "  importance w: " << join_doubles(c.importance) << "\n";
    if (!c.layer_scores.empty()) out << "  layer scores S: " << plan.layers << " x " << plan.layers << "\n";
    for (const PlanCandidate& candidate : c.candidates)
      out << "  candidate (" << candidate.anchors.size() << " anchors): " << join_ints(candidate.anchors) << "  score "
          << candidate.score << "\n";
    if (c.selection) {
      const PlanSelection& s = *c.selection;
      const PlanEvaluation& chosen = s.evaluated[static_cast<size_t>(s.chosen)];
      out << "  chosen by held-out loss among " << s.evaluated.size() << " plans (statistic " << s.statistic
          << "): kl " << chosen.kl << ", answer loss " << chosen.answer_loss << ", " << chosen.stage << " ("
          << chosen.source << ")\n";
      if (!s.held_out.empty()) out << "  held out: " << s.held_out << "\n";
    }
  }
  std::fputs(out.str().c_str(), stdout);
}

// FILE and the four shape options, in any order; each exactly once.
void check(OptionReader& options) {
  const char* const names[] = {"--layers", "--hq", "--hkv", "--head-dim"};
  std::string values[4];
  std::string path;
  while (!options.done()) {
    bool taken = false;
    for (int i = 0; i < 4 && !taken; ++i) {
      std::string value;
      if (!options.take_value(names[i], value)) continue;
      KASCADE_CHECK(values[i].empty(), "plan check: " << names[i] << " given more than once");
      KASCADE_CHECK(!value.empty(), "plan check: " << names[i] << " needs a value");
      values[i] = value;
      taken = true;
    }
    if (taken) continue;
    const std::string arg = options.next("argument");
    KASCADE_CHECK(arg.rfind("-", 0) != 0,
                  "plan check: unknown option '" << arg << "' (expected --layers, --hq, --hkv, --head-dim)");
    KASCADE_CHECK(path.empty(), "plan check: more than one FILE ('" << path << "', '" << arg << "')");
    path = arg;
  }
  KASCADE_CHECK(!path.empty(), "plan check: missing FILE");
  int shape[4];
  for (int i = 0; i < 4; ++i) {
    KASCADE_CHECK(!values[i].empty(), "plan check: " << names[i] << " is required");
    shape[i] = parse_int(values[i], names[i]);
  }
  const Plan plan = load_plan(path);
  try {
    check_plan_matches(plan, shape[0], shape[1], shape[2], shape[3]);
  } catch (const Error& e) {
    KASCADE_FAIL(path << ": " << e.what());
  }
  std::printf("ok: %s: plan for '%s' matches %d layers, hq %d, hkv %d, head_dim %d\n", path.c_str(),
              plan.model_name.c_str(), shape[0], shape[1], shape[2], shape[3]);
}

int run_plan(const Args& args) {
  OptionReader options(args);
  if (!options.done() && (options.peek() == "--help" || options.peek() == "-h")) {
    std::fputs(kPlanUsage, stdout);
    return 0;
  }
  KASCADE_CHECK(!options.done(), "missing subcommand (show or check; see kascade plan --help)");
  const std::string action = options.next("subcommand");
  if (action == "check") {
    check(options);
    return 0;
  }
  KASCADE_CHECK(action == "show", "unknown subcommand '" << action << "' (expected show or check)");
  KASCADE_CHECK(!options.done(), "plan show: missing FILE");
  const std::string path = options.next("FILE");
  KASCADE_CHECK(path.rfind("-", 0) != 0, "plan show: unknown option '" << path << "'");
  KASCADE_CHECK(options.done(), "plan show: unexpected argument '" << options.peek() << "'");
  show(path);
  return 0;
}

const Command registration("plan", "show or check a plan file", run_plan);

}  // namespace
}  // namespace kascade::cli
