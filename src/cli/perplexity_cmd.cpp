// `kascade perplexity`: next-token log-loss of long text under dense attention and under selection
// policies, compared with dense on the same tokens (KL, top-1 agreement, delta log-loss with
// bootstrap intervals), in the manner of llama.cpp's perplexity tool. The protocol lives in
// kascade/eval/perplexity.h; docs/perplexity.md documents the command.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
#include "kascade/eval/corpus.h"
#include "kascade/eval/perplexity.h"
#include "kascade/plan.h"

namespace kascade::cli {
namespace {

constexpr const char* kUsage =
    "usage: kascade perplexity (--text FILE | --jsonl FILE | --corpus natural-dev|natural-eval)\n"
    "                          [--model GGUF|HF_DIR|default] [--plan PLAN] [--policy P,...] [--rho R,...]\n"
    "                          [--context N] [--score N] [--mode decode|prefill] [--k-min K]\n"
    "                          [--max-docs N] [--max-windows N] [--threads N] [--backend cpu|cuda]\n"
    "                          [--kv-cache f32|f16|fp8] [--reference-kv-cache f32|f16|fp8] [--out REPORT.json]\n"
    "  --text FILE:   one plain-text document, cut into consecutive windows\n"
    "  --jsonl FILE:  one {\"text\": ...} object per line, each cut into windows\n"
    "  --corpus:      the natural-text corpus of scripts/setup.sh (docs/perplexity.md): one window per\n"
    "                 document; natural-dev for development and calibration, natural-eval for results\n"
    "  --context N:   tokens per window (default 4096; BOS first when the model adds one). Documents\n"
    "                 shorter than a window are skipped and counted; none left is an error\n"
    "  --score N:     the last N tokens of each window are scored (default 512, below --context)\n"
    "  --mode:        decode (default): the rest of the window is prefilled densely once and the\n"
    "                 scored rows run as decode steps of each policy; prefill: each policy prefills\n"
    "                 the whole window (SPEC 5 tiles) and the last N rows are scored\n"
    "  --policy:      dense, oracle, kascade, kascade-pooled, streaming, quest, omnikv, ... (default\n"
    "                 kascade); dense always runs first as the reference; kascade, kascade-pooled and\n"
    "                 omnikv need a plan (--model default uses its shipped plan unless --plan)\n"
    "  --rho:         budgets k = max(k_min, floor(rho * n)), each in (0, 1] (default 0.1) with --k-min\n"
    "                 (default 16, as kascade eval)\n"
    "  --reference-kv-cache: the cost of the KV cache type itself (cpu backend): the reference is\n"
    "                 dense attention on a second backend with this cache (not the --kv-cache type),\n"
    "                 and every run on --kv-cache, dense included, is compared with it\n"
    "  --max-docs N:  the first N documents only; --max-windows N: the first N windows only\n"
    "  --out FILE:    the JSON report (written only when the run completes); the table goes to stdout,\n"
    "                 a progress line per window to stderr. The commit in the provenance is\n"
    "                 KASCADE_COMMIT when set, else git's HEAD";

// As kascade eval: small enough that k = floor(rho * n) at 1k-8k tokens for every rho given.
constexpr int kPerplexityKMin = 16;

struct PerplexityArgs {
  std::string model = "default";
  std::optional<std::string> text, jsonl, corpus, plan, out, policies, rhos, mode;
  std::optional<int> context, score, k_min, max_docs, max_windows;
  int threads = 0;
  std::string backend = "cpu";
  std::optional<DType> kv_cache, reference_kv_cache;
};

void set_once(std::optional<std::string>& slot, const std::string& value, const char* name) {
  KASCADE_CHECK(!slot.has_value(), name << " given more than once");
  slot = value;
}

void set_once(std::optional<int>& slot, const std::string& value, const char* name) {
  KASCADE_CHECK(!slot.has_value(), name << " given more than once");
  slot = parse_int(value, name);
}

PerplexityArgs parse_args(const Args& args) {
  PerplexityArgs a;
  OptionReader r(args);
  std::string v;
  while (!r.done()) {
    if (r.take_value("--model", v)) {
      a.model = v;
    } else if (r.take_value("--text", v)) {
      set_once(a.text, v, "--text");
    } else if (r.take_value("--jsonl", v)) {
      set_once(a.jsonl, v, "--jsonl");
    } else if (r.take_value("--corpus", v)) {
      set_once(a.corpus, v, "--corpus");
    } else if (r.take_value("--plan", v)) {
      set_once(a.plan, v, "--plan");
    } else if (r.take_value("--out", v)) {
      set_once(a.out, v, "--out");
    } else if (r.take_value("--policy", v) || r.take_value("--policies", v)) {
      set_once(a.policies, v, "--policy");
    } else if (r.take_value("--rho", v)) {
      set_once(a.rhos, v, "--rho");
    } else if (r.take_value("--mode", v)) {
      set_once(a.mode, v, "--mode");
    } else if (r.take_value("--context", v)) {
      set_once(a.context, v, "--context");
    } else if (r.take_value("--score", v)) {
      set_once(a.score, v, "--score");
    } else if (r.take_value("--k-min", v)) {
      set_once(a.k_min, v, "--k-min");
      KASCADE_CHECK(*a.k_min >= 0, "--k-min must be >= 0, got " << *a.k_min);
    } else if (r.take_value("--max-docs", v)) {
      set_once(a.max_docs, v, "--max-docs");
      KASCADE_CHECK(*a.max_docs >= 1, "--max-docs must be >= 1, got " << *a.max_docs);
    } else if (r.take_value("--max-windows", v)) {
      set_once(a.max_windows, v, "--max-windows");
      KASCADE_CHECK(*a.max_windows >= 1, "--max-windows must be >= 1, got " << *a.max_windows);
    } else if (r.take_value("--threads", v)) {
      a.threads = parse_int(v, "--threads");
      KASCADE_CHECK(a.threads >= 0, "--threads must be >= 0, got " << a.threads);
    } else if (r.take_value("--backend", v)) {
      a.backend = v;
    } else if (take_kv_cache(r, a.kv_cache)) {
    } else if (take_kv_cache(r, a.reference_kv_cache, "--reference-kv-cache")) {
    } else {
      KASCADE_FAIL("unknown option '" << r.peek() << "' (see kascade perplexity --help)");
    }
  }
  const int inputs = (a.text ? 1 : 0) + (a.jsonl ? 1 : 0) + (a.corpus ? 1 : 0);
  KASCADE_CHECK(inputs == 1, (inputs == 0 ? "no input: give --text FILE, --jsonl FILE or --corpus natural-dev|natural-eval"
                                          : "give only one of --text, --jsonl and --corpus"));
  if (a.corpus)
    KASCADE_CHECK(*a.corpus == "natural-dev" || *a.corpus == "natural-eval",
                  "--corpus must be natural-dev or natural-eval, got '" << *a.corpus << "'");
  return a;
}

eval::PerplexityConfig make_config(const PerplexityArgs& a, const Plan* plan) {
  eval::PerplexityConfig c;
  c.context = a.context.value_or(4096);
  c.score = a.score.value_or(512);
  KASCADE_CHECK(c.context >= 2, "--context must be >= 2, got " << c.context);
  KASCADE_CHECK(c.score >= 1 && c.score < c.context,
                "--score must be in 1.." << c.context - 1 << " (below --context " << c.context << "), got " << c.score);
  c.mode = eval::parse_perplexity_mode(a.mode.value_or("decode"));
  c.policies = split_list(a.policies.value_or("kascade"), "--policy");
  for (const std::string& name : c.policies) {
    bool known = false;
    for (const std::string& k : eval::policy_names()) known = known || k == name;
    if (known) continue;
    std::string list;
    for (const std::string& k : eval::policy_names()) list += (list.empty() ? "" : ", ") + k;
    KASCADE_FAIL("--policy: unknown '" << name << "' (known: " << list << ")");
  }
  c.rhos.clear();
  for (const std::string& s : split_list(a.rhos.value_or("0.1"), "--rho")) {
    const double rho = parse_double(s, "--rho");
    KASCADE_CHECK(rho > 0 && rho <= 1, "--rho: each value must be in (0, 1], got " << s);
    c.rhos.push_back(rho);
  }
  if (plan) c.params = plan->params();
  c.params.k_min = a.k_min.value_or(kPerplexityKMin);
  c.threads = a.threads;
  c.backend = a.backend;
  if (a.kv_cache) c.cpu_kv_cache = *a.kv_cache;
  // Before the backend's availability, so that the line is the same in every build.
  if (a.reference_kv_cache) {
    KASCADE_CHECK(c.backend == "cpu", "--reference-kv-cache applies to the cpu backend; backend '"
                                          << c.backend << "' keeps its own KV cache (cuda: bf16)");
    KASCADE_CHECK(*a.reference_kv_cache != c.cpu_kv_cache,
                  "--reference-kv-cache " << eval::kv_cache_name(*a.reference_kv_cache)
                                          << " is the run's own KV cache (--kv-cache "
                                          << eval::kv_cache_name(c.cpu_kv_cache) << (a.kv_cache ? "" : ", the default")
                                          << "): name another type to compare against");
    c.reference_kv_cache = a.reference_kv_cache;
  }
  engine::check_backend_available(c.backend);
  check_kv_cache_backend(a.kv_cache, c.backend);
  return c;
}

bool needs_plan(const std::vector<std::string>& policies) {
  for (const std::string& p : policies)
    if (p == "kascade" || p == "kascade-pooled" || p == "omnikv" || p == "tidal") return true;
  return false;
}

void require_file(const std::string& path, const char* option) {
  KASCADE_CHECK(std::filesystem::is_regular_file(path), option << ": '" << path << "' does not exist or is not a file");
}

std::string read_text_file(const std::string& path, const char* option) {
  require_file(path, option);
  std::ifstream f(path, std::ios::binary);
  KASCADE_CHECK(f.good(), option << ": cannot read '" << path << "'");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// The documents of the input, tokenized (no BOS). `needed` is the text tokens of one window.
std::vector<eval::TokenDocument> read_documents(const PerplexityArgs& a, const engine::Tokenizer& tok, size_t needed,
                                                std::string& input_label) {
  std::vector<eval::TokenDocument> docs;
  const size_t max_docs = a.max_docs ? static_cast<size_t>(*a.max_docs) : SIZE_MAX;
  if (a.text) {
    const std::string text = read_text_file(*a.text, "--text");
    KASCADE_CHECK(!blank(text), "--text: '" << *a.text << "' is empty");
    docs.push_back({std::filesystem::path(*a.text).filename().string(), tok.encode(text, /*parse_special=*/false)});
    input_label = "`" + *a.text + "`";
  } else if (a.jsonl) {
    const std::string text = read_text_file(*a.jsonl, "--jsonl");
    std::istringstream lines(text);
    std::string line;
    int number = 0;
    while (std::getline(lines, line) && docs.size() < max_docs) {
      ++number;
      if (blank(line)) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        KASCADE_FAIL("--jsonl: line " << number << " of '" << *a.jsonl << "' is not valid JSON");
      }
      KASCADE_CHECK(j.is_object() && j.contains("text") && j.at("text").is_string(),
                    "--jsonl: line " << number << " of '" << *a.jsonl << "' has no \"text\" string");
      const std::string name =
          j.contains("id") && j.at("id").is_string() ? j.at("id").get<std::string>() : "line " + std::to_string(number);
      docs.push_back({name, tok.encode(j.at("text").get<std::string>(), /*parse_special=*/false)});
    }
    KASCADE_CHECK(!docs.empty(), "--jsonl: '" << *a.jsonl << "' holds no document");
    input_label = "`" + *a.jsonl + "`";
  } else {
    const eval::Split split = *a.corpus == "natural-dev" ? eval::Split::Dev : eval::Split::Eval;
    const std::vector<eval::Document> corpus = eval::natural_text(split);
    // One window per document: the document, continued by the next ones of its source if short.
    for (size_t i = 0; i < corpus.size() && docs.size() < max_docs; ++i) {
      std::vector<int32_t> ids = eval::document_tokens(corpus, i, needed, tok);
      ids.resize(needed);
      docs.push_back({corpus[i].id, std::move(ids)});
    }
    input_label = "the natural-text corpus, " + std::string(eval::to_string(split)) + " split";
  }
  if (docs.size() > max_docs) docs.resize(max_docs);
  return docs;
}

int run_perplexity_command(const Args& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::printf("%s\n%s", kUsage, kKvCacheUsage);
    return 0;
  }
  // Everything that can fail on bad input is checked before the weights are read and before
  // anything is written.
  const PerplexityArgs a = parse_args(args);
  const std::vector<std::string> policies = split_list(a.policies.value_or("kascade"), "--policy");
  std::optional<std::string> plan_path = a.plan;
  if (!plan_path && a.model == "default" && needs_plan(policies)) plan_path = engine::default_plan_path();
  std::optional<Plan> plan;
  if (plan_path) plan = load_plan(*plan_path);
  const eval::PerplexityConfig config = make_config(a, plan ? &*plan : nullptr);
  if (a.out) {
    const std::filesystem::path out(*a.out);
    KASCADE_CHECK(!std::filesystem::is_directory(out), "--out: '" << *a.out << "' is a directory");
    const std::filesystem::path parent = out.parent_path();
    KASCADE_CHECK(parent.empty() || std::filesystem::is_directory(parent),
                  "--out: the directory '" << parent.string() << "' does not exist");
  }
  if (a.text) require_file(*a.text, "--text");
  if (a.jsonl) require_file(*a.jsonl, "--jsonl");
  const engine::ModelSource source = engine::ModelSource::open(a.model);
  const engine::ModelConfig shape = source.config();
  engine::check_backend_supports(config.backend, shape);
  eval::validate_perplexity_config(config, plan ? &*plan : nullptr, shape);
  const engine::Tokenizer tok = source.tokenizer();
  const int32_t bos = tok.add_bos() ? tok.bos_id() : -1;
  const size_t needed = static_cast<size_t>(bos >= 0 ? config.context - 1 : config.context);
  std::string input_label;
  const std::vector<eval::TokenDocument> docs = read_documents(a, tok, needed, input_label);
  const eval::WindowSet windows = eval::make_windows(docs, config.context, bos, a.max_windows.value_or(0));
  if (windows.windows.empty()) {
    size_t longest = 0;
    for (const eval::TokenDocument& d : docs) longest = std::max(longest, d.tokens.size());
    KASCADE_FAIL((a.text ? "--text" : "--jsonl")
                 << ": too short: the longest document has " << longest << " tokens, fewer than the " << needed
                 << " of one window (--context " << config.context << ")");
  }

  const engine::Model model = source.load();
  std::string command = "kascade perplexity";
  for (const std::string& s : args) command += " " + s;
  const std::string commit = git_commit();
  const std::string date = utc_now();
  const bool tty = isatty(STDERR_FILENO) != 0;
  size_t runs = config.reference_kv_cache ? 2 : 1;  // dense (and dense on the reference cache)
  for (const std::string& p : config.policies) runs += p == "dense" ? 0 : config.rhos.size();
  std::fprintf(stderr, "perplexity: %s, %s, %zu window(s) of %d tokens, last %d scored, %s mode, %zu run(s) each\n",
               model.config.name.c_str(), input_label.c_str(), windows.windows.size(), config.context, config.score,
               eval::to_string(config.mode), runs);
  eval::PerplexityResults results = eval::run_perplexity(
      model, plan ? &*plan : nullptr, config, windows.windows, [tty](int done, int total, const std::string& line) {
        std::fprintf(stderr, tty ? "\r\033[K[%d/%d] %s" : "[%d/%d] %s\n", done, total, line.c_str());
        if (tty && done == total) std::fprintf(stderr, "\n");
        std::fflush(stderr);
      });
  results.skipped_documents = windows.skipped_documents;

  const std::string table = eval::perplexity_table(results, input_label);
  std::fwrite(table.data(), 1, table.size(), stdout);
  if (a.out) {
    const unsigned host_threads = std::thread::hardware_concurrency();
    const nlohmann::json provenance = {
        {"model_file", std::filesystem::path(source.path()).filename().string()},
        {"model", model.config.name},
        {"plan", plan_path.value_or("")},
        {"commit", commit},
        {"date", date},
        {"command", command},
        {"input", a.text ? "text" : a.jsonl ? "jsonl" : "corpus"},
        {"input_path", a.text ? *a.text : a.jsonl ? *a.jsonl : ""},
        {"corpus_split", a.corpus ? (*a.corpus == "natural-dev" ? "dev" : "eval") : ""},
        {"backend", config.backend},
        {"kv_cache", config.backend == "cpu" ? dtype_name(config.cpu_kv_cache) : "bf16"},
        {"host_threads", config.threads > 0 ? config.threads : static_cast<int>(host_threads)}};
    const std::string json =
        eval::perplexity_json(results, provenance).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    const std::string tmp = *a.out + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary);
      KASCADE_CHECK(f.good(), "--out: cannot write '" << tmp << "'");
      f << json;
      KASCADE_CHECK(f.good(), "--out: error writing '" << tmp << "'");
    }
    std::filesystem::rename(tmp, *a.out);
    std::fprintf(stderr, "wrote %s (%.0f s)\n", a.out->c_str(), results.seconds);
  }
  return 0;
}

const Command reg("perplexity", "log-loss of long text under selection policies, against dense", run_perplexity_command);

}  // namespace
}  // namespace kascade::cli
