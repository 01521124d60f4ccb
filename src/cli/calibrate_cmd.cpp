// `kascade calibrate`: runs the dense model over development prompts (prefill), streams SPEC 6
// statistics into a CalibrationStats (one layer's pooled masses in memory at a time), chooses
// the anchors by dynamic programming and the head map, and writes the plan and the report.
//
//   kascade calibrate --model default --dev-set builtin --anchors 3..8 --rho 0.1
//                     --prompts 8 --length 2048 --out plan.json --report report.json
//
// The plan uses m = --choose anchors; by default round(5 L / 32) (the paper's 5 anchors, layer 0
// included, for 32 layers) clamped to the --anchors range: 5 for SmolLM2's 30 layers. The report
// has the best set and score for every m of the range, so another m can be picked later.
//
// The DP objective is SPEC 6's unless --layer-weight / --tile-aggregate ask for a documented
// deviation; --from-report re-makes the plan from a saved report (its w and coverage) in
// seconds, without the model's weights:
//   kascade calibrate --from-report report.json --layer-weight uniform --out plan.json
// docs/calibration.md ("Running calibration") describes the options and the shipped plan.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"
#include "kascade/budget.h"
#include "kascade/calibrate.h"
#include "kascade/calibrate_collect.h"
#include "kascade/devset.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/plan.h"

namespace kascade::cli {
namespace {

constexpr const char* kUsage =
    "usage: kascade calibrate --out PLAN.json [--report REPORT.json] [--model GGUF|HF_DIR|default]\n"
    "                         [--dev-set FILE.jsonl|builtin] [--prompts N] [--length T] [--seed S]\n"
    "                         [--anchors LO..HI] [--choose M] [--rho R] [--k-min K] [--tile T] [--k-cal K]\n"
    "                         [--budget rolling|fixed] [--pooling group|all] [--name NAME] [--notes TEXT]\n"
    "                         [--threads N] [--layer-weight spec|uniform|sqrt] [--tile-aggregate min|mean]\n"
    "                         [--from-report REPORT.json]\n"
    "  --dev-set   builtin (default): synthetic multi-hop QA generated from --seed (default 1);\n"
    "              FILE: one {\"text\": ...} per line (--prompts defaults to all of them)\n"
    "  --prompts   development prompts (builtin default 8); --length: tokens per prompt (default\n"
    "              2048; file prompts are cut to it)\n"
    "  --anchors   range of anchor counts to solve (default 3..8); --choose: the count the plan\n"
    "              uses (default round(5 L / 32) clamped to the range)\n"
    "  --rho, --k-min, --tile, --budget, --pooling: the plan's top-k policy (SPEC 3, 5)\n"
    "  --layer-weight  weight of each reusing layer in the DP: spec (w, SPEC 6, default), uniform (1),\n"
    "              sqrt (sqrt w); --tile-aggregate: a prompt's coverage is its worst tile (min, SPEC 6,\n"
    "              default) or the mean over its tiles. Both non-defaults deviate from SPEC 6 and are\n"
    "              recorded in the plan's provenance\n"
    "  --from-report  re-plan from a saved report's w and coverage (no forward passes); the model is\n"
    "              only read for its shape; --dev-set, --prompts, --length, --seed, --k-cal, --tile,\n"
    "              --pooling, --threads come from the report and may not be given";

constexpr int kDefaultBuiltinPrompts = 8;
constexpr int kDefaultLength = 2048;

struct CalibrateArgs {
  std::string model = "default";
  std::string dev_set = "builtin";
  std::optional<int> prompts;
  int length = kDefaultLength;
  uint64_t seed = 1;
  int m_lo = 3, m_hi = 8;
  std::optional<int> choose;
  SparsityParams params;
  int k_cal = kDefaultKCal;
  std::string out, report, name, notes;
  int threads = 0;
  CalibrationObjective objective;
  std::string from_report;
  std::vector<std::string> calibration_only;  // options given that only a fresh calibration uses
};

// The plan and report are written at the end of a long run: a path that cannot be written is
// reported before any work, so that a bad option costs one line and no time.
void check_output_path(const std::string& path, const char* option) {
  struct stat st {};
  KASCADE_CHECK(!(stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)), option << ": '" << path << "' is a directory");
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  KASCADE_CHECK(stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode),
                option << ": directory '" << dir << "' of '" << path << "' does not exist");
  KASCADE_CHECK(access(dir.c_str(), W_OK) == 0, option << ": directory '" << dir << "' is not writable");
}

// "3..8" or a single count "5".
void parse_anchor_range(const std::string& v, int& lo, int& hi) {
  const size_t dots = v.find("..");
  if (dots == std::string::npos) {
    lo = hi = parse_int(v, "--anchors");
  } else {
    lo = parse_int(v.substr(0, dots), "--anchors (first count)");
    hi = parse_int(v.substr(dots + 2), "--anchors (last count)");
  }
  KASCADE_CHECK(lo >= 1 && lo <= hi, "--anchors: expected LO..HI with 1 <= LO <= HI, got '" << v << "'");
}

CalibrateArgs parse_args(const Args& args) {
  CalibrateArgs a;
  OptionReader r(args);
  std::string v;
  while (!r.done()) {
    if (r.take_value("--model", v)) {
      a.model = v;
    } else if (r.take_value("--dev-set", v)) {
      a.calibration_only.push_back("--dev-set");
      KASCADE_CHECK(!v.empty(), "--dev-set: expected builtin or a JSONL file");
      a.dev_set = v;
    } else if (r.take_value("--prompts", v)) {
      a.calibration_only.push_back("--prompts");
      a.prompts = parse_int(v, "--prompts");
      KASCADE_CHECK(*a.prompts >= 1, "--prompts must be >= 1, got " << *a.prompts);
    } else if (r.take_value("--length", v)) {
      a.calibration_only.push_back("--length");
      a.length = parse_int(v, "--length");
    } else if (r.take_value("--seed", v)) {
      a.calibration_only.push_back("--seed");
      const int seed = parse_int(v, "--seed");
      KASCADE_CHECK(seed >= 0, "--seed must be >= 0, got " << seed);
      a.seed = static_cast<uint64_t>(seed);
    } else if (r.take_value("--anchors", v)) {
      parse_anchor_range(v, a.m_lo, a.m_hi);
    } else if (r.take_value("--choose", v)) {
      a.choose = parse_int(v, "--choose");
    } else if (r.take_value("--rho", v)) {
      a.params.rho = parse_double(v, "--rho");
      KASCADE_CHECK(a.params.rho > 0 && a.params.rho <= 1, "--rho must be in (0, 1], got " << v);
    } else if (r.take_value("--k-min", v)) {
      a.params.k_min = parse_int(v, "--k-min");
      KASCADE_CHECK(a.params.k_min >= 0, "--k-min must be >= 0, got " << a.params.k_min);
    } else if (r.take_value("--tile", v)) {
      a.calibration_only.push_back("--tile");
      a.params.tile = parse_int(v, "--tile");
      KASCADE_CHECK(a.params.tile >= 1, "--tile must be >= 1, got " << a.params.tile);
    } else if (r.take_value("--k-cal", v)) {
      a.calibration_only.push_back("--k-cal");
      a.k_cal = parse_int(v, "--k-cal");
      KASCADE_CHECK(a.k_cal >= 1, "--k-cal must be >= 1, got " << a.k_cal);
    } else if (r.take_value("--budget", v)) {
      a.params.budget = parse_budget(v);
    } else if (r.take_value("--pooling", v)) {
      a.calibration_only.push_back("--pooling");
      a.params.pooling = parse_pooling(v);
    } else if (r.take_value("--layer-weight", v)) {
      a.objective.layer_weight = parse_layer_weight(v, "--layer-weight");
    } else if (r.take_value("--tile-aggregate", v)) {
      a.objective.tile_aggregate = parse_tile_aggregate(v, "--tile-aggregate");
    } else if (r.take_value("--from-report", v)) {
      KASCADE_CHECK(!v.empty(), "--from-report: empty path");
      a.from_report = v;
    } else if (r.take_value("--out", v)) {
      KASCADE_CHECK(!v.empty(), "--out: empty path");
      a.out = v;
    } else if (r.take_value("--report", v)) {
      KASCADE_CHECK(!v.empty(), "--report: empty path");
      a.report = v;
    } else if (r.take_value("--name", v)) {
      a.name = v;
    } else if (r.take_value("--notes", v)) {
      a.notes = v;
    } else if (r.take_value("--threads", v)) {
      a.calibration_only.push_back("--threads");
      a.threads = parse_int(v, "--threads");
      KASCADE_CHECK(a.threads >= 0, "--threads must be >= 0, got " << a.threads);
    } else {
      KASCADE_FAIL("unknown option '" << r.peek() << "' (see kascade calibrate --help)");
    }
  }
  KASCADE_CHECK(!a.out.empty(), "--out PLAN.json is required (see kascade calibrate --help)");
  KASCADE_CHECK(a.report != a.out, "--report and --out name the same file '" << a.out << "'");
  if (!a.from_report.empty()) {
    KASCADE_CHECK(a.calibration_only.empty(), a.calibration_only.front()
                                                  << " cannot be combined with --from-report (the report fixes it)");
    KASCADE_CHECK(a.report != a.from_report && a.out != a.from_report,
                  "--from-report '" << a.from_report << "' would be overwritten by --out or --report");
  }
  check_output_path(a.out, "--out");
  if (!a.report.empty()) check_output_path(a.report, "--report");
  if (a.choose) {
    KASCADE_CHECK(*a.choose >= a.m_lo && *a.choose <= a.m_hi,
                  "--choose " << *a.choose << " is outside the --anchors range " << a.m_lo << ".." << a.m_hi);
  }
  // A prompt must reach past the first tile whose selection is a real choice (b > k_cal), or it
  // says nothing about reuse (docs/calibration.md, "Which tiles count").
  const CalibrationStats probe(1, 1, a.k_cal, a.params.tile);
  KASCADE_CHECK(a.length > probe.first_informative_position(),
                "--length " << a.length << " is too short: with tile " << a.params.tile << " and k_cal " << a.k_cal
                            << " a prompt needs more than " << probe.first_informative_position() << " tokens");
  return a;
}

// The anchor count the plan uses when --choose is not given: the paper's density of 5 anchors
// per 32 layers, clamped to the requested range.
int default_anchor_count(int layers, int lo, int hi) {
  const int paper = static_cast<int>(std::lround(5.0 * layers / 32.0));
  return std::clamp(paper, lo, hi);
}

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string format_seconds(double s) {
  char buf[32];
  const int total = static_cast<int>(std::lround(s));
  if (total >= 60) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", total / 60, total % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ds", total);
  }
  return buf;
}

// The development prompts as token ids, each at most `length` long (BOS included).
struct DevSet {
  std::vector<std::vector<int32_t>> prompts;
  std::string description;  // for the plan's provenance
};

DevSet load_dev_set(const CalibrateArgs& a, const engine::Tokenizer& tok, int64_t min_tokens) {
  DevSet set;
  const bool bos = tok.add_bos();
  auto with_bos = [&](const std::string& text) {
    std::vector<int32_t> ids;
    if (bos) ids.push_back(tok.bos_id());
    const std::vector<int32_t> body = tok.encode(text, /*parse_special=*/false);
    ids.insert(ids.end(), body.begin(), body.end());
    if (ids.size() > static_cast<size_t>(a.length)) ids.resize(static_cast<size_t>(a.length));
    return ids;
  };
  if (a.dev_set == "builtin") {
    const int count = a.prompts.value_or(kDefaultBuiltinPrompts);
    const TokenCounter counter = [&](const std::string& s) {
      return static_cast<int64_t>(tok.encode(s, /*parse_special=*/false).size());
    };
    for (int i = 0; i < count; ++i) {
      const DevPrompt p = make_dev_prompt(a.seed, i, a.length - (bos ? 1 : 0), counter);
      set.prompts.push_back(with_bos(p.text));
    }
    std::ostringstream d;
    d << builtin_dev_set_name(a.seed) << "; " << count << " prompts x " << a.length << " tokens";
    set.description = d.str();
    return set;
  }
  const std::vector<std::string> texts = read_dev_set_jsonl(a.dev_set);
  const int count = a.prompts.value_or(static_cast<int>(texts.size()));
  KASCADE_CHECK(static_cast<size_t>(count) <= texts.size(),
                a.dev_set << ": --prompts " << count << " but the file has " << texts.size() << " prompts");
  int64_t longest = 0;
  for (int i = 0; i < count; ++i) {
    set.prompts.push_back(with_bos(texts[static_cast<size_t>(i)]));
    const int64_t n = static_cast<int64_t>(set.prompts.back().size());
    KASCADE_CHECK(n > min_tokens, a.dev_set << ": prompt " << i + 1 << " has " << n
                                             << " tokens; calibration needs more than " << min_tokens);
    longest = std::max(longest, n);
  }
  std::ostringstream d;
  d << a.dev_set << "; " << count << " prompts, at most " << longest << " tokens";
  set.description = d.str();
  return set;
}

// One line on stderr, redrawn in place on a terminal, one line per prompt otherwise.
class ProgressBar {
 public:
  ProgressBar(int prompts, int layers) : prompts_(prompts), layers_(layers), tty_(isatty(STDERR_FILENO) != 0) {}

  void update(int prompt, int layers_done) {
    const double done = (prompt + static_cast<double>(layers_done) / layers_) / prompts_;
    const bool prompt_finished = layers_done == layers_;
    if (!tty_ && !prompt_finished) return;
    const double elapsed = elapsed_seconds();
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(done * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::string eta = done > 0 && done < 1 ? ", ~" + format_seconds(elapsed * (1 - done) / done) + " left" : "";
    std::fprintf(stderr, "%scalibrate [%s] prompt %d/%d, layer %d/%d, %s%s%s", tty_ ? "\r" : "", bar.c_str(),
                 std::min(prompt + 1, prompts_), prompts_, layers_done, layers_, format_seconds(elapsed).c_str(),
                 eta.c_str(), tty_ ? "\033[K" : "\n");
    if (tty_ && prompt_finished && prompt + 1 == prompts_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }
  double elapsed_seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  int prompts_, layers_;
  bool tty_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Writes the plan and (optionally) the report; on failure nothing that this call wrote remains.
void write_outputs(const CalibrateArgs& a, const Plan& plan, const CalibrationReport& report) {
  if (!a.report.empty()) save_report(report, a.report);
  try {
    save_plan(a.out, plan);
  } catch (...) {
    if (!a.report.empty()) std::remove(a.report.c_str());
    throw;
  }
}

// Runs the dense model over the development prompts and makes the report (SPEC 6 statistics,
// the DP under the chosen objective).
CalibrationReport calibrate(const CalibrateArgs& a, const engine::ModelSource& source, const engine::ModelConfig& config,
                            int chosen) {
  const engine::Tokenizer tok = source.tokenizer();
  CalibrationStats stats(config.layers, a.params.pooling == Pooling::All ? 1 : config.hkv, a.k_cal, a.params.tile);
  const DevSet dev = load_dev_set(a, tok, stats.first_informative_position());
  const engine::Model model = source.load();

  // The whole prompt in one forward step: every layer's queries and keys of all positions reach
  // the hook at once, as the statistics need them (layers in order, one layer in memory).
  int longest = 0;
  for (const auto& p : dev.prompts) longest = std::max(longest, static_cast<int>(p.size()));
  engine::BackendOptions bopt;
  bopt.threads = a.threads;
  bopt.prefill_chunk = longest;
  auto backend = engine::make_backend("cpu", model, nullptr, bopt);

  const engine::ModelConfig& c = model.config;
  const int d = c.head_dim;
  std::vector<float> q_heads, k_heads;  // [Hq, n, D], [Hkv, n, D]
  ProgressBar progress(static_cast<int>(dev.prompts.size()), c.layers);
  int prompt_index = 0;
  backend->set_query_key_hook([&](int layer, int first_position, int tokens, const float* q, const float* k) {
    KASCADE_CHECK(first_position == 0, "calibration: prompt split across forward steps at " << first_position);
    const size_t n = static_cast<size_t>(tokens);
    q_heads.resize(static_cast<size_t>(c.hq) * n * d);
    k_heads.resize(static_cast<size_t>(c.hkv) * n * d);
    for (size_t t = 0; t < n; ++t) {
      for (int h = 0; h < c.hq; ++h) {
        std::copy_n(q + (t * c.hq + h) * d, d, q_heads.data() + (h * n + t) * d);
      }
      for (int g = 0; g < c.hkv; ++g) {
        std::copy_n(k + (t * c.hkv + g) * d, d, k_heads.data() + (g * n + t) * d);
      }
    }
    add_layer_attention(stats, layer, q_heads.data(), k_heads.data(),
                        {c.hq, c.hkv, tokens, d, NAN, a.params.pooling});
    progress.update(prompt_index, layer + 1);
  });
  backend->set_attention_hook([&](int layer, int tokens, int dim, const float* residual, const float* attn_out) {
    stats.add_importance(layer, residual, attn_out, tokens, dim);
  });

  std::fprintf(stderr, "calibrating %s (%d layers, %d/%d heads) on %s\n", c.name.c_str(), c.layers, c.hq, c.hkv,
               dev.description.c_str());
  for (; prompt_index < static_cast<int>(dev.prompts.size()); ++prompt_index) {
    const auto& ids = dev.prompts[static_cast<size_t>(prompt_index)];
    backend->reset();
    stats.begin_prompt(num_tiles(0, static_cast<int64_t>(ids.size()), a.params.tile), static_cast<int64_t>(ids.size()));
    backend->forward(ids, /*all_logits=*/false);
    stats.end_prompt();
  }
  const double seconds = progress.elapsed_seconds();

  CalibrationReport report = make_report(stats, a.m_lo, a.m_hi, chosen, a.objective);
  report.dev_set = dev.description;
  std::printf("calibrated on %zu prompts (%s) in %s; %lld tiles counted\n", dev.prompts.size(),
              dev.description.c_str(), format_seconds(seconds).c_str(),
              static_cast<long long>(report.counted_tiles));
  return report;
}

int run_calibrate(const Args& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::printf("%s\n", kUsage);
    return 0;
  }
  const CalibrateArgs a = parse_args(args);
  const engine::ModelSource source = engine::ModelSource::open(a.model);
  const engine::ModelConfig config = source.config();
  KASCADE_CHECK(a.m_hi <= config.layers,
                "--anchors " << a.m_lo << ".." << a.m_hi << ": the model has only " << config.layers << " layers");
  const int chosen = a.choose.value_or(default_anchor_count(config.layers, a.m_lo, a.m_hi));
  PlanProvenance provenance;
  provenance.date = utc_now_iso8601();
  provenance.tool_version = std::string("kascade ") + KASCADE_VERSION + " calibrate";
  SparsityParams params = a.params;
  CalibrationReport report;
  if (!a.from_report.empty()) {
    const CalibrationReport saved = load_report(a.from_report);
    KASCADE_CHECK(saved.num_layers == config.layers, "--from-report: " << a.from_report << " is for " << saved.num_layers
                                                                       << " layers, the model has " << config.layers);
    KASCADE_CHECK(saved.num_kv_heads == config.hkv || saved.num_kv_heads == 1,
                  "--from-report: " << a.from_report << " has " << saved.num_kv_heads << " selection sets per layer, the model "
                                    << config.hkv << " kv heads");
    report = replan(saved, a.m_lo, a.m_hi, chosen, a.objective);
    params.tile = report.tile;
    params.pooling = report.num_kv_heads == 1 && config.hkv != 1 ? Pooling::All : Pooling::Group;
    provenance.dev_set = report.dev_set.empty() ? "as in " + a.from_report : report.dev_set;
    std::printf("re-planned from %s (%lld prompts, %lld tiles counted)\n", a.from_report.c_str(),
                static_cast<long long>(report.prompts), static_cast<long long>(report.counted_tiles));
  } else {
    report = calibrate(a, source, config, chosen);
    provenance.dev_set = report.dev_set;
  }
  std::ostringstream notes;
  notes << "k_cal " << report.k_cal << ", tile " << report.tile << ", anchors " << a.m_lo << ".." << a.m_hi
        << ", chose m " << chosen << ", objective: " << describe(a.objective);
  if (!a.from_report.empty()) notes << ", re-planned from " << a.from_report;
  if (!a.notes.empty()) notes << "; " << a.notes;
  provenance.notes = notes.str();
  const CalibrationTarget target{a.name.empty() ? config.name : a.name, config.layers, config.hq, config.hkv,
                                 config.head_dim};
  const Plan plan = make_plan(report, target, params, provenance);
  write_outputs(a, plan, report);

  std::printf("objective: %s\n", describe(report.objective).c_str());
  for (size_t i = 0; i < report.choices.size(); ++i) {
    const AnchorChoice& choice = report.choices[i];
    std::printf("%s m=%zu score %.4f anchors:", static_cast<int>(i) == report.chosen ? "*" : " ", choice.anchors.size(),
                choice.score);
    for (int l : choice.anchors) std::printf(" %d", l);
    std::printf("\n");
  }
  std::printf("plan (m=%d) written to %s%s%s\n", chosen, a.out.c_str(), a.report.empty() ? "" : ", report to ",
              a.report.c_str());
  return 0;
}

const Command reg("calibrate", "choose anchor layers and head maps from dense runs (SPEC 6)", run_calibrate);

}  // namespace
}  // namespace kascade::cli
