// The accuracy study's pieces (kascade/eval/harness.h): rows attended as decode steps, answer
// scoring, summaries and reports.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kascade/error.h"
#include "kascade/eval/harness.h"

namespace kascade::eval {
namespace {

std::vector<float> random_vector(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

TEST(AttendRowsAsDecode, EqualsTokenByTokenDecodeThroughEveryLayer) {
  // 3 layers, anchors {0, 2}: layer 1 reuses layer 0's selection, which differs per row. The rows
  // run on one thread and on four (rows in parallel): both must equal decoding bit for bit.
  constexpr int kLayers = 3, hq = 4, hkv = 2, d = 8, first = 150, tokens = 9, n = first + tokens;
  const Plan plan = make_uniform_plan("t", kLayers, hq, hkv, d, {0, 2});
  SparsityParams p;
  p.rho = 0.1;
  p.k_min = 8;
  const PolicyContext ctx{p, kLayers, &plan};
  std::vector<std::vector<float>> q, k, v;
  for (int l = 0; l < kLayers; ++l) {
    q.push_back(random_vector(static_cast<size_t>(hq) * tokens * d, 10 + l));
    k.push_back(random_vector(static_cast<size_t>(hkv) * n * d, 20 + l));
    v.push_back(random_vector(static_cast<size_t>(hkv) * n * d, 30 + l));
  }
  for (const std::string& name : {std::string("kascade"), std::string("omnikv"), std::string("quest")}) {
    for (int threads : {1, 4}) {
      // All rows of a layer, then the next layer (as the engine calls it).
      auto batched = make_policy(name, ctx);
      std::vector<std::vector<float>> out_batched;
      double keys_batched = 0;
      for (int l = 0; l < kLayers; ++l) {
        out_batched.emplace_back(static_cast<size_t>(hq) * tokens * d);
        keys_batched += attend_rows_as_decode(*batched, p, l, first, tokens, hq, hkv, d, q[l].data(), k[l].data(),
                                              v[l].data(), out_batched.back().data(), threads);
      }
      // Every layer for one token, then the next token (decoding).
      auto stepwise = make_policy(name, ctx);
      double keys_stepwise = 0;
      for (int t = 0; t < tokens; ++t) {
        for (int l = 0; l < kLayers; ++l) {
          std::vector<float> q_row(static_cast<size_t>(hq) * d), k_rows, v_rows, out(static_cast<size_t>(hq) * d);
          for (int h = 0; h < hq; ++h) {
            for (int c = 0; c < d; ++c) q_row[static_cast<size_t>(h * d + c)] = q[l][(static_cast<size_t>(h) * tokens + t) * d + c];
          }
          const int nt = first + t + 1;
          for (int g = 0; g < hkv; ++g) {
            const size_t base = static_cast<size_t>(g) * n * d;
            k_rows.insert(k_rows.end(), k[l].begin() + base, k[l].begin() + base + static_cast<size_t>(nt) * d);
            v_rows.insert(v_rows.end(), v[l].begin() + base, v[l].begin() + base + static_cast<size_t>(nt) * d);
          }
          const LayerInputs in{l, Phase::Decode, hq, hkv, 1, nt, d, q_row.data(), k_rows.data(), v_rows.data()};
          keys_stepwise += attend_layer(*stepwise, p, in, out.data());
          for (int h = 0; h < hq; ++h) {
            for (int c = 0; c < d; ++c) {
              EXPECT_EQ(out[static_cast<size_t>(h * d + c)], out_batched[l][(static_cast<size_t>(h) * tokens + t) * d + c])
                  << name << " layer " << l << " row " << t << ", " << threads << " thread(s)";
            }
          }
        }
      }
      EXPECT_EQ(keys_batched, keys_stepwise) << name << ", " << threads << " thread(s)";
    }
  }
}

TEST(AttendRowsAsDecode, AReuseRowWithoutItsAnchorRowIsAnErrorOnAnyThread) {
  // Layer 1 of a kascade plan reads layer 0's selection; skipping layer 0 must fail loudly from
  // whichever worker thread meets it, not crash or attend to nothing.
  constexpr int kLayers = 2, hq = 2, hkv = 1, d = 4, first = 40, tokens = 6, n = first + tokens;
  const Plan plan = make_uniform_plan("t", kLayers, hq, hkv, d, {0});
  SparsityParams p;
  p.k_min = 4;
  const PolicyContext ctx{p, kLayers, &plan};
  auto policy = make_policy("kascade", ctx);
  const std::vector<float> q = random_vector(static_cast<size_t>(hq) * tokens * d, 1);
  const std::vector<float> kv = random_vector(static_cast<size_t>(hkv) * n * d, 2);
  std::vector<float> out(q.size());
  EXPECT_THROW(attend_rows_as_decode(*policy, p, 1, first, tokens, hq, hkv, d, q.data(), kv.data(), kv.data(),
                                     out.data(), 3),
               Error);
}

TEST(ScoreAnswer, TeacherForcedLogLikelihoodAndGreedyMatch) {
  // Vocabulary of 3; rows 1 and 2 predict the answer {2, 0}.
  const std::vector<float> logits = {0, 0, 0,  //
                                     0, 0, std::log(2.f),  // p = 1/4, 1/4, 1/2: argmax 2
                                     std::log(3.f), 0, 0};  // p = 3/5, 1/5, 1/5: argmax 0
  const AnswerScore s = score_answer(logits.data(), 3, 3, 1, {2, 0});
  EXPECT_TRUE(s.correct);
  EXPECT_NEAR(s.mean_logprob, (std::log(0.5) + std::log(0.6)) / 2, 1e-6);
  EXPECT_EQ(s.greedy, (std::vector<int32_t>{2, 0}));
  const AnswerScore wrong = score_answer(logits.data(), 3, 3, 1, {2, 1});
  EXPECT_FALSE(wrong.correct);
  EXPECT_NEAR(wrong.mean_logprob, (std::log(0.5) + std::log(0.2)) / 2, 1e-6);
  EXPECT_THROW(score_answer(logits.data(), 3, 3, 2, {2, 0}), Error);  // past the last row
  EXPECT_THROW(score_answer(logits.data(), 3, 3, 1, {2, 3}), Error);  // not a token
}

TEST(ScoreAnswer, NonFiniteLogitsAreAnError) {
  const std::vector<float> logits = {0, NAN, 0};
  EXPECT_THROW(score_answer(logits.data(), 1, 3, 0, {0}), Error);
}

RunScore run(const std::string& task, int length, int index, const std::string& policy, double rho, bool correct,
             double logprob, double keys) {
  RunScore r;
  r.task = task;
  r.length = length;
  r.index = index;
  r.policy = policy;
  r.rho = rho;
  r.correct = correct;
  r.answer_logprob = logprob;
  r.answer_tokens = 2;
  r.keys_fraction = keys;
  return r;
}

EvalResults sample_results() {
  EvalResults r;
  r.config.tasks = {"passkey", "vartrack"};
  r.config.lengths = {1024, 2048};
  r.config.policies = {"dense", "kascade"};
  r.config.rhos = {0.1};
  r.config.examples = 1;
  r.model_name = "m";
  r.runs = {run("passkey", 1024, 0, "dense", 1, true, -0.1, 1),   run("passkey", 2048, 0, "dense", 1, true, -0.2, 1),
            run("vartrack", 1024, 0, "dense", 1, false, -2.0, 1), run("vartrack", 2048, 0, "dense", 1, true, -1.0, 1),
            run("passkey", 1024, 0, "kascade", 0.1, true, -0.3, 0.2),
            run("passkey", 2048, 0, "kascade", 0.1, false, -0.4, 0.1),
            run("vartrack", 1024, 0, "kascade", 0.1, false, -2.5, 0.2),
            run("vartrack", 2048, 0, "kascade", 0.1, true, -1.1, 0.1)};
  return r;
}

TEST(Summarize, AveragesPerGroupAndPairsWithDense) {
  const std::vector<Summary> s = summarize(sample_results());
  // 2 configs x (all, 2 lengths, 2 tasks).
  ASSERT_EQ(s.size(), 10u);
  const Summary& all = s[5];
  EXPECT_EQ(all.policy, "kascade");
  EXPECT_EQ(all.group, "all");
  EXPECT_EQ(all.runs, 4);
  EXPECT_DOUBLE_EQ(all.accuracy, 50.0);
  EXPECT_NEAR(all.delta_logprob, (-0.2 - 0.2 - 0.5 - 0.1) / 4, 1e-12);
  EXPECT_NEAR(all.keys_fraction, 0.15, 1e-12);
  const Summary& at2048 = s[7];
  EXPECT_EQ(at2048.group, "2048");
  EXPECT_DOUBLE_EQ(at2048.accuracy, 50.0);
  const Summary& passkey = s[8];
  EXPECT_EQ(passkey.group, "passkey");
  EXPECT_NEAR(passkey.answer_logprob, -0.35, 1e-12);
  EXPECT_DOUBLE_EQ(s[0].delta_logprob, 0.0);
  EXPECT_DOUBLE_EQ(s[0].accuracy, 75.0);
}

TEST(Reports, MarkdownAndJsonCarryTheTable) {
  const EvalResults r = sample_results();
  const std::string md = to_markdown(r, "model m");
  EXPECT_NE(md.find("| dense | 75.0 | 50.0 | 100.0 | -0.825 | — | 100.0% |"), std::string::npos) << md;
  EXPECT_NE(md.find("| kascade @ 0.10 | 50.0 | 50.0 | 50.0 | -1.075 | -0.250 | 15.0% |"), std::string::npos) << md;
  EXPECT_NE(md.find("| kascade @ 0.10 | 50 / -0.200 | 50 / -0.300 |"), std::string::npos) << md;
  const nlohmann::json j = to_json(r, {{"commit", "abc"}});
  EXPECT_EQ(j["format"], "kascade-eval");
  EXPECT_EQ(j["provenance"]["commit"], "abc");
  EXPECT_EQ(j["runs"].size(), 8u);
  EXPECT_EQ(j["summary"].size(), 10u);
}

}  // namespace
}  // namespace kascade::eval

namespace kascade::eval {
namespace {

TEST(Reports, JsonReadsBackToTheSameTables) {
  EvalResults r = sample_results();
  r.seconds = 12.5;
  r.plan_name = "plan.json";
  r.config.backend = "cuda";
  const nlohmann::json j = to_json(r, {{"commit", "abc"}});
  const EvalResults back = results_from_json(j);
  EXPECT_EQ(back.config.tasks, r.config.tasks);
  EXPECT_EQ(back.config.lengths, r.config.lengths);
  EXPECT_EQ(back.config.backend, "cuda");
  EXPECT_EQ(back.plan_name, "plan.json");
  ASSERT_EQ(back.runs.size(), r.runs.size());
  EXPECT_EQ(to_markdown(back, "p"), to_markdown(r, "p"));
  EXPECT_EQ(to_json(back, {{"commit", "abc"}}), j);
}

TEST(Reports, JsonReadErrorsNameTheField) {
  nlohmann::json j = to_json(sample_results(), nlohmann::json::object());
  nlohmann::json no_format = j;
  no_format.erase("format");
  EXPECT_THROW(results_from_json(no_format), Error);
  j["runs"][3].erase("answer_logprob");
  try {
    results_from_json(j);
    FAIL() << "a run without answer_logprob was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("answer_logprob"), std::string::npos) << e.what();
  }
  j["runs"][3]["answer_logprob"] = "high";
  EXPECT_THROW(results_from_json(j), Error);
}

TEST(KeepExamples, KeepsTheFirstIndicesOnly) {
  EvalResults r = sample_results();
  r.config.examples = 2;
  RunScore second = r.runs[0];
  second.index = 1;
  r.runs.push_back(second);
  const EvalResults kept = keep_examples(r, 1);
  EXPECT_EQ(kept.config.examples, 1);
  EXPECT_EQ(kept.runs.size(), r.runs.size() - 1);
  for (const RunScore& s : kept.runs) EXPECT_EQ(s.index, 0);
  EXPECT_EQ(keep_examples(r, 2).runs.size(), r.runs.size());
  EXPECT_THROW(keep_examples(r, 0), Error);
}

TEST(ValidateConfig, NamesTheProblem) {
  EvalConfig c;
  c.tasks = {"passkey"};
  c.lengths = {1024};
  c.policies = {"dense", "streaming"};
  c.rhos = {0.1};
  EXPECT_NO_THROW(validate_config(c, nullptr));
  auto message = [](const EvalConfig& bad, const Plan* plan) {
    try {
      validate_config(bad, plan);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EvalConfig bad = c;
  bad.policies = {"kascade"};
  EXPECT_NE(message(bad, nullptr).find("needs a plan"), std::string::npos);
  bad = c;
  bad.rhos = {1.5};
  EXPECT_NE(message(bad, nullptr).find("rho must be in (0, 1]"), std::string::npos);
  bad = c;
  bad.rhos.clear();
  EXPECT_NE(message(bad, nullptr).find("need at least one rho"), std::string::npos);
  bad = c;
  bad.tasks = {"haystack"};
  EXPECT_NE(message(bad, nullptr).find("unknown task 'haystack'"), std::string::npos);
  bad = c;
  bad.examples = 0;
  EXPECT_NE(message(bad, nullptr).find("examples"), std::string::npos);
  const Plan plan = make_uniform_plan("t", 4, 4, 2, 8, {0, 2});
  bad = c;
  bad.policies = {"kascade", "omnikv", "kascade-pooled"};
  EXPECT_EQ(message(bad, &plan), "no error");
}

}  // namespace
}  // namespace kascade::eval
