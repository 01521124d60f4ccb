// The evaluation loop of the accuracy study over the engine (kascade/eval/harness.h): one
// dense prefill of each example's context, then every (policy, rho) appends the query and the
// answer as decode rows through its selection rule (score_rows_as_decode: on the CUDA backend
// the policies run there), the rows are compared with the dense run's, and the cache is cut back.
#include <chrono>
#include <memory>
#include <sstream>

#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/eval/harness.h"
#include "kascade/eval/scoring.h"
#include "kascade/eval/tasks.h"

namespace kascade::eval {

namespace {

// One (example, policy) run: its score and the logits of its scored rows.
struct PolicyRun {
  RunScore score;
  std::vector<float> logits;      // [rows][vocab]
  int question_rows = 0;          // rows before the first answer row
  std::vector<int32_t> targets;   // the token each row predicts
  AnswerScore answer;             // greedy tokens and log-probabilities of the answer rows
};

// One (example, policy): the query and answer rows through the policy as decode steps, after
// the shared dense context (dense prefill) or after the whole prompt prefilled through the
// policy (sparse prefill: the last prompt row and the answer rows are scored). Leaves the
// backend's cache at the context (dense prefill).
PolicyRun run_policy(engine::Backend& backend, const engine::Tokenizer& tok, const engine::ModelConfig& mc,
                     const Example& ex, const std::string& name, double rho, const PolicySpec& spec,
                     bool sparse_prefill, int threads) {
  PolicyRun run;
  std::vector<float>& logits = run.logits;  // row question_rows + j predicts answer[j]
  double keys = 0, dense_keys = 0;
  if (sparse_prefill) {
    // The whole prompt through the policy's prefill (SPEC 5 tiles), then the answer as decode rows.
    std::vector<int32_t> prompt = ex.context;
    prompt.insert(prompt.end(), ex.query.begin(), ex.query.end());
    RowLogits prefilled = prefill_through_policy(backend, spec, prompt, /*scored=*/1, mc);
    logits = std::move(prefilled.logits);
    keys = prefilled.keys;
    dense_keys = prefilled.dense_keys;
    const std::vector<int32_t> answer_rows(ex.answer.begin(), ex.answer.end() - 1);
    if (!answer_rows.empty()) {
      const RowLogits rows = score_rows_as_decode(backend, spec, answer_rows, mc, threads);
      logits.insert(logits.end(), rows.logits.begin(), rows.logits.end());
      keys += rows.keys;
      dense_keys += rows.dense_keys;
    }
    run.question_rows = 0;
    run.targets = ex.answer;
  } else {
    // The query and the answer as decode rows after the shared dense context.
    std::vector<int32_t> decode_rows = ex.query;
    decode_rows.insert(decode_rows.end(), ex.answer.begin(), ex.answer.end() - 1);
    run.question_rows = static_cast<int>(ex.query.size()) - 1;
    RowLogits rows = score_rows_as_decode(backend, spec, decode_rows, mc, threads);
    logits = std::move(rows.logits);
    keys = rows.keys;
    dense_keys = rows.dense_keys;
    run.targets.assign(ex.query.begin() + 1, ex.query.end());
    run.targets.insert(run.targets.end(), ex.answer.begin(), ex.answer.end());
  }

  const int n_rows = static_cast<int>(logits.size() / static_cast<size_t>(mc.vocab));
  KASCADE_CHECK(n_rows == static_cast<int>(run.targets.size()),
                "eval: " << n_rows << " logit rows for " << run.targets.size() << " scored tokens");
  run.answer = score_answer(logits.data(), n_rows, mc.vocab, run.question_rows, ex.answer);
  const AnswerScore& s = run.answer;
  RunScore& r = run.score;
  r.task = ex.task;
  r.length = ex.length;
  r.index = ex.index;
  r.policy = name;
  r.rho = rho;
  r.correct = s.correct;
  r.answer_logprob = s.mean_logprob;
  r.answer_tokens = static_cast<int>(ex.answer.size());
  r.greedy_text = tok.decode(s.greedy);
  r.keys_fraction = keys / dense_keys;
  return run;
}

}  // namespace

EvalResults run_eval(const engine::Model& model, const engine::Tokenizer& tok, const Plan* plan,
                     const std::string& plan_name, const EvalConfig& config,
                     const std::function<void(int, int, const std::string&)>& on_progress,
                     const std::function<void(const EvalResults&)>& on_checkpoint) {
  validate_config(config, plan);
  engine::check_backend_available(config.backend);
  const engine::ModelConfig& mc = model.config;
  if (plan) check_plan_matches(*plan, mc.layers, mc.hq, mc.hkv, mc.head_dim);
  for (int length : config.lengths) {
    KASCADE_CHECK(mc.context <= 0 || length <= mc.context,
                  "eval: length " << length << " is beyond the model's context of " << mc.context << " tokens");
  }
  const TaskTokenizer task_tok{[&tok](const std::string& s) { return tok.encode_continuation(s); },
                               tok.add_bos() ? tok.bos_id() : -1,
                               [&tok](const std::vector<int32_t>& ids) { return tok.decode(ids); }};
  engine::BackendOptions options;
  options.threads = config.threads;
  options.cpu_kv_cache = config.cpu_kv_cache;
  auto backend = engine::make_backend(config.backend, model, nullptr, options);

  EvalResults results;
  results.config = config;
  // Dense first: every other run of an example is compared with its rows.
  results.config.policies = run_order(config.policies);
  results.model_name = mc.name;
  results.plan_name = plan_name;
  const auto start = std::chrono::steady_clock::now();
  const int total = static_cast<int>(config.lengths.size() * config.tasks.size()) * config.examples;
  int done = 0;
  for (int index = 0; index < config.examples; ++index) {
    for (int length : config.lengths) {
      for (const std::string& task : config.tasks) {
        const Example ex = make_example(task, length, index, config.seed, task_tok, config.split);
        // Dense-prefill protocol: the context once, dense, shared by every policy.
        if (!config.sparse_prefill) {
          backend->set_attention_override(nullptr);
          backend->reset();
          backend->forward(ex.context, /*all_logits=*/false);
        }
        if (config.keep_tokens) {
          results.tokens.push_back({ex.task, ex.length, ex.index, ex.context, ex.query, ex.answer, {}});
        }
        std::ostringstream line;
        line << task << " @ " << length << " #" << index << ":";
        std::vector<float> dense_logits;
        for (const std::string& name : results.config.policies) {
          const std::vector<double> rhos = name == "dense" ? std::vector<double>{1.0} : config.rhos;
          for (double rho : rhos) {
            PolicySpec spec{name, config.params, plan};
            spec.params.rho = rho;
            PolicyRun run = run_policy(*backend, tok, mc, ex, name, rho, spec, config.sparse_prefill, config.threads);
            if (name == "dense") dense_logits = run.logits;
            const DenseComparison cmp =
                compare_with_dense(dense_logits.data(), run.logits.data(), mc.vocab, run.question_rows, run.targets);
            RunScore& r = run.score;
            r.question_rows = cmp.question_rows;
            r.kl_question = cmp.kl_question;
            r.top1_question = cmp.top1_question;
            r.kl_answer = cmp.kl_answer;
            r.top1_answer = cmp.top1_answer;
            r.delta_logprob = cmp.delta_logprob;
            results.runs.push_back(r);
            if (config.keep_tokens) {
              results.tokens.back().runs.push_back({name, r.rho, run.answer.greedy, run.answer.logprobs});
            }
            line << " " << (name == "dense" ? name : name + "@" + std::to_string(rho).substr(0, 4)) << "="
                 << (r.correct ? "ok" : "miss");
          }
        }
        ++done;
        if (on_progress) on_progress(done, total, line.str());
        if (on_checkpoint) {
          results.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          on_checkpoint(results);
        }
      }
    }
  }
  results.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return results;
}

}  // namespace kascade::eval
