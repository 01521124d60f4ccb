// Candidate plans from the statistics and the choice among them by held-out loss
// (kascade/calibrate/choice.h).
#include "kascade/calibrate/choice.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <tuple>

#include "kascade/error.h"
#include "kascade/eval/policy.h"

namespace kascade {

std::string to_string(Statistic statistic) {
  switch (statistic) {
    case Statistic::Spec: return "spec";
    case Statistic::Paper: return "paper";
  }
  KASCADE_FAIL("to_string: unknown Statistic " << static_cast<int>(statistic));
}

Statistic parse_statistic(const std::string& text, const std::string& what) {
  for (Statistic s : {Statistic::Spec, Statistic::Paper})
    if (text == to_string(s)) return s;
  KASCADE_FAIL(what << ": expected spec or paper, got '" << text << "'");
}

const char* to_string(Stage stage) {
  switch (stage) {
    case Stage::Candidate: return "candidate";
    case Stage::Search: return "search";
    case Stage::Pooling: return "pooling";
  }
  KASCADE_FAIL("to_string: unknown Stage " << static_cast<int>(stage));
}

std::vector<int> evenly_spaced_anchors(int layers, int m) { return eval::evenly_spaced_layers(layers, m); }

namespace {

std::string anchors_text(const std::vector<int>& anchors) {
  std::ostringstream os;
  for (size_t i = 0; i < anchors.size(); ++i) os << (i ? " " : "") << anchors[i];
  return os.str();
}

// Adds a plan, or the source to the plan already there with the same anchors and map.
void add_candidate(std::vector<CandidatePlan>& out, CandidatePlan plan) {
  for (CandidatePlan& c : out) {
    if (c.anchors == plan.anchors && c.head_map == plan.head_map) {
      c.sources.insert(c.sources.end(), plan.sources.begin(), plan.sources.end());
      return;
    }
  }
  out.push_back(std::move(plan));
}

}  // namespace

std::vector<CandidatePlan> make_candidates(const std::vector<StatisticProposal>& proposals, int m_lo, int m_hi) {
  KASCADE_CHECK(!proposals.empty(), "make_candidates: no statistic to propose plans");
  const int L = proposals.front().coverage.num_layers(), H = proposals.front().coverage.num_kv_heads();
  for (const StatisticProposal& p : proposals) {
    KASCADE_CHECK(p.coverage.num_layers() == L && p.coverage.num_kv_heads() == H && p.scores.num_layers() == L,
                  "make_candidates: statistic '" << to_string(p.statistic) << "' has another shape ("
                                                 << p.coverage.num_layers() << " layers, " << p.coverage.num_kv_heads()
                                                 << " kv heads) than the first (" << L << ", " << H << ")");
  }
  KASCADE_CHECK(1 <= m_lo && m_lo <= m_hi && m_hi <= L,
                "make_candidates: anchor counts " << m_lo << ".." << m_hi << " must satisfy 1 <= lo <= hi <= " << L);
  std::vector<std::vector<AnchorChoice>> dp;
  for (const StatisticProposal& p : proposals) dp.push_back(choose_anchors_range(p.scores, m_lo, m_hi));
  std::vector<CandidatePlan> out;
  for (int m = m_lo; m <= m_hi; ++m) {
    for (size_t s = 0; s < proposals.size(); ++s) {
      const StatisticProposal& p = proposals[s];
      CandidatePlan c;
      c.anchors = dp[s][static_cast<size_t>(m - m_lo)].anchors;
      c.head_map = choose_head_map(p.coverage, c.anchors);
      c.statistic = p.statistic;
      c.sources = {to_string(p.statistic) + " dp m=" + std::to_string(m)};
      add_candidate(out, std::move(c));
    }
    const std::vector<int> even = evenly_spaced_anchors(L, m);
    for (const StatisticProposal& p : proposals) {
      CandidatePlan c;
      c.anchors = even;
      c.head_map = choose_head_map(p.coverage, even);
      c.statistic = p.statistic;
      c.sources = {"even m=" + std::to_string(m) + " (" + to_string(p.statistic) + " map)"};
      add_candidate(out, std::move(c));
    }
  }
  return out;
}

CandidateLoss aggregate_losses(const std::vector<PromptLoss>& prompts) {
  KASCADE_CHECK(!prompts.empty(), "aggregate_losses: no prompts");
  CandidateLoss out;
  for (const PromptLoss& p : prompts) {
    auto it = std::find_if(out.kinds.begin(), out.kinds.end(), [&p](const KindLoss& k) { return k.kind == p.kind; });
    if (it == out.kinds.end()) {
      out.kinds.push_back(KindLoss{p.kind, 0, 0, 0});
      it = out.kinds.end() - 1;
    }
    ++it->prompts;
    it->kl += p.kl;
    it->answer_loss += p.answer_loss;
  }
  for (KindLoss& k : out.kinds) {
    k.kl /= k.prompts;
    k.answer_loss /= k.prompts;
    out.kl += k.kl;
    out.answer_loss += k.answer_loss;
  }
  out.kl /= static_cast<double>(out.kinds.size());
  out.answer_loss /= static_cast<double>(out.kinds.size());
  return out;
}

bool better_loss(const CandidateLoss& a, const CandidateLoss& b) {
  KASCADE_CHECK(std::isfinite(a.kl) && std::isfinite(b.kl) && std::isfinite(a.answer_loss) &&
                    std::isfinite(b.answer_loss),
                "better_loss: a loss is not finite (kl " << a.kl << " vs " << b.kl << ", answer " << a.answer_loss
                                                         << " vs " << b.answer_loss << ")");
  constexpr double kRelativeTie = 1e-9;
  const double scale = std::max(std::fabs(a.kl), std::fabs(b.kl));
  if (std::fabs(a.kl - b.kl) > kRelativeTie * scale) return a.kl < b.kl;
  return a.answer_loss < b.answer_loss;
}

namespace {

// Scores plans once each, in order, and records them.
class Evaluator {
 public:
  Evaluator(const PlanScorer& score, const ChoiceProgress& progress, ChoiceResult& result)
      : score_(score), progress_(progress), result_(result) {}

  // The index of the plan's evaluation: an earlier one when the same plan was scored before
  // (its sources extended), else a new one. `fresh` tells which.
  int evaluate(const std::vector<int>& anchors, const HeadMap& map, Pooling pooling, Statistic statistic,
               const std::vector<std::string>& sources, Stage stage, bool& fresh) {
    const Key key{anchors, pooling == Pooling::All ? HeadMap{} : map, pooling};
    auto found = index_.find(key);
    if (found != index_.end()) {
      fresh = false;
      Evaluation& e = result_.evaluations[static_cast<size_t>(found->second)];
      e.sources.insert(e.sources.end(), sources.begin(), sources.end());
      return found->second;
    }
    fresh = true;
    Evaluation e;
    e.anchors = anchors;
    e.head_map = map;
    e.pooling = pooling;
    e.statistic = statistic;
    e.sources = sources;
    e.stage = stage;
    e.loss = score_(anchors, map, pooling);
    KASCADE_CHECK(std::isfinite(e.loss.kl) && std::isfinite(e.loss.answer_loss),
                  "choose_plan: the loss of anchors " << anchors_text(anchors) << " is not finite (kl " << e.loss.kl
                                                      << ", answer " << e.loss.answer_loss << ")");
    result_.evaluations.push_back(std::move(e));
    const int index = static_cast<int>(result_.evaluations.size()) - 1;
    index_[key] = index;
    if (progress_) progress_(index + 1, result_.evaluations.back());
    return index;
  }

 private:
  using Key = std::tuple<std::vector<int>, HeadMap, Pooling>;
  const PlanScorer& score_;
  const ChoiceProgress& progress_;
  ChoiceResult& result_;
  std::map<Key, int> index_;
};

std::vector<int> identity_row(int kv_heads) {
  std::vector<int> row(static_cast<size_t>(kv_heads));
  for (int g = 0; g < kv_heads; ++g) row[static_cast<size_t>(g)] = g;
  return row;
}

}  // namespace

std::vector<int> best_evaluation_per_anchor_count(const ChoiceResult& choice) {
  std::vector<int> best;
  for (size_t i = 0; i < choice.evaluations.size(); ++i) {
    const Evaluation& e = choice.evaluations[i];
    const size_t m = e.anchors.size();
    if (best.size() <= m) best.resize(m + 1, -1);
    if (best[m] < 0 || better_loss(e.loss, choice.evaluations[static_cast<size_t>(best[m])].loss)) {
      best[m] = static_cast<int>(i);
    }
  }
  return best;
}

ChoiceResult choose_plan(const std::vector<CandidatePlan>& candidates, const std::vector<StatisticProposal>& proposals,
                         const PlanScorer& score, const ChoiceConfig& config, const ChoiceProgress& progress) {
  KASCADE_CHECK(!candidates.empty(), "choose_plan: no candidate plans");
  KASCADE_CHECK(score != nullptr, "choose_plan: no scorer");
  KASCADE_CHECK(config.max_search_evaluations >= 0 && config.max_move >= 0,
                "choose_plan: max_search_evaluations and max_move must be >= 0");
  auto coverage_of = [&proposals](Statistic s) -> const CoverageMatrix& {
    for (const StatisticProposal& p : proposals)
      if (p.statistic == s) return p.coverage;
    KASCADE_FAIL("choose_plan: no coverage for statistic '" << to_string(s) << "'");
  };
  for (const CandidatePlan& c : candidates) coverage_of(c.statistic);

  ChoiceResult result;
  Evaluator evaluator(score, progress, result);
  bool fresh = false;
  const CoverageMatrix& first_coverage = coverage_of(candidates.front().statistic);
  const int L = first_coverage.num_layers();
  const HeadMap identity(static_cast<size_t>(L), identity_row(first_coverage.num_kv_heads()));
  auto consider_candidate = [&result](int i) {
    if (result.best_candidate < 0 || better_loss(result.evaluations[static_cast<size_t>(i)].loss,
                                                 result.evaluations[static_cast<size_t>(result.best_candidate)].loss)) {
      result.best_candidate = i;
    }
  };
  // 1. Every candidate with its head map, then every candidate's anchors with one selection
  // pooled over all heads (plans with the same anchors are one pooled plan).
  for (const CandidatePlan& c : candidates) {
    consider_candidate(
        evaluator.evaluate(c.anchors, c.head_map, Pooling::Group, c.statistic, c.sources, Stage::Candidate, fresh));
  }
  for (const CandidatePlan& c : candidates) {
    std::vector<std::string> sources;
    for (const std::string& s : c.sources) sources.push_back(s + ", pooled");
    consider_candidate(evaluator.evaluate(c.anchors, identity, Pooling::All, c.statistic, sources, Stage::Candidate, fresh));
  }
  std::vector<int> moves;
  for (int step = 1; step <= config.max_move; ++step) {
    moves.push_back(step);
    moves.push_back(-step);
  }
  // 2. Coordinate search from `start`, in its pooling: first improving move of each anchor,
  // sweeps until one improves nothing or the search's evaluations are spent. 3. When it moved,
  // the searched anchors in the other pooling (a head map re-derived for group pooling).
  auto search_from = [&](int start) {
    CountSearch search;
    search.m = static_cast<int>(result.evaluations[static_cast<size_t>(start)].anchors.size());
    search.path.push_back(start);
    int current = start;
    const Statistic statistic = result.evaluations[static_cast<size_t>(current)].statistic;
    const Pooling pooling = result.evaluations[static_cast<size_t>(current)].pooling;
    const CoverageMatrix& coverage = coverage_of(statistic);
    bool improved = true;
    bool budget_left = config.max_search_evaluations > 0;
    while (improved && budget_left) {
      improved = false;
      const size_t m = result.evaluations[static_cast<size_t>(current)].anchors.size();
      for (size_t slot = 1; slot < m && budget_left; ++slot) {
        for (int move : moves) {
          const std::vector<int> anchors = result.evaluations[static_cast<size_t>(current)].anchors;
          const int low = anchors[slot - 1], high = slot + 1 < m ? anchors[slot + 1] : L;
          const int to = anchors[slot] + move;
          if (to <= low || to >= high) continue;  // keeps layer 0 first, the order, and layers < L
          std::vector<int> moved = anchors;
          moved[slot] = to;
          const HeadMap map = pooling == Pooling::All ? identity : choose_head_map(coverage, moved);
          const std::string source = "search: anchor " + std::to_string(anchors[slot]) + " -> " + std::to_string(to) +
                                     (pooling == Pooling::All ? std::string(" (pooled)")
                                                              : " (" + to_string(statistic) + " map)");
          const int i = evaluator.evaluate(moved, map, pooling, statistic, {source}, Stage::Search, fresh);
          if (fresh) {
            ++search.evaluations;
            budget_left = search.evaluations < config.max_search_evaluations;
          }
          if (better_loss(result.evaluations[static_cast<size_t>(i)].loss,
                          result.evaluations[static_cast<size_t>(current)].loss)) {
            result.evaluations[static_cast<size_t>(i)].accepted = true;
            current = i;
            search.path.push_back(i);
            improved = true;
            break;  // the next anchor, from the moved plan
          }
          if (!budget_left) break;
        }
      }
    }
    const Evaluation best = result.evaluations[static_cast<size_t>(current)];
    search.final_plan = current;
    if (current != start) {
      const bool to_all = best.pooling == Pooling::Group;
      const HeadMap map = to_all ? identity : choose_head_map(coverage, best.anchors);
      const std::string source = std::string(to_all ? "pooling all" : "head-aware pooling") + " of anchors " +
                                 anchors_text(best.anchors);
      const int other = evaluator.evaluate(best.anchors, map, to_all ? Pooling::All : Pooling::Group, best.statistic,
                                           {source}, Stage::Pooling, fresh);
      if (better_loss(result.evaluations[static_cast<size_t>(other)].loss, best.loss)) {
        result.evaluations[static_cast<size_t>(other)].accepted = true;
        search.final_plan = other;
      }
    }
    result.search_evaluations += search.evaluations;
    result.searches.push_back(std::move(search));
  };
  if (!config.search_every_count) {
    search_from(result.best_candidate);
  } else {
    // The best candidate of every anchor count, in increasing count (only candidates are scored yet).
    for (int start : best_evaluation_per_anchor_count(result))
      if (start >= 0) search_from(start);
  }
  // The chosen plan: the best final plan of the searches (the earlier search on a tie).
  const CountSearch* winner = &result.searches.front();
  for (const CountSearch& search : result.searches) {
    if (better_loss(result.evaluations[static_cast<size_t>(search.final_plan)].loss,
                    result.evaluations[static_cast<size_t>(winner->final_plan)].loss)) {
      winner = &search;
    }
  }
  result.chosen = winner->final_plan;
  result.search_path = winner->path;
  return result;
}

}  // namespace kascade
