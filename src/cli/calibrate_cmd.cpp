// `kascade calibrate`: statistics propose plans, the model's held-out loss chooses them
// (docs/calibration.md, kascade/calibrate/protocol.h). The development set mixes long-range
// retrieval, repeated passages and plain continuation of natural text from the dev split; half
// of it computes the `spec` and `paper` statistics (both DPs propose a plan per anchor count,
// with even spacing beside them), the other half is held out and scores every candidate by its
// next-token KL against dense; a coordinate search moves single anchors, and head-aware versus
// all-heads pooling is chosen the same way.
//
//   kascade calibrate --model default --backend cuda --anchors 3..8 --rho 0.1 --dev-prompts 64
//                     --out plan.json --report report.json
//   kascade calibrate --model default --backend cpu --preset small --out plan.json   (minutes on a CPU)
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "command.h"
#include "kascade/calibrate/protocol.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/json.h"
#include "kascade/eval/corpus.h"
#include "kascade/plan.h"

namespace kascade::cli {
namespace {

constexpr const char* kUsage =
    "usage: kascade calibrate --out PLAN.json [--report REPORT.json] [--model GGUF|HF_DIR|default]\n"
    "                         [--backend cpu|cuda] [--anchors LO..HI] [--rho R] [--k-min K] [--tile T]\n"
    "                         [--budget rolling|fixed] [--preset default|small] [--dev-prompts N] [--length T]\n"
    "                         [--held-out-lengths T,...] [--continuation-rows N] [--generated-rows N] [--seed S]\n"
    "                         [--search-evaluations N] [--search-every-count] [--plans-dir DIR] [--threads N] [--name NAME] [--notes TEXT]\n"
    "                         [--kv-cache f32|f16|fp8]\n"
    "  Statistics of half the development prompts propose plans (the DP optimum of every anchor\n"
    "  count under the spec and paper statistics, and evenly spaced anchors); the other half, held\n"
    "  out, chooses by next-token KL against dense (answer log-loss breaks ties); a coordinate\n"
    "  search moves one anchor by 1-3 layers. Every candidate is scored head-aware and with all heads\n"
    "  pooled; the search keeps the better pooling.\n"
    "  --anchors        anchor counts of the candidates (default 3..8)\n"
    "  --rho, --k-min, --tile, --budget: the plan's top-k budget (SPEC 3, 5)\n"
    "  --preset         default: 64 prompts, statistics at 2048 tokens, held out at 1024, 2048, 4096\n"
    "                   and 8192, 32 continuation rows, 16 generated rows; small: 16 prompts of 384\n"
    "                   tokens, 16 continuation rows, 8 generated rows (a CPU run of minutes); the\n"
    "                   options below override the preset\n"
    "  --dev-prompts    development prompts, half statistics, half held out (even, >= 12)\n"
    "  --length         tokens of each statistics prompt (context and question, or context and\n"
    "                   scored rows)\n"
    "  --held-out-lengths  the held-out prompts' lengths, taken in turn (default: the preset's, or\n"
    "                   --length when it is given)\n"
    "  --continuation-rows  scored rows of a natural-text continuation prompt\n"
    "  --generated-rows     answer tokens generated after each statistics prompt (paper statistic)\n"
    "  --seed           the tasks' seed (always the dev split; default 1)\n"
    "  --search-evaluations  plans the coordinate search may score (default 40)\n"
    "  --search-every-count  a search from the best candidate of every anchor count (each with\n"
    "                   that budget), the best result of all chosen; with --plans-dir, every\n"
    "                   count's plan is then a searched one\n"
    "  --plans-dir      also write the best scored plan of every anchor count to DIR/m<M>.json (the\n"
    "                   accuracy-versus-anchors curve; without --search-every-count only the\n"
    "                   chosen count had the search)";

struct Preset {
  int dev_prompts, length, continuation_rows, generated_rows;
  std::vector<int> held_out_lengths;
};
const Preset kDefaultPreset{64, 2048, 32, 16, {1024, 2048, 4096, 8192}};
const Preset kSmallPreset{16, 384, 16, 8, {384}};

struct CalibrateArgs {
  std::string model = "default";
  std::string backend = "cpu";
  int m_lo = 3, m_hi = 8;
  SparsityParams params;
  std::string preset = "default";
  std::optional<int> dev_prompts, length, continuation_rows, generated_rows;
  std::optional<std::vector<int>> held_out_lengths;
  uint64_t seed = 1;
  int search_evaluations = 40;
  bool search_every_count = false;
  int threads = 0;
  std::optional<DType> kv_cache;
  std::string out, report, name, notes, plans_dir;
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

int parse_positive(const std::string& v, const char* option) {
  const int n = parse_int(v, option);
  KASCADE_CHECK(n >= 1, option << " must be >= 1, got " << n);
  return n;
}

CalibrateArgs parse_args(const Args& args) {
  CalibrateArgs a;
  OptionReader r(args);
  std::string v;
  while (!r.done()) {
    if (r.take_value("--model", v)) {
      a.model = v;
    } else if (r.take_value("--backend", v)) {
      KASCADE_CHECK(v == "cpu" || v == "cuda", "--backend must be cpu or cuda, got '" << v << "'");
      a.backend = v;
    } else if (r.take_value("--anchors", v)) {
      parse_anchor_range(v, a.m_lo, a.m_hi);
    } else if (r.take_value("--rho", v)) {
      a.params.rho = parse_double(v, "--rho");
      KASCADE_CHECK(a.params.rho > 0 && a.params.rho <= 1, "--rho must be in (0, 1], got " << v);
    } else if (r.take_value("--k-min", v)) {
      a.params.k_min = parse_positive(v, "--k-min");
    } else if (r.take_value("--tile", v)) {
      a.params.tile = parse_positive(v, "--tile");
    } else if (r.take_value("--budget", v)) {
      a.params.budget = parse_budget(v);
    } else if (r.take_value("--preset", v)) {
      KASCADE_CHECK(v == "default" || v == "small", "--preset must be default or small, got '" << v << "'");
      a.preset = v;
    } else if (r.take_value("--dev-prompts", v)) {
      a.dev_prompts = parse_positive(v, "--dev-prompts");
    } else if (r.take_value("--length", v)) {
      a.length = parse_positive(v, "--length");
    } else if (r.take_value("--held-out-lengths", v)) {
      std::vector<int> lengths;
      std::stringstream list(v);
      std::string item;
      while (std::getline(list, item, ',')) lengths.push_back(parse_positive(item, "--held-out-lengths"));
      KASCADE_CHECK(!lengths.empty(), "--held-out-lengths: expected T[,T...], got '" << v << "'");
      a.held_out_lengths = lengths;
    } else if (r.take_value("--plans-dir", v)) {
      KASCADE_CHECK(!v.empty(), "--plans-dir: empty path");
      a.plans_dir = v;
    } else if (r.take_value("--continuation-rows", v)) {
      a.continuation_rows = parse_positive(v, "--continuation-rows");
    } else if (r.take_value("--generated-rows", v)) {
      a.generated_rows = parse_int(v, "--generated-rows");
      KASCADE_CHECK(*a.generated_rows >= 0, "--generated-rows must be >= 0, got " << *a.generated_rows);
    } else if (r.take_value("--seed", v)) {
      const int seed = parse_int(v, "--seed");
      KASCADE_CHECK(seed >= 0, "--seed must be >= 0, got " << seed);
      a.seed = static_cast<uint64_t>(seed);
    } else if (r.take_value("--search-evaluations", v)) {
      a.search_evaluations = parse_int(v, "--search-evaluations");
      KASCADE_CHECK(a.search_evaluations >= 0, "--search-evaluations must be >= 0, got " << a.search_evaluations);
    } else if (r.take_flag("--search-every-count")) {
      a.search_every_count = true;
    } else if (r.take_value("--threads", v)) {
      a.threads = parse_int(v, "--threads");
      KASCADE_CHECK(a.threads >= 0, "--threads must be >= 0, got " << a.threads);
    } else if (take_kv_cache(r, a.kv_cache)) {
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
    } else {
      KASCADE_FAIL("unknown option '" << r.peek() << "' (see kascade calibrate --help)");
    }
  }
  KASCADE_CHECK(!a.out.empty(), "--out PLAN.json is required (see kascade calibrate --help)");
  check_kv_cache_backend(a.kv_cache, a.backend);
  KASCADE_CHECK(a.report != a.out, "--report and --out name the same file '" << a.out << "'");
  check_output_path(a.out, "--out");
  if (!a.report.empty()) check_output_path(a.report, "--report");
  if (!a.plans_dir.empty()) {
    struct stat st {};
    KASCADE_CHECK(stat(a.plans_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode),
                  "--plans-dir: '" << a.plans_dir << "' is not a directory");
    KASCADE_CHECK(access(a.plans_dir.c_str(), W_OK) == 0, "--plans-dir: '" << a.plans_dir << "' is not writable");
  }
  return a;
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

std::string anchors_text(const std::vector<int>& anchors) {
  std::string out;
  for (int a : anchors) out += (out.empty() ? "" : " ") + std::to_string(a);
  return out;
}

// One line on stderr per step of a stage, redrawn in place on a terminal (one line per step
// otherwise), with the stage's bar, the elapsed time and the time the stage has left.
class ProgressBar {
 public:
  ProgressBar() : tty_(isatty(STDERR_FILENO) != 0) {}

  void update(const std::string& stage, int done, int total, const std::string& detail) {
    if (stage != stage_) {
      if (tty_ && !stage_.empty()) std::fprintf(stderr, "\n");
      stage_ = stage;
      stage_start_ = last_update_;  // the stage's first step began when the previous one ended
    }
    last_update_ = std::chrono::steady_clock::now();
    const double fraction = total > 0 ? std::min(1.0, static_cast<double>(done) / total) : 1.0;
    constexpr int kWidth = 24;
    std::string bar(static_cast<size_t>(fraction * kWidth), '#');
    bar.resize(kWidth, '.');
    const double in_stage = seconds(stage_start_);
    const std::string eta =
        fraction > 0 && fraction < 1 ? ", ~" + format_seconds(in_stage * (1 - fraction) / fraction) + " left" : "";
    std::fprintf(stderr, "%scalibrate %-10s [%s] %d/%d %s (%s%s)%s", tty_ ? "\r" : "", stage.c_str(), bar.c_str(), done,
                 total, detail.c_str(), format_seconds(seconds(start_)).c_str(), eta.c_str(), tty_ ? "\033[K" : "\n");
    std::fflush(stderr);
  }
  void finish() {
    if (tty_ && !stage_.empty()) std::fprintf(stderr, "\n");
  }

 private:
  static double seconds(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
  }
  bool tty_;
  std::string stage_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), stage_start_ = start_,
                                        last_update_ = start_;
};

// Writes the per-anchor-count plans (optional), the report (optional) and the plan; on failure
// nothing that this call wrote remains.
void write_outputs(const CalibrateArgs& a, const std::vector<std::pair<std::string, Plan>>& per_m, const Plan& plan,
                   const nlohmann::json& report) {
  std::vector<std::string> written;
  try {
    for (const auto& [path, p] : per_m) {
      save_plan(path, p);
      written.push_back(path);
    }
    if (!a.report.empty()) {
      const std::string tmp = a.report + ".tmp";
      {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        KASCADE_CHECK(out.good(), "--report: cannot open " << tmp << " for writing");
        std::string text;
        append_pretty_json(report, 0, text);
        out << text << "\n";
        out.close();
        KASCADE_CHECK(!out.fail(), "--report: writing " << tmp << " failed");
      }
      KASCADE_CHECK(std::rename(tmp.c_str(), a.report.c_str()) == 0, "--report: cannot rename " << tmp << " to " << a.report);
      written.push_back(a.report);
    }
    save_plan(a.out, plan);
  } catch (...) {
    for (const std::string& path : written) std::remove(path.c_str());
    throw;
  }
}

int run_calibrate(const Args& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::printf("%s\n%s", kUsage, kKvCacheUsage);
    return 0;
  }
  const CalibrateArgs a = parse_args(args);
  const Preset preset = a.preset == "small" ? kSmallPreset : kDefaultPreset;
  DevMixConfig dev;
  dev.prompts = a.dev_prompts.value_or(preset.dev_prompts);
  dev.length = a.length.value_or(preset.length);
  // An explicit --length without --held-out-lengths holds out prompts of that length too.
  dev.held_out_lengths = a.held_out_lengths.value_or(a.length ? std::vector<int>{*a.length} : preset.held_out_lengths);
  const int longest_held_out = *std::max_element(dev.held_out_lengths.begin(), dev.held_out_lengths.end());
  const int shortest_held_out = *std::min_element(dev.held_out_lengths.begin(), dev.held_out_lengths.end());
  dev.continuation_rows = a.continuation_rows.value_or(preset.continuation_rows);
  dev.seed = a.seed;
  CalibrationRunConfig cfg;
  cfg.backend = a.backend;
  cfg.threads = a.threads;
  if (a.kv_cache) cfg.cpu_kv_cache = *a.kv_cache;
  cfg.m_lo = a.m_lo;
  cfg.m_hi = a.m_hi;
  cfg.params = a.params;
  cfg.statistics.tile = a.params.tile;
  cfg.statistics.generated_rows = a.generated_rows.value_or(preset.generated_rows);
  cfg.choice.max_search_evaluations = a.search_evaluations;
  cfg.choice.search_every_count = a.search_every_count;
  KASCADE_CHECK(dev.prompts % 2 == 0 && dev.prompts >= 12,
                "--dev-prompts must be even and >= 12 (half statistics, half held out, every kind twice in each), got "
                    << dev.prompts);

  // A statistics prompt (context and question, or a continuation's context) must reach past the
  // first tile whose selection is a real choice (docs/calibration.md, "Which tiles count").
  const int64_t needed = std::max(CalibrationStats(1, 1, cfg.statistics.spec_k_cal, cfg.params.tile).first_informative_position(),
                                  CalibrationStats(1, 1, cfg.statistics.paper_k_cal, cfg.params.tile).first_informative_position());
  KASCADE_CHECK(dev.length - dev.continuation_rows + 1 > needed,
                "--length " << dev.length << " is too short: with " << dev.continuation_rows
                            << " continuation rows the statistics' prompts need more than " << needed << " tokens (tile "
                            << cfg.params.tile << ", k_cal " << std::max(cfg.statistics.spec_k_cal, cfg.statistics.paper_k_cal)
                            << ")");
  KASCADE_CHECK(dev.continuation_rows <= shortest_held_out - 2,
                "--held-out-lengths: " << shortest_held_out << " tokens cannot hold " << dev.continuation_rows
                                       << " continuation rows after a context");

  // Everything that can fail without the weights fails before they load.
  engine::check_backend_available(a.backend);
  const engine::ModelSource source = engine::ModelSource::open(a.model);
  const engine::ModelConfig config = source.config();
  engine::check_backend_supports(a.backend, config);
  KASCADE_CHECK(a.m_hi <= config.layers,
                "--anchors " << a.m_lo << ".." << a.m_hi << ": the model has only " << config.layers << " layers");
  KASCADE_CHECK(config.context <= 0 || dev.length + cfg.statistics.generated_rows <= config.context,
                "--length " << dev.length << " with " << cfg.statistics.generated_rows
                            << " generated rows is beyond the model's context of " << config.context << " tokens");
  KASCADE_CHECK(config.context <= 0 || longest_held_out <= config.context,
                "--held-out-lengths: " << longest_held_out << " tokens is beyond the model's context of " << config.context
                                       << " tokens");
  const engine::Tokenizer tok = source.tokenizer();
  const eval::TaskTokenizer task_tok{[&tok](const std::string& s) { return tok.encode_continuation(s); },
                                     tok.add_bos() ? tok.bos_id() : -1,
                                     [&tok](const std::vector<int32_t>& ids) { return tok.decode(ids); }};
  dev.max_positions = config.context;
  const DevMix mix = make_dev_mix(dev, task_tok, eval::natural_text(eval::Split::Dev));
  std::fprintf(stderr, "calibrating %s (%d layers, %d/%d heads) on the %s backend: %s\n", config.name.c_str(),
               config.layers, config.hq, config.hkv, a.backend.c_str(), mix.description.c_str());
  const engine::Model model = source.load();

  PlanProvenance provenance;
  provenance.dev_set = mix.description;
  provenance.date = utc_now();
  provenance.tool_version = std::string("kascade ") + KASCADE_VERSION + " calibrate";
  std::ostringstream notes;
  notes << "chosen by held-out next-token KL among candidates of anchors " << a.m_lo << ".." << a.m_hi
        << " (spec k_cal " << cfg.statistics.spec_k_cal << ", paper k_cal " << cfg.statistics.paper_k_cal
        << ", even spacing), search of " << cfg.choice.max_search_evaluations << " plans"
        << (cfg.choice.search_every_count ? " from every anchor count" : "") << ", backend " << a.backend;
  if (a.backend == "cpu") notes << " (" << dtype_name(cfg.cpu_kv_cache) << " KV cache)";
  if (!a.notes.empty()) notes << "; " << a.notes;
  provenance.notes = notes.str();
  const CalibrationTarget target{a.name.empty() ? config.name : a.name, config.layers, config.hq, config.hkv,
                                 config.head_dim};
  ProgressBar progress;
  const auto start = std::chrono::steady_clock::now();
  const CalibrationRun run = run_calibration(
      model, mix, cfg, [&tok](int32_t id) { return tok.is_stop(id); }, target, provenance,
      [&progress](const std::string& stage, int done, int total, const std::string& detail) {
        progress.update(stage, done, total, detail);
      });
  progress.finish();
  nlohmann::json report = run_report_json(run);
  report["command"] = "kascade calibrate";
  for (const std::string& arg : args) report["command"] = report["command"].get<std::string>() + " " + arg;
  report["date"] = provenance.date;
  std::vector<std::pair<std::string, Plan>> per_m;
  if (!a.plans_dir.empty()) {
    const std::vector<int> best = best_evaluation_per_anchor_count(run.choice);
    for (size_t m = 0; m < best.size(); ++m) {
      if (best[m] >= 0) per_m.emplace_back(a.plans_dir + "/m" + std::to_string(m) + ".json",
                                           evaluation_plan(run, best[m], target, provenance));
    }
  }
  write_outputs(a, per_m, run.plan, report);

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("statistics: %zu prompts (paper: %lld generated rows, decode rows set %lld of %lld minima); held out: "
              "%zu prompts, %lld rows; dense answer loss %.4f\n",
              run.statistics_prompts.size(), static_cast<long long>(run.paper_generated_rows),
              static_cast<long long>(run.paper.minima_from_decode_rows), static_cast<long long>(run.paper.minima_total),
              run.held_out_prompts.size(), static_cast<long long>(run.held_out_rows), run.dense.answer_loss);
  std::printf("%-9s %-6s %-28s %10s %10s  %s\n", "stage", "pool", "anchors", "kl", "answer", "sources");
  for (size_t i = 0; i < run.choice.evaluations.size(); ++i) {
    const Evaluation& e = run.choice.evaluations[i];
    const bool chosen = static_cast<int>(i) == run.choice.chosen;
    std::string sources;
    for (const std::string& s : e.sources) sources += (sources.empty() ? "" : "; ") + s;
    std::printf("%s%-8s %-6s %-28s %10.5f %10.5f  %s\n", chosen ? "*" : " ", to_string(e.stage),
                to_string(e.pooling), anchors_text(e.anchors).c_str(), e.loss.kl, e.loss.answer_loss, sources.c_str());
  }
  const Evaluation& chosen = run.choice.evaluations[static_cast<size_t>(run.choice.chosen)];
  const size_t searches = run.choice.searches.size();
  const std::string searched = searches == 1 ? "the search" : std::to_string(searches) + " searches (one per anchor count)";
  std::printf("chosen: anchors %s, pooling %s, held-out kl %.5f, answer loss %.4f (%zu plans scored, %d in %s) in %s\n",
              anchors_text(chosen.anchors).c_str(), to_string(chosen.pooling), chosen.loss.kl, chosen.loss.answer_loss,
              run.choice.evaluations.size(), run.choice.search_evaluations, searched.c_str(),
              format_seconds(seconds).c_str());
  std::printf("plan written to %s%s%s\n", a.out.c_str(), a.report.empty() ? "" : ", report to ", a.report.c_str());
  for (const auto& [path, p] : per_m) {
    const PlanEvaluation& e = p.calibration->selection->evaluated[static_cast<size_t>(p.calibration->selection->chosen)];
    std::printf("m %zu: anchors %s, pooling %s, held-out kl %.5f -> %s\n", p.anchors.size(), anchors_text(p.anchors).c_str(),
                to_string(p.sparsity.pooling), e.kl, path.c_str());
  }
  return 0;
}

const Command reg("calibrate", "choose anchor layers and head maps: statistics propose, held-out loss chooses",
                  run_calibrate);

}  // namespace
}  // namespace kascade::cli
