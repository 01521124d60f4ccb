// The pieces of the accuracy study that do not drive the model: rows attended as decode
// steps, answer scoring, summaries and their markdown/JSON reports (kascade/eval/harness.h).
#include "kascade/eval/harness.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <iomanip>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "kascade/error.h"
#include "kascade/eval/tasks.h"

namespace kascade::eval {

double attend_rows_as_decode(SelectionPolicy& policy, const SparsityParams& params, int layer, int first, int tokens,
                             int hq, int hkv, int d, const float* q, const float* k, const float* v, float* out,
                             int threads) {
  KASCADE_CHECK(first >= 0 && tokens >= 1, "layer " << layer << ": bad rows first=" << first << " tokens=" << tokens);
  KASCADE_CHECK(threads >= 0, "layer " << layer << ": thread count must be >= 0, got " << threads);
  const size_t n_all = static_cast<size_t>(first) + tokens, dd = static_cast<size_t>(d);
  // Row t is the decode step at position first + t: its keys are 0..first + t, contiguous per kv
  // head as the oracle takes them. Each worker gathers its rows into buffers of its own.
  auto attend_row = [&](int t, std::vector<float>& q_row, std::vector<float>& k_rows, std::vector<float>& v_rows,
                        std::vector<float>& out_row) {
    const size_t n = static_cast<size_t>(first) + t + 1;
    for (int h = 0; h < hq; ++h) {
      std::memcpy(&q_row[h * dd], q + (static_cast<size_t>(h) * tokens + t) * dd, sizeof(float) * dd);
    }
    for (int g = 0; g < hkv; ++g) {
      std::memcpy(&k_rows[g * n * dd], k + g * n_all * dd, sizeof(float) * n * dd);
      std::memcpy(&v_rows[g * n * dd], v + g * n_all * dd, sizeof(float) * n * dd);
    }
    const LayerInputs in{layer, Phase::Decode, hq, hkv, 1, static_cast<int>(n), d,
                         q_row.data(), k_rows.data(), v_rows.data()};
    const double keys = attend_layer(policy, params, in, out_row.data());
    for (int h = 0; h < hq; ++h) {
      std::memcpy(out + (static_cast<size_t>(h) * tokens + t) * dd, &out_row[h * dd], sizeof(float) * dd);
    }
    return keys;
  };
  std::vector<double> keys(static_cast<size_t>(tokens), 0.0);  // per row, summed in row order below
  std::atomic<int> next_row{0};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto worker = [&]() {
    std::vector<float> q_row(static_cast<size_t>(hq) * dd), out_row(q_row.size());
    std::vector<float> k_rows(static_cast<size_t>(hkv) * n_all * dd), v_rows(k_rows.size());
    for (int t = next_row.fetch_add(1); t < tokens; t = next_row.fetch_add(1)) {
      try {
        keys[static_cast<size_t>(t)] = attend_row(t, q_row, k_rows, v_rows, out_row);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
      }
    }
  };
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  const int workers = std::min(tokens, threads > 0 ? threads : static_cast<int>(hardware));
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(worker);
  worker();
  for (std::thread& th : pool) th.join();
  if (first_error) std::rethrow_exception(first_error);
  double total = 0;
  for (double kk : keys) total += kk;
  return total;
}

void validate_config(const EvalConfig& c, const Plan* plan) {
  KASCADE_CHECK(!c.tasks.empty() && !c.lengths.empty() && !c.policies.empty(),
                "eval: give at least one task, one length and one policy");
  KASCADE_CHECK(c.examples >= 1, "eval: examples per task and length must be >= 1, got " << c.examples);
  bool sparse = false;
  for (const std::string& p : c.policies) sparse = sparse || p != "dense";
  KASCADE_CHECK(!sparse || !c.rhos.empty(), "eval: sparse policies need at least one rho");
  for (double rho : c.rhos) KASCADE_CHECK(rho > 0 && rho <= 1, "eval: rho must be in (0, 1], got " << rho);
  for (int length : c.lengths) KASCADE_CHECK(length >= 1, "eval: length must be positive, got " << length);
  for (const std::string& task : c.tasks) {
    KASCADE_CHECK(std::find(task_names().begin(), task_names().end(), task) != task_names().end(),
                  "eval: unknown task '" << task << "'");
  }
  // The copy task's corpus must be there before the first example (a missing package is one error).
  if (std::find(c.tasks.begin(), c.tasks.end(), "copy") != c.tasks.end()) natural_text(c.split);
  // Every policy name (and the plan it needs) is checked before any model work.
  const PolicyContext ctx{c.params, plan ? plan->layers : 1, plan};
  for (const std::string& p : c.policies) make_policy(p, ctx);
}

AnswerScore score_answer(const float* logits, int rows, int vocab, int first_row, const std::vector<int32_t>& answer) {
  KASCADE_CHECK(!answer.empty(), "score_answer: empty answer");
  KASCADE_CHECK(first_row >= 0 && first_row + static_cast<int>(answer.size()) <= rows,
                "score_answer: answer rows " << first_row << ".." << first_row + answer.size() - 1
                                             << " are outside the " << rows << " logit rows");
  AnswerScore s;
  double total = 0;
  for (size_t j = 0; j < answer.size(); ++j) {
    const float* row = logits + static_cast<size_t>(first_row + static_cast<int>(j)) * vocab;
    KASCADE_CHECK(answer[j] >= 0 && answer[j] < vocab, "score_answer: token " << answer[j] << " is outside the vocabulary");
    int best = 0;
    for (int i = 0; i < vocab; ++i) {
      KASCADE_CHECK(std::isfinite(row[i]), "score_answer: logit " << i << " of row " << first_row + j << " is "
                                                                  << row[i]);
      if (row[i] > row[best]) best = i;
    }
    double sum = 0;
    for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(row[i]) - row[best]);
    const double logprob = static_cast<double>(row[answer[j]]) - row[best] - std::log(sum);
    total += logprob;
    s.logprobs.push_back(logprob);
    s.greedy.push_back(best);
  }
  s.mean_logprob = total / static_cast<double>(answer.size());
  s.correct = s.greedy == answer;
  return s;
}

DenseComparison compare_with_dense(const float* dense, const float* logits, int vocab, int question_rows,
                                   const std::vector<int32_t>& targets) {
  const int rows = static_cast<int>(targets.size());
  KASCADE_CHECK(question_rows >= 0 && question_rows <= rows,
                "compare_with_dense: " << question_rows << " question rows of " << rows << " rows");
  const RowMetrics m = compare_rows(dense, logits, rows, vocab, targets);
  DenseComparison c;
  c.question_rows = question_rows;
  c.answer_rows = rows - question_rows;
  auto mean = [](const std::vector<double>& v, size_t from, size_t to) {
    if (from >= to) return std::numeric_limits<double>::quiet_NaN();
    double sum = 0;
    for (size_t i = from; i < to; ++i) sum += v[i];
    return sum / static_cast<double>(to - from);
  };
  const size_t q = static_cast<size_t>(question_rows), n = static_cast<size_t>(rows);
  c.kl_question = mean(m.kl, 0, q);
  c.top1_question = mean(m.top1, 0, q);
  c.kl_answer = mean(m.kl, q, n);
  c.top1_answer = mean(m.top1, q, n);
  std::vector<double> delta;
  for (size_t r = q; r < n; ++r) {
    KASCADE_CHECK(targets[r] >= 0, "compare_with_dense: answer row " << r << " has no target");
    delta.push_back(m.logprob[r] - m.dense_logprob[r]);
  }
  c.delta_logprob = mean(delta, 0, delta.size());
  return c;
}

std::vector<std::string> run_order(const std::vector<std::string>& policies) {
  std::vector<std::string> order = {"dense"};
  for (const std::string& p : policies) {
    if (std::find(order.begin(), order.end(), p) == order.end()) order.push_back(p);
  }
  return order;
}

namespace {

using ExampleKey = std::tuple<std::string, int, int>;  // task, length, index

constexpr uint64_t kBootstrapSeed = 1;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// One cluster per run holding `rows` copies of the run's mean over its rows: the cluster's sum
// and size are those of its rows, which is all bootstrap_cluster_interval's statistic (sum over
// the drawn clusters / their size) reads. Runs without the metric add nothing.
void add_cluster(std::vector<std::vector<double>>& clusters, double mean, int rows) {
  if (!std::isfinite(mean) || rows <= 0) return;
  clusters.emplace_back(static_cast<size_t>(rows), mean);
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

std::string signed_fixed(double v, int digits) { return (v >= 0 ? "+" : "") + fixed(v, digits); }

std::string config_label(const std::string& policy, double rho) {
  return policy == "dense" ? "dense" : policy + " @ " + fixed(rho, 2);
}

// "mean [lo, hi]" scaled by `scale`, "—" where not measured.
std::string with_interval(const Interval& i, double scale, int digits, bool sign = false) {
  if (i.n == 0 || !std::isfinite(i.mean)) return "—";
  auto f = [&](double v) { return sign ? signed_fixed(v * scale, digits) : fixed(v * scale, digits); };
  return f(i.mean) + " [" + f(i.lo) + ", " + f(i.hi) + "]";
}

std::string point(double v, double scale, int digits, bool sign = false) {
  if (!std::isfinite(v)) return "—";
  return sign ? signed_fixed(v * scale, digits) : fixed(v * scale, digits);
}

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json interval_json(const Interval& i) {
  return {{"mean", number_or_null(i.mean)}, {"lo", number_or_null(i.lo)}, {"hi", number_or_null(i.hi)}, {"n", i.n}};
}

}  // namespace

std::vector<Summary> summarize(const EvalResults& results) {
  // Groups in the order of the config: all, each length, each task.
  std::vector<std::string> groups = {"all"};
  for (int length : results.config.lengths) groups.push_back(std::to_string(length));
  for (const std::string& task : results.config.tasks) groups.push_back(task);
  std::vector<std::pair<std::string, double>> configs;
  for (const RunScore& r : results.runs) {
    const std::pair<std::string, double> c{r.policy, r.rho};
    if (std::find(configs.begin(), configs.end(), c) == configs.end()) configs.push_back(c);
  }
  std::vector<Summary> out;
  for (const auto& [policy, rho] : configs) {
    for (const std::string& group : groups) {
      std::vector<double> correct;
      std::vector<std::vector<double>> delta, kl_q, kl_a, top1_q, top1_a;
      double logprob = 0, keys = 0;
      for (const RunScore& r : results.runs) {
        if (r.policy != policy || r.rho != rho) continue;
        if (group != "all" && group != std::to_string(r.length) && group != r.task) continue;
        correct.push_back(r.correct ? 100.0 : 0.0);
        logprob += r.answer_logprob;
        keys += r.keys_fraction;
        add_cluster(delta, r.delta_logprob, r.answer_tokens);
        add_cluster(kl_a, r.kl_answer, r.answer_tokens);
        add_cluster(top1_a, r.top1_answer, r.answer_tokens);
        add_cluster(kl_q, r.kl_question, r.question_rows);
        add_cluster(top1_q, r.top1_question, r.question_rows);
      }
      if (correct.empty()) continue;
      Summary s;
      s.policy = policy;
      s.rho = rho;
      s.group = group;
      s.runs = static_cast<int>(correct.size());
      s.accuracy = bootstrap_mean_interval(correct, kBootstrapSeed);
      s.answer_logprob = logprob / s.runs;
      s.keys_fraction = keys / s.runs;
      s.delta_logprob = bootstrap_cluster_interval(delta, kBootstrapSeed);
      s.kl_question = bootstrap_cluster_interval(kl_q, kBootstrapSeed);
      s.kl_answer = bootstrap_cluster_interval(kl_a, kBootstrapSeed);
      s.top1_question = bootstrap_cluster_interval(top1_q, kBootstrapSeed);
      s.top1_answer = bootstrap_cluster_interval(top1_a, kBootstrapSeed);
      out.push_back(s);
    }
  }
  return out;
}

std::vector<EqualKeys> equal_keys(const std::vector<Summary>& summary, const std::vector<double>& fractions) {
  std::vector<std::pair<std::string, std::string>> keys;  // (policy, group) in summary order
  for (const Summary& s : summary) {
    const std::pair<std::string, std::string> k{s.policy, s.group};
    if (s.policy != "dense" && std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  }
  std::vector<EqualKeys> out;
  for (const auto& [policy, group] : keys) {
    std::vector<const Summary*> points;
    for (const Summary& s : summary) {
      if (s.policy == policy && s.group == group) points.push_back(&s);
    }
    std::stable_sort(points.begin(), points.end(),
                     [](const Summary* a, const Summary* b) { return a->keys_fraction < b->keys_fraction; });
    for (double fraction : fractions) {
      EqualKeys e;
      e.policy = policy;
      e.group = group;
      e.keys_fraction = fraction;
      const Summary* below = nullptr;
      const Summary* above = nullptr;
      double w = 0;  // weight of `above`
      for (size_t i = 0; i < points.size() && !below; ++i) {
        if (std::fabs(points[i]->keys_fraction - fraction) <= 1e-12) {
          below = above = points[i];
        } else if (i + 1 < points.size() && points[i]->keys_fraction < fraction &&
                   fraction < points[i + 1]->keys_fraction) {
          below = points[i];
          above = points[i + 1];
          w = (fraction - below->keys_fraction) / (above->keys_fraction - below->keys_fraction);
        }
      }
      if (below) {
        auto lerp = [w](double a, double b) { return a + w * (b - a); };
        e.rho_below = below->rho;
        e.rho_above = above->rho;
        e.accuracy = lerp(below->accuracy.mean, above->accuracy.mean);
        e.delta_logprob = lerp(below->delta_logprob.mean, above->delta_logprob.mean);
        e.kl_question = lerp(below->kl_question.mean, above->kl_question.mean);
        e.kl_answer = lerp(below->kl_answer.mean, above->kl_answer.mean);
        e.top1_answer = lerp(below->top1_answer.mean, above->top1_answer.mean);
      }
      out.push_back(e);
    }
  }
  return out;
}

namespace {

// The long-format table of the summary rows of `groups` (one block of rows per group).
void group_table(std::ostringstream& md, const std::vector<Summary>& summary, const std::vector<std::string>& groups,
                 const char* group_name) {
  md << "| policy | " << group_name
     << " | N | exact match % | Δ answer log-lik | KL question | KL answer | top-1 question % | top-1 answer % | keys |\n"
     << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const std::string& group : groups) {
    for (const Summary& s : summary) {
      if (s.group != group) continue;
      const bool dense = s.policy == "dense";
      md << "| " << config_label(s.policy, s.rho) << " | " << group << " | " << s.runs << " | "
         << with_interval(s.accuracy, 1, 1) << " | " << (dense ? "—" : with_interval(s.delta_logprob, 1, 3, true))
         << " | " << (dense ? "—" : with_interval(s.kl_question, 1, 3)) << " | "
         << (dense ? "—" : with_interval(s.kl_answer, 1, 3)) << " | "
         << (dense ? "—" : with_interval(s.top1_question, 100, 1)) << " | "
         << (dense ? "—" : with_interval(s.top1_answer, 100, 1)) << " | " << fixed(100 * s.keys_fraction, 1)
         << "% |\n";
    }
  }
}

}  // namespace

std::string to_markdown(const EvalResults& results, const std::string& provenance) {
  return to_markdown(results, provenance, summarize(results));
}

std::string to_markdown(const EvalResults& results, const std::string& provenance, const std::vector<Summary>& summary) {
  const EvalConfig& c = results.config;
  auto find = [&summary](const std::string& policy, double rho, const std::string& group) -> const Summary* {
    for (const Summary& s : summary) {
      if (s.policy == policy && s.rho == rho && s.group == group) return &s;
    }
    return nullptr;
  };
  int examples_all = 0;
  for (const Summary& s : summary) {
    if (s.policy == "dense" && s.group == "all") examples_all = s.runs;
  }
  std::ostringstream md;
  md << "# kascade eval\n\n" << provenance << "\n\n";
  const bool copy = std::find(c.tasks.begin(), c.tasks.end(), "copy") != c.tasks.end();
  md << "**Split: " << to_string(c.split) << "** (" << (c.split == Split::Eval ? "evaluation" : "development")
     << " examples" << (copy ? std::string("; the copy task's text from the ") + to_string(c.split) + " half of the corpus" : "")
     << "). "
     << "**N = " << examples_all << " examples** in all (" << c.examples << " per task and length; N of each row "
     << "below), every policy on the same examples as dense, k_min " << c.params.k_min << ", "
     << (c.sparse_prefill ? "sparse prefill: every policy prefills the whole prompt; only the answer rows are "
                            "compared with dense"
                          : "dense prefill: the context is prefilled densely and shared; the question and answer "
                            "rows are decoded through each policy")
     << ".\n\n"
     << "Exact match: greedy answer equal to the expected one (95% bootstrap interval over examples). Δ answer "
        "log-lik: mean over answer tokens of log p(policy) − log p(dense), nats/token. KL: KL(dense ‖ policy) of the "
        "next-token distribution, nats, mean over the question rows and over the answer rows. Top-1: share of rows "
        "whose argmax equals dense's. Intervals in brackets: 95% bootstrap, resampling examples (2000 draws). "
        "keys: keys attended over the scored rows as a share of dense.\n\n";

  md << "## Equal rho (all tasks and lengths, N = " << examples_all << " per row)\n\n";
  group_table(md, summary, {"all"}, "group");

  md << "\n## Equal keys attended (all tasks and lengths)\n\n"
     << "Each policy at common fractions of keys attended, interpolated linearly in keys fraction between its two "
        "rho points that bracket the fraction (—: outside the fractions the policy reached). Point estimates; the "
        "intervals are those of the equal-rho rows. N as in the equal-rho table.\n\n"
     << "| policy | keys | between rho | exact match % | Δ answer log-lik | KL question | KL answer | top-1 answer % |\n"
     << "|---|---:|---|---:|---:|---:|---:|---:|\n";
  std::vector<double> fractions(std::begin(kEqualKeysFractions), std::end(kEqualKeysFractions));
  for (const EqualKeys& e : equal_keys(summary, fractions)) {
    if (e.group != "all") continue;
    md << "| " << e.policy << " | " << fixed(100 * e.keys_fraction, 0) << "% | "
       << (std::isfinite(e.rho_below) ? fixed(e.rho_below, 2) + (e.rho_above != e.rho_below ? "–" + fixed(e.rho_above, 2) : "")
                                      : "—")
       << " | " << point(e.accuracy, 1, 1) << " | " << point(e.delta_logprob, 1, 3, true) << " | "
       << point(e.kl_question, 1, 3) << " | " << point(e.kl_answer, 1, 3) << " | " << point(e.top1_answer, 100, 1)
       << " |\n";
  }

  md << "\n## Exact match (%) per length\n\nN per cell: " << c.examples * static_cast<int>(c.tasks.size())
     << " examples per length (" << c.tasks.size() << " task(s) x " << c.examples << "), " << examples_all
     << " in all.\n\n| policy | all | ";
  for (int length : c.lengths) md << length << " | ";
  md << "\n|---|---:|";
  for (size_t i = 0; i < c.lengths.size(); ++i) md << "---:|";
  md << "\n";
  for (const Summary& s : summary) {
    if (s.group != "all") continue;
    md << "| " << config_label(s.policy, s.rho) << " | " << fixed(s.accuracy.mean, 1) << " | ";
    for (int length : c.lengths) {
      const Summary* l = find(s.policy, s.rho, std::to_string(length));
      md << (l ? fixed(l->accuracy.mean, 1) : "-") << " | ";
    }
    md << "\n";
  }

  std::vector<std::string> lengths, tasks;
  for (int length : c.lengths) lengths.push_back(std::to_string(length));
  md << "\n## Per length\n\n";
  group_table(md, summary, lengths, "length");
  md << "\n## Per task\n\n";
  group_table(md, summary, c.tasks, "task");
  return md.str();
}

namespace {

// The run's configuration as eval.json and the token file store it.
nlohmann::json config_json(const EvalConfig& c) {
  return {{"tasks", c.tasks},
          {"lengths", c.lengths},
          {"policies", c.policies},
          {"rhos", c.rhos},
          {"examples", c.examples},
          {"seed", c.seed},
          {"split", to_string(c.split)},
          {"k_min", c.params.k_min},
          {"tile", c.params.tile},
          {"budget", to_string(c.params.budget)},
          {"prefill", c.sparse_prefill ? "sparse" : "dense"},
          {"backend", c.backend}};
}

}  // namespace

nlohmann::json to_json(const EvalResults& results, const nlohmann::json& provenance) {
  return to_json(results, provenance, summarize(results));
}

nlohmann::json tokens_to_json(const EvalResults& results, const nlohmann::json& provenance) {
  KASCADE_CHECK(results.config.keep_tokens,
                "tokens_to_json: the results kept no token ids (run with EvalConfig::keep_tokens)");
  nlohmann::json examples = nlohmann::json::array();
  for (const ExampleTokens& ex : results.tokens) {
    nlohmann::json runs = nlohmann::json::array();
    for (const ExampleTokens::Run& r : ex.runs) {
      runs.push_back({{"policy", r.policy}, {"rho", r.rho}, {"greedy", r.greedy}, {"answer_logprobs", r.answer_logprobs}});
    }
    examples.push_back({{"task", ex.task},
                        {"length", ex.length},
                        {"index", ex.index},
                        {"context", ex.context},
                        {"query", ex.query},
                        {"answer", ex.answer},
                        {"runs", runs}});
  }
  nlohmann::json j;
  j["format"] = "kascade-eval-tokens";
  j["version"] = 1;
  j["provenance"] = provenance;
  j["model"] = results.model_name;
  j["plan"] = results.plan_name;
  j["config"] = config_json(results.config);
  j["examples"] = examples;
  return j;
}

nlohmann::json to_json(const EvalResults& results, const nlohmann::json& provenance,
                       const std::vector<Summary>& summary) {
  nlohmann::json j;
  j["format"] = "kascade-eval";
  j["version"] = 2;
  j["provenance"] = provenance;
  j["model"] = results.model_name;
  j["plan"] = results.plan_name;
  j["seconds"] = results.seconds;
  j["config"] = config_json(results.config);
  nlohmann::json rows = nlohmann::json::array();
  for (const Summary& s : summary) {
    rows.push_back({{"policy", s.policy},
                    {"rho", s.rho},
                    {"group", s.group},
                    {"examples", s.runs},
                    {"accuracy", interval_json(s.accuracy)},
                    {"answer_logprob", s.answer_logprob},
                    {"delta_logprob", interval_json(s.delta_logprob)},
                    {"kl_question", interval_json(s.kl_question)},
                    {"kl_answer", interval_json(s.kl_answer)},
                    {"top1_question", interval_json(s.top1_question)},
                    {"top1_answer", interval_json(s.top1_answer)},
                    {"keys_fraction", s.keys_fraction}});
  }
  j["summary"] = rows;
  nlohmann::json equal = nlohmann::json::array();
  const std::vector<double> fractions(std::begin(kEqualKeysFractions), std::end(kEqualKeysFractions));
  for (const EqualKeys& e : equal_keys(summary, fractions)) {
    equal.push_back({{"policy", e.policy},
                     {"group", e.group},
                     {"keys_fraction", e.keys_fraction},
                     {"rho_below", number_or_null(e.rho_below)},
                     {"rho_above", number_or_null(e.rho_above)},
                     {"accuracy", number_or_null(e.accuracy)},
                     {"delta_logprob", number_or_null(e.delta_logprob)},
                     {"kl_question", number_or_null(e.kl_question)},
                     {"kl_answer", number_or_null(e.kl_answer)},
                     {"top1_answer", number_or_null(e.top1_answer)}});
  }
  j["equal_keys"] = equal;
  nlohmann::json runs = nlohmann::json::array();
  for (const RunScore& r : results.runs) {
    runs.push_back({{"task", r.task},
                    {"length", r.length},
                    {"index", r.index},
                    {"policy", r.policy},
                    {"rho", r.rho},
                    {"correct", r.correct},
                    {"answer_logprob", r.answer_logprob},
                    {"answer_tokens", r.answer_tokens},
                    {"greedy_text", r.greedy_text},
                    {"keys_fraction", r.keys_fraction},
                    {"question_rows", r.question_rows},
                    {"kl_question", number_or_null(r.kl_question)},
                    {"top1_question", number_or_null(r.top1_question)},
                    {"kl_answer", number_or_null(r.kl_answer)},
                    {"top1_answer", number_or_null(r.top1_answer)},
                    {"delta_logprob", number_or_null(r.delta_logprob)}});
  }
  j["runs"] = runs;
  return j;
}

namespace {

// j[key] as T, or an error naming the field (nlohmann's own messages do not say which one).
template <typename T>
T field(const nlohmann::json& j, const char* key, const char* where) {
  KASCADE_CHECK(j.is_object() && j.contains(key), "eval results: " << where << " has no '" << key << "'");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    KASCADE_FAIL("eval results: " << where << "." << key << " has the wrong type (" << e.what() << ")");
  }
}

// A number that is null where it was not measured (NaN).
double number_field(const nlohmann::json& j, const char* key, const char* where) {
  KASCADE_CHECK(j.is_object() && j.contains(key), "eval results: " << where << " has no '" << key << "'");
  if (j.at(key).is_null()) return kNaN;
  return field<double>(j, key, where);
}

}  // namespace

EvalResults results_from_json(const nlohmann::json& j) {
  KASCADE_CHECK(j.is_object() && j.value("format", "") == "kascade-eval",
                "eval results: not a kascade-eval JSON file (no \"format\": \"kascade-eval\")");
  const int version = field<int>(j, "version", "file");
  KASCADE_CHECK(version == 1 || version == 2,
                "eval results: unsupported version " << version << " (this build reads versions 1 and 2)");
  EvalResults r;
  r.model_name = field<std::string>(j, "model", "file");
  r.plan_name = field<std::string>(j, "plan", "file");
  r.seconds = field<double>(j, "seconds", "file");
  KASCADE_CHECK(j.contains("config"), "eval results: file has no 'config'");
  const nlohmann::json& c = j.at("config");
  r.config.tasks = field<std::vector<std::string>>(c, "tasks", "config");
  r.config.lengths = field<std::vector<int>>(c, "lengths", "config");
  r.config.policies = field<std::vector<std::string>>(c, "policies", "config");
  r.config.rhos = field<std::vector<double>>(c, "rhos", "config");
  r.config.examples = field<int>(c, "examples", "config");
  r.config.seed = field<uint64_t>(c, "seed", "config");
  r.config.split = version >= 2 ? parse_split(field<std::string>(c, "split", "config")) : Split::Eval;
  r.config.params.k_min = field<int>(c, "k_min", "config");
  r.config.params.tile = field<int>(c, "tile", "config");
  r.config.params.budget = parse_budget(field<std::string>(c, "budget", "config"));
  r.config.sparse_prefill = field<std::string>(c, "prefill", "config") == "sparse";
  r.config.backend = c.contains("backend") ? field<std::string>(c, "backend", "config") : "cpu";
  KASCADE_CHECK(j.contains("runs") && j.at("runs").is_array(), "eval results: 'runs' is missing or not an array");
  for (const nlohmann::json& run : j.at("runs")) {
    RunScore s;
    s.task = field<std::string>(run, "task", "run");
    s.length = field<int>(run, "length", "run");
    s.index = field<int>(run, "index", "run");
    s.policy = field<std::string>(run, "policy", "run");
    s.rho = field<double>(run, "rho", "run");
    s.correct = field<bool>(run, "correct", "run");
    s.answer_logprob = field<double>(run, "answer_logprob", "run");
    s.answer_tokens = field<int>(run, "answer_tokens", "run");
    s.greedy_text = field<std::string>(run, "greedy_text", "run");
    s.keys_fraction = field<double>(run, "keys_fraction", "run");
    if (version >= 2) {
      s.question_rows = field<int>(run, "question_rows", "run");
      s.kl_question = number_field(run, "kl_question", "run");
      s.top1_question = number_field(run, "top1_question", "run");
      s.kl_answer = number_field(run, "kl_answer", "run");
      s.top1_answer = number_field(run, "top1_answer", "run");
      s.delta_logprob = number_field(run, "delta_logprob", "run");
    }
    r.runs.push_back(std::move(s));
  }
  if (version == 1) {
    // Version 1 kept no per-row comparison; the answer delta follows from the log-likelihoods.
    std::map<ExampleKey, double> dense;
    for (const RunScore& s : r.runs) {
      if (s.policy == "dense") dense[{s.task, s.length, s.index}] = s.answer_logprob;
    }
    for (RunScore& s : r.runs) {
      auto d = dense.find({s.task, s.length, s.index});
      if (d != dense.end()) s.delta_logprob = s.answer_logprob - d->second;
    }
  }
  return r;
}

EvalResults keep_examples(const EvalResults& results, int examples) {
  KASCADE_CHECK(examples >= 1, "keep_examples: need at least one example, got " << examples);
  EvalResults kept = results;
  kept.config.examples = examples;
  kept.runs.clear();
  for (const RunScore& r : results.runs) {
    if (r.index < examples) kept.runs.push_back(r);
  }
  kept.tokens.clear();
  for (const ExampleTokens& t : results.tokens) {
    if (t.index < examples) kept.tokens.push_back(t);
  }
  return kept;
}

}  // namespace kascade::eval
