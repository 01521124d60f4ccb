// kascade/eval/perplexity.h — next-token scoring of long text under selection policies, in the
// manner of llama.cpp's perplexity tool (`kascade perplexity`, docs/perplexity.md).
//
// Text is cut into windows of `context` tokens. The last `score` tokens of each window are
// scored: each is predicted by the row before it, so rows context-score-1 .. context-2 are the
// scored rows and the tokens before them are the prefix.
//   decode mode:  the prefix is prefilled densely once per window; the scored rows then run as
//                 decode rows (score_rows_as_decode) under dense and under each (policy, rho):
//                 every scored position attends with the selection the policy would make when
//                 decoding at that position.
//   prefill mode: for each (policy, rho) the whole window goes through the policy's chunked
//                 prefill (SPEC 5 tiles; decode-only policies prefill densely), the prefix in
//                 one forward call and the scored rows in a second; the dense policy through
//                 the same path is the reference.
// Every run is compared with the dense run of the same rows (compare_rows): log-loss, KL of the
// next-token distribution, top-1 agreement, delta log-loss; means with 95% cluster-bootstrap
// intervals where the cluster is a window. With a reference KV cache (reference_kv_cache) the
// reference is instead dense attention on a second cpu backend whose cache has that type, and
// every run on the main cache, dense included, is compared with it: the cost of the cache type.
//
//   kascade::eval::PerplexityConfig cfg;  cfg.context = 4096;  cfg.score = 512;
//   cfg.policies = {"kascade"};  cfg.rhos = {0.1};
//   auto windows = kascade::eval::make_windows(docs, cfg.context, tok.add_bos() ? tok.bos_id() : -1, 0);
//   kascade::eval::PerplexityResults r = kascade::eval::run_perplexity(model, &plan, cfg, windows.windows, progress);
//   std::cout << kascade::eval::perplexity_table(r);
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kascade/eval/policy.h"
#include "kascade/eval/scoring.h"
#include "kascade/tensor.h"

namespace kascade::engine {
class Backend;
struct Model;
struct ModelConfig;
}  // namespace kascade::engine

namespace kascade::eval {

enum class PerplexityMode { Decode, Prefill };
const char* to_string(PerplexityMode mode);            // "decode" | "prefill"
PerplexityMode parse_perplexity_mode(const std::string& name);
// A KV-cache type as --kv-cache spells it: "f32", "f16", "fp8".
const char* kv_cache_name(DType type);

struct PerplexityConfig {
  int context = 4096;  // tokens per window
  int score = 512;     // scored tokens at the end of each window (1 .. context - 1)
  PerplexityMode mode = PerplexityMode::Decode;
  std::vector<std::string> policies;  // policy_names(); dense always runs first, as the reference
  std::vector<double> rhos = {0.1};   // each in (0, 1]; every policy but dense runs at each
  SparsityParams params;              // k_min, tile, budget mode (rho is set per run)
  int threads = 0;                    // engine and policy threads (0: all)
  std::string backend = "cpu";        // engine::make_backend kind
  DType cpu_kv_cache = DType::F16;    // the cpu backend's KV cache (engine::BackendOptions)
  // Set: the reference rows are dense attention on a second cpu backend with this KV cache
  // (a type other than cpu_kv_cache), and every run on cpu_kv_cache, dense included, is
  // compared with them. Unset: dense on cpu_kv_cache is the reference.
  std::optional<DType> reference_kv_cache;
};

// Throws kascade::Error naming the problem unless the config can run on a model of this shape:
// 1 <= score < context <= the model's context, known policies, rho in (0, 1], a plan for the
// policies that need one (checked against the model), a reference KV cache only on the cpu
// backend and of a type other than the run's.
void validate_perplexity_config(const PerplexityConfig& config, const Plan* plan, const engine::ModelConfig& model);

// A tokenized document (no BOS) and the windows cut from it.
struct TokenDocument {
  std::string name;
  std::vector<int32_t> tokens;
};
struct Window {
  std::string name;              // "<document>" or "<document>#<i>" for the i-th window of it
  std::vector<int32_t> tokens;   // exactly `context` tokens (BOS first when the model adds one)
};
struct WindowSet {
  std::vector<Window> windows;
  int skipped_documents = 0;     // documents shorter than one window
};
// Consecutive, non-overlapping windows of each document, in order: each holds context tokens,
// or BOS + context - 1 tokens of text when bos >= 0. A document shorter than one window is
// skipped and counted. max_windows > 0 keeps the first max_windows windows.
WindowSet make_windows(const std::vector<TokenDocument>& documents, int context, int32_t bos, int max_windows);

// One (policy, rho) over one window: per scored row metrics against dense (compare_rows), the
// keys it attended and what dense attends over the same calls, and its seconds.
struct WindowRun {
  std::string policy;
  double rho = 1;  // 1 for dense
  // With a reference KV cache: the cache type this run used (the reference's or the main one);
  // unset otherwise.
  std::optional<DType> kv_cache;
  RowMetrics metrics;
  double keys = 0, dense_keys = 0;
  double seconds = 0;
};
struct WindowScore {
  // dense first, then each policy at each rho; with a reference KV cache, the reference (dense
  // on that cache) before them.
  std::vector<WindowRun> runs;
  double prefill_seconds = 0;   // decode mode: the dense prefills of the prefix (one per cache)
};
// Scores one window (window.size() == config.context) on `backend` (its cache is reset).
// `plan` may be null when no policy needs one. With config.reference_kv_cache, `reference` is
// the backend with that cache (another object than `backend`; its cache is reset too).
WindowScore score_window(engine::Backend& backend, const engine::ModelConfig& model, const Plan* plan,
                         const PerplexityConfig& config, const std::vector<int32_t>& window,
                         engine::Backend* reference = nullptr);

// ---- the whole run and its summary ------------------------------------------------------------
struct PolicySummary {
  std::string policy;
  double rho = 1;
  std::optional<DType> kv_cache;  // as WindowRun::kv_cache
  int tokens = 0;                // scored tokens (windows x score)
  Interval log_loss;             // nats per token
  Interval perplexity;           // exp of log_loss's mean and bounds
  Interval kl;                   // KL(reference || policy), nats per token
  Interval top1;                 // fraction of rows whose argmax equals the reference's
  Interval delta_log_loss;       // policy minus reference, nats per token
  double keys_fraction = 1;      // keys attended / dense keys over the runs' attention calls
  double seconds = 0;            // time in this policy's runs (decode: without the shared prefill)
};
struct PerplexityResults {
  PerplexityConfig config;
  std::string model_name;
  std::vector<std::string> windows;          // window names, in order
  std::vector<PolicySummary> summaries;      // the reference first
  // Per window and run: mean log-loss, KL, top-1 and delta (for plots and finer bootstraps).
  std::vector<std::vector<WindowRun>> per_window;
  int skipped_documents = 0;
  double prefill_seconds = 0;                // decode mode: the dense prefills of the prefixes
  double seconds = 0;
};

// Validates, then scores every window. on_window(done, total, line) after each window.
PerplexityResults run_perplexity(const engine::Model& model, const Plan* plan, const PerplexityConfig& config,
                                 const std::vector<Window>& windows,
                                 const std::function<void(int, int, const std::string&)>& on_window = nullptr);

// Summaries from per-window runs (cluster bootstrap over windows, fixed seeds).
std::vector<PolicySummary> summarize_perplexity(const std::vector<std::vector<WindowRun>>& per_window, int score);

// The table printed by the CLI (one row per policy and rho, with N windows and tokens stated).
std::string perplexity_table(const PerplexityResults& results, const std::string& input);
// The report: provenance (as given), config, summaries and per-window means.
nlohmann::json perplexity_json(const PerplexityResults& results, const nlohmann::json& provenance);

}  // namespace kascade::eval
