// kascade/eval/harness.h — the accuracy study: every (policy, rho) on the same synthetic
// examples, scored by exact match and by the log-likelihood of the answer, summarised as
// tables (markdown + JSON).
//
// How one example is run (the protocol `kascade eval` documents): the context (instructions and
// haystack) is prefilled once with dense attention and shared; then, for each (policy, rho),
// the query (the question) and the answer tokens are appended with teacher forcing, every one
// of them attended as a decode step of the policy (SPEC 4: a new query over all keys before
// it), and the cache is cut back to the context. Processing the query + answer rows in one
// forward call with per-row decode attention computes exactly what token-by-token decoding
// computes, at a fraction of the weight traffic. With EvalConfig::sparse_prefill the whole
// prompt is prefilled through the policy instead (one prefill per run).
//   correct        the greedy (argmax) token equals the answer token at every answer position:
//                  greedy decoding would produce the answer, token for token.
//   answer_logprob the mean log-probability of the answer tokens (nats per token).
//
//   kascade::eval::EvalConfig cfg;  cfg.tasks = {"passkey"};  cfg.lengths = {1024};  ...
//   kascade::eval::EvalResults r = kascade::eval::run_eval(model, tok, &plan, cfg, on_progress);
//   std::string md = kascade::eval::to_markdown(r);  nlohmann::json j = kascade::eval::to_json(r);
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kascade/eval/policy.h"

namespace kascade::engine {
struct Model;
class Tokenizer;
}  // namespace kascade::engine

namespace kascade::eval {

struct EvalConfig {
  std::vector<std::string> tasks;
  std::vector<int> lengths;
  std::vector<std::string> policies;
  std::vector<double> rhos;
  int examples = 2;   // per task and length
  uint64_t seed = 1;
  SparsityParams params;  // k_min, tile, budget mode (rho is set per run)
  int threads = 0;        // engine threads and threads of the policies' host attention (0: all)
  std::string backend = "cpu";  // the engine backend (engine::make_backend): "cpu" or "cuda"
  // false (default): the context is prefilled once with dense attention and shared; the query
  // and answer rows go through each policy as decode steps. true: each policy also prefills the
  // whole prompt (context and query, SPEC 5 tiles; "decode only" policies prefill densely),
  // then the answer rows as decode steps: the full method, one prefill per (policy, rho).
  bool sparse_prefill = false;
};

// One (example, policy, rho) run.
struct RunScore {
  std::string task;
  int length = 0;
  int index = 0;
  std::string policy;
  double rho = 0;           // 1 for dense
  bool correct = false;
  double answer_logprob = 0;  // mean over the answer tokens, nats
  int answer_tokens = 0;
  std::string greedy_text;  // the argmax tokens at the answer positions
  double keys_fraction = 1;   // keys attended / dense keys, over the query and answer rows
};

struct EvalResults {
  EvalConfig config;
  std::string model_name;
  std::string plan_name;  // the plan's path or "" (no plan)
  std::vector<RunScore> runs;
  double seconds = 0;
};

// ---- the pieces run_eval is made of (each tested on its own) --------------------------------
// A chunk of `tokens` queries at positions first..first+tokens-1 (q [hq][tokens][d], k/v
// [hkv][first+tokens][d]) attended row by row as decode steps of `policy`: row t sees keys
// 0..first+t. out [hq][tokens][d]. Returns the keys attended (summed over heads and rows).
// Rows are independent (each reads its own anchor rows of earlier layers), so they run on
// `threads` threads (0: all hardware threads); the result does not depend on the count.
double attend_rows_as_decode(SelectionPolicy& policy, const SparsityParams& params, int layer, int first, int tokens,
                             int hq, int hkv, int d, const float* q, const float* k, const float* v, float* out,
                             int threads = 0);

struct AnswerScore {
  bool correct = false;
  double mean_logprob = 0;
  std::vector<int32_t> greedy;
};
// logits [rows][vocab]; row first_row + j predicts answer[j] (teacher forcing).
AnswerScore score_answer(const float* logits, int rows, int vocab, int first_row, const std::vector<int32_t>& answer);

// Throws kascade::Error naming the problem unless the config can run: non-empty task, length
// and policy lists, known names, rho in (0, 1], a plan for the policies that need one.
void validate_config(const EvalConfig& config, const Plan* plan);

// Runs the whole study (validate_config first). `plan` may be null when no policy needs one.
// After each example: on_progress(done, total, line), then on_checkpoint(the results so far).
// Examples run index by index (every task and length of example 0, then of example 1, ...), so
// that the results so far always cover the whole grid at fewer examples.
EvalResults run_eval(const engine::Model& model, const engine::Tokenizer& tok, const Plan* plan,
                     const std::string& plan_name, const EvalConfig& config,
                     const std::function<void(int, int, const std::string&)>& on_progress,
                     const std::function<void(const EvalResults&)>& on_checkpoint = nullptr);

// ---- summaries -----------------------------------------------------------------------------
// One row per (policy, rho), averaged over tasks, lengths and examples; `by_length` and
// `by_task` the same split per length and per task. Log-likelihood deltas are paired with the
// dense run of the same example (0 when there is no dense run).
struct Summary {
  std::string policy;
  double rho = 0;
  std::string group;  // "all", a length ("2048") or a task name
  int runs = 0;
  double accuracy = 0;         // percent
  double answer_logprob = 0;   // mean nats per token
  double delta_logprob = 0;    // mean of (policy - dense) per example, nats per token
  double keys_fraction = 0;
};
std::vector<Summary> summarize(const EvalResults& results);

std::string to_markdown(const EvalResults& results, const std::string& provenance);
nlohmann::json to_json(const EvalResults& results, const nlohmann::json& provenance);

// The results stored by to_json (config, model, plan, seconds, every run), read back strictly:
// a missing or mistyped field throws kascade::Error naming it. The provenance is not part of
// EvalResults: read it from j["provenance"].
EvalResults results_from_json(const nlohmann::json& j);
// The runs of example indices 0..examples-1 only, with config.examples = examples (a table over
// complete passes of the grid when a run stopped part-way through a later pass).
EvalResults keep_examples(const EvalResults& results, int examples);

}  // namespace kascade::eval
