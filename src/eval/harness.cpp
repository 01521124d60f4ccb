// The pieces of the accuracy study that do not drive the model: rows attended as decode
// steps, answer scoring, summaries and their markdown/JSON reports (kascade/eval/harness.h).
#include "kascade/eval/harness.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <iomanip>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <tuple>

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
    total += static_cast<double>(row[answer[j]]) - row[best] - std::log(sum);
    s.greedy.push_back(best);
  }
  s.mean_logprob = total / static_cast<double>(answer.size());
  s.correct = s.greedy == answer;
  return s;
}

namespace {

using ExampleKey = std::tuple<std::string, int, int>;  // task, length, index

struct Accumulator {
  int runs = 0, correct = 0, paired = 0;
  double logprob = 0, delta = 0, keys = 0;
};

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

std::string config_label(const Summary& s) { return s.policy == "dense" ? "dense" : s.policy + " @ " + fixed(s.rho, 2); }

}  // namespace

std::vector<Summary> summarize(const EvalResults& results) {
  std::map<ExampleKey, double> dense_logprob;
  for (const RunScore& r : results.runs) {
    if (r.policy == "dense") dense_logprob[{r.task, r.length, r.index}] = r.answer_logprob;
  }
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
      Accumulator a;
      for (const RunScore& r : results.runs) {
        if (r.policy != policy || r.rho != rho) continue;
        if (group != "all" && group != std::to_string(r.length) && group != r.task) continue;
        ++a.runs;
        a.correct += r.correct ? 1 : 0;
        a.logprob += r.answer_logprob;
        a.keys += r.keys_fraction;
        auto d = dense_logprob.find({r.task, r.length, r.index});
        if (d != dense_logprob.end()) {
          a.delta += r.answer_logprob - d->second;
          ++a.paired;
        }
      }
      if (a.runs == 0) continue;
      Summary s;
      s.policy = policy;
      s.rho = rho;
      s.group = group;
      s.runs = a.runs;
      s.accuracy = 100.0 * a.correct / a.runs;
      s.answer_logprob = a.logprob / a.runs;
      s.delta_logprob = a.paired > 0 ? a.delta / a.paired : 0;
      s.keys_fraction = a.keys / a.runs;
      out.push_back(s);
    }
  }
  return out;
}

std::string to_markdown(const EvalResults& results, const std::string& provenance) {
  const std::vector<Summary> summary = summarize(results);
  auto find = [&summary](const std::string& policy, double rho, const std::string& group) -> const Summary* {
    for (const Summary& s : summary) {
      if (s.policy == policy && s.rho == rho && s.group == group) return &s;
    }
    return nullptr;
  };
  std::ostringstream md;
  md << "# kascade eval\n\n" << provenance << "\n\n";
  md << "Exact match (%) of the greedy answer, mean answer log-likelihood (nats/token) and its change "
        "against dense on the same examples, and the fraction of keys attended"
     << (results.config.sparse_prefill ? " over the prompt and the answer (every policy prefills the whole prompt)"
                                       : " over the query and answer tokens (the context is prefilled densely and shared)")
     << ". " << results.config.examples << " example(s) per task and length, k_min " << results.config.params.k_min
     << ".\n\n";
  md << "| policy | all | ";
  for (int length : results.config.lengths) md << length << " | ";
  md << "log-lik | Δ vs dense | keys |\n|---|---:|";
  for (size_t i = 0; i < results.config.lengths.size(); ++i) md << "---:|";
  md << "---:|---:|---:|\n";
  for (const Summary& s : summary) {
    if (s.group != "all") continue;
    md << "| " << config_label(s) << " | " << fixed(s.accuracy, 1) << " | ";
    for (int length : results.config.lengths) {
      const Summary* l = find(s.policy, s.rho, std::to_string(length));
      md << (l ? fixed(l->accuracy, 1) : "-") << " | ";
    }
    md << fixed(s.answer_logprob, 3) << " | " << (s.policy == "dense" ? "" : (s.delta_logprob >= 0 ? "+" : ""))
       << (s.policy == "dense" ? "—" : fixed(s.delta_logprob, 3)) << " | " << fixed(100 * s.keys_fraction, 1)
       << "% |\n";
  }
  md << "\nPer task: exact match (%) / Δ log-likelihood vs dense (nats/token).\n\n| policy | ";
  for (const std::string& task : results.config.tasks) md << task << " | ";
  md << "\n|---|";
  for (size_t i = 0; i < results.config.tasks.size(); ++i) md << "---:|";
  md << "\n";
  for (const Summary& s : summary) {
    if (s.group != "all") continue;
    md << "| " << config_label(s) << " | ";
    for (const std::string& task : results.config.tasks) {
      const Summary* t = find(s.policy, s.rho, task);
      if (!t) {
        md << "- | ";
        continue;
      }
      md << fixed(t->accuracy, 0) << " / " << (t->delta_logprob >= 0 ? "+" : "") << fixed(t->delta_logprob, 3)
         << " | ";
    }
    md << "\n";
  }
  return md.str();
}

nlohmann::json to_json(const EvalResults& results, const nlohmann::json& provenance) {
  nlohmann::json j;
  j["format"] = "kascade-eval";
  j["version"] = 1;
  j["provenance"] = provenance;
  j["model"] = results.model_name;
  j["plan"] = results.plan_name;
  j["seconds"] = results.seconds;
  const EvalConfig& c = results.config;
  j["config"] = {{"tasks", c.tasks},
                 {"lengths", c.lengths},
                 {"policies", c.policies},
                 {"rhos", c.rhos},
                 {"examples", c.examples},
                 {"seed", c.seed},
                 {"k_min", c.params.k_min},
                 {"tile", c.params.tile},
                 {"budget", to_string(c.params.budget)},
                 {"prefill", c.sparse_prefill ? "sparse" : "dense"},
                 {"backend", c.backend}};
  nlohmann::json summary = nlohmann::json::array();
  for (const Summary& s : summarize(results)) {
    summary.push_back({{"policy", s.policy},
                       {"rho", s.rho},
                       {"group", s.group},
                       {"runs", s.runs},
                       {"accuracy", s.accuracy},
                       {"answer_logprob", s.answer_logprob},
                       {"delta_logprob", s.delta_logprob},
                       {"keys_fraction", s.keys_fraction}});
  }
  j["summary"] = summary;
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
                    {"keys_fraction", r.keys_fraction}});
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

}  // namespace

EvalResults results_from_json(const nlohmann::json& j) {
  KASCADE_CHECK(j.is_object() && j.value("format", "") == "kascade-eval",
                "eval results: not a kascade-eval JSON file (no \"format\": \"kascade-eval\")");
  KASCADE_CHECK(field<int>(j, "version", "file") == 1, "eval results: unsupported version " << j.at("version"));
  EvalResults r;
  r.model_name = field<std::string>(j, "model", "file");
  r.plan_name = field<std::string>(j, "plan", "file");
  r.seconds = field<double>(j, "seconds", "file");
  const nlohmann::json& c = j.at("config");
  r.config.tasks = field<std::vector<std::string>>(c, "tasks", "config");
  r.config.lengths = field<std::vector<int>>(c, "lengths", "config");
  r.config.policies = field<std::vector<std::string>>(c, "policies", "config");
  r.config.rhos = field<std::vector<double>>(c, "rhos", "config");
  r.config.examples = field<int>(c, "examples", "config");
  r.config.seed = field<uint64_t>(c, "seed", "config");
  r.config.params.k_min = field<int>(c, "k_min", "config");
  r.config.params.tile = field<int>(c, "tile", "config");
  r.config.params.budget = parse_budget(field<std::string>(c, "budget", "config"));
  r.config.sparse_prefill = field<std::string>(c, "prefill", "config") == "sparse";
  r.config.backend = c.contains("backend") ? field<std::string>(c, "backend", "config") : "cpu";
  const nlohmann::json& runs = j.at("runs");
  KASCADE_CHECK(runs.is_array(), "eval results: 'runs' is not an array");
  for (const nlohmann::json& run : runs) {
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
    r.runs.push_back(std::move(s));
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
  return kept;
}

}  // namespace kascade::eval
