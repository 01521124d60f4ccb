// The evaluation loop on the default model: the dense policy through the attention override
// reproduces the engine's own dense logits, truncation makes runs repeatable, and a short
// run_eval produces one scored run per (example, policy, rho), dense first, each compared with
// dense on the same rows.
#include <gtest/gtest.h>

#include <cmath>

#include "kascade/engine/backend.h"
#include "kascade/engine/gguf.h"
#include "kascade/engine/model.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/eval/harness.h"
#include "kascade/eval/tasks.h"
#include "kascade/plan.h"

namespace kascade::eval {
namespace {

struct Default {
  engine::GgufFile gguf = engine::GgufFile::open(engine::resolve_model_path("default"));
  engine::Tokenizer tok = engine::Tokenizer::from_gguf(gguf);
  engine::Model model = engine::load_model(gguf);
};
const Default& default_model() {
  static const Default d;
  return d;
}

Example short_example() {
  const Default& d = default_model();
  const TaskTokenizer tt{[&d](const std::string& s) { return d.tok.encode(s, false); }, -1};
  return make_example("passkey", 300, 0, 1, tt);
}

double max_relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return num / den;
}

TEST(RunEval, DensePolicyThroughTheOverrideMatchesTheEngine) {
  const Default& d = default_model();
  const Example ex = short_example();
  engine::BackendOptions options;
  auto backend = engine::make_backend("cpu", d.model, nullptr, options);
  backend->forward(ex.context, false);
  const std::vector<float> engine_logits = backend->forward(ex.query, true);

  backend->truncate(static_cast<int>(ex.context.size()));
  PolicyContext ctx{SparsityParams{}, d.model.config.layers, nullptr};
  auto dense = make_policy("dense", ctx);
  backend->set_attention_override([&](const engine::LayerAttentionCall& c) {
    return attend_rows_as_decode(*dense, ctx.params, c.layer, c.first, c.tokens, c.hq, c.hkv, c.head_dim, c.q, c.k,
                                 c.v, c.out);
  });
  const std::vector<float> override_logits = backend->forward(ex.query, true);
  ASSERT_EQ(override_logits.size(), engine_logits.size());
  // The oracle accumulates in fp64, the engine in fp32: equal to float rounding.
  EXPECT_LT(max_relative_difference(override_logits, engine_logits), 1e-4);

  // Cut back and run again: the same numbers, bit for bit.
  backend->truncate(static_cast<int>(ex.context.size()));
  EXPECT_EQ(backend->forward(ex.query, true), override_logits);
  EXPECT_THROW(backend->truncate(backend->position() + 1), Error);
}

TEST(RunEval, ScoresEveryExamplePolicyAndBudgetAgainstDense) {
  const Default& d = default_model();
  const engine::ModelConfig& mc = d.model.config;
  const Plan plan = make_uniform_plan("default", mc.layers, mc.hq, mc.hkv, mc.head_dim, {0, 6, 12, 18, 24});
  EvalConfig c;
  c.tasks = {"passkey", "copy"};
  c.lengths = {300};
  c.policies = {"streaming", "quest", "tidal"};  // dense is added, and runs first
  c.rhos = {0.1, 1.0};
  c.examples = 1;
  c.params.k_min = 8;
  int progress_calls = 0;
  std::vector<size_t> checkpoint_runs;  // runs in the results so far, at each checkpoint
  const EvalResults r = run_eval(
      d.model, d.tok, &plan, "uniform", c,
      [&](int done, int total, const std::string&) {
        ++progress_calls;
        EXPECT_EQ(total, 2);
        EXPECT_EQ(done, progress_calls);
      },
      [&](const EvalResults& so_far) { checkpoint_runs.push_back(so_far.runs.size()); });
  EXPECT_EQ(r.config.policies, (std::vector<std::string>{"dense", "streaming", "quest", "tidal"}));
  EXPECT_EQ(r.config.split, Split::Eval);
  EXPECT_EQ(progress_calls, 2);
  EXPECT_EQ(checkpoint_runs, (std::vector<size_t>{7, 14}));  // each example adds its 1 + 3 x 2 runs
  ASSERT_EQ(r.runs.size(), 2u * (1 + 3 * 2));
  EXPECT_EQ(r.runs[0].policy, "dense");
  EXPECT_EQ(r.runs[7].policy, "dense");
  EXPECT_EQ(r.runs[7].task, "copy");
  EXPECT_EQ(r.runs[7].answer_tokens, kCopyAnswerTokens);
  EXPECT_EQ(r.runs[7].question_rows, kCopyQueryTokens);  // the break and 8 tokens: 8 rows before the answer
  for (const RunScore& s : r.runs) {
    EXPECT_TRUE(std::isfinite(s.answer_logprob)) << s.policy;
    EXPECT_LE(s.answer_logprob, 0.0);
    EXPECT_GT(s.answer_tokens, 0);
    EXPECT_GT(s.question_rows, 0);
    EXPECT_TRUE(std::isfinite(s.kl_question) && std::isfinite(s.kl_answer)) << s.policy;
    if (s.policy == "dense") {
      // Dense against its own rows.
      EXPECT_EQ(s.kl_question, 0.0);
      EXPECT_EQ(s.kl_answer, 0.0);
      EXPECT_EQ(s.top1_answer, 1.0);
      EXPECT_EQ(s.delta_logprob, 0.0);
    }
    if (s.policy == "dense" || s.rho == 1.0) {
      EXPECT_DOUBLE_EQ(s.keys_fraction, 1.0) << s.policy << " @ " << s.rho;
      // At rho = 1 every policy attends to every key: dense's distribution up to rounding.
      EXPECT_LT(s.kl_answer, 1e-9) << s.policy;
      EXPECT_LT(s.kl_question, 1e-9) << s.policy;
      EXPECT_EQ(s.top1_answer, 1.0) << s.policy;
      EXPECT_EQ(s.top1_question, 1.0) << s.policy;
      EXPECT_NEAR(s.delta_logprob, 0.0, 1e-9) << s.policy;
    } else {
      EXPECT_LT(s.keys_fraction, 0.5) << s.policy << " @ " << s.rho;
      EXPECT_GT(s.kl_answer + s.kl_question, 1e-6) << s.policy << " " << s.task;
    }
  }
  // The paired delta is the difference of the answer log-likelihoods.
  for (const RunScore& s : r.runs) {
    for (const RunScore& dense : r.runs) {
      if (dense.policy == "dense" && dense.task == s.task) {
        EXPECT_NEAR(s.delta_logprob, s.answer_logprob - dense.answer_logprob, 1e-6) << s.policy << " " << s.task;
      }
    }
  }
}

TEST(RunEval, SparsePrefillRunsThePromptThroughThePolicy) {
  const Default& d = default_model();
  EvalConfig c;
  c.tasks = {"passkey"};
  c.lengths = {300};
  c.policies = {"dense", "streaming"};
  c.rhos = {0.1};
  c.examples = 1;
  c.params.k_min = 8;
  c.sparse_prefill = true;
  const EvalResults sparse = run_eval(d.model, d.tok, nullptr, "", c, nullptr);
  c.sparse_prefill = false;
  const EvalResults shared = run_eval(d.model, d.tok, nullptr, "", c, nullptr);
  ASSERT_EQ(sparse.runs.size(), 2u);
  // Dense is the same model either way (up to the oracle's and the engine's rounding).
  EXPECT_NEAR(sparse.runs[0].answer_logprob, shared.runs[0].answer_logprob, 1e-3);
  // Streaming over the whole prompt attends a small share of the keys.
  EXPECT_LT(sparse.runs[1].keys_fraction, 0.4);
  // Only the answer rows are compared with dense (the question is part of the prefill).
  EXPECT_TRUE(std::isnan(sparse.runs[1].kl_question));
  EXPECT_EQ(sparse.runs[1].question_rows, 0);
  EXPECT_TRUE(std::isfinite(sparse.runs[1].kl_answer));
  EXPECT_EQ(sparse.runs[0].kl_answer, 0.0);
  EXPECT_NE(sparse.runs[1].answer_logprob, shared.runs[1].answer_logprob);
  EXPECT_TRUE(sparse.tokens.empty());  // not asked for
}

TEST(RunEval, KeptTokensAreTheExamplesAndTheirScoredAnswers) {
  const Default& d = default_model();
  EvalConfig c;
  c.tasks = {"passkey", "vartrack"};
  c.lengths = {300};
  c.policies = {"streaming"};
  c.rhos = {0.1};
  c.examples = 1;
  c.params.k_min = 8;
  c.sparse_prefill = true;
  c.keep_tokens = true;
  const EvalResults r = run_eval(d.model, d.tok, nullptr, "", c, nullptr);
  ASSERT_EQ(r.tokens.size(), 2u);
  ASSERT_EQ(r.runs.size(), 4u);
  const TaskTokenizer tt{[&d](const std::string& s) { return d.tok.encode_continuation(s); },
                         d.tok.add_bos() ? d.tok.bos_id() : -1};
  size_t run_index = 0;
  for (const ExampleTokens& t : r.tokens) {
    const Example ex = make_example(t.task, t.length, t.index, c.seed, tt, c.split);
    EXPECT_EQ(t.context, ex.context) << t.task;
    EXPECT_EQ(t.query, ex.query) << t.task;
    EXPECT_EQ(t.answer, ex.answer) << t.task;
    EXPECT_EQ(static_cast<int>(t.context.size() + t.query.size()), 300);
    ASSERT_EQ(t.runs.size(), 2u);
    for (const ExampleTokens::Run& tr : t.runs) {
      // Each run's tokens belong to the RunScore at the same place in the results.
      const RunScore& s = r.runs[run_index++];
      EXPECT_EQ(s.task, t.task);
      EXPECT_EQ(tr.policy, s.policy);
      EXPECT_EQ(tr.rho, s.rho);
      ASSERT_EQ(tr.greedy.size(), t.answer.size());
      ASSERT_EQ(tr.answer_logprobs.size(), t.answer.size());
      EXPECT_EQ(tr.greedy == t.answer, s.correct) << s.policy << " " << s.task;
      EXPECT_EQ(d.tok.decode(tr.greedy), s.greedy_text);
      double mean = 0;
      for (double lp : tr.answer_logprobs) {
        EXPECT_LE(lp, 0.0);
        mean += lp / static_cast<double>(tr.answer_logprobs.size());
      }
      EXPECT_NEAR(mean, s.answer_logprob, 1e-12) << s.policy << " " << s.task;
    }
  }
  EXPECT_EQ(r.tokens[0].runs[0].policy, "dense");
  EXPECT_NE(r.tokens[0].runs[0].answer_logprobs, r.tokens[0].runs[1].answer_logprobs);
}

}  // namespace
}  // namespace kascade::eval
