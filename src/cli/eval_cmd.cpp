// `kascade eval`: the accuracy study — long-context tasks at exact token lengths (synthetic
// retrieval and a copy task on natural text, from the dev or the eval split), every selection
// policy of SPEC 8 at equal rho, compared with dense on the same rows (exact match, answer
// log-likelihood change, KL and top-1 agreement, with bootstrap intervals) and at equal keys
// attended, written as markdown tables and JSON (tools/plot_eval.py draws them).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "command.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/eval/harness.h"
#include "kascade/eval/tasks.h"
#include "kascade/plan.h"

namespace kascade::cli {
namespace {

constexpr const char* kUsage =
    "usage: kascade eval --out DIR [--model GGUF|HF_DIR|default] [--plan PLAN] [--quick]\n"
    "                    [--tasks T,...] [--lengths N,...] [--policies P,...] [--rho R,...]\n"
    "                    [--examples N] [--seed S] [--split dev|eval] [--k-min K] [--prefill dense|sparse]\n"
    "                    [--threads N] [--backend cpu|cuda] [--kv-cache f32|f16|fp8] [--write-tokens]\n"
    "       kascade eval --from-json FILE --out DIR [--examples N]\n"
    "  tasks:    passkey, niah-single, niah-multikey, vartrack, kv-uuid, common-words, copy (default:\n"
    "            all; copy reads the natural-text corpus of scripts/setup.sh)\n"
    "  policies: dense, oracle, kascade, kascade-pooled, streaming, quest, omnikv, tidal (default:\n"
    "            all; kascade, kascade-pooled, omnikv and tidal need --plan; dense always runs, first)\n"
    "  --split:  eval (default): the evaluation examples, for reported results; dev: the development\n"
    "            examples (calibration); the two never share an example or a corpus paragraph\n"
    "  --quick:  lengths 1024,2048 and 1 example per task and length; without it: lengths\n"
    "            1024,2048,4096,8192 and 4 examples\n"
    "  --rho:    budgets k = max(k_min, floor(rho * n)) (default 0.05,0.1,0.2) with --k-min\n"
    "            (default 16: at these lengths SPEC's 128 would make rho 0.05 and 0.1 the same k)\n"
    "  --prefill: dense (default): the context is prefilled once densely, the question and answer\n"
    "            go through each policy as decode steps; sparse: each policy prefills the whole\n"
    "            prompt (SPEC 5 tiles; quest and omnikv are decode-only and prefill densely)\n"
    "  --from-json: the tables again from a stored eval.json, over its first N examples of every\n"
    "            task and length (all must be there): complete passes of a run stopped part-way\n"
    "  --backend: the engine that runs the model and the policies' decode rows (default cpu; cuda:\n"
    "            on the GPU, see docs/eval.md)\n"
    "  --write-tokens: also write DIR/tokens.json: every example's context, query and answer token\n"
    "            ids and, per run, the greedy answer tokens and per-token answer log-probabilities\n"
    "writes DIR/eval.md and DIR/eval.json (rewritten at most every 120 s and at the end: a run\n"
    "stopped early leaves the examples it finished, marked partial) and prints the tables; the\n"
    "commit in the provenance is KASCADE_COMMIT when set, else git's HEAD";

constexpr int kQuickExamples = 1;
constexpr int kFullExamples = 4;
// k_min of the study: small enough that k = floor(rho * n) at 1k-8k tokens for every rho given.
constexpr int kEvalKMin = 16;
// The tables of a running grid are rewritten at most this often, and after the first and the last
// example: their bootstrap intervals take seconds on a full grid (3-6 s measured for 12k runs on
// the 2-core development machine).
constexpr double kCheckpointSeconds = 120;

struct EvalArgs {
  std::string model = "default";
  std::optional<std::string> plan, out, tasks, lengths, policies, rhos, from_json, split;
  std::optional<int> examples, k_min;
  bool quick = false;
  bool sparse_prefill = false;
  bool write_tokens = false;
  int seed = 1;
  int threads = 0;
  std::string backend = "cpu";
  std::optional<DType> kv_cache;
};

EvalArgs parse_args(const Args& args) {
  EvalArgs a;
  OptionReader r(args);
  std::string v;
  while (!r.done()) {
    if (r.take_value("--model", v)) {
      a.model = v;
    } else if (r.take_value("--plan", v)) {
      a.plan = v;
    } else if (r.take_value("--out", v)) {
      a.out = v;
    } else if (r.take_value("--tasks", v)) {
      a.tasks = v;
    } else if (r.take_value("--lengths", v)) {
      a.lengths = v;
    } else if (r.take_value("--policies", v)) {
      a.policies = v;
    } else if (r.take_value("--rho", v)) {
      a.rhos = v;
    } else if (r.take_value("--examples", v)) {
      a.examples = parse_int(v, "--examples");
      KASCADE_CHECK(*a.examples >= 1, "--examples must be >= 1, got " << *a.examples);
    } else if (r.take_value("--k-min", v)) {
      a.k_min = parse_int(v, "--k-min");
      KASCADE_CHECK(*a.k_min >= 0, "--k-min must be >= 0, got " << *a.k_min);
    } else if (r.take_value("--seed", v)) {
      a.seed = parse_int(v, "--seed");
      KASCADE_CHECK(a.seed >= 0, "--seed must be >= 0, got " << a.seed);
    } else if (r.take_value("--threads", v)) {
      a.threads = parse_int(v, "--threads");
      KASCADE_CHECK(a.threads >= 0, "--threads must be >= 0, got " << a.threads);
    } else if (r.take_value("--prefill", v)) {
      KASCADE_CHECK(v == "dense" || v == "sparse", "--prefill must be dense or sparse, got '" << v << "'");
      a.sparse_prefill = v == "sparse";
    } else if (r.take_value("--split", v)) {
      KASCADE_CHECK(v == "dev" || v == "eval", "--split must be dev or eval, got '" << v << "'");
      a.split = v;
    } else if (r.take_value("--backend", v)) {
      a.backend = v;
    } else if (take_kv_cache(r, a.kv_cache)) {
    } else if (r.take_value("--from-json", v)) {
      a.from_json = v;
    } else if (r.take_flag("--quick")) {
      a.quick = true;
    } else if (r.take_flag("--write-tokens")) {
      a.write_tokens = true;
    } else {
      KASCADE_FAIL("unknown option '" << r.peek() << "' (see kascade eval --help)");
    }
  }
  KASCADE_CHECK(a.out.has_value(), "--out DIR is required (see kascade eval --help)");
  return a;
}

void check_known(const std::vector<std::string>& given, const std::vector<std::string>& known, const char* what) {
  for (const std::string& g : given) {
    bool found = false;
    for (const std::string& k : known) found = found || k == g;
    if (found) continue;
    std::string list;
    for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
    KASCADE_FAIL(what << ": unknown '" << g << "' (known: " << list << ")");
  }
}

eval::EvalConfig make_config(const EvalArgs& a, const Plan* plan) {
  eval::EvalConfig c;
  c.tasks = a.tasks ? split_list(*a.tasks, "--tasks") : eval::task_names();
  check_known(c.tasks, eval::task_names(), "--tasks");
  c.policies = a.policies ? split_list(*a.policies, "--policies") : eval::policy_names();
  check_known(c.policies, eval::policy_names(), "--policies");
  const std::string lengths = a.lengths ? *a.lengths : (a.quick ? "1024,2048" : "1024,2048,4096,8192");
  for (const std::string& s : split_list(lengths, "--lengths")) {
    const int n = parse_int(s, "--lengths");
    KASCADE_CHECK(n >= 256, "--lengths: each length must be >= 256 tokens, got " << n);
    c.lengths.push_back(n);
  }
  for (const std::string& s : split_list(a.rhos ? *a.rhos : "0.05,0.1,0.2", "--rho")) {
    const double rho = parse_double(s, "--rho");
    KASCADE_CHECK(rho > 0 && rho <= 1, "--rho: each value must be in (0, 1], got " << s);
    c.rhos.push_back(rho);
  }
  c.examples = a.examples ? *a.examples : (a.quick ? kQuickExamples : kFullExamples);
  c.seed = static_cast<uint64_t>(a.seed);
  c.split = eval::parse_split(a.split.value_or("eval"));
  if (plan) c.params = plan->params();
  c.params.k_min = a.k_min ? *a.k_min : kEvalKMin;
  c.threads = a.threads;
  c.sparse_prefill = a.sparse_prefill;
  c.keep_tokens = a.write_tokens;
  c.backend = a.backend;
  engine::check_backend_available(c.backend);
  check_kv_cache_backend(a.kv_cache, c.backend);
  if (a.kv_cache) c.cpu_kv_cache = *a.kv_cache;
  eval::validate_config(c, plan);
  return c;
}

// The GPU's name for the provenance of a CUDA run (nvidia-smi), "unknown" where it cannot be read.
std::string gpu_name() {
  std::FILE* p = popen("nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null", "r");
  if (!p) return "unknown";
  char buf[128] = {0};
  const bool ok = std::fgets(buf, sizeof buf, p) != nullptr;
  pclose(p);
  std::string s = ok ? buf : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s.empty() ? "unknown" : s;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    KASCADE_CHECK(f.good(), "cannot write '" << tmp.string() << "'");
    f << text;
    KASCADE_CHECK(f.good(), "error writing '" << tmp.string() << "'");
  }
  std::filesystem::rename(tmp, path);
}

// The provenance line above the tables, from the provenance JSON (one format for a fresh run and
// for a summary of a stored one).
std::string provenance_markdown(const nlohmann::json& prov, const std::string& model_name, double seconds) {
  std::ostringstream md;
  const std::string backend = prov.value("backend", "cpu");
  md << "Model `" << prov.value("model_file", "?") << "` (" << model_name << "), plan `"
     << (prov.value("plan", "").empty() ? "none" : prov.value("plan", "")) << "`, commit `" << prov.value("commit", "?")
     << "`, " << prov.value("date", "?") << ", " << static_cast<int>(seconds) << " s on the ";
  if (backend == "cuda") {
    md << "CUDA backend (" << prov.value("device", "?");
    if (prov.contains("host_threads")) md << ", " << prov.at("host_threads") << " host threads";
    md << ").";
  } else {
    md << "CPU backend";
    if (prov.contains("kv_cache")) md << " (" << prov.at("kv_cache").get<std::string>() << " KV cache)";
    md << ".";
  }
  const int done = prov.value("examples_done", 0), total = prov.value("examples_total", 0);
  if (done < total) md << " **Partial: " << done << " of " << total << " (task, length, example) done.**";
  md << "\n\nCommand: `" << prov.value("command", "?") << "`";
  if (prov.contains("summary_of")) {
    md << "\n\nThis table: the first " << prov.at("summary_examples") << " example(s) of every task and length of `"
       << prov.at("summary_of").get<std::string>() << "` (`" << prov.at("summary_command").get<std::string>() << "`).";
  }
  return md.str();
}

void write_tables(const std::filesystem::path& out_dir, const eval::EvalResults& results,
                  const nlohmann::json& provenance, bool print) {
  const std::vector<eval::Summary> summary = eval::summarize(results);
  const std::string markdown =
      eval::to_markdown(results, provenance_markdown(provenance, results.model_name, results.seconds), summary);
  const std::string json = eval::to_json(results, provenance, summary)
                               .dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
                           "\n";
  std::filesystem::create_directories(out_dir);
  write_file(out_dir / "eval.md", markdown);
  write_file(out_dir / "eval.json", json);
  if (print) std::fwrite(markdown.data(), 1, markdown.size(), stdout);
}

// --from-json: the tables of a stored run over its first N examples.
int summarize_stored(const EvalArgs& a, const Args& args) {
  KASCADE_CHECK(!a.plan && !a.tasks && !a.lengths && !a.policies && !a.rhos && !a.k_min && !a.quick && !a.split &&
                    !a.sparse_prefill && !a.write_tokens && a.backend == "cpu" && !a.kv_cache && a.threads == 0 &&
                    a.seed == 1,
                "--from-json takes only --out and --examples (the stored run fixes everything else)");
  std::ifstream f(*a.from_json);
  KASCADE_CHECK(f.good(), "--from-json: cannot read '" << *a.from_json << "'");
  nlohmann::json stored;
  try {
    f >> stored;
  } catch (const nlohmann::json::exception& e) {
    KASCADE_FAIL("--from-json: '" << *a.from_json << "' is not valid JSON (" << e.what() << ")");
  }
  const eval::EvalResults all = eval::results_from_json(stored);
  const int examples = a.examples ? *a.examples : all.config.examples;
  KASCADE_CHECK(examples <= all.config.examples, "--examples " << examples << ": the stored run has "
                                                                << all.config.examples << " per task and length");
  const eval::EvalResults kept = eval::keep_examples(all, examples);
  // Only complete passes: every (task, length, index) of the kept range must have its runs.
  for (const std::string& task : kept.config.tasks) {
    for (int length : kept.config.lengths) {
      for (int index = 0; index < examples; ++index) {
        bool found = false;
        for (const eval::RunScore& r : kept.runs) found = found || (r.task == task && r.length == length && r.index == index);
        KASCADE_CHECK(found, "--from-json: example #" << index << " of " << task << " @ " << length
                                                      << " is not in the stored run (it stopped before it): use fewer --examples");
      }
    }
  }
  nlohmann::json provenance = stored.contains("provenance") ? stored.at("provenance") : nlohmann::json::object();
  provenance["summary_command"] = [&args] {
    std::string command = "kascade eval";
    for (const std::string& s : args) command += " " + s;
    return command;
  }();
  provenance["summary_of"] = *a.from_json;
  provenance["summary_examples"] = examples;
  provenance["examples_done"] = provenance["examples_total"] = 0;  // the kept passes are complete
  write_tables(std::filesystem::path(*a.out), kept, provenance, true);
  return 0;
}

int run_eval_command(const Args& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::printf("%s\n%s", kUsage, kKvCacheUsage);
    return 0;
  }
  const EvalArgs a = parse_args(args);
  if (a.from_json) return summarize_stored(a, args);
  // Everything that can fail on bad input is checked before the long run and before any file.
  std::optional<Plan> plan;
  if (a.plan) plan = load_plan(*a.plan);
  const eval::EvalConfig config = make_config(a, plan ? &*plan : nullptr);
  const std::filesystem::path out_dir(*a.out);
  KASCADE_CHECK(!std::filesystem::exists(out_dir) || std::filesystem::is_directory(out_dir),
                "--out: '" << out_dir.string() << "' exists and is not a directory");
  const engine::ModelSource source = engine::ModelSource::open(a.model);
  engine::check_backend_supports(config.backend, source.config());  // before the weights are read
  const engine::Tokenizer tok = source.tokenizer();
  const engine::Model model = source.load();
  const engine::ModelConfig& mc = model.config;
  if (plan) check_plan_matches(*plan, mc.layers, mc.hq, mc.hkv, mc.head_dim);
  for (int length : config.lengths) {
    KASCADE_CHECK(mc.context <= 0 || length <= mc.context,
                  "--lengths: " << length << " is beyond the model's context of " << mc.context << " tokens");
  }

  std::string command = "kascade eval";
  for (const std::string& s : args) command += " " + s;
  const std::string commit = git_commit();
  const std::string date = utc_now();
  const bool tty = isatty(STDERR_FILENO) != 0;
  std::fprintf(stderr,
               "eval: %s, split %s, %zu task(s) x %zu length(s) x %d example(s), %zu policies (dense first), rho %s, "
               "k_min %d\n",
               model.config.name.c_str(), eval::to_string(config.split), config.tasks.size(), config.lengths.size(),
               config.examples, eval::run_order(config.policies).size(), a.rhos ? a.rhos->c_str() : "0.05,0.1,0.2",
               config.params.k_min);
  const unsigned host_threads = std::thread::hardware_concurrency();
  const std::string model_file = std::filesystem::path(source.path()).filename().string();
  const int total_examples = static_cast<int>(config.tasks.size() * config.lengths.size()) * config.examples;
  // The tables are written after every example, so that a run stopped early (a time limit on a
  // GPU machine) leaves every example it finished; until the last one they say they are partial.
  auto write_outputs = [&](const eval::EvalResults& results, int done, bool print) {
    const nlohmann::json provenance = {
        {"model_file", model_file},
        {"plan", a.plan ? *a.plan : ""},
        {"commit", commit},
        {"date", date},
        {"command", command},
        {"backend", config.backend},
        {"kv_cache", config.backend == "cpu" ? dtype_name(config.cpu_kv_cache) : "bf16"},
        {"device", config.backend == "cuda" ? gpu_name() : "cpu"},
        {"host_threads", config.threads > 0 ? config.threads : static_cast<int>(host_threads)},
        {"examples_done", done},
        {"examples_total", total_examples}};
    write_tables(out_dir, results, provenance, print);
    if (config.keep_tokens) {
      write_file(out_dir / "tokens.json", eval::tokens_to_json(results, provenance).dump() + "\n");
    }
  };
  int examples_done = 0;
  auto last_write = std::chrono::steady_clock::now();
  const eval::EvalResults results = eval::run_eval(
      model, tok, plan ? &*plan : nullptr, a.plan ? *a.plan : "", config,
      [tty, &examples_done](int done, int total, const std::string& line) {
        examples_done = done;
        std::fprintf(stderr, tty ? "\r\033[K[%d/%d] %s" : "[%d/%d] %s\n", done, total, line.c_str());
        if (tty && done == total) std::fprintf(stderr, "\n");
        std::fflush(stderr);
      },
      [&](const eval::EvalResults& partial) {
        const auto now = std::chrono::steady_clock::now();
        if (examples_done > 1 && examples_done < total_examples &&
            std::chrono::duration<double>(now - last_write).count() < kCheckpointSeconds) {
          return;
        }
        write_outputs(partial, examples_done, false);
        last_write = now;
      });
  write_outputs(results, total_examples, true);
  const std::string tokens_file = config.keep_tokens ? " and " + (out_dir / "tokens.json").string() : "";
  std::fprintf(stderr, "wrote %s and %s%s (%.0f s)\n", (out_dir / "eval.md").string().c_str(),
               (out_dir / "eval.json").string().c_str(), tokens_file.c_str(), results.seconds);
  return 0;
}

const Command reg("eval", "accuracy of Kascade and other selection policies on long-context tasks", run_eval_command);

}  // namespace
}  // namespace kascade::cli
