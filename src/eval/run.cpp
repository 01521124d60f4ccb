// The evaluation loop of the accuracy study over the engine (kascade/eval/harness.h): one
// dense prefill of each example's context, then every (policy, rho) appends the query and the
// answer as decode rows through its selection rule, and the cache is cut back. The backend (CPU
// or CUDA) runs the model and the dense prefill; the policies' attention runs on the host.
#include <chrono>
#include <sstream>

#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/eval/harness.h"
#include "kascade/eval/tasks.h"

namespace kascade::eval {

namespace {

// One (example, policy): the query and answer rows through the policy as decode steps, after
// the shared dense context (dense prefill) or after the whole prompt prefilled through the
// policy (sparse prefill). Leaves the backend's cache at the context (dense prefill).
RunScore run_policy(engine::Backend& backend, const engine::Tokenizer& tok, const engine::ModelConfig& mc,
                    const Example& ex, const std::string& name, double rho, SelectionPolicy& policy,
                    const SparsityParams& params, bool sparse_prefill, int threads) {
  bool prompt_as_prefill = false;
  double keys = 0;
  backend.set_attention_override([&](const engine::LayerAttentionCall& c) {
    double attended = 0;
    if (prompt_as_prefill) {
      const LayerInputs in{c.layer, c.tokens == 1 ? Phase::Decode : Phase::Prefill, c.hq, c.hkv, c.tokens,
                           c.first + c.tokens, c.head_dim, c.q, c.k, c.v};
      attended = attend_layer(policy, params, in, c.out);
    } else {
      attended = attend_rows_as_decode(policy, params, c.layer, c.first, c.tokens, c.hq, c.hkv, c.head_dim, c.q, c.k,
                                       c.v, c.out, threads);
    }
    keys += attended;
    return attended;
  });
  std::vector<int32_t> decode_rows;
  std::vector<float> logits;  // [rows][vocab], row j predicts answer[j]
  int first_answer_row = 0;
  const int first_position = sparse_prefill ? 0 : backend.position();
  if (sparse_prefill) {
    backend.reset();
    prompt_as_prefill = true;
    std::vector<int32_t> prompt = ex.context;
    prompt.insert(prompt.end(), ex.query.begin(), ex.query.end());
    logits = backend.forward(prompt, /*all_logits=*/false);
    prompt_as_prefill = false;
    decode_rows.assign(ex.answer.begin(), ex.answer.end() - 1);
  } else {
    decode_rows = ex.query;
    decode_rows.insert(decode_rows.end(), ex.answer.begin(), ex.answer.end() - 1);
    first_answer_row = static_cast<int>(ex.query.size()) - 1;
  }
  if (!decode_rows.empty()) {
    const std::vector<float> rows = backend.forward(decode_rows, /*all_logits=*/true);
    logits.insert(logits.end(), rows.begin(), rows.end());
  }
  const int context = static_cast<int>(ex.context.size());
  if (!sparse_prefill) backend.truncate(context);
  backend.set_attention_override(nullptr);
  // Keys a dense model attends over the same queries: every query t sees t + 1 keys.
  double dense_keys = 0;
  const int last = context + static_cast<int>(ex.query.size() + ex.answer.size()) - 1;
  for (int t = first_position; t < last; ++t) dense_keys += static_cast<double>(t + 1);
  dense_keys *= static_cast<double>(mc.hq) * mc.layers;

  const int rows = static_cast<int>(logits.size() / static_cast<size_t>(mc.vocab));
  const AnswerScore s = score_answer(logits.data(), rows, mc.vocab, first_answer_row, ex.answer);
  RunScore r;
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
  return r;
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
                               tok.add_bos() ? tok.bos_id() : -1};
  engine::BackendOptions options;
  options.threads = config.threads;
  auto backend = engine::make_backend(config.backend, model, nullptr, options);

  EvalResults results;
  results.config = config;
  results.model_name = mc.name;
  results.plan_name = plan_name;
  const auto start = std::chrono::steady_clock::now();
  const int total = static_cast<int>(config.lengths.size() * config.tasks.size()) * config.examples;
  int done = 0;
  for (int index = 0; index < config.examples; ++index) {
    for (int length : config.lengths) {
      for (const std::string& task : config.tasks) {
        const Example ex = make_example(task, length, index, config.seed, task_tok);
        // Dense-prefill protocol: the context once, dense, shared by every policy.
        if (!config.sparse_prefill) {
          backend->set_attention_override(nullptr);
          backend->reset();
          backend->forward(ex.context, /*all_logits=*/false);
        }
        std::ostringstream line;
        line << task << " @ " << length << " #" << index << ":";
        for (const std::string& name : config.policies) {
          const std::vector<double> rhos = name == "dense" ? std::vector<double>{1.0} : config.rhos;
          for (double rho : rhos) {
            PolicyContext ctx{config.params, mc.layers, plan};
            ctx.params.rho = rho;
            std::unique_ptr<SelectionPolicy> policy = make_policy(name, ctx);
            const RunScore r = run_policy(*backend, tok, mc, ex, name, rho, *policy, ctx.params, config.sparse_prefill,
                                          config.threads);
            results.runs.push_back(r);
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
