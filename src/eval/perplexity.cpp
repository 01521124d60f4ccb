// Next-token scoring of long text under selection policies (kascade/eval/perplexity.h): windows,
// the decode and prefill protocols over the engine, summaries with cluster-bootstrap intervals.
#include "kascade/eval/perplexity.h"

#include <chrono>
#include <cmath>
#include <iomanip>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"
#include "kascade/plan.h"

namespace kascade::eval {

const char* to_string(PerplexityMode mode) { return mode == PerplexityMode::Decode ? "decode" : "prefill"; }

const char* kv_cache_name(DType type) { return type == DType::F8E4M3 ? "fp8" : dtype_name(type); }

PerplexityMode parse_perplexity_mode(const std::string& name) {
  if (name == "decode") return PerplexityMode::Decode;
  if (name == "prefill") return PerplexityMode::Prefill;
  KASCADE_FAIL("unknown mode '" << name << "' (expected decode or prefill)");
}

void validate_perplexity_config(const PerplexityConfig& config, const Plan* plan, const engine::ModelConfig& model) {
  KASCADE_CHECK(config.context >= 2, "perplexity: the context must be at least 2 tokens, got " << config.context);
  KASCADE_CHECK(config.score >= 1 && config.score < config.context,
                "perplexity: the scored tokens must be in 1.." << config.context - 1 << " (below the context of "
                                                               << config.context << "), got " << config.score);
  KASCADE_CHECK(model.context <= 0 || config.context <= model.context,
                "perplexity: a context of " << config.context << " tokens is beyond the model's context of "
                                            << model.context << " tokens");
  KASCADE_CHECK(!config.policies.empty(), "perplexity: no policy given");
  KASCADE_CHECK(!config.rhos.empty(), "perplexity: no rho given");
  for (double rho : config.rhos)
    KASCADE_CHECK(rho > 0 && rho <= 1, "perplexity: rho must be in (0, 1], got " << rho);
  KASCADE_CHECK(config.threads >= 0, "perplexity: threads must be >= 0, got " << config.threads);
  if (config.reference_kv_cache) {
    KASCADE_CHECK(config.backend == "cpu", "perplexity: a reference KV cache applies to the cpu backend; backend '"
                                               << config.backend << "' keeps its own KV cache");
    KASCADE_CHECK(*config.reference_kv_cache != config.cpu_kv_cache,
                  "perplexity: the reference KV cache (" << kv_cache_name(*config.reference_kv_cache)
                                                         << ") is the run's KV cache: give another type");
  }
  if (plan) check_plan_matches(*plan, model.layers, model.hq, model.hkv, model.head_dim);
  // make_policy names an unknown policy (with the known ones) and a missing plan.
  const PolicyContext ctx{config.params, model.layers, plan};
  for (const std::string& name : config.policies) make_policy(name, ctx);
}

WindowSet make_windows(const std::vector<TokenDocument>& documents, int context, int32_t bos, int max_windows) {
  KASCADE_CHECK(context >= 2, "make_windows: context must be >= 2, got " << context);
  const size_t text_tokens = static_cast<size_t>(bos >= 0 ? context - 1 : context);
  WindowSet set;
  for (const TokenDocument& doc : documents) {
    const size_t count = doc.tokens.size() / text_tokens;
    if (count == 0) {
      ++set.skipped_documents;
      continue;
    }
    for (size_t i = 0; i < count; ++i) {
      if (max_windows > 0 && static_cast<int>(set.windows.size()) >= max_windows) return set;
      Window w;
      w.name = count == 1 ? doc.name : doc.name + "#" + std::to_string(i);
      if (bos >= 0) w.tokens.push_back(bos);
      const auto first = doc.tokens.begin() + static_cast<std::ptrdiff_t>(i * text_tokens);
      w.tokens.insert(w.tokens.end(), first, first + static_cast<std::ptrdiff_t>(text_tokens));
      set.windows.push_back(std::move(w));
    }
  }
  return set;
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// dense first, then every other policy (in the order given) at every rho.
std::vector<std::pair<std::string, double>> run_list(const PerplexityConfig& config) {
  std::vector<std::pair<std::string, double>> runs = {{"dense", 1.0}};
  for (const std::string& name : config.policies) {
    if (name == "dense") continue;
    for (double rho : config.rhos) runs.emplace_back(name, rho);
  }
  return runs;
}

// Decode mode: the window's prefix prefilled densely on `backend` (after a reset); its seconds.
double prefill_prefix(engine::Backend& backend, const std::vector<int32_t>& prefix) {
  const auto start = Clock::now();
  backend.reset();
  if (!prefix.empty()) backend.forward(prefix, /*all_logits=*/false);
  return seconds_since(start);
}

// The scored rows' logits of one run: decode mode after the prefix already in the cache,
// prefill mode the whole window through the policy's prefill.
RowLogits run_rows(engine::Backend& backend, const PolicySpec& spec, const PerplexityConfig& config,
                   const std::vector<int32_t>& prefix, const std::vector<int32_t>& rows,
                   const engine::ModelConfig& model) {
  RowLogits r;
  if (config.mode == PerplexityMode::Decode) {
    r = score_rows_as_decode(backend, spec, rows, model, config.threads);
  } else {
    std::vector<int32_t> tokens = prefix;
    tokens.insert(tokens.end(), rows.begin(), rows.end());
    r = prefill_through_policy(backend, spec, tokens, static_cast<int>(rows.size()), model);
  }
  KASCADE_CHECK(r.logits.size() == rows.size() * static_cast<size_t>(model.vocab),
                "score_window: " << r.logits.size() << " logits for " << rows.size() << " rows of " << model.vocab);
  return r;
}

}  // namespace

WindowScore score_window(engine::Backend& backend, const engine::ModelConfig& model, const Plan* plan,
                         const PerplexityConfig& config, const std::vector<int32_t>& window,
                         engine::Backend* reference) {
  KASCADE_CHECK(static_cast<int>(window.size()) == config.context,
                "score_window: the window has " << window.size() << " tokens, the context is " << config.context);
  KASCADE_CHECK(config.score >= 1 && config.score < config.context,
                "score_window: " << config.score << " scored tokens in a window of " << config.context);
  KASCADE_CHECK(!config.reference_kv_cache || (reference != nullptr && reference != &backend),
                "score_window: a reference KV cache needs its own backend");
  // Row r (the token at position p + r) predicts the token at p + r + 1; the last `score`
  // tokens are predicted, so the rows are positions context-score-1 .. context-2.
  const size_t p = static_cast<size_t>(config.context - config.score - 1);
  const std::vector<int32_t> prefix(window.begin(), window.begin() + static_cast<std::ptrdiff_t>(p));
  const std::vector<int32_t> rows(window.begin() + static_cast<std::ptrdiff_t>(p), window.end() - 1);
  const std::vector<int32_t> targets(window.begin() + static_cast<std::ptrdiff_t>(p) + 1, window.end());
  const int n_rows = config.score;

  WindowScore score;
  // The reference's logits: dense on the reference cache when one is set, else (below) dense on
  // the main cache, the first of the runs.
  std::vector<float> reference_logits;
  if (config.reference_kv_cache) {
    reference->set_attention_override(nullptr);
    if (config.mode == PerplexityMode::Decode) score.prefill_seconds += prefill_prefix(*reference, prefix);
    const auto start = Clock::now();
    RowLogits r = run_rows(*reference, PolicySpec{}, config, prefix, rows, model);
    WindowRun run;
    run.policy = "dense";
    run.kv_cache = config.reference_kv_cache;
    run.keys = r.keys;
    run.dense_keys = r.dense_keys;
    run.metrics = compare_rows(r.logits.data(), r.logits.data(), n_rows, model.vocab, targets);
    run.seconds = seconds_since(start);
    reference_logits = std::move(r.logits);
    score.runs.push_back(std::move(run));
  }
  backend.set_attention_override(nullptr);
  if (config.mode == PerplexityMode::Decode) score.prefill_seconds += prefill_prefix(backend, prefix);
  for (const auto& [name, rho] : run_list(config)) {
    const auto start = Clock::now();
    PolicySpec spec{name, config.params, plan};
    spec.params.rho = rho;
    WindowRun run;
    run.policy = name;
    run.rho = rho;
    if (config.reference_kv_cache) run.kv_cache = config.cpu_kv_cache;
    RowLogits r = run_rows(backend, spec, config, prefix, rows, model);
    run.keys = r.keys;
    run.dense_keys = r.dense_keys;
    if (reference_logits.empty()) reference_logits = r.logits;  // dense: the first run
    run.metrics = compare_rows(reference_logits.data(), r.logits.data(), n_rows, model.vocab, targets);
    run.seconds = seconds_since(start);
    score.runs.push_back(std::move(run));
  }
  return score;
}

std::vector<PolicySummary> summarize_perplexity(const std::vector<std::vector<WindowRun>>& per_window, int score) {
  std::vector<PolicySummary> out;
  if (per_window.empty()) return out;
  const size_t n_runs = per_window.front().size();
  for (size_t k = 0; k < n_runs; ++k) {
    std::vector<std::vector<double>> loss, kl, top1, delta;
    PolicySummary s;
    s.policy = per_window.front()[k].policy;
    s.rho = per_window.front()[k].rho;
    s.kv_cache = per_window.front()[k].kv_cache;
    double keys = 0, dense_keys = 0;
    for (const std::vector<WindowRun>& runs : per_window) {
      KASCADE_CHECK(runs.size() == n_runs && runs[k].policy == s.policy && runs[k].rho == s.rho &&
                        runs[k].kv_cache == s.kv_cache,
                    "summarize_perplexity: the windows did not run the same policies");
      const RowMetrics& m = runs[k].metrics;
      std::vector<double> l(m.logprob.size()), d(m.logprob.size());
      for (size_t r = 0; r < m.logprob.size(); ++r) {
        l[r] = -m.logprob[r];
        d[r] = m.dense_logprob[r] - m.logprob[r];
      }
      loss.push_back(std::move(l));
      delta.push_back(std::move(d));
      kl.push_back(m.kl);
      top1.push_back(m.top1);
      keys += runs[k].keys;
      dense_keys += runs[k].dense_keys;
      s.seconds += runs[k].seconds;
    }
    // One seed per statistic: the intervals of two policies resample the same windows.
    s.log_loss = bootstrap_cluster_interval(loss, 1);
    s.kl = bootstrap_cluster_interval(kl, 2);
    s.top1 = bootstrap_cluster_interval(top1, 3);
    s.delta_log_loss = bootstrap_cluster_interval(delta, 4);
    s.perplexity = {std::exp(s.log_loss.mean), std::exp(s.log_loss.lo), std::exp(s.log_loss.hi), s.log_loss.n};
    s.tokens = static_cast<int>(per_window.size()) * score;
    s.keys_fraction = dense_keys > 0 ? keys / dense_keys : 1.0;
    out.push_back(s);
  }
  return out;
}

PerplexityResults run_perplexity(const engine::Model& model, const Plan* plan, const PerplexityConfig& config,
                                 const std::vector<Window>& windows,
                                 const std::function<void(int, int, const std::string&)>& on_window) {
  const engine::ModelConfig& mc = model.config;
  validate_perplexity_config(config, plan, mc);
  KASCADE_CHECK(!windows.empty(), "perplexity: no window to score");
  for (const Window& w : windows)
    KASCADE_CHECK(static_cast<int>(w.tokens.size()) == config.context,
                  "perplexity: window " << w.name << " has " << w.tokens.size() << " tokens, not " << config.context);
  engine::BackendOptions options;
  options.threads = config.threads;
  options.cpu_kv_cache = config.cpu_kv_cache;
  auto backend = engine::make_backend(config.backend, model, nullptr, options);
  std::unique_ptr<engine::Backend> reference;
  if (config.reference_kv_cache) {
    engine::BackendOptions reference_options = options;
    reference_options.cpu_kv_cache = *config.reference_kv_cache;
    reference = engine::make_backend(config.backend, model, nullptr, reference_options);
  }

  PerplexityResults results;
  results.config = config;
  results.model_name = mc.name;
  const auto start = Clock::now();
  for (size_t i = 0; i < windows.size(); ++i) {
    const auto window_start = Clock::now();
    WindowScore s = score_window(*backend, mc, plan, config, windows[i].tokens, reference.get());
    results.prefill_seconds += s.prefill_seconds;
    results.windows.push_back(windows[i].name);
    if (on_window) {
      std::ostringstream line;
      line << std::fixed << std::setprecision(3) << windows[i].name << ":";
      for (const WindowRun& r : s.runs) {
        double loss = 0, kl = 0, top1 = 0;
        for (size_t t = 0; t < r.metrics.logprob.size(); ++t) {
          loss -= r.metrics.logprob[t];
          kl += r.metrics.kl[t];
          top1 += r.metrics.top1[t];
        }
        const double n = static_cast<double>(r.metrics.logprob.size());
        const bool is_reference = &r == &s.runs.front();
        line << " " << r.policy;
        if (r.policy != "dense") line << "@" << std::setprecision(2) << r.rho << std::setprecision(3);
        if (r.kv_cache) line << " (" << kv_cache_name(*r.kv_cache) << ")";
        line << " loss " << loss / n;
        if (!is_reference) line << " kl " << kl / n << " top1 " << top1 / n;
        line << " (" << std::setprecision(0) << r.seconds << " s)" << std::setprecision(3) << ";";
      }
      line << std::setprecision(0) << " window " << seconds_since(window_start) << " s";
      if (config.mode == PerplexityMode::Decode) line << " (dense prefix " << s.prefill_seconds << " s)";
      on_window(static_cast<int>(i + 1), static_cast<int>(windows.size()), line.str());
    }
    results.per_window.push_back(std::move(s.runs));
  }
  results.summaries = summarize_perplexity(results.per_window, config.score);
  results.seconds = seconds_since(start);
  return results;
}

namespace {

// "kascade @ 0.1"; with a reference KV cache, the cache too: "kascade @ 0.1 (fp8 cache)".
std::string run_label(const PolicySummary& s, bool is_reference) {
  std::ostringstream o;
  o << s.policy;
  if (s.policy != "dense") o << " @ " << s.rho;
  if (s.kv_cache) o << " (" << kv_cache_name(*s.kv_cache) << " cache" << (is_reference ? ", reference" : "") << ")";
  return o.str();
}

std::string with_interval(const Interval& i, int precision) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(precision) << i.mean << " [" << i.lo << ", " << i.hi << "]";
  return o.str();
}

nlohmann::json interval_json(const Interval& i) {
  return {{"mean", i.mean}, {"lo", i.lo}, {"hi", i.hi}, {"n", i.n}};
}

}  // namespace

std::string perplexity_table(const PerplexityResults& results, const std::string& input) {
  const PerplexityConfig& c = results.config;
  std::ostringstream o;
  o << "Perplexity of " << results.model_name << " on " << input << ": N = " << results.windows.size()
    << " window(s) of " << c.context << " tokens, the last " << c.score << " scored (" << to_string(c.mode)
    << " mode, k_min " << c.params.k_min << ")";
  if (results.skipped_documents > 0) o << "; " << results.skipped_documents << " document(s) shorter than a window skipped";
  o << ". Means with 95% bootstrap intervals over windows";
  if (results.windows.size() < 2) o << " (one window: the intervals have no width; score more windows)";
  o << ".";
  if (c.reference_kv_cache)
    o << " The reference is dense attention on an " << kv_cache_name(*c.reference_kv_cache)
      << " KV cache; every other row runs on an " << kv_cache_name(c.cpu_kv_cache)
      << " KV cache and is compared with it (KL, top-1 and delta log-loss against the reference).";
  o << "\n\n";
  o << "| policy | tokens | log-loss | perplexity | " << (c.reference_kv_cache ? "KL vs reference" : "KL vs dense")
    << " | top-1 agreement | delta log-loss | keys |\n";
  o << "|---|---|---|---|---|---|---|---|\n";
  for (const PolicySummary& s : results.summaries) {
    o << "| " << run_label(s, &s == &results.summaries.front()) << " | " << s.tokens << " | " << with_interval(s.log_loss, 4) << " | "
      << with_interval(s.perplexity, 3) << " | " << with_interval(s.kl, 4) << " | " << with_interval(s.top1, 3) << " | "
      << with_interval(s.delta_log_loss, 4) << " | " << std::fixed << std::setprecision(3) << s.keys_fraction << " |\n";
  }
  return o.str();
}

nlohmann::json perplexity_json(const PerplexityResults& results, const nlohmann::json& provenance) {
  const PerplexityConfig& c = results.config;
  nlohmann::json j;
  j["provenance"] = provenance;
  j["config"] = {{"context", c.context},       {"score", c.score},     {"mode", to_string(c.mode)},
                 {"policies", c.policies},     {"rhos", c.rhos},       {"k_min", c.params.k_min},
                 {"tile", c.params.tile},      {"threads", c.threads}, {"backend", c.backend}};
  if (c.reference_kv_cache) {
    j["config"]["kv_cache"] = kv_cache_name(c.cpu_kv_cache);
    j["config"]["reference_kv_cache"] = kv_cache_name(*c.reference_kv_cache);
  }
  j["model"] = results.model_name;
  j["windows"] = results.windows.size();
  j["skipped_documents"] = results.skipped_documents;
  j["seconds"] = results.seconds;
  j["prefill_seconds"] = results.prefill_seconds;
  nlohmann::json rows = nlohmann::json::array();
  for (const PolicySummary& s : results.summaries) {
    nlohmann::json row = {{"policy", s.policy},
                           {"rho", s.rho},
                           {"tokens", s.tokens},
                           {"windows", results.windows.size()},
                           {"log_loss", interval_json(s.log_loss)},
                           {"perplexity", interval_json(s.perplexity)},
                           {"kl", interval_json(s.kl)},
                           {"top1", interval_json(s.top1)},
                           {"delta_log_loss", interval_json(s.delta_log_loss)},
                           {"keys_fraction", s.keys_fraction},
                           {"seconds", s.seconds}};
    if (s.kv_cache) row["kv_cache"] = kv_cache_name(*s.kv_cache);
    rows.push_back(std::move(row));
  }
  j["results"] = rows;
  nlohmann::json per_window = nlohmann::json::array();
  for (size_t w = 0; w < results.per_window.size(); ++w) {
    for (const WindowRun& r : results.per_window[w]) {
      double loss = 0, kl = 0, top1 = 0, delta = 0;
      const RowMetrics& m = r.metrics;
      for (size_t t = 0; t < m.logprob.size(); ++t) {
        loss -= m.logprob[t];
        kl += m.kl[t];
        top1 += m.top1[t];
        delta += m.dense_logprob[t] - m.logprob[t];
      }
      const double n = static_cast<double>(m.logprob.size());
      nlohmann::json row = {{"window", results.windows[w]},
                            {"policy", r.policy},
                            {"rho", r.rho},
                            {"log_loss", loss / n},
                            {"kl", kl / n},
                            {"top1", top1 / n},
                            {"delta_log_loss", delta / n},
                            {"keys_fraction", r.dense_keys > 0 ? r.keys / r.dense_keys : 1.0},
                            {"seconds", r.seconds}};
      if (r.kv_cache) row["kv_cache"] = kv_cache_name(*r.kv_cache);
      per_window.push_back(std::move(row));
    }
  }
  j["per_window"] = per_window;
  return j;
}

}  // namespace kascade::eval
