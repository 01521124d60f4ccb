// The accuracy study's pieces (kascade/eval/harness.h): rows attended as decode steps, answer
// scoring, summaries and reports.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "kascade/error.h"
#include "kascade/eval/harness.h"
#include "kascade/eval/scoring.h"

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
  ASSERT_EQ(s.logprobs.size(), 2u);
  EXPECT_NEAR(s.logprobs[0], std::log(0.5), 1e-6);
  EXPECT_NEAR(s.logprobs[1], std::log(0.6), 1e-6);
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

TEST(CompareWithDense, HandMadeLogits) {
  // Vocabulary of 2. Row 0 is a question row, rows 1 and 2 answer rows (targets 0 and 1).
  const float l3 = std::log(3.f);
  const std::vector<float> dense = {0, 0,    // p = 1/2, 1/2 (argmax: the lower id, 0)
                                    l3, 0,   // 3/4, 1/4
                                    0, l3};  // 1/4, 3/4
  const std::vector<float> policy = {l3, 0,  // 3/4, 1/4
                                     l3, 0,  // the same as dense
                                     l3, 0};  // 3/4, 1/4: argmax 0 where dense has 1
  const DenseComparison c = compare_with_dense(dense.data(), policy.data(), 2, 1, {1, 0, 1});
  EXPECT_EQ(c.question_rows, 1);
  EXPECT_EQ(c.answer_rows, 2);
  // KL(dense || policy): row 0 = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3); row 1 = 0;
  // row 2 = 1/4 ln(1/3) + 3/4 ln 3 = 1/2 ln 3.
  EXPECT_NEAR(c.kl_question, 0.5 * std::log(4.0 / 3.0), 1e-6);
  EXPECT_NEAR(c.kl_answer, 0.25 * std::log(3.0), 1e-6);
  EXPECT_DOUBLE_EQ(c.top1_question, 1.0);
  EXPECT_DOUBLE_EQ(c.top1_answer, 0.5);
  // log p - log p_dense of the answer targets: row 1 (token 0) 0, row 2 (token 1) ln(1/4) - ln(3/4).
  EXPECT_NEAR(c.delta_logprob, -0.5 * std::log(3.0), 1e-6);

  // Without question rows their means are not measured.
  const DenseComparison answers_only = compare_with_dense(dense.data(), policy.data(), 2, 0, {1, 0, 1});
  EXPECT_TRUE(std::isnan(answers_only.kl_question));
  EXPECT_TRUE(std::isnan(answers_only.top1_question));
  EXPECT_EQ(answers_only.answer_rows, 3);
  EXPECT_THROW(compare_with_dense(dense.data(), policy.data(), 2, 4, {1, 0, 1}), Error);
  EXPECT_THROW(compare_with_dense(dense.data(), policy.data(), 2, 1, {1, 0, 2}), Error);  // not a token
}

TEST(CompareWithDense, DenseAgainstItselfIsKlZeroTopOneOne) {
  std::vector<float> logits = random_vector(5 * 50, 3);
  const DenseComparison c = compare_with_dense(logits.data(), logits.data(), 50, 2, {1, 2, 3, 4, 5});
  EXPECT_EQ(c.kl_question, 0.0);
  EXPECT_EQ(c.kl_answer, 0.0);
  EXPECT_EQ(c.top1_question, 1.0);
  EXPECT_EQ(c.top1_answer, 1.0);
  EXPECT_EQ(c.delta_logprob, 0.0);
}

TEST(RunOrder, DenseFirstThenTheOthersAsGiven) {
  EXPECT_EQ(run_order({"streaming", "dense", "quest"}), (std::vector<std::string>{"dense", "streaming", "quest"}));
  EXPECT_EQ(run_order({"tidal"}), (std::vector<std::string>{"dense", "tidal"}));
  EXPECT_EQ(run_order({"dense"}), (std::vector<std::string>{"dense"}));
}

// A run with its comparison against dense (delta from the dense run's logprob of `dense_lp`).
RunScore run(const std::string& task, int length, int index, const std::string& policy, double rho, bool correct,
             double logprob, double keys, double dense_lp, double kl, int answer_tokens = 2) {
  RunScore r;
  r.task = task;
  r.length = length;
  r.index = index;
  r.policy = policy;
  r.rho = rho;
  r.correct = correct;
  r.answer_logprob = logprob;
  r.answer_tokens = answer_tokens;
  r.keys_fraction = keys;
  r.question_rows = 3;
  r.kl_question = kl / 2;
  r.top1_question = kl > 0 ? 2.0 / 3.0 : 1.0;
  r.kl_answer = kl;
  r.top1_answer = kl > 0.05 ? 0.5 : 1.0;
  r.delta_logprob = logprob - dense_lp;
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
  // passkey answers have 1 token, vartrack answers 3: row-weighted means weight them so.
  r.runs = {run("passkey", 1024, 0, "dense", 1, true, -0.1, 1, -0.1, 0, 1),
            run("passkey", 2048, 0, "dense", 1, true, -0.2, 1, -0.2, 0, 1),
            run("vartrack", 1024, 0, "dense", 1, false, -2.0, 1, -2.0, 0, 3),
            run("vartrack", 2048, 0, "dense", 1, true, -1.0, 1, -1.0, 0, 3),
            run("passkey", 1024, 0, "kascade", 0.1, true, -0.3, 0.2, -0.1, 0.02, 1),
            run("passkey", 2048, 0, "kascade", 0.1, false, -0.4, 0.1, -0.2, 0.10, 1),
            run("vartrack", 1024, 0, "kascade", 0.1, false, -2.5, 0.2, -2.0, 0.08, 3),
            run("vartrack", 2048, 0, "kascade", 0.1, true, -1.1, 0.1, -1.0, 0.01, 3)};
  return r;
}

TEST(Summarize, RowWeightedMeansWithIntervalsClusteredByExample) {
  const EvalResults r = sample_results();
  const std::vector<Summary> s = summarize(r);
  // 2 configs x (all, 2 lengths, 2 tasks).
  ASSERT_EQ(s.size(), 10u);
  const Summary& all = s[5];
  EXPECT_EQ(all.policy, "kascade");
  EXPECT_EQ(all.group, "all");
  EXPECT_EQ(all.runs, 4);
  EXPECT_DOUBLE_EQ(all.accuracy.mean, 50.0);
  EXPECT_LT(all.accuracy.lo, 50.0);
  EXPECT_GT(all.accuracy.hi, 50.0);
  EXPECT_EQ(all.accuracy.n, 4);
  // Deltas -0.2, -0.2 (1 token each), -0.5, -0.1 (3 tokens each), over 8 answer tokens.
  EXPECT_NEAR(all.delta_logprob.mean, (-0.2 - 0.2 - 3 * 0.5 - 3 * 0.1) / 8, 1e-12);
  EXPECT_EQ(all.delta_logprob.n, 8);
  EXPECT_NEAR(all.kl_answer.mean, (0.02 + 0.10 + 3 * 0.08 + 3 * 0.01) / 8, 1e-12);
  EXPECT_NEAR(all.kl_question.mean, (0.01 + 0.05 + 0.04 + 0.005) / 4, 1e-12);  // 3 rows each
  EXPECT_NEAR(all.top1_answer.mean, (1 + 0.5 + 3 * 0.5 + 3 * 1) / 8, 1e-12);
  EXPECT_NEAR(all.top1_question.mean, 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(all.keys_fraction, 0.15, 1e-12);
  // The intervals are bootstrap_cluster_interval's over one cluster of rows per example.
  const Interval expected = bootstrap_cluster_interval(
      {{-0.2}, {-0.2}, {-0.5, -0.5, -0.5}, {-0.1, -0.1, -0.1}}, 1);
  EXPECT_NEAR(all.delta_logprob.lo, expected.lo, 1e-12);
  EXPECT_NEAR(all.delta_logprob.hi, expected.hi, 1e-12);
  EXPECT_LT(all.delta_logprob.lo, all.delta_logprob.mean);
  const Summary& at2048 = s[7];
  EXPECT_EQ(at2048.group, "2048");
  EXPECT_EQ(at2048.runs, 2);
  EXPECT_DOUBLE_EQ(at2048.accuracy.mean, 50.0);
  const Summary& passkey = s[8];
  EXPECT_EQ(passkey.group, "passkey");
  EXPECT_NEAR(passkey.answer_logprob, -0.35, 1e-12);
  // Dense against itself.
  EXPECT_DOUBLE_EQ(s[0].delta_logprob.mean, 0.0);
  EXPECT_DOUBLE_EQ(s[0].kl_answer.mean, 0.0);
  EXPECT_DOUBLE_EQ(s[0].top1_answer.hi, 1.0);
  EXPECT_DOUBLE_EQ(s[0].accuracy.mean, 75.0);
}

TEST(Summarize, UnmeasuredComparisonsStayUnmeasured) {
  EvalResults r = sample_results();
  for (RunScore& run : r.runs) run.kl_question = run.top1_question = NAN;  // e.g. sparse prefill
  const Summary all = summarize(r)[5];
  EXPECT_EQ(all.kl_question.n, 0);
  EXPECT_TRUE(std::isnan(all.kl_question.mean));
  EXPECT_EQ(all.kl_answer.n, 8);
  const std::string md = to_markdown(r, "p");
  EXPECT_NE(md.find("| kascade @ 0.10 | all | 4 | 50.0 ["), std::string::npos) << md;
}

Summary point_at(const std::string& policy, double rho, double keys, double delta) {
  Summary s;
  s.policy = policy;
  s.rho = rho;
  s.group = "all";
  s.keys_fraction = keys;
  s.delta_logprob.mean = delta;
  s.kl_answer.mean = -delta / 10;
  s.accuracy.mean = 100 + 100 * delta;
  return s;
}

TEST(EqualKeys, LinearInKeysFractionBetweenTheBracketingRhos) {
  const std::vector<Summary> summary = {point_at("dense", 1, 1, 0),       point_at("p", 0.2, 0.23, -0.1),
                                        point_at("p", 0.05, 0.08, -0.4),  point_at("p", 0.1, 0.13, -0.2),
                                        point_at("q", 0.1, 0.30, -0.05)};
  const std::vector<EqualKeys> e = equal_keys(summary, {0.10, 0.13, 0.20, 0.30, 0.05});
  ASSERT_EQ(e.size(), 10u);  // p and q (not dense) x 5 fractions
  EXPECT_EQ(e[0].policy, "p");
  // 0.10 lies 0.4 of the way from 0.08 (rho 0.05) to 0.13 (rho 0.1).
  EXPECT_NEAR(e[0].delta_logprob, -0.4 + 0.4 * 0.2, 1e-12);
  EXPECT_NEAR(e[0].kl_answer, 0.04 - 0.4 * 0.02, 1e-12);
  EXPECT_NEAR(e[0].accuracy, 60 + 0.4 * 20, 1e-9);
  EXPECT_EQ(e[0].rho_below, 0.05);
  EXPECT_EQ(e[0].rho_above, 0.1);
  // A measured point is taken as it is.
  EXPECT_NEAR(e[1].delta_logprob, -0.2, 1e-12);
  EXPECT_EQ(e[1].rho_below, 0.1);
  EXPECT_EQ(e[1].rho_above, 0.1);
  // 0.20: 0.7 of the way from 0.13 to 0.23.
  EXPECT_NEAR(e[2].delta_logprob, -0.2 + 0.7 * 0.1, 1e-12);
  // Outside the measured fractions: not interpolated (no extrapolation).
  EXPECT_TRUE(std::isnan(e[3].delta_logprob));
  EXPECT_TRUE(std::isnan(e[4].delta_logprob));
  EXPECT_TRUE(std::isnan(e[4].rho_below));
  // q has a single point, at 0.30 exactly.
  EXPECT_EQ(e[5].policy, "q");
  EXPECT_TRUE(std::isnan(e[5].delta_logprob));
  EXPECT_NEAR(e[8].delta_logprob, -0.05, 1e-12);
}

TEST(Reports, MarkdownAndJsonCarryTheTables) {
  EvalResults r = sample_results();
  r.config.split = Split::Dev;
  const std::string md = to_markdown(r, "model m");
  EXPECT_NE(md.find("**Split: dev**"), std::string::npos) << md;
  EXPECT_NE(md.find("**N = 4 examples**"), std::string::npos) << md;
  EXPECT_NE(md.find("## Equal rho (all tasks and lengths, N = 4 per row)"), std::string::npos) << md;
  EXPECT_NE(md.find("| dense | all | 4 | 75.0 ["), std::string::npos) << md;
  EXPECT_NE(md.find("| kascade @ 0.10 | all | 4 | 50.0 ["), std::string::npos) << md;
  EXPECT_NE(md.find("interpolated linearly in keys fraction"), std::string::npos) << md;
  // kascade's keys fraction is 0.15 at its one rho: no common fraction is reached.
  EXPECT_NE(md.find("| kascade | 10% | — | — | — | — | — | — |"), std::string::npos) << md;
  EXPECT_NE(md.find("| kascade @ 0.10 | 50.0 | 50.0 | 50.0 |"), std::string::npos) << md;  // per length
  EXPECT_NE(md.find("| kascade @ 0.10 | 2048 | 2 | 50.0 ["), std::string::npos) << md;
  EXPECT_NE(md.find("| kascade @ 0.10 | vartrack | 2 | 50.0 ["), std::string::npos) << md;
  const nlohmann::json j = to_json(r, {{"commit", "abc"}});
  EXPECT_EQ(j["format"], "kascade-eval");
  EXPECT_EQ(j["version"], 2);
  EXPECT_EQ(j["config"]["split"], "dev");
  EXPECT_EQ(j["provenance"]["commit"], "abc");
  EXPECT_EQ(j["runs"].size(), 8u);
  EXPECT_EQ(j["summary"].size(), 10u);
  EXPECT_EQ(j["summary"][5]["examples"], 4);
  EXPECT_EQ(j["summary"][5]["delta_logprob"]["n"], 8);
  EXPECT_EQ(j["equal_keys"].size(), 5u * std::size(kEqualKeysFractions));  // kascade x 5 groups
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
  r.config.split = Split::Dev;
  r.runs[5].kl_question = r.runs[5].top1_question = NAN;  // a null in the file
  const nlohmann::json j = to_json(r, {{"commit", "abc"}});
  EXPECT_TRUE(j["runs"][5]["kl_question"].is_null());
  const EvalResults back = results_from_json(nlohmann::json::parse(j.dump()));
  EXPECT_EQ(back.config.tasks, r.config.tasks);
  EXPECT_EQ(back.config.lengths, r.config.lengths);
  EXPECT_EQ(back.config.backend, "cuda");
  EXPECT_EQ(back.config.split, Split::Dev);
  EXPECT_EQ(back.plan_name, "plan.json");
  ASSERT_EQ(back.runs.size(), r.runs.size());
  EXPECT_TRUE(std::isnan(back.runs[5].kl_question));
  EXPECT_EQ(back.runs[6].kl_answer, r.runs[6].kl_answer);
  EXPECT_EQ(back.runs[6].delta_logprob, r.runs[6].delta_logprob);
  EXPECT_EQ(back.runs[6].question_rows, 3);
  EXPECT_EQ(to_markdown(back, "p"), to_markdown(r, "p"));
  EXPECT_EQ(to_json(back, {{"commit", "abc"}}), j);
}

TEST(Reports, VersionOneFilesReadWithoutTheNewComparisons) {
  // A version-1 file: no split, no per-row comparisons.
  nlohmann::json j = to_json(sample_results(), nlohmann::json::object());
  j["version"] = 1;
  j["config"].erase("split");
  for (nlohmann::json& run : j["runs"]) {
    for (const char* key : {"question_rows", "kl_question", "top1_question", "kl_answer", "top1_answer", "delta_logprob"}) {
      run.erase(key);
    }
  }
  const EvalResults old = results_from_json(j);
  EXPECT_EQ(old.config.split, Split::Eval);
  ASSERT_EQ(old.runs.size(), 8u);
  EXPECT_TRUE(std::isnan(old.runs[6].kl_answer));
  EXPECT_NEAR(old.runs[6].delta_logprob, -0.5, 1e-12);  // from the answer log-likelihoods
  const Summary all = summarize(old)[5];
  EXPECT_NEAR(all.delta_logprob.mean, (-0.2 - 0.2 - 3 * 0.5 - 3 * 0.1) / 8, 1e-12);
  EXPECT_EQ(all.kl_answer.n, 0);
  EXPECT_NE(to_markdown(old, "p").find("| kascade @ 0.10 | all | 4 | 50.0 ["), std::string::npos);
  j["version"] = 3;
  try {
    results_from_json(j);
    FAIL() << "version 3 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported version 3"), std::string::npos) << e.what();
  }
}

TEST(Reports, JsonReadErrorsNameTheField) {
  nlohmann::json j = to_json(sample_results(), nlohmann::json::object());
  nlohmann::json no_format = j;
  no_format.erase("format");
  EXPECT_THROW(results_from_json(no_format), Error);
  nlohmann::json no_split = j;
  no_split["config"].erase("split");
  EXPECT_THROW(results_from_json(no_split), Error);
  nlohmann::json bad_split = j;
  bad_split["config"]["split"] = "test";
  EXPECT_THROW(results_from_json(bad_split), Error);
  nlohmann::json no_kl = j;
  no_kl["runs"][2].erase("kl_answer");
  try {
    results_from_json(no_kl);
    FAIL() << "a run without kl_answer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kl_answer"), std::string::npos) << e.what();
  }
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

TEST(Reports, TokenFileListsEveryExampleWithItsRuns) {
  EvalResults r = sample_results();
  EXPECT_THROW(tokens_to_json(r, nlohmann::json::object()), Error);  // tokens were not kept
  r.config.keep_tokens = true;
  r.config.sparse_prefill = true;
  r.tokens = {{"passkey", 1024, 0, {1, 5, 6}, {7}, {9, 3}, {}}};
  r.tokens[0].runs = {{"dense", 1.0, {9, 3}, {-0.25, -0.5}}, {"kascade", 0.1, {9, 4}, {-0.25, -2.0}}};
  const nlohmann::json j = nlohmann::json::parse(tokens_to_json(r, {{"commit", "abc"}}).dump());
  EXPECT_EQ(j["format"], "kascade-eval-tokens");
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["provenance"]["commit"], "abc");
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["config"], to_json(r, {})["config"]);  // the same configuration as eval.json
  EXPECT_EQ(j["config"]["prefill"], "sparse");
  ASSERT_EQ(j["examples"].size(), 1u);
  const nlohmann::json& ex = j["examples"][0];
  EXPECT_EQ(ex["task"], "passkey");
  EXPECT_EQ(ex["length"], 1024);
  EXPECT_EQ(ex["index"], 0);
  EXPECT_EQ(ex["context"].get<std::vector<int32_t>>(), (std::vector<int32_t>{1, 5, 6}));
  EXPECT_EQ(ex["query"].get<std::vector<int32_t>>(), (std::vector<int32_t>{7}));
  EXPECT_EQ(ex["answer"].get<std::vector<int32_t>>(), (std::vector<int32_t>{9, 3}));
  ASSERT_EQ(ex["runs"].size(), 2u);
  EXPECT_EQ(ex["runs"][1]["policy"], "kascade");
  EXPECT_EQ(ex["runs"][1]["rho"], 0.1);
  EXPECT_EQ(ex["runs"][1]["greedy"].get<std::vector<int32_t>>(), (std::vector<int32_t>{9, 4}));
  EXPECT_EQ(ex["runs"][1]["answer_logprobs"].get<std::vector<double>>(), (std::vector<double>{-0.25, -2.0}));
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
  r.tokens = {{"passkey", 1024, 0, {1}, {2}, {3}, {}}, {"passkey", 1024, 1, {1}, {2}, {3}, {}}};
  ASSERT_EQ(keep_examples(r, 1).tokens.size(), 1u);
  EXPECT_EQ(keep_examples(r, 1).tokens[0].index, 0);
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
  bad.policies = {"kascade", "omnikv", "kascade-pooled", "tidal"};
  EXPECT_EQ(message(bad, &plan), "no error");
  bad.tasks = {"copy", "passkey"};
  EXPECT_EQ(message(bad, &plan), "no error");
  // The copy task's corpus is checked before any example runs.
  const std::string empty = (std::filesystem::temp_directory_path() / "kascade_no_corpus").string();
  std::filesystem::create_directories(empty);
  setenv("KASCADE_CORPUS_ROOT", empty.c_str(), 1);
  const std::string missing = message(bad, &plan);
  unsetenv("KASCADE_CORPUS_ROOT");
  EXPECT_NE(missing.find("jargon-text"), std::string::npos) << missing;
}

}  // namespace
}  // namespace kascade::eval
