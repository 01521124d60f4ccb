// kascade/eval/harness.h — the accuracy study: every (policy, rho) on the same examples (the
// tasks of tasks.h, from one split), compared with dense attention on the same rows, summarised
// with 95% bootstrap intervals as tables (markdown + JSON).
//
// How one example is run (the protocol `kascade eval` documents): the context (instructions and
// haystack) is prefilled once with dense attention and shared; then, for each (policy, rho),
// the query (the question) and the answer tokens are appended with teacher forcing, every one
// of them attended as a decode step of the policy (score_rows_as_decode, scoring.h), and the
// cache is cut back to the context. The dense policy runs first in every example and its logits
// of those rows are kept: every other run is compared with them row by row (compare_rows).
// With EvalConfig::sparse_prefill the whole prompt is prefilled through the policy instead (one
// prefill per run) and only the answer rows are compared.
//   correct        the greedy (argmax) token equals the answer token at every answer position:
//                  greedy decoding would produce the answer, token for token.
//   answer_logprob the mean log-probability of the answer tokens (nats per token).
//   question rows  rows that predict query tokens 1..q-1 (teacher forced); answer rows predict
//                  the answer tokens (the first of them is the query's last row).
//   kl, top1       KL(dense || policy) of the next-token distribution and argmax agreement,
//                  means over the question rows and over the answer rows of a run.
//   delta_logprob  mean over the answer tokens of log p_policy - log p_dense (nats per token).
//
//   kascade::eval::EvalConfig cfg;  cfg.tasks = {"passkey"};  cfg.lengths = {1024};  ...
//   cfg.split = kascade::eval::Split::Eval;  // Dev for calibration
//   kascade::eval::EvalResults r = kascade::eval::run_eval(model, tok, &plan, "plan.json", cfg, on_progress);
//   std::string md = kascade::eval::to_markdown(r, provenance_line);
//   nlohmann::json j = kascade::eval::to_json(r, provenance_json);
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kascade/eval/corpus.h"
#include "kascade/eval/policy.h"
#include "kascade/eval/scoring.h"
#include "kascade/tensor.h"

namespace kascade::engine {
struct Model;
class Tokenizer;
}  // namespace kascade::engine

namespace kascade::eval {

struct EvalConfig {
  std::vector<std::string> tasks;
  std::vector<int> lengths;
  std::vector<std::string> policies;  // run_eval runs "dense" first in every example, listed or not
  std::vector<double> rhos;
  int examples = 2;   // per task and length
  uint64_t seed = 1;
  Split split = Split::Eval;  // eval for reported results, dev for calibration (tasks.h)
  SparsityParams params;  // k_min, tile, budget mode (rho is set per run)
  int threads = 0;        // engine threads and threads of the policies' host attention (0: all)
  std::string backend = "cpu";  // the engine backend (engine::make_backend): "cpu" or "cuda"
  DType cpu_kv_cache = DType::F16;  // the cpu backend's KV cache (engine::BackendOptions)
  // false (default): the context is prefilled once with dense attention and shared; the query
  // and answer rows go through each policy as decode steps. true: each policy also prefills the
  // whole prompt (context and query, SPEC 5 tiles; "decode only" policies prefill densely),
  // then the answer rows as decode steps: the full method, one prefill per (policy, rho).
  bool sparse_prefill = false;
  // true: EvalResults::tokens keeps every example's token ids and each run's answer tokens and
  // per-token log-probabilities (`kascade eval --write-tokens`: another engine can then score
  // exactly these examples and be compared run by run).
  bool keep_tokens = false;
};

// One (example, policy, rho) run. The comparison with dense is NaN where it was not measured
// (question rows under sparse prefill; every comparison but delta_logprob in version-1 files).
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
  int question_rows = 0;
  double kl_question = NAN, top1_question = NAN;  // means over the question rows
  double kl_answer = NAN, top1_answer = NAN;      // means over the answer rows
  double delta_logprob = NAN;                     // vs dense, mean over the answer tokens
};

// One example's token ids and, per (policy, rho), what its answer rows gave (config.keep_tokens).
struct ExampleTokens {
  struct Run {
    std::string policy;
    double rho = 0;
    std::vector<int32_t> greedy;           // the argmax token of each answer row
    std::vector<double> answer_logprobs;   // log p(answer[j]) of each answer row, nats
  };
  std::string task;
  int length = 0;
  int index = 0;
  std::vector<int32_t> context, query, answer;  // make_example's
  std::vector<Run> runs;  // in the order of EvalResults::runs
};

struct EvalResults {
  EvalConfig config;
  std::string model_name;
  std::string plan_name;  // the plan's path or "" (no plan)
  std::vector<RunScore> runs;
  std::vector<ExampleTokens> tokens;  // with config.keep_tokens, one per example run; else empty
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
  std::vector<double> logprobs;  // per answer token; mean_logprob is their mean
};
// logits [rows][vocab]; row first_row + j predicts answer[j] (teacher forcing).
AnswerScore score_answer(const float* logits, int rows, int vocab, int first_row, const std::vector<int32_t>& answer);

// A run's rows against the dense run's rows of the same example. logits/dense [rows][vocab] with
// rows = targets.size(); rows 0..question_rows-1 are question rows, the rest answer rows;
// targets[r] is the token row r predicts. Means are NaN over an empty set of rows.
struct DenseComparison {
  int question_rows = 0, answer_rows = 0;
  double kl_question = NAN, top1_question = NAN, kl_answer = NAN, top1_answer = NAN, delta_logprob = NAN;
};
DenseComparison compare_with_dense(const float* dense, const float* logits, int vocab, int question_rows,
                                   const std::vector<int32_t>& targets);

// The policies in the order run_eval runs them: "dense" first, then the others as given.
std::vector<std::string> run_order(const std::vector<std::string>& policies);

// Throws kascade::Error naming the problem unless the config can run: non-empty task, length
// and policy lists, known names, rho in (0, 1], a plan for the policies that need one, and (copy
// task) the natural-text corpus readable.
void validate_config(const EvalConfig& config, const Plan* plan);

// Runs the whole study (validate_config first; results.config.policies is run_order(...)). `plan`
// may be null when no policy needs one.
// After each example: on_progress(done, total, line), then on_checkpoint(the results so far).
// Examples run index by index (every task and length of example 0, then of example 1, ...), so
// that the results so far always cover the whole grid at fewer examples.
EvalResults run_eval(const engine::Model& model, const engine::Tokenizer& tok, const Plan* plan,
                     const std::string& plan_name, const EvalConfig& config,
                     const std::function<void(int, int, const std::string&)>& on_progress,
                     const std::function<void(const EvalResults&)>& on_checkpoint = nullptr);

// ---- summaries -----------------------------------------------------------------------------
// One row per (policy, rho) and group: "all", a length ("2048") or a task name. N is the number
// of examples (runs) in the group. Means over rows are over all the group's rows (tokens); their
// intervals resample examples (bootstrap_cluster_interval, one cluster per example, seed 1);
// exact match resamples examples too. Comparisons with dense pair each run with the dense run of
// the same example. An interval with n = 0 (NaN) was not measured.
struct Summary {
  std::string policy;
  double rho = 0;
  std::string group;
  int runs = 0;                // N: examples
  Interval accuracy;           // percent of examples answered exactly
  double answer_logprob = 0;   // mean over examples of the mean nats per answer token
  Interval delta_logprob;      // nats per answer token, vs dense
  Interval kl_question, kl_answer;      // nats per row
  Interval top1_question, top1_answer;  // share of rows (0..1)
  double keys_fraction = 0;    // mean over examples
};
std::vector<Summary> summarize(const EvalResults& results);

// Equal-keys comparison: a policy's metrics at a common fraction of keys attended, interpolated
// linearly in keys fraction between its two (rho) points that bracket it (a point at exactly
// that fraction is taken as it is). NaN outside the fractions the policy measured. Point
// estimates only: the intervals are those of the rho points.
inline constexpr double kEqualKeysFractions[] = {0.10, 0.20, 0.30};
struct EqualKeys {
  std::string policy, group;
  double keys_fraction = 0;              // the common fraction
  double rho_below = NAN, rho_above = NAN;  // the rho points it lies between
  double accuracy = NAN, delta_logprob = NAN, kl_question = NAN, kl_answer = NAN, top1_answer = NAN;
};
std::vector<EqualKeys> equal_keys(const std::vector<Summary>& summary, const std::vector<double>& fractions);

// The tables of summarize(results) (and equal_keys of them). The bootstrap makes summarize take
// seconds on a large grid: the overloads taking a summary let one serve both reports.
std::string to_markdown(const EvalResults& results, const std::string& provenance);
std::string to_markdown(const EvalResults& results, const std::string& provenance, const std::vector<Summary>& summary);
nlohmann::json to_json(const EvalResults& results, const nlohmann::json& provenance);
nlohmann::json to_json(const EvalResults& results, const nlohmann::json& provenance, const std::vector<Summary>& summary);

// The token file of `kascade eval --write-tokens` (format "kascade-eval-tokens", version 1):
// the model, plan and config as in to_json, then one entry per example with its context, query
// and answer token ids and, per run, the greedy answer tokens and per-token answer
// log-probabilities. Throws kascade::Error unless the results kept their tokens.
nlohmann::json tokens_to_json(const EvalResults& results, const nlohmann::json& provenance);

// The results stored by to_json (config, model, plan, seconds, every run), read back strictly:
// a missing or mistyped field throws kascade::Error naming it. Reads version 2 (this one) and
// version 1 (before splits and comparisons with dense: split eval, the examples being those of
// the eval streams; delta_logprob recomputed from the answer log-likelihoods; the rest NaN).
// The provenance is not part of EvalResults: read it from j["provenance"].
EvalResults results_from_json(const nlohmann::json& j);
// The runs of example indices 0..examples-1 only, with config.examples = examples (a table over
// complete passes of the grid when a run stopped part-way through a later pass).
EvalResults keep_examples(const EvalResults& results, int examples);

}  // namespace kascade::eval
