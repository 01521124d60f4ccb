// kascade/calibrate/choice.h — statistics propose plans, the model's held-out loss chooses them
// (issue 14, SPEC 6): the candidate plans, the choice by loss, the coordinate search around the
// best candidate and the choice between head-aware and all-heads pooling.
//
// Candidates come from each statistic's layer scores S and coverage C (calibrate.h): the DP
// optimum for every anchor count m of the range, and evenly spaced anchors for every m, each
// with the head map argmax_g1 C[a(j)][j][g1][g2] of every statistic. Plans that are the same
// (anchors and head map) are kept once, with every source that proposed them.
//
//   std::vector<kascade::StatisticProposal> proposals = {{Statistic::Spec, spec_C, spec_S},
//                                                        {Statistic::Paper, paper_C, paper_S}};
//   std::vector<kascade::CandidatePlan> candidates = kascade::make_candidates(proposals, 3, 8);
//   kascade::PlanScorer score = [&](const std::vector<int>& anchors, const kascade::HeadMap& map,
//                                   kascade::Pooling pooling) { return held_out.score(...); };
//   kascade::ChoiceResult r = kascade::choose_plan(candidates, proposals, score, {});
//   const kascade::Evaluation& chosen = r.evaluations[r.chosen];
//
// choose_plan: every candidate is scored with its head map, and its anchors with one selection
// pooled over all heads (identity map); the best of these (lowest KL, answer loss as tie-break,
// then the earlier) starts a coordinate search in its pooling that moves one anchor at a time by
// 1-3 layers (layer 0 stays, the order is kept, a head map is re-derived from the statistic that
// proposed the plan), accepting the first move that improves, sweeping over the anchors until a
// sweep improves nothing or the search has used its evaluations (40). When the search moved,
// the final anchors are scored in the other pooling too and the better one wins. Plans already
// scored are not scored again (and do not count). With `search_every_count` the best candidate of
// every anchor count starts a search of its own (each with the evaluation budget), and the best
// final plan of all the searches is chosen: the accuracy-versus-anchors curve is then a fair one,
// and a smaller (cheaper) count can be weighed against the best.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kascade/calibrate.h"
#include "kascade/types.h"

namespace kascade {

// The statistic whose coverage proposed a plan: Spec (prefill tiles, k_cal 64) or Paper (prefill
// tiles and decode rows of generated answers, k_cal 32), SPEC 6.
enum class Statistic { Spec, Paper };
std::string to_string(Statistic statistic);            // "spec", "paper"
Statistic parse_statistic(const std::string& text, const std::string& what);

// What one statistic contributes: its coverage (head maps) and layer scores (the DP).
struct StatisticProposal {
  Statistic statistic = Statistic::Spec;
  CoverageMatrix coverage;
  LayerScores scores;
};

struct CandidatePlan {
  std::vector<int> anchors;
  HeadMap head_map;
  Statistic statistic = Statistic::Spec;  // whose C made the head map (and re-makes it in the search)
  std::vector<std::string> sources;       // e.g. "spec dp m=5", "even m=5 (spec map)"
};

// floor(i * L / m) for i = 0..m-1 (the evenly spaced plan of the accuracy study).
std::vector<int> evenly_spaced_anchors(int layers, int m);

// The DP optimum of every m in m_lo..m_hi under each proposal, then the evenly spaced anchors of
// every m with each proposal's head map; duplicates (same anchors and map) merged. Ordered by m,
// then DP before even spacing, proposals in the given order. Throws unless 1 <= m_lo <= m_hi <= L
// and every proposal has the same number of layers and kv heads.
std::vector<CandidatePlan> make_candidates(const std::vector<StatisticProposal>& proposals, int m_lo, int m_hi);

// The held-out loss of one plan.
struct KindLoss {
  std::string kind;          // "retrieval", "copy", "continuation"
  int prompts = 0;
  double kl = 0;             // mean over the kind's prompts of the prompt's mean next-token KL
  double answer_loss = 0;    // mean over the kind's prompts of the answer rows' mean -log p
};
struct CandidateLoss {
  double kl = 0;             // mean over kinds of KindLoss::kl (kinds weighted equally): the choice
  double answer_loss = 0;    // mean over kinds of KindLoss::answer_loss: the tie-break
  std::vector<KindLoss> kinds;
};

// One held-out prompt's loss under a plan.
struct PromptLoss {
  std::string kind;
  double kl = 0;            // mean over the prompt's rows of KL(dense || plan)
  double answer_loss = 0;   // mean over its answer rows of -log p(target)
};
// Each kind's mean over its prompts (kinds in the order they first appear), then the mean over
// kinds: every kind weighs the same whatever its prompt count. Throws for no prompts.
CandidateLoss aggregate_losses(const std::vector<PromptLoss>& prompts);

// True when a is better than b: lower KL; KLs within 1e-9 (relative) are a tie, decided by the
// lower answer loss; a full tie is not better (the earlier plan stays).
bool better_loss(const CandidateLoss& a, const CandidateLoss& b);

// Scores one plan (anchors, head map, pooling) on the held-out prompts.
using PlanScorer = std::function<CandidateLoss(const std::vector<int>& anchors, const HeadMap& map, Pooling pooling)>;

enum class Stage { Candidate, Search, Pooling };
const char* to_string(Stage stage);  // "candidate", "search", "pooling"

struct Evaluation {
  std::vector<int> anchors;
  HeadMap head_map;
  Pooling pooling = Pooling::Group;
  Statistic statistic = Statistic::Spec;
  std::vector<std::string> sources;
  Stage stage = Stage::Candidate;
  CandidateLoss loss;
  bool accepted = false;  // search: the move was taken; pooling: all-heads pooling won
};

struct ChoiceConfig {
  int max_search_evaluations = 40;  // plans the coordinate search may score
  int max_move = 3;                 // an anchor moves by 1..max_move layers
  bool search_every_count = false;  // one search from the best candidate of every anchor count
};

// One coordinate search (and its pooling check).
struct CountSearch {
  int m = 0;                 // its anchor count
  std::vector<int> path;     // its start, then every accepted move (indices into evaluations)
  int evaluations = 0;       // plans it scored (<= max_search_evaluations)
  int final_plan = -1;       // its result after the pooling check
};

struct ChoiceResult {
  std::vector<Evaluation> evaluations;  // in the order they were scored
  int best_candidate = -1;              // index of the best candidate (where the one search starts)
  std::vector<CountSearch> searches;    // one, or one per anchor count (search_every_count)
  std::vector<int> search_path;         // the chosen plan's search: its start, then every accepted move
  int search_evaluations = 0;           // plans all searches scored
  int chosen = -1;                      // index of the final plan
};

// For every anchor count m, the index of the lowest-loss evaluation with m anchors (better_loss;
// the earlier on a tie), -1 where none was scored; indexed by m (size: the largest m + 1).
std::vector<int> best_evaluation_per_anchor_count(const ChoiceResult& choice);

// Called after every scored plan: (evaluations so far, the latest).
using ChoiceProgress = std::function<void(int scored, const Evaluation& latest)>;

// The choice described above. `proposals` gives each statistic's coverage for re-deriving head
// maps in the search. Throws when there is no candidate or a candidate's statistic has no
// proposal.
ChoiceResult choose_plan(const std::vector<CandidatePlan>& candidates, const std::vector<StatisticProposal>& proposals,
                         const PlanScorer& score, const ChoiceConfig& config = {},
                         const ChoiceProgress& progress = nullptr);

}  // namespace kascade
