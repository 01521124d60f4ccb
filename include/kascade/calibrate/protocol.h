// kascade/calibrate/protocol.h — calibration on the engine (issue 14): statistics from dense runs
// of the statistics half of the development set propose plans, the held-out half's next-token KL
// against dense chooses among them (calibrate/choice.h), and the result is a plan and a report.
//
//   kascade::DevMix mix = kascade::make_dev_mix(dev_config, task_tokenizer, dev_documents);
//   kascade::CalibrationRunConfig cfg;             // cpu, anchors 3..8, rho 0.1, spec k_cal 64, paper 32
//   kascade::CalibrationRun run = kascade::run_calibration(model, mix, cfg, is_stop, target, provenance,
//                                                          on_progress);
//   kascade::save_plan("plan.json", run.plan);
//   nlohmann::json report = kascade::run_report_json(run);
//
// The steps, each usable alone:
//   collect_statistics  one dense prefill of every statistics prompt (context and question, in
//                       one forward step) feeds both statistics: `spec` (prefill tiles, k_cal 64)
//                       and `paper` (the same tiles at k_cal 32, plus the decode rows of an answer
//                       the dense model generates greedily after the prompt, up to
//                       generated_rows tokens or a stop token); both get the layer importance w.
//   HeldOutScorer       one backend per held-out prompt, its context prefilled densely once, the
//                       dense logits of its rows cached; score() runs the rows as decode rows of
//                       the plan's policy (eval/scoring.h: "kascade" for head-aware plans,
//                       "kascade-pooled" for all-heads pooling) and compares them with dense:
//                       per prompt the mean KL over its rows and the mean -log p of its answer
//                       rows, per kind the mean over its prompts, overall the mean over kinds.
//   run_calibration     both of the above, make_candidates, choose_plan, the plan.
// Every model run goes through the engine's Backend ("cpu" or "cuda"), so the GPU backend runs
// the same protocol.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kascade/calibrate.h"
#include "kascade/calibrate/choice.h"
#include "kascade/calibrate/dev_mix.h"
#include "kascade/plan.h"
#include "kascade/tensor.h"

namespace kascade::engine {
class Backend;
struct CudaWeights;
struct Model;
struct ModelConfig;
}  // namespace kascade::engine

namespace kascade {

struct StatisticsConfig {
  int spec_k_cal = 64;       // SPEC 6 `spec`
  int paper_k_cal = 32;      // SPEC 6 `paper`
  int tile = kDefaultTile;   // prefill tile of both (= the plan's tile)
  int generated_rows = 16;   // `paper`: answer tokens generated greedily after each prompt
};

// Token ids at which greedy generation stops (the model's end-of-turn / end-of-text tokens).
using StopToken = std::function<bool(int32_t)>;
// (done, total) after each prompt.
using StepProgress = std::function<void(int done, int total)>;

struct CollectedStatistics {
  CalibrationStats spec;
  CalibrationStats paper;
  int64_t generated_rows = 0;  // decode rows fed after the prompts, summed over prompts
};

// Runs every prompt's prompt() densely through `backend` (its prefill chunk must hold the
// longest prompt: one forward step per prompt) with the query/key and attention hooks, then
// generates the answer. Leaves the backend's hooks unset. Throws when a prompt is not longer
// than the statistics' first informative position (spec k_cal), or on a backend without hooks.
CollectedStatistics collect_statistics(engine::Backend& backend, const engine::ModelConfig& config,
                                       const std::vector<DevExample>& prompts, const StatisticsConfig& statistics,
                                       const StopToken& is_stop, const StepProgress& progress = nullptr);

struct HeldOutConfig {
  std::string backend = "cpu";  // engine::make_backend kind
  int threads = 0;              // engine and policy threads (0: all)
  DType cpu_kv_cache = DType::F16;  // the cpu backend's KV cache (engine::BackendOptions)
  SparsityParams params;        // the plans' budget: rho, k_min, k_multiple, tile, budget
};

// The held-out half, prefilled once; scores plans by their decode rows against dense. Each
// prompt has a backend of its own (its cache holds the context); on the GPU they share one copy
// of the weights.
class HeldOutScorer {
 public:
  HeldOutScorer(const engine::Model& model, std::vector<DevExample> examples, const HeldOutConfig& config,
                const StepProgress& progress = nullptr);
  ~HeldOutScorer();
  HeldOutScorer(const HeldOutScorer&) = delete;
  HeldOutScorer& operator=(const HeldOutScorer&) = delete;

  // The loss of the plan with these anchors and head map (ignored with Pooling::All).
  CandidateLoss score(const std::vector<int>& anchors, const HeadMap& map, Pooling pooling);
  // The plan score() runs (model shape, anchors, map, the config's params with `pooling`).
  Plan make_plan(const std::vector<int>& anchors, const HeadMap& map, Pooling pooling) const;
  // The dense model's answer loss on the same rows (KL 0), per kind and overall.
  const CandidateLoss& dense_loss() const { return dense_loss_; }
  size_t prompts() const { return prompts_.size(); }
  int64_t rows() const;

 private:
  struct Prompt;
  std::unique_ptr<engine::Backend> make_prompt_backend(int tokens) const;
  const engine::Model& model_;
  HeldOutConfig config_;
  std::shared_ptr<const engine::CudaWeights> cuda_weights_;  // "cuda": shared by every prompt's backend
  std::vector<std::unique_ptr<Prompt>> prompts_;
  CandidateLoss dense_loss_;
};

struct CalibrationRunConfig {
  std::string backend = "cpu";
  int threads = 0;
  DType cpu_kv_cache = DType::F16;  // the cpu backend's KV cache (engine::BackendOptions)
  int m_lo = 3, m_hi = 8;      // anchor counts of the candidates
  SparsityParams params;       // the plan's budget; its pooling is chosen by loss
  StatisticsConfig statistics;
  ChoiceConfig choice;
};

// Stage names: "statistics", "held-out", "candidates", "search", "pooling".
using RunProgress = std::function<void(const std::string& stage, int done, int total, const std::string& detail)>;

struct CalibrationRun {
  std::string dev_set;                  // DevMix::description
  std::vector<std::string> statistics_prompts, held_out_prompts;  // DevExample::name
  CalibrationRunConfig config;
  CalibrationReport spec, paper;        // each statistic's S, w, C and DP per m
  int64_t paper_generated_rows = 0;
  std::vector<CandidatePlan> candidates;
  ChoiceResult choice;
  CandidateLoss dense;                  // the dense model on the held-out rows
  int64_t held_out_rows = 0;
  std::string held_out_description;     // "32 held-out prompts, 1234 rows; <dev set>"
  Plan plan;                            // evaluation_plan of choice.chosen
  double seconds_statistics = 0, seconds_held_out = 0, seconds_choice = 0;
};

// The whole protocol. The plan is made for `target` with `provenance`; its calibration section
// holds the proposing statistic's k_cal, w, S, DP candidates, and the held-out choice.
CalibrationRun run_calibration(const engine::Model& model, const DevMix& mix, const CalibrationRunConfig& config,
                               const StopToken& is_stop, const CalibrationTarget& target,
                               const PlanProvenance& provenance, const RunProgress& progress = nullptr);

// The plan of one scored evaluation of a finished run (index into run.choice.evaluations): its
// anchors, map and pooling, the run's budget, and the calibration section of the statistic that
// proposed it, its selection naming that evaluation as chosen. run.plan is the chosen one's.
Plan evaluation_plan(const CalibrationRun& run, int index, const CalibrationTarget& target,
                     const PlanProvenance& provenance);

// The report (format kascade-calibration-report, version 2): the dev set, both statistics (as
// report_to_json, with the decode-row counts and the share of minima they set for `paper`),
// every evaluated plan with its loss per kind, the search path and the chosen plan.
nlohmann::json run_report_json(const CalibrationRun& run);

// The held-out choice as the plan records it (plan.h PlanSelection).
PlanSelection plan_selection(const ChoiceResult& choice, Statistic statistic);

}  // namespace kascade
