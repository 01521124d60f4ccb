// The perplexity protocol on the tiny test model (2 layers, 4 query / 2 kv heads, vocab 40):
// dense against dense is exactly zero, a policy at rho 1 is dense, a small budget is not, the
// decode mode's rows are what token-by-token decoding under the policy computes, the prefill
// mode runs the window through the policy's prefill, and bad configurations are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "kascade/engine/backend.h"
#include "kascade/engine/gguf.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"
#include "kascade/eval/perplexity.h"
#include "kascade/eval/scoring.h"
#include "kascade/eval/tasks.h"
#include "kascade/plan.h"

namespace kascade::eval {
namespace {

struct Tiny {
  engine::Model model =
      engine::load_model(engine::GgufFile::open(std::string(KASCADE_TEST_DATA) + "/engine/tiny_llama.gguf"));
  Plan plan = make_uniform_plan("tiny", model.config.layers, model.config.hq, model.config.hkv, model.config.head_dim,
                                {0, 1});
};
const Tiny& tiny() {
  static const Tiny t;
  return t;
}

std::vector<int32_t> random_tokens(int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(tiny().model.config.vocab)));
  return ids;
}

PerplexityConfig small_config(int context, int score, std::vector<std::string> policies, std::vector<double> rhos) {
  PerplexityConfig c;
  c.context = context;
  c.score = score;
  c.policies = std::move(policies);
  c.rhos = std::move(rhos);
  c.params.k_min = 1;
  c.threads = 2;
  return c;
}

const WindowRun& find_run(const WindowScore& s, const std::string& policy, double rho) {
  for (const WindowRun& r : s.runs)
    if (r.policy == policy && r.rho == rho) return r;
  throw Error("no run " + policy);
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

TEST(Perplexity, DenseAgainstDenseIsExactlyZero) {
  const Tiny& t = tiny();
  auto backend = engine::make_backend("cpu", t.model, nullptr, {});
  for (PerplexityMode mode : {PerplexityMode::Decode, PerplexityMode::Prefill}) {
    PerplexityConfig c = small_config(96, 24, {"dense"}, {0.1});
    c.mode = mode;
    const WindowScore s = score_window(*backend, t.model.config, nullptr, c, random_tokens(96, 1));
    ASSERT_EQ(s.runs.size(), 1u);
    const RowMetrics& m = s.runs[0].metrics;
    ASSERT_EQ(m.kl.size(), 24u);
    for (size_t r = 0; r < m.kl.size(); ++r) {
      EXPECT_EQ(m.kl[r], 0.0) << r;
      EXPECT_EQ(m.top1[r], 1.0) << r;
      EXPECT_EQ(m.logprob[r], m.dense_logprob[r]) << r;
      EXPECT_TRUE(std::isfinite(m.logprob[r]) && m.logprob[r] < 0) << r;
    }
    EXPECT_DOUBLE_EQ(s.runs[0].keys, s.runs[0].dense_keys);
  }
}

TEST(Perplexity, EveryTokenButTheFirstCanBeScored) {
  // score = context - 1: no prefix, the first row is the window's first token.
  const Tiny& t = tiny();
  auto backend = engine::make_backend("cpu", t.model, nullptr, {});
  const std::vector<int32_t> window = random_tokens(40, 8);
  backend->reset();
  const std::vector<float> all = backend->forward(std::vector<int32_t>(window.begin(), window.end() - 1), true);
  for (PerplexityMode mode : {PerplexityMode::Decode, PerplexityMode::Prefill}) {
    PerplexityConfig c = small_config(40, 39, {"oracle"}, {0.25});
    c.mode = mode;
    const WindowScore s = score_window(*backend, t.model.config, nullptr, c, window);
    ASSERT_EQ(s.runs.size(), 2u);
    ASSERT_EQ(s.runs[0].metrics.logprob.size(), 39u);
    for (size_t r = 0; r < 39; ++r) {
      const double lp = row_logprob(all.data() + r * static_cast<size_t>(t.model.config.vocab), t.model.config.vocab,
                                    window[r + 1]);
      EXPECT_NEAR(s.runs[0].metrics.logprob[r], lp, 1e-4) << to_string(mode) << " row " << r;
    }
  }
}

TEST(Perplexity, KascadeAtRhoOneIsDenseAndSmallRhoIsNot) {
  const Tiny& t = tiny();
  auto backend = engine::make_backend("cpu", t.model, nullptr, {});
  const std::vector<int32_t> window = random_tokens(160, 2);
  for (PerplexityMode mode : {PerplexityMode::Decode, PerplexityMode::Prefill}) {
    PerplexityConfig c = small_config(160, 32, {"kascade", "streaming"}, {1.0, 0.05});
    c.mode = mode;
    const WindowScore s = score_window(*backend, t.model.config, &t.plan, c, window);
    ASSERT_EQ(s.runs.size(), 5u);  // dense, then each policy at each rho
    EXPECT_EQ(s.runs[0].policy, "dense");
    for (const std::string policy : {"kascade", "streaming"}) {
      const WindowRun& full = find_run(s, policy, 1.0);
      for (size_t r = 0; r < full.metrics.kl.size(); ++r) {
        EXPECT_LT(full.metrics.kl[r], 1e-9) << policy << " row " << r;
        EXPECT_EQ(full.metrics.top1[r], 1.0) << policy << " row " << r;
        EXPECT_NEAR(full.metrics.logprob[r], full.metrics.dense_logprob[r], 1e-5) << policy << " row " << r;
      }
      const WindowRun& sparse = find_run(s, policy, 0.05);
      EXPECT_GT(mean(sparse.metrics.kl), 1e-6) << policy << " " << to_string(mode);
      // Layer 0 of 2 is dense, and prefill tiles read their diagonal: about 0.5 and 0.6 here.
      EXPECT_LT(sparse.keys, 0.7 * sparse.dense_keys) << policy;
    }
  }
}

TEST(Perplexity, DecodeModeEqualsTokenByTokenDecoding) {
  const Tiny& t = tiny();
  const engine::ModelConfig& mc = t.model.config;
  const int context = 64, score = 12;
  const std::vector<int32_t> window = random_tokens(context, 3);
  PerplexityConfig c = small_config(context, score, {"kascade"}, {0.1});
  auto backend = engine::make_backend("cpu", t.model, nullptr, {});
  const WindowScore s = score_window(*backend, mc, &t.plan, c, window);
  const WindowRun& run = find_run(s, "kascade", 0.1);

  // The same rows one at a time: dense prefill of the prefix, then each token a decode step of
  // the policy (every layer's attention through the policy, one query).
  const int prefix = context - score - 1;
  backend->reset();
  backend->forward(std::vector<int32_t>(window.begin(), window.begin() + prefix), false);
  SparsityParams params = c.params;
  params.rho = 0.1;
  auto policy = make_policy("kascade", PolicyContext{params, mc.layers, &t.plan});
  backend->set_attention_override([&](const engine::LayerAttentionCall& call) {
    EXPECT_EQ(call.tokens, 1);
    const LayerInputs in{call.layer, Phase::Decode, call.hq,   call.hkv, 1, call.first + 1, call.head_dim,
                         call.q,     call.k,        call.v};
    return attend_layer(*policy, params, in, call.out);
  });
  for (int r = 0; r < score; ++r) {
    const std::vector<float> logits = backend->forward({window[static_cast<size_t>(prefix + r)]}, false);
    const double lp = row_logprob(logits.data(), mc.vocab, window[static_cast<size_t>(prefix + r + 1)]);
    EXPECT_NEAR(run.metrics.logprob[static_cast<size_t>(r)], lp, 1e-5) << "row " << r;
  }
  backend->set_attention_override(nullptr);
  // And the dense rows are the engine's own dense decoding of the same tokens.
  backend->reset();
  const std::vector<float> all = backend->forward(std::vector<int32_t>(window.begin(), window.end() - 1), true);
  for (int r = 0; r < score; ++r) {
    const double lp = row_logprob(all.data() + static_cast<size_t>(prefix + r) * mc.vocab, mc.vocab,
                                  window[static_cast<size_t>(prefix + r + 1)]);
    EXPECT_NEAR(run.metrics.dense_logprob[static_cast<size_t>(r)], lp, 1e-4) << "row " << r;
  }
}

TEST(Perplexity, PrefillModeRunsThePolicysPrefill) {
  // Quest is decode-only: in prefill mode every call (prefix and scored rows) is a prefill call,
  // so it attends densely and equals dense; in decode mode its scored rows are sparse.
  const Tiny& t = tiny();
  auto backend = engine::make_backend("cpu", t.model, nullptr, {});
  const std::vector<int32_t> window = random_tokens(160, 4);
  PerplexityConfig c = small_config(160, 32, {"quest", "oracle"}, {0.05});
  c.mode = PerplexityMode::Prefill;
  const WindowScore prefill = score_window(*backend, t.model.config, nullptr, c, window);
  EXPECT_EQ(mean(find_run(prefill, "quest", 0.05).metrics.kl), 0.0);
  EXPECT_GT(mean(find_run(prefill, "oracle", 0.05).metrics.kl), 1e-6);
  c.mode = PerplexityMode::Decode;
  const WindowScore decode = score_window(*backend, t.model.config, nullptr, c, window);
  EXPECT_GT(mean(find_run(decode, "quest", 0.05).metrics.kl), 1e-6);
  EXPECT_EQ(prefill.prefill_seconds, 0.0);
}

TEST(Perplexity, RunSummarisesEveryPolicyOverWindows) {
  const Tiny& t = tiny();
  std::vector<TokenDocument> docs = {{"a", random_tokens(200, 5)}, {"b", random_tokens(50, 6)},
                                     {"c", random_tokens(130, 7)}};
  const WindowSet set = make_windows(docs, 64, /*bos=*/-1, 0);
  ASSERT_EQ(set.windows.size(), 3u + 0u + 2u);
  EXPECT_EQ(set.skipped_documents, 1);
  const PerplexityConfig c = small_config(64, 16, {"dense", "oracle"}, {0.1, 0.5});
  int calls = 0;
  const PerplexityResults r = run_perplexity(t.model, nullptr, c, set.windows, [&](int done, int total, const std::string& line) {
    ++calls;
    EXPECT_EQ(done, calls);
    EXPECT_EQ(total, 5);
    EXPECT_NE(line.find(set.windows[static_cast<size_t>(done - 1)].name), std::string::npos);
  });
  EXPECT_EQ(calls, 5);
  ASSERT_EQ(r.summaries.size(), 3u);  // dense once, oracle at two budgets
  EXPECT_EQ(r.summaries[0].policy, "dense");
  for (const PolicySummary& s : r.summaries) {
    EXPECT_EQ(s.tokens, 5 * 16);
    EXPECT_EQ(s.log_loss.n, 5 * 16);
    EXPECT_LE(s.log_loss.lo, s.log_loss.mean);
    EXPECT_GE(s.log_loss.hi, s.log_loss.mean);
    EXPECT_NEAR(s.perplexity.mean, std::exp(s.log_loss.mean), 1e-9);
    EXPECT_NEAR(s.delta_log_loss.mean, s.log_loss.mean - r.summaries[0].log_loss.mean, 1e-9);
  }
  EXPECT_EQ(r.summaries[0].kl.mean, 0.0);
  EXPECT_EQ(r.summaries[0].keys_fraction, 1.0);
  EXPECT_LT(r.summaries[1].keys_fraction, r.summaries[2].keys_fraction);
  const nlohmann::json j = perplexity_json(r, {{"commit", "x"}});
  EXPECT_EQ(j.at("results").size(), 3u);
  EXPECT_EQ(j.at("per_window").size(), 15u);
  EXPECT_EQ(j.at("config").at("score"), 16);
  EXPECT_NE(perplexity_table(r, "test").find("N = 5 window(s)"), std::string::npos);
}

TEST(Perplexity, WindowsAreConsecutiveWithBos) {
  std::vector<int32_t> ids(25);
  for (int i = 0; i < 25; ++i) ids[static_cast<size_t>(i)] = 100 + i;
  const WindowSet set = make_windows({{"d", ids}}, 8, /*bos=*/1, 0);
  ASSERT_EQ(set.windows.size(), 3u);  // 7 text tokens per window
  EXPECT_EQ(set.windows[1].name, "d#1");
  EXPECT_EQ(set.windows[1].tokens, (std::vector<int32_t>{1, 107, 108, 109, 110, 111, 112, 113}));
  EXPECT_EQ(make_windows({{"d", ids}}, 8, 1, 2).windows.size(), 2u);
  EXPECT_EQ(make_windows({{"d", ids}}, 26, -1, 0).skipped_documents, 1);
}

TEST(Perplexity, BadConfigurationsAreRefused) {
  const Tiny& t = tiny();
  const engine::ModelConfig& mc = t.model.config;
  auto refused = [&](const PerplexityConfig& c, const Plan* plan, const std::string& expected) {
    try {
      validate_perplexity_config(c, plan, mc);
      ADD_FAILURE() << "accepted; expected: " << expected;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  refused(small_config(64, 64, {"dense"}, {0.1}), nullptr, "below the context of 64");
  refused(small_config(mc.context + 1, 8, {"dense"}, {0.1}), nullptr, "beyond the model's context");
  refused(small_config(64, 8, {"h2o"}, {0.1}), nullptr, "unknown policy 'h2o'");
  refused(small_config(64, 8, {"oracle"}, {1.5}), nullptr, "rho must be in (0, 1]");
  refused(small_config(64, 8, {"kascade"}, {0.1}), nullptr, "needs a plan");
  const Plan other = make_uniform_plan("other", mc.layers + 1, mc.hq, mc.hkv, mc.head_dim, {0, 1});
  refused(small_config(64, 8, {"kascade"}, {0.1}), &other, "layers");
  EXPECT_THROW(parse_perplexity_mode("sparse"), Error);
}

}  // namespace
}  // namespace kascade::eval
