// Calibration on the engine: both statistics from dense runs of the statistics prompts, the
// held-out prompts prefilled once and scored for every plan, and the run that ties them
// together (kascade/calibrate/protocol.h).
#include "kascade/calibrate/protocol.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kascade/budget.h"
#include "kascade/calibrate_collect.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/cuda_backend.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"
#include "kascade/eval/scoring.h"

namespace kascade {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int argmax(const std::vector<float>& logits) {
  KASCADE_CHECK(!logits.empty(), "calibration: the model returned no logits");
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

std::string join(const std::vector<std::string>& parts, const char* separator) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : separator) + p;
  return out;
}

}  // namespace

// ---- statistics -------------------------------------------------------------------------------

CollectedStatistics collect_statistics(engine::Backend& backend, const engine::ModelConfig& c,
                                       const std::vector<DevExample>& prompts, const StatisticsConfig& sc,
                                       const StopToken& is_stop, const StepProgress& progress) {
  KASCADE_CHECK(!prompts.empty(), "calibration: no statistics prompts");
  KASCADE_CHECK(sc.generated_rows >= 0, "calibration: generated rows must be >= 0, got " << sc.generated_rows);
  CollectedStatistics out{CalibrationStats(c.layers, c.hkv, sc.spec_k_cal, sc.tile),
                          CalibrationStats(c.layers, c.hkv, sc.paper_k_cal, sc.tile), 0};
  const int64_t needed = std::max(out.spec.first_informative_position(), out.paper.first_informative_position());
  for (const DevExample& ex : prompts) {
    const int64_t n = static_cast<int64_t>(ex.prompt().size());
    KASCADE_CHECK(n > needed, "calibration: prompt '" << ex.name << "' has " << n << " tokens; the statistics need more than "
                                                      << needed << " (tile " << sc.tile << ", k_cal "
                                                      << std::max(sc.spec_k_cal, sc.paper_k_cal) << ")");
    KASCADE_CHECK(c.context <= 0 || n + sc.generated_rows <= c.context,
                  "calibration: prompt '" << ex.name << "' with " << sc.generated_rows << " generated tokens has "
                                          << n + sc.generated_rows << " tokens, beyond the model's context of "
                                          << c.context);
  }
  const int d = c.head_dim;
  const size_t kv_width = static_cast<size_t>(c.hkv) * d;
  std::vector<std::vector<float>> keys(static_cast<size_t>(c.layers));  // per layer [positions][Hkv * D]
  std::vector<float> q_heads, k_heads;                                  // [Hq, n, D], [Hkv, n, D]
  bool in_prefill = false;
  int64_t prompt_tokens = 0;
  backend.set_query_key_hook([&](int layer, int first, int tokens, const float* q, const float* k) {
    std::vector<float>& layer_keys = keys[static_cast<size_t>(layer)];
    if (in_prefill) {
      // The whole prompt in one step: the tiles of every layer, both statistics.
      KASCADE_CHECK(first == 0 && tokens == prompt_tokens,
                    "calibration: the prompt reached layer " << layer << " as tokens " << first << ".."
                                                             << first + tokens - 1 << " of " << prompt_tokens
                                                             << " (its prefill must be one forward step)");
      const size_t n = static_cast<size_t>(tokens);
      layer_keys.assign(k, k + n * kv_width);
      q_heads.resize(static_cast<size_t>(c.hq) * n * d);
      k_heads.resize(static_cast<size_t>(c.hkv) * n * d);
      for (size_t t = 0; t < n; ++t) {
        for (int h = 0; h < c.hq; ++h) std::copy_n(q + (t * c.hq + h) * d, d, q_heads.data() + (h * n + t) * d);
        for (int g = 0; g < c.hkv; ++g) std::copy_n(k + (t * c.hkv + g) * d, d, k_heads.data() + (g * n + t) * d);
      }
      PooledMasses pooled = pooled_masses(q_heads.data(), k_heads.data(),
                                          {c.hq, c.hkv, tokens, d, NAN, Pooling::Group}, sc.tile);
      const TensorView mass =
          TensorView::contiguous(pooled.mass.data(), DType::F32, {pooled.sets, pooled.tiles, pooled.n});
      const TensorView diagonal = TensorView::contiguous(pooled.diagonal.data(), DType::F32, {pooled.sets, pooled.tiles});
      out.spec.add_layer(layer, mass, diagonal);
      out.paper.add_layer(layer, mass, diagonal);
      return;
    }
    // A decode row of the generated answer: its key joins the layer's keys, then its query is pooled.
    KASCADE_CHECK(tokens == 1 && static_cast<size_t>(first) * kv_width == layer_keys.size(),
                  "calibration: decode step at " << first << " with " << tokens << " tokens does not follow the "
                                                 << layer_keys.size() / kv_width << " cached keys of layer " << layer);
    layer_keys.insert(layer_keys.end(), k, k + kv_width);
    add_decode_row_attention(out.paper, layer, q, layer_keys.data(), {c.hq, c.hkv, first + 1, d, NAN, Pooling::Group});
  });
  backend.set_attention_hook([&](int layer, int tokens, int dim, const float* residual, const float* attn_out) {
    if (!in_prefill) return;  // w comes from the prompts, as SPEC 6 has it
    out.spec.add_importance(layer, residual, attn_out, tokens, dim);
    out.paper.add_importance(layer, residual, attn_out, tokens, dim);
  });
  auto unhook = [&backend]() {
    backend.set_query_key_hook(nullptr);
    backend.set_attention_hook(nullptr);
  };
  try {
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::vector<int32_t> ids = prompts[i].prompt();
      prompt_tokens = static_cast<int64_t>(ids.size());
      backend.reset();
      out.spec.begin_prompt(num_tiles(0, prompt_tokens, sc.tile), prompt_tokens);
      out.paper.begin_prompt(num_tiles(0, prompt_tokens, sc.tile), prompt_tokens);
      in_prefill = true;
      std::vector<float> logits = backend.forward(ids, /*all_logits=*/false);
      in_prefill = false;
      // The dense model's own greedy answer, each token fed back as a decode row.
      for (int r = 0; r < sc.generated_rows; ++r) {
        const int32_t token = argmax(logits);
        if (is_stop && is_stop(token)) break;
        logits = backend.forward({token}, /*all_logits=*/false);
        ++out.generated_rows;
      }
      out.spec.end_prompt();
      out.paper.end_prompt();
      if (progress) progress(static_cast<int>(i) + 1, static_cast<int>(prompts.size()));
    }
  } catch (...) {
    unhook();
    throw;
  }
  unhook();
  return out;
}

// ---- held-out scoring -------------------------------------------------------------------------

struct HeldOutScorer::Prompt {
  DevExample example;
  std::unique_ptr<engine::Backend> backend;  // the context in its cache
  std::vector<float> dense;                  // [rows][vocab] dense logits of the rows
};

HeldOutScorer::HeldOutScorer(const engine::Model& model, std::vector<DevExample> examples, const HeldOutConfig& config,
                             const StepProgress& progress)
    : model_(model), config_(config) {
  KASCADE_CHECK(!examples.empty(), "calibration: no held-out prompts");
  const engine::ModelConfig& c = model.config;
  for (const DevExample& ex : examples) {
    KASCADE_CHECK(!ex.context.empty() && !ex.rows.empty() && ex.rows.size() == ex.targets.size() &&
                      ex.first_answer_row >= 0 && ex.first_answer_row < static_cast<int>(ex.rows.size()),
                  "calibration: held-out prompt '" << ex.name << "' has a malformed layout (" << ex.context.size()
                                                   << " context tokens, " << ex.rows.size() << " rows, "
                                                   << ex.targets.size() << " targets, answer from row "
                                                   << ex.first_answer_row << ")");
    const size_t total = ex.context.size() + ex.rows.size();
    KASCADE_CHECK(c.context <= 0 || total <= static_cast<size_t>(c.context),
                  "calibration: held-out prompt '" << ex.name << "' has " << total
                                                   << " tokens, beyond the model's context of " << c.context);
  }
  engine::check_backend_available(config.backend);
  engine::check_backend_supports(config.backend, c);
#if defined(KASCADE_HAVE_CUDA)
  if (config.backend == "cuda") cuda_weights_ = engine::upload_cuda_weights(model);
#endif
  std::vector<PromptLoss> dense_losses;
  for (size_t i = 0; i < examples.size(); ++i) {
    auto p = std::make_unique<Prompt>();
    p->example = std::move(examples[i]);
    p->backend = make_prompt_backend(static_cast<int>(p->example.context.size() + p->example.rows.size()));
    p->backend->forward(p->example.context, /*all_logits=*/false);
    eval::PolicySpec dense_spec;
    dense_spec.params = config.params;
    eval::RowLogits dense = eval::score_rows_as_decode(*p->backend, dense_spec, p->example.rows, c, config.threads);
    p->dense = std::move(dense.logits);
    const eval::RowMetrics m = eval::compare_rows(p->dense.data(), p->dense.data(), static_cast<int>(p->example.rows.size()),
                                                  c.vocab, p->example.targets);
    double answer = 0;
    for (size_t r = static_cast<size_t>(p->example.first_answer_row); r < m.logprob.size(); ++r) answer -= m.logprob[r];
    dense_losses.push_back({to_string(p->example.kind), 0.0,
                            answer / static_cast<double>(m.logprob.size() - p->example.first_answer_row)});
    prompts_.push_back(std::move(p));
    if (progress) progress(static_cast<int>(i) + 1, static_cast<int>(examples.size()));
  }
  dense_loss_ = aggregate_losses(dense_losses);
}

HeldOutScorer::~HeldOutScorer() = default;

std::unique_ptr<engine::Backend> HeldOutScorer::make_prompt_backend(int tokens) const {
  engine::BackendOptions options;
  options.threads = config_.threads;
  options.cpu_kv_cache = config_.cpu_kv_cache;
#if defined(KASCADE_HAVE_CUDA)
  if (cuda_weights_) {
    engine::CudaOptions cuda;
    cuda.reserve_tokens = tokens;  // the context and the rows: the cache never grows while scoring
    return engine::make_cuda_backend(cuda_weights_, nullptr, options, cuda);
  }
#endif
  (void)tokens;
  return engine::make_backend(config_.backend, model_, nullptr, options);
}

int64_t HeldOutScorer::rows() const {
  int64_t total = 0;
  for (const auto& p : prompts_) total += static_cast<int64_t>(p->example.rows.size());
  return total;
}

Plan HeldOutScorer::make_plan(const std::vector<int>& anchors, const HeadMap& map, Pooling pooling) const {
  const engine::ModelConfig& c = model_.config;
  Plan plan = make_uniform_plan(c.name.empty() ? "model" : c.name, c.layers, c.hq, c.hkv, c.head_dim, anchors);
  if (pooling == Pooling::Group) plan.head_map = map;
  plan.sparsity = config_.params;
  plan.sparsity.pooling = pooling;
  plan.sparsity.scale = NAN;
  validate_plan(plan, "calibration candidate");
  return plan;
}

CandidateLoss HeldOutScorer::score(const std::vector<int>& anchors, const HeadMap& map, Pooling pooling) {
  const Plan plan = make_plan(anchors, map, pooling);
  eval::PolicySpec spec;
  spec.name = pooling == Pooling::All ? "kascade-pooled" : "kascade";
  spec.params = plan.sparsity;
  spec.plan = &plan;
  const engine::ModelConfig& c = model_.config;
  std::vector<PromptLoss> losses;
  for (const auto& p : prompts_) {
    const DevExample& ex = p->example;
    const eval::RowLogits rows = eval::score_rows_as_decode(*p->backend, spec, ex.rows, c, config_.threads);
    const eval::RowMetrics m =
        eval::compare_rows(p->dense.data(), rows.logits.data(), static_cast<int>(ex.rows.size()), c.vocab, ex.targets);
    double kl = 0, answer = 0;
    for (double v : m.kl) kl += v;
    for (size_t r = static_cast<size_t>(ex.first_answer_row); r < m.logprob.size(); ++r) answer -= m.logprob[r];
    losses.push_back({to_string(ex.kind), kl / static_cast<double>(m.kl.size()),
                      answer / static_cast<double>(m.logprob.size() - ex.first_answer_row)});
  }
  return aggregate_losses(losses);
}

// ---- the run ----------------------------------------------------------------------------------

PlanSelection plan_selection(const ChoiceResult& choice, Statistic statistic) {
  PlanSelection s;
  s.statistic = to_string(statistic);
  for (const Evaluation& e : choice.evaluations) {
    s.evaluated.push_back(PlanEvaluation{e.anchors, e.pooling, to_string(e.stage), join(e.sources, "; "), e.loss.kl,
                                         e.loss.answer_loss});
  }
  s.search_path = choice.search_path;
  s.chosen = choice.chosen;
  return s;
}

CalibrationRun run_calibration(const engine::Model& model, const DevMix& mix, const CalibrationRunConfig& config,
                               const StopToken& is_stop, const CalibrationTarget& target,
                               const PlanProvenance& provenance, const RunProgress& progress) {
  const engine::ModelConfig& c = model.config;
  KASCADE_CHECK(1 <= config.m_lo && config.m_lo <= config.m_hi && config.m_hi <= c.layers,
                "calibration: anchor counts " << config.m_lo << ".." << config.m_hi << " must be within 1.." << c.layers
                                              << " (the model's layers)");
  KASCADE_CHECK(config.statistics.tile == config.params.tile, "calibration: the statistics' tile "
                                                                  << config.statistics.tile
                                                                  << " differs from the plan's tile " << config.params.tile);
  KASCADE_CHECK(target.layers == c.layers && target.hq == c.hq && target.hkv == c.hkv && target.head_dim == c.head_dim,
                "calibration: the plan's target shape differs from the model's");
  CalibrationRun run;
  run.dev_set = mix.description;
  run.config = config;
  for (const DevExample& ex : mix.statistics) run.statistics_prompts.push_back(ex.name);
  for (const DevExample& ex : mix.held_out) run.held_out_prompts.push_back(ex.name);

  // 1. Statistics: one backend whose prefill step holds the longest prompt.
  auto start = std::chrono::steady_clock::now();
  std::vector<StatisticProposal> proposals;
  CollectedStatistics stats = [&]() {
    size_t longest = 0;
    for (const DevExample& ex : mix.statistics) longest = std::max(longest, ex.prompt().size());
    engine::BackendOptions options;
    options.threads = config.threads;
    options.cpu_kv_cache = config.cpu_kv_cache;
    options.prefill_chunk = static_cast<int>(longest);
    auto backend = engine::make_backend(config.backend, model, nullptr, options);
    return collect_statistics(*backend, c, mix.statistics, config.statistics, is_stop, [&](int done, int total) {
      if (progress) progress("statistics", done, total, mix.statistics[static_cast<size_t>(done - 1)].name);
    });
  }();
  run.paper_generated_rows = stats.generated_rows;
  for (auto [statistic, s] : {std::pair<Statistic, const CalibrationStats*>{Statistic::Spec, &stats.spec},
                              std::pair<Statistic, const CalibrationStats*>{Statistic::Paper, &stats.paper}}) {
    StatisticProposal p;
    p.statistic = statistic;
    p.coverage = s->coverage();
    p.scores = layer_scores(p.coverage, s->importance());
    proposals.push_back(std::move(p));
  }
  run.candidates = make_candidates(proposals, config.m_lo, config.m_hi);
  run.seconds_statistics = seconds_since(start);

  // 2. The held-out prompts, prefilled once, their dense rows cached.
  start = std::chrono::steady_clock::now();
  HeldOutConfig held_config;
  held_config.backend = config.backend;
  held_config.threads = config.threads;
  held_config.cpu_kv_cache = config.cpu_kv_cache;
  held_config.params = config.params;
  HeldOutScorer scorer(model, mix.held_out, held_config, [&](int done, int total) {
    if (progress) progress("held-out", done, total, mix.held_out[static_cast<size_t>(done - 1)].name);
  });
  run.dense = scorer.dense_loss();
  run.held_out_rows = scorer.rows();
  run.seconds_held_out = seconds_since(start);

  // 3. The choice.
  start = std::chrono::steady_clock::now();
  // Every candidate head-aware, then its anchors pooled (candidates with the same anchors share one).
  std::set<std::vector<int>> anchor_sets;
  for (const CandidatePlan& cp : run.candidates) anchor_sets.insert(cp.anchors);
  const int candidates = static_cast<int>(run.candidates.size() + anchor_sets.size());
  int candidate_evaluations = 0;
  const PlanScorer score = [&scorer](const std::vector<int>& anchors, const HeadMap& map, Pooling pooling) {
    return scorer.score(anchors, map, pooling);
  };
  run.choice = choose_plan(run.candidates, proposals, score, config.choice, [&](int scored, const Evaluation& e) {
    if (!progress) return;
    std::ostringstream detail;
    detail << "anchors";
    for (int a : e.anchors) detail << " " << a;
    detail << (e.pooling == Pooling::All ? " pooled" : "") << ": kl " << e.loss.kl;
    if (e.stage == Stage::Candidate) {
      candidate_evaluations = scored;
      progress("candidates", scored, candidates, detail.str());
    } else if (e.stage == Stage::Search) {
      const int searches = config.choice.search_every_count ? config.m_hi - config.m_lo + 1 : 1;
      progress("search", scored - candidate_evaluations, searches * config.choice.max_search_evaluations, detail.str());
    }
    else progress("pooling", 1, 1, detail.str());
  });
  run.seconds_choice = seconds_since(start);

  // 4. The plan, with the proposing statistic's calibration data and the choice.
  const int m = static_cast<int>(run.choice.evaluations[static_cast<size_t>(run.choice.chosen)].anchors.size());
  run.spec = make_report(stats.spec, config.m_lo, config.m_hi, m);
  run.paper = make_report(stats.paper, config.m_lo, config.m_hi, m);
  run.spec.dev_set = run.paper.dev_set = mix.description;
  run.held_out_description = std::to_string(run.held_out_prompts.size()) + " held-out prompts, " +
                             std::to_string(run.held_out_rows) + " rows; " + mix.description;
  run.plan = evaluation_plan(run, run.choice.chosen, target, provenance);
  return run;
}

Plan evaluation_plan(const CalibrationRun& run, int index, const CalibrationTarget& target,
                     const PlanProvenance& provenance) {
  KASCADE_CHECK(index >= 0 && index < static_cast<int>(run.choice.evaluations.size()),
                "calibration: no evaluation " << index << " (the run scored " << run.choice.evaluations.size() << ")");
  const Evaluation& e = run.choice.evaluations[static_cast<size_t>(index)];
  const CalibrationReport& proposer = e.statistic == Statistic::Spec ? run.spec : run.paper;
  const int layers = target.layers;
  Plan plan = make_uniform_plan(target.name, layers, target.hq, target.hkv, target.head_dim, e.anchors);
  if (e.pooling == Pooling::Group) plan.head_map = e.head_map;
  plan.sparsity = run.config.params;
  plan.sparsity.pooling = e.pooling;
  plan.sparsity.scale = NAN;
  plan.provenance = provenance;
  PlanCalibration cal;
  cal.k_cal = proposer.k_cal;
  cal.importance = proposer.importance;
  cal.layer_scores.assign(static_cast<size_t>(layers), std::vector<double>(static_cast<size_t>(layers), 0.0));
  for (int l1 = 0; l1 < layers; ++l1)
    for (int l2 = l1; l2 < layers; ++l2)
      cal.layer_scores[static_cast<size_t>(l1)][static_cast<size_t>(l2)] = proposer.scores.at(l1, l2);
  cal.objective = anchor_score(proposer.scores, e.anchors);
  for (const AnchorChoice& choice : proposer.choices) cal.candidates.push_back({choice.anchors, choice.score});
  ChoiceResult choice = run.choice;
  choice.chosen = index;
  cal.selection = plan_selection(choice, e.statistic);
  cal.selection->held_out = run.held_out_description;
  plan.calibration = std::move(cal);
  validate_plan(plan, "calibration");
  return plan;
}

// ---- the report -------------------------------------------------------------------------------

namespace {

nlohmann::json loss_json(const CandidateLoss& loss) {
  nlohmann::json kinds = nlohmann::json::array();
  for (const KindLoss& k : loss.kinds) {
    kinds.push_back({{"kind", k.kind}, {"prompts", k.prompts}, {"kl", k.kl}, {"answer_loss", k.answer_loss}});
  }
  return {{"kl", loss.kl}, {"answer_loss", loss.answer_loss}, {"kinds", std::move(kinds)}};
}

// A statistic's report without the keys of a stand-alone report, its DP set at the chosen m
// named for what it is.
nlohmann::json statistic_json(const CalibrationReport& report) {
  nlohmann::json j = report_to_json(report);
  j.erase("format");
  j.erase("version");
  j.erase("dev_set");
  j["dp_at_chosen_m"] = j["chosen"];
  j.erase("chosen");
  return j;
}

}  // namespace

nlohmann::json run_report_json(const CalibrationRun& run) {
  const Plan& plan = run.plan;
  const CalibrationRunConfig& cfg = run.config;
  nlohmann::json evaluations = nlohmann::json::array();
  for (size_t i = 0; i < run.choice.evaluations.size(); ++i) {
    const Evaluation& e = run.choice.evaluations[i];
    nlohmann::json j = loss_json(e.loss);
    j["index"] = i;
    j["m"] = e.anchors.size();
    j["anchors"] = e.anchors;
    j["pooling"] = to_string(e.pooling);
    j["statistic"] = to_string(e.statistic);
    j["sources"] = e.sources;
    j["stage"] = to_string(e.stage);
    j["accepted"] = e.accepted;
    j["head_map"] = e.head_map;
    evaluations.push_back(std::move(j));
  }
  nlohmann::json best_per_m = nlohmann::json::array();
  const std::vector<int> best = best_evaluation_per_anchor_count(run.choice);
  for (size_t m = 0; m < best.size(); ++m) {
    if (best[m] < 0) continue;
    const Evaluation& e = run.choice.evaluations[static_cast<size_t>(best[m])];
    best_per_m.push_back({{"m", m}, {"index", best[m]}, {"anchors", e.anchors}, {"pooling", to_string(e.pooling)},
                          {"kl", e.loss.kl}, {"answer_loss", e.loss.answer_loss}});
  }
  nlohmann::json searches = nlohmann::json::array();
  for (const CountSearch& search : run.choice.searches)
    searches.push_back({{"m", search.m}, {"path", search.path}, {"evaluations", search.evaluations},
                        {"final", search.final_plan}});
  nlohmann::json paper = statistic_json(run.paper);
  paper["decode_rows"]["generated"] = run.paper_generated_rows;
  nlohmann::json report{
      {"format", "kascade-calibration-report"},
      {"version", 2},
      {"model", {{"name", plan.model_name}, {"layers", plan.layers}, {"hq", plan.hq}, {"hkv", plan.hkv},
                 {"head_dim", plan.head_dim}}},
      {"settings",
       {{"backend", cfg.backend},
        {"anchors", {cfg.m_lo, cfg.m_hi}},
        {"rho", cfg.params.rho},
        {"k_min", cfg.params.k_min},
        {"k_multiple", cfg.params.k_multiple},
        {"tile", cfg.params.tile},
        {"budget", to_string(cfg.params.budget)},
        {"spec_k_cal", cfg.statistics.spec_k_cal},
        {"paper_k_cal", cfg.statistics.paper_k_cal},
        {"generated_rows", cfg.statistics.generated_rows},
        {"max_search_evaluations", cfg.choice.max_search_evaluations},
        {"max_move", cfg.choice.max_move},
        {"search_every_count", cfg.choice.search_every_count}}},
      {"dev_set",
       {{"description", run.dev_set},
        {"statistics_prompts", run.statistics_prompts},
        {"held_out_prompts", run.held_out_prompts},
        {"held_out_rows", run.held_out_rows}}},
      {"statistics", {{"spec", statistic_json(run.spec)}, {"paper", std::move(paper)}}},
      {"dense", loss_json(run.dense)},
      {"evaluations", std::move(evaluations)},
      {"best_candidate", run.choice.best_candidate},
      {"best_per_anchor_count", best_per_m},
      {"search_path", run.choice.search_path},
      {"search_evaluations", run.choice.search_evaluations},
      {"searches", searches},
      {"chosen", run.choice.chosen},
      {"plan", {{"anchors", plan.anchors}, {"pooling", to_string(plan.sparsity.pooling)}, {"head_map", plan.head_map}}},
      {"seconds", {{"statistics", run.seconds_statistics}, {"held_out", run.seconds_held_out}, {"choice", run.seconds_choice}}},
  };
  return report;
}

}  // namespace kascade
