// The perplexity protocol on the tiny test model (2 layers, 4 query / 2 kv heads, vocab 40):
// dense against dense is exactly zero, a policy at rho 1 is dense, a small budget is not, the
// decode mode's rows are what token-by-token decoding under the policy computes, the prefill
// mode runs the window through the policy's prefill, a reference KV cache is the reference of
// every run on the main cache, and bad configurations are refused.
#include <gtest/gtest.h>

#include <algorithm>
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
  EXPECT_FALSE(j.at("config").contains("reference_kv_cache"));
  EXPECT_FALSE(j.at("results").at(0).contains("kv_cache"));
  EXPECT_NE(perplexity_table(r, "test").find("| dense | 80 |"), std::string::npos);
  EXPECT_NE(perplexity_table(r, "test").find("N = 5 window(s)"), std::string::npos);
}

// The dense rows of one window on a backend with `cache`, by the protocol's own primitives:
// decode mode after a dense prefill of the prefix, prefill mode the whole window.
std::vector<float> dense_rows(DType cache, PerplexityMode mode, const std::vector<int32_t>& window, int score) {
  const Tiny& t = tiny();
  engine::BackendOptions options;
  options.threads = 2;
  options.cpu_kv_cache = cache;
  auto backend = engine::make_backend("cpu", t.model, nullptr, options);
  const auto split = window.end() - score - 1;
  if (mode == PerplexityMode::Prefill)
    return prefill_through_policy(*backend, PolicySpec{}, std::vector<int32_t>(window.begin(), window.end() - 1),
                                  score, t.model.config)
        .logits;
  backend->reset();
  backend->forward(std::vector<int32_t>(window.begin(), split), false);
  return score_rows_as_decode(*backend, PolicySpec{}, std::vector<int32_t>(split, window.end() - 1), t.model.config, 2)
      .logits;
}

// log-softmax of one row of logits, in double.
std::vector<double> log_softmax(const float* row, int vocab) {
  double top = row[0];
  for (int i = 1; i < vocab; ++i) top = std::max(top, static_cast<double>(row[i]));
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(row[i]) - top);
  std::vector<double> out(static_cast<size_t>(vocab));
  for (int i = 0; i < vocab; ++i) out[static_cast<size_t>(i)] = static_cast<double>(row[i]) - top - std::log(sum);
  return out;
}

struct CacheBackends {
  std::unique_ptr<engine::Backend> main, reference;
};
CacheBackends cache_backends(DType main, DType reference) {
  engine::BackendOptions options;
  options.threads = 2;
  options.cpu_kv_cache = main;
  CacheBackends b;
  b.main = engine::make_backend("cpu", tiny().model, nullptr, options);
  options.cpu_kv_cache = reference;
  b.reference = engine::make_backend("cpu", tiny().model, nullptr, options);
  return b;
}

TEST(Perplexity, ReferenceKvCacheIsWhatAnF32RunComputes) {
  // Main cache f16, reference f32: the reference row is the f32 run's dense row (KL 0 against
  // itself), the dense row on f16 differs from it a little, and the policies are compared with
  // the f32 reference too.
  const Tiny& t = tiny();
  const std::vector<int32_t> window = random_tokens(96, 9);
  const CacheBackends b = cache_backends(DType::F16, DType::F32);
  for (PerplexityMode mode : {PerplexityMode::Decode, PerplexityMode::Prefill}) {
    PerplexityConfig c = small_config(96, 24, {"oracle"}, {0.25});
    c.mode = mode;
    c.cpu_kv_cache = DType::F16;
    c.reference_kv_cache = DType::F32;
    const WindowScore s = score_window(*b.main, t.model.config, nullptr, c, window, b.reference.get());
    ASSERT_EQ(s.runs.size(), 3u);  // the reference, dense on f16, oracle on f16
    EXPECT_EQ(s.runs[0].policy, "dense");
    EXPECT_EQ(s.runs[0].kv_cache, DType::F32);
    EXPECT_EQ(s.runs[1].policy, "dense");
    EXPECT_EQ(s.runs[1].kv_cache, DType::F16);
    EXPECT_EQ(s.runs[2].kv_cache, DType::F16);

    PerplexityConfig plain = c;
    plain.reference_kv_cache.reset();
    plain.cpu_kv_cache = DType::F32;
    const WindowScore f32 = score_window(*b.reference, t.model.config, nullptr, plain, window);
    plain.cpu_kv_cache = DType::F16;
    const WindowScore f16 = score_window(*b.main, t.model.config, nullptr, plain, window);
    EXPECT_FALSE(f32.runs[0].kv_cache.has_value());

    const RowMetrics& reference = s.runs[0].metrics;
    const RowMetrics& dense_f16 = s.runs[1].metrics;
    for (size_t r = 0; r < reference.kl.size(); ++r) {
      EXPECT_EQ(reference.kl[r], 0.0) << r;
      EXPECT_EQ(reference.top1[r], 1.0) << r;
      EXPECT_EQ(reference.logprob[r], f32.runs[0].metrics.logprob[r]) << to_string(mode) << " row " << r;
      EXPECT_EQ(dense_f16.dense_logprob[r], reference.logprob[r]) << r;
      EXPECT_EQ(dense_f16.logprob[r], f16.runs[0].metrics.logprob[r]) << to_string(mode) << " row " << r;
      EXPECT_EQ(s.runs[2].metrics.dense_logprob[r], reference.logprob[r]) << r;
    }
    EXPECT_GT(mean(dense_f16.kl), 0.0) << to_string(mode);
    EXPECT_LT(mean(dense_f16.kl), 1e-4) << to_string(mode);
  }
}

TEST(Perplexity, ReferenceKvCacheKlIsTheTwoDenseRunsKl) {
  // KL(p_f32 || p_fp8) of every row, computed here from the two caches' dense rows, is the KL of
  // the dense row on the fp8 cache; against dense on fp8 itself it would be 0.
  const Tiny& t = tiny();
  const int vocab = t.model.config.vocab, context = 80, score = 16;
  const std::vector<int32_t> window = random_tokens(context, 10);
  const CacheBackends b = cache_backends(DType::F8E4M3, DType::F32);
  for (PerplexityMode mode : {PerplexityMode::Decode, PerplexityMode::Prefill}) {
    PerplexityConfig c = small_config(context, score, {"dense"}, {0.1});
    c.mode = mode;
    c.cpu_kv_cache = DType::F8E4M3;
    c.reference_kv_cache = DType::F32;
    const WindowScore s = score_window(*b.main, t.model.config, nullptr, c, window, b.reference.get());
    ASSERT_EQ(s.runs.size(), 2u);
    const RowMetrics& m = s.runs[1].metrics;
    const std::vector<float> p32 = dense_rows(DType::F32, mode, window, score);
    const std::vector<float> p8 = dense_rows(DType::F8E4M3, mode, window, score);
    double total = 0;
    for (int r = 0; r < score; ++r) {
      const std::vector<double> l32 = log_softmax(p32.data() + static_cast<size_t>(r) * vocab, vocab);
      const std::vector<double> l8 = log_softmax(p8.data() + static_cast<size_t>(r) * vocab, vocab);
      double kl = 0;
      for (int i = 0; i < vocab; ++i)
        kl += std::exp(l32[static_cast<size_t>(i)]) * (l32[static_cast<size_t>(i)] - l8[static_cast<size_t>(i)]);
      const size_t row = static_cast<size_t>(r);
      EXPECT_NEAR(m.kl[row], kl, 1e-12 + 1e-6 * kl) << to_string(mode) << " row " << r;
      const int32_t target = window[window.size() - static_cast<size_t>(score) + row];
      EXPECT_NEAR(m.dense_logprob[row], l32[static_cast<size_t>(target)], 1e-9) << r;
      EXPECT_NEAR(m.logprob[row], l8[static_cast<size_t>(target)], 1e-9) << r;
      total += kl;
    }
    EXPECT_GT(total / score, 1e-7) << to_string(mode);  // fp8 moves the distribution measurably
  }
}

TEST(Perplexity, RunWithAReferenceKvCacheReportsIt) {
  const Tiny& t = tiny();
  const WindowSet set = make_windows({{"a", random_tokens(130, 11)}}, 64, /*bos=*/-1, 0);
  PerplexityConfig c = small_config(64, 8, {"oracle"}, {0.25});
  c.cpu_kv_cache = DType::F8E4M3;
  c.reference_kv_cache = DType::F32;
  const PerplexityResults r = run_perplexity(t.model, nullptr, c, set.windows);
  ASSERT_EQ(r.summaries.size(), 3u);
  EXPECT_EQ(r.summaries[0].kl.mean, 0.0);
  EXPECT_GT(r.summaries[1].kl.mean, 0.0);
  const std::string table = perplexity_table(r, "test");
  EXPECT_NE(table.find("| dense (f32 cache, reference) | 16 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| dense (fp8 cache) | 16 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| oracle @ 0.25 (fp8 cache) | 16 |"), std::string::npos) << table;
  EXPECT_NE(table.find("KL vs reference"), std::string::npos) << table;
  const nlohmann::json j = perplexity_json(r, {{"commit", "x"}});
  EXPECT_EQ(j.at("config").at("reference_kv_cache"), "f32");
  EXPECT_EQ(j.at("config").at("kv_cache"), "fp8");
  EXPECT_EQ(j.at("results").at(0).at("kv_cache"), "f32");
  EXPECT_EQ(j.at("results").at(1).at("kv_cache"), "fp8");
  EXPECT_EQ(j.at("per_window").size(), 6u);
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
  PerplexityConfig same_cache = small_config(64, 8, {"dense"}, {0.1});
  same_cache.cpu_kv_cache = DType::F32;
  same_cache.reference_kv_cache = DType::F32;
  refused(same_cache, nullptr, "the reference KV cache (f32) is the run's KV cache");
  PerplexityConfig on_cuda = small_config(64, 8, {"dense"}, {0.1});
  on_cuda.backend = "cuda";
  on_cuda.reference_kv_cache = DType::F32;
  refused(on_cuda, nullptr, "a reference KV cache applies to the cpu backend; backend 'cuda'");
  // score_window needs the reference cache's own backend.
  auto backend = engine::make_backend("cpu", t.model, nullptr, {});
  PerplexityConfig no_backend = small_config(64, 8, {"dense"}, {0.1});
  no_backend.reference_kv_cache = DType::F32;
  EXPECT_THROW(score_window(*backend, mc, nullptr, no_backend, random_tokens(64, 12)), Error);
  EXPECT_THROW(score_window(*backend, mc, nullptr, no_backend, random_tokens(64, 12), backend.get()), Error);
  EXPECT_THROW(parse_perplexity_mode("sparse"), Error);
}

}  // namespace
}  // namespace kascade::eval
