// Statistics propose, loss chooses (kascade/calibrate/choice.h): candidate generation (the DP
// optimum per m under every statistic, even spacing with each statistic's head map, duplicates
// merged), the equal weighting of kinds, and the choice with a fake scorer: the lowest loss, the
// tie-break, the coordinate search's moves, bounds and evaluation cap, re-derived head maps,
// no plan scored twice, both poolings of every candidate, and the search in the best one's pooling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "calibrate_test_util.h"
#include "kascade/calibrate/choice.h"
#include "kascade/calibrate/protocol.h"

using namespace kascade;

namespace {

// Coverage of L layers and H kv heads where kv head g2 is served best by kv head (g2 + shift) % H
// of any earlier layer, and coverage decays with the distance between the layers.
CoverageMatrix shifted_coverage(int L, int H, int shift) {
  CoverageMatrix c(L, H);
  for (int l1 = 0; l1 < L; ++l1)
    for (int l2 = l1; l2 < L; ++l2)
      for (int g1 = 0; g1 < H; ++g1)
        for (int g2 = 0; g2 < H; ++g2) {
          const bool best = l1 == l2 ? g1 == g2 : g1 == (g2 + shift) % H;
          c.at(l1, l2, g1, g2) = (best ? 1.0 : 0.5) / (1.0 + 0.1 * (l2 - l1));
        }
  return c;
}

StatisticProposal proposal(Statistic s, const CoverageMatrix& c, const std::vector<double>& w) {
  return StatisticProposal{s, c, layer_scores(c, w)};
}

std::vector<double> importance(int L) {
  std::vector<double> w(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) w[static_cast<size_t>(l)] = 1.0 / (1.0 + (l * 7) % 5);
  return w;
}

// Every plan asked of a fake scorer.
struct Asked {
  std::vector<int> anchors;
  HeadMap map;
  Pooling pooling;
};

bool has_source(const CandidatePlan& c, const std::string& source) {
  return std::find(c.sources.begin(), c.sources.end(), source) != c.sources.end();
}

}  // namespace

TEST(Candidates, EvenSpacingIsTheStudysEvenPlan) {
  EXPECT_EQ(evenly_spaced_anchors(30, 5), (std::vector<int>{0, 6, 12, 18, 24}));
  EXPECT_EQ(evenly_spaced_anchors(30, 3), (std::vector<int>{0, 10, 20}));
  EXPECT_EQ(evenly_spaced_anchors(7, 7), (std::vector<int>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(evenly_spaced_anchors(10, 1), (std::vector<int>{0}));
}

TEST(Candidates, DpOptimumPerMUnderEachStatisticAndEvenSpacingWithEachMap) {
  const int L = 12, H = 3;
  const StatisticProposal spec = proposal(Statistic::Spec, shifted_coverage(L, H, 1), importance(L));
  const StatisticProposal paper = proposal(Statistic::Paper, shifted_coverage(L, H, 2), importance(L));
  const std::vector<CandidatePlan> candidates = make_candidates({spec, paper}, 2, 4);
  for (int m = 2; m <= 4; ++m) {
    for (const StatisticProposal* p : {&spec, &paper}) {
      const std::vector<int> dp = choose_anchors(p->scores, m).anchors;
      const std::string dp_source = to_string(p->statistic) + " dp m=" + std::to_string(m);
      const std::string even_source = "even m=" + std::to_string(m) + " (" + to_string(p->statistic) + " map)";
      int found_dp = 0, found_even = 0;
      for (const CandidatePlan& c : candidates) {
        if (has_source(c, dp_source)) {
          ++found_dp;
          EXPECT_EQ(c.anchors, dp);
          EXPECT_EQ(c.head_map, choose_head_map(p->coverage, dp));
          EXPECT_EQ(c.statistic, p->statistic);
        }
        if (has_source(c, even_source)) {
          ++found_even;
          EXPECT_EQ(c.anchors, evenly_spaced_anchors(L, m));
          EXPECT_EQ(c.head_map, choose_head_map(p->coverage, c.anchors));
        }
      }
      EXPECT_EQ(found_dp, 1) << dp_source;
      EXPECT_EQ(found_even, 1) << even_source;
    }
  }
  // The two statistics' maps differ (shift 1 vs 2), so no two candidates are the same plan.
  for (size_t i = 0; i < candidates.size(); ++i)
    for (size_t j = i + 1; j < candidates.size(); ++j)
      EXPECT_FALSE(candidates[i].anchors == candidates[j].anchors && candidates[i].head_map == candidates[j].head_map);
  // Ordered by m.
  for (size_t i = 1; i < candidates.size(); ++i)
    EXPECT_LE(candidates[i - 1].anchors.size(), candidates[i].anchors.size());
}

TEST(Candidates, TheSamePlanIsKeptOnceWithEverySource) {
  // Both statistics equal: each DP optimum and each even plan arrives twice with the same map.
  const int L = 8, H = 2;
  const CoverageMatrix c = shifted_coverage(L, H, 1);
  const std::vector<CandidatePlan> candidates =
      make_candidates({proposal(Statistic::Spec, c, importance(L)), proposal(Statistic::Paper, c, importance(L))}, 3, 3);
  const std::vector<int> dp = choose_anchors(layer_scores(c, importance(L)), 3).anchors;
  const bool dp_is_even = dp == evenly_spaced_anchors(L, 3);
  ASSERT_EQ(candidates.size(), dp_is_even ? 1u : 2u);
  EXPECT_EQ(candidates[0].sources, (std::vector<std::string>{"spec dp m=3", "paper dp m=3"}));
  EXPECT_EQ(candidates.back().anchors, evenly_spaced_anchors(L, 3));
  EXPECT_TRUE(has_source(candidates.back(), "even m=3 (paper map)"));
}

TEST(Candidates, BadInput) {
  const StatisticProposal spec = proposal(Statistic::Spec, shifted_coverage(6, 2, 1), importance(6));
  EXPECT_KASCADE_ERROR(make_candidates({spec}, 3, 7), "must satisfy 1 <= lo <= hi <= 6");
  EXPECT_KASCADE_ERROR(make_candidates({spec}, 0, 2), "must satisfy 1 <= lo <= hi <= 6");
  EXPECT_KASCADE_ERROR(make_candidates({}, 1, 2), "no statistic");
  const StatisticProposal other = proposal(Statistic::Paper, shifted_coverage(7, 2, 1), importance(7));
  EXPECT_KASCADE_ERROR(make_candidates({spec, other}, 1, 2), "statistic 'paper' has another shape");
}

TEST(Loss, KindsWeighEquallyWhateverTheirPromptCount) {
  const CandidateLoss loss = aggregate_losses({{"retrieval", 1.0, 2.0},
                                               {"copy", 4.0, 1.0},
                                               {"retrieval", 1.0, 4.0},
                                               {"retrieval", 1.0, 0.0},
                                               {"continuation", 0.5, 3.0}});
  ASSERT_EQ(loss.kinds.size(), 3u);
  EXPECT_EQ(loss.kinds[0].kind, "retrieval");
  EXPECT_EQ(loss.kinds[0].prompts, 3);
  EXPECT_DOUBLE_EQ(loss.kinds[0].kl, 1.0);
  EXPECT_DOUBLE_EQ(loss.kinds[0].answer_loss, 2.0);
  EXPECT_EQ(loss.kinds[1].kind, "copy");
  EXPECT_DOUBLE_EQ(loss.kl, (1.0 + 4.0 + 0.5) / 3);  // not the prompt mean 1.5
  EXPECT_DOUBLE_EQ(loss.answer_loss, (2.0 + 1.0 + 3.0) / 3);
  EXPECT_KASCADE_ERROR(aggregate_losses({}), "no prompts");
}

TEST(Loss, LowerKlWinsAndTiesGoToTheAnswerLoss) {
  EXPECT_TRUE(better_loss({0.1, 5.0, {}}, {0.2, 1.0, {}}));
  EXPECT_FALSE(better_loss({0.2, 1.0, {}}, {0.1, 5.0, {}}));
  EXPECT_TRUE(better_loss({0.1, 1.0, {}}, {0.1, 2.0, {}}));
  EXPECT_TRUE(better_loss({0.1 * (1 + 1e-12), 1.0, {}}, {0.1, 2.0, {}}));  // equal up to rounding: a tie
  EXPECT_FALSE(better_loss({0.1, 1.0, {}}, {0.1, 1.0, {}}));              // a full tie keeps the earlier
  EXPECT_KASCADE_ERROR(better_loss({NAN, 1.0, {}}, {0.1, 1.0, {}}), "not finite");
}

namespace {

// A scorer whose KL is the distance of the anchors from `target` (squared, summed), with the
// answer loss given by `answer` and pooling worth `pooled_bonus` less KL; it records every call.
struct FakeScorer {
  std::vector<int> target;
  double pooled_bonus = 0;
  std::function<double(const std::vector<int>&)> answer = [](const std::vector<int>&) { return 1.0; };
  std::vector<Asked> asked;

  PlanScorer scorer() {
    return [this](const std::vector<int>& anchors, const HeadMap& map, Pooling pooling) {
      asked.push_back({anchors, map, pooling});
      double kl = 0;
      for (size_t i = 0; i < anchors.size() && i < target.size(); ++i) kl += std::pow(anchors[i] - target[i], 2);
      if (pooling == Pooling::All) kl = std::max(0.0, kl - pooled_bonus);
      return CandidateLoss{kl, answer(anchors), {}};
    };
  }
};

CandidatePlan candidate(const std::vector<int>& anchors, const CoverageMatrix& c, Statistic s, const std::string& source) {
  return CandidatePlan{anchors, choose_head_map(c, anchors), s, {source}};
}

}  // namespace

TEST(Choice, PicksTheLowestCandidateAndSearchesFromIt) {
  const int L = 20, H = 2;
  const CoverageMatrix spec_c = shifted_coverage(L, H, 1), paper_c = shifted_coverage(L, H, 0);
  const std::vector<StatisticProposal> proposals = {proposal(Statistic::Spec, spec_c, importance(L)),
                                                    proposal(Statistic::Paper, paper_c, importance(L))};
  FakeScorer fake;
  fake.target = {0, 7, 13};
  const std::vector<CandidatePlan> candidates = {candidate({0, 2, 4}, spec_c, Statistic::Spec, "a"),
                                                 candidate({0, 8, 12}, paper_c, Statistic::Paper, "b"),
                                                 candidate({0, 10, 19}, spec_c, Statistic::Spec, "c")};
  const ChoiceResult r = choose_plan(candidates, proposals, fake.scorer(), {});
  EXPECT_EQ(r.best_candidate, 1);  // distance 2, against 34 and 45
  ASSERT_GE(r.search_path.size(), 2u);
  EXPECT_EQ(r.search_path.front(), 1);
  const Evaluation& chosen = r.evaluations[static_cast<size_t>(r.chosen)];
  EXPECT_EQ(chosen.anchors, (std::vector<int>{0, 7, 13}));  // the search reaches the optimum
  EXPECT_EQ(chosen.pooling, Pooling::Group);
  EXPECT_EQ(chosen.loss.kl, 0.0);
  // Every searched plan's head map is re-derived from the proposing statistic (paper).
  for (const Evaluation& e : r.evaluations) {
    if (e.stage != Stage::Search) continue;
    EXPECT_EQ(e.statistic, Statistic::Paper);
    EXPECT_EQ(e.head_map, choose_head_map(paper_c, e.anchors));
  }
  // The path only goes down in loss, each step one anchor moved by 1..3 layers.
  for (size_t i = 1; i < r.search_path.size(); ++i) {
    const Evaluation& a = r.evaluations[static_cast<size_t>(r.search_path[i - 1])];
    const Evaluation& b = r.evaluations[static_cast<size_t>(r.search_path[i])];
    EXPECT_TRUE(b.accepted);
    EXPECT_LT(b.loss.kl, a.loss.kl);
    int moved = 0;
    for (size_t k = 0; k < a.anchors.size(); ++k) {
      const int step = std::abs(a.anchors[k] - b.anchors[k]);
      if (step == 0) continue;
      ++moved;
      EXPECT_LE(step, 3);
    }
    EXPECT_EQ(moved, 1);
  }
  // No plan was scored twice: every call is one evaluation.
  EXPECT_EQ(fake.asked.size(), r.evaluations.size());
  for (size_t i = 0; i < fake.asked.size(); ++i)
    for (size_t j = i + 1; j < fake.asked.size(); ++j)
      EXPECT_FALSE(fake.asked[i].anchors == fake.asked[j].anchors && fake.asked[i].pooling == fake.asked[j].pooling &&
                   fake.asked[i].map == fake.asked[j].map);
}

TEST(Choice, TiesOnKlGoToTheLowerAnswerLoss) {
  const int L = 10, H = 2;
  const CoverageMatrix c = shifted_coverage(L, H, 1);
  const std::vector<StatisticProposal> proposals = {proposal(Statistic::Spec, c, importance(L))};
  FakeScorer fake;
  fake.target = {0};  // every plan has KL 0: only the answer loss separates them
  fake.answer = [](const std::vector<int>& anchors) { return anchors.size() > 1 && anchors[1] == 6 ? 0.5 : 1.0; };
  const std::vector<CandidatePlan> candidates = {candidate({0, 3}, c, Statistic::Spec, "a"),
                                                 candidate({0, 6}, c, Statistic::Spec, "b"),
                                                 candidate({0, 8}, c, Statistic::Spec, "c")};
  ChoiceConfig no_search;
  no_search.max_search_evaluations = 0;
  const ChoiceResult r = choose_plan(candidates, proposals, fake.scorer(), no_search);
  EXPECT_EQ(r.best_candidate, 1);
  EXPECT_EQ(r.search_evaluations, 0);
  EXPECT_EQ(r.search_path, (std::vector<int>{1}));
  // The pooled plans tie on KL and answer loss too: the head-aware plan stays; without a search
  // move there is no pooling stage (both poolings of the candidates were scored).
  EXPECT_EQ(r.chosen, 1);
  ASSERT_EQ(r.evaluations.size(), 6u);
  EXPECT_EQ(r.evaluations.back().stage, Stage::Candidate);
  EXPECT_EQ(r.evaluations.back().pooling, Pooling::All);
  // A full tie among candidates keeps the first.
  FakeScorer flat;
  flat.target = {0};
  EXPECT_EQ(choose_plan(candidates, proposals, flat.scorer(), no_search).best_candidate, 0);
}

TEST(Choice, SearchKeepsLayerZeroTheOrderAndTheLayers) {
  const int L = 9, H = 2;
  const CoverageMatrix c = shifted_coverage(L, H, 1);
  const std::vector<StatisticProposal> proposals = {proposal(Statistic::Spec, c, importance(L))};
  FakeScorer fake;
  fake.target = {0, 1, 2, 8};  // pulls the anchors against each other and towards the last layer
  const std::vector<CandidatePlan> candidates = {candidate({0, 3, 4, 6}, c, Statistic::Spec, "a")};
  const ChoiceResult r = choose_plan(candidates, proposals, fake.scorer(), {});
  for (const Asked& a : fake.asked) {
    ASSERT_FALSE(a.anchors.empty());
    EXPECT_EQ(a.anchors[0], 0);
    for (size_t i = 1; i < a.anchors.size(); ++i) EXPECT_LT(a.anchors[i - 1], a.anchors[i]);
    EXPECT_LT(a.anchors.back(), L);
    EXPECT_EQ(a.anchors.size(), 4u);
  }
  EXPECT_EQ(r.evaluations[static_cast<size_t>(r.chosen)].anchors, (std::vector<int>{0, 1, 2, 8}));
}

TEST(Choice, SearchStopsAtItsEvaluationCap) {
  const int L = 120, H = 1;
  const CoverageMatrix c = shifted_coverage(L, H, 0);
  const std::vector<StatisticProposal> proposals = {proposal(Statistic::Spec, c, importance(L))};
  FakeScorer fake;
  fake.target = {0, 60, 119};  // far away: every +1 move improves, more than 40 of them
  const std::vector<CandidatePlan> candidates = {candidate({0, 1, 2}, c, Statistic::Spec, "a"),
                                                 candidate({0, 2, 3}, c, Statistic::Spec, "b")};
  const ChoiceResult r = choose_plan(candidates, proposals, fake.scorer(), {});
  EXPECT_EQ(r.search_evaluations, 40);
  // Two candidates in both poolings, 40 searched plans, the searched anchors pooled.
  EXPECT_EQ(fake.asked.size(), 2u + 2u + 40u + 1u);
  EXPECT_EQ(r.evaluations.back().stage, Stage::Pooling);
  int searched = 0;
  for (const Evaluation& e : r.evaluations) searched += e.stage == Stage::Search;
  EXPECT_EQ(searched, 40);
  ChoiceConfig small;
  small.max_search_evaluations = 5;
  FakeScorer again;
  again.target = fake.target;
  EXPECT_EQ(choose_plan(candidates, proposals, again.scorer(), small).search_evaluations, 5);
}

TEST(Choice, PoolingWinsOnlyWhenItsLossIsLower) {
  const int L = 10, H = 3;
  const CoverageMatrix c = shifted_coverage(L, H, 1);
  const std::vector<StatisticProposal> proposals = {proposal(Statistic::Spec, c, importance(L))};
  const std::vector<CandidatePlan> candidates = {candidate({0, 4, 7}, c, Statistic::Spec, "a")};
  ChoiceConfig no_search;
  no_search.max_search_evaluations = 0;
  FakeScorer fake;
  fake.target = {0, 5, 7};
  fake.pooled_bonus = 0.5;
  const ChoiceResult r = choose_plan(candidates, proposals, fake.scorer(), no_search);
  ASSERT_EQ(r.evaluations.size(), 2u);
  EXPECT_EQ(r.best_candidate, 1);  // the pooled candidate
  const Evaluation& chosen = r.evaluations[static_cast<size_t>(r.chosen)];
  EXPECT_EQ(chosen.stage, Stage::Candidate);
  EXPECT_EQ(chosen.pooling, Pooling::All);
  EXPECT_EQ(chosen.anchors, (std::vector<int>{0, 4, 7}));
  EXPECT_EQ(chosen.sources, (std::vector<std::string>{"a, pooled"}));
  for (int j = 0; j < L; ++j)
    for (int g = 0; g < H; ++g) EXPECT_EQ(chosen.head_map[static_cast<size_t>(j)][static_cast<size_t>(g)], g);
  // Without the bonus the head-aware plan stays.
  FakeScorer plain;
  plain.target = fake.target;
  const ChoiceResult p = choose_plan(candidates, proposals, plain.scorer(), no_search);
  EXPECT_EQ(p.evaluations[static_cast<size_t>(p.chosen)].pooling, Pooling::Group);
}

TEST(Choice, SearchRunsInThePoolingOfTheBestCandidate) {
  const int L = 12, H = 3;
  const CoverageMatrix c = shifted_coverage(L, H, 1);
  const std::vector<StatisticProposal> proposals = {proposal(Statistic::Spec, c, importance(L))};
  const std::vector<CandidatePlan> candidates = {candidate({0, 3, 6}, c, Statistic::Spec, "a")};
  FakeScorer fake;
  fake.target = {0, 5, 9};
  fake.pooled_bonus = 0.5;
  const ChoiceResult r = choose_plan(candidates, proposals, fake.scorer(), {});
  EXPECT_EQ(r.best_candidate, 1);
  int searched = 0;
  for (const Evaluation& e : r.evaluations) {
    if (e.stage != Stage::Search) continue;
    ++searched;
    EXPECT_EQ(e.pooling, Pooling::All);
    for (int j = 0; j < L; ++j)
      for (int g = 0; g < H; ++g) EXPECT_EQ(e.head_map[static_cast<size_t>(j)][static_cast<size_t>(g)], g);
  }
  EXPECT_GT(searched, 0);
  const Evaluation& chosen = r.evaluations[static_cast<size_t>(r.chosen)];
  EXPECT_EQ(chosen.anchors, (std::vector<int>{0, 5, 9}));
  EXPECT_EQ(chosen.pooling, Pooling::All);
  EXPECT_EQ(chosen.stage, Stage::Search);
  // The searched anchors were tried head-aware too, with the statistic's map, and lost.
  const Evaluation& last = r.evaluations.back();
  EXPECT_EQ(last.stage, Stage::Pooling);
  EXPECT_EQ(last.pooling, Pooling::Group);
  EXPECT_EQ(last.anchors, chosen.anchors);
  EXPECT_EQ(last.head_map, choose_head_map(c, chosen.anchors));
  EXPECT_FALSE(last.accepted);
}

TEST(Choice, SearchFromEveryCountCanChooseACountWhoseCandidatesWereWorse) {
  const int L = 20, H = 2;
  const CoverageMatrix c = shifted_coverage(L, H, 0);
  const std::vector<StatisticProposal> proposals = {proposal(Statistic::Spec, c, importance(L))};
  // KL: distance of the first three anchors from 0 7 13, and 0.5 more for a fourth anchor.
  const std::vector<int> target = {0, 7, 13};
  const PlanScorer score = [&target](const std::vector<int>& anchors, const HeadMap&, Pooling) {
    double kl = anchors.size() == 4 ? 0.5 : 0.0;
    for (size_t i = 0; i < 3; ++i) kl += std::pow(anchors[i] - target[i], 2);
    return CandidateLoss{kl, 1.0, {}};
  };
  const std::vector<CandidatePlan> candidates = {candidate({0, 5, 11}, c, Statistic::Spec, "three"),
                                                 candidate({0, 6, 13, 18}, c, Statistic::Spec, "four")};
  // One search: from the best candidate (four anchors, KL 1.5), to KL 0.5.
  const ChoiceResult one = choose_plan(candidates, proposals, score, {});
  ASSERT_EQ(one.searches.size(), 1u);
  EXPECT_EQ(one.searches[0].m, 4);
  EXPECT_EQ(one.evaluations[static_cast<size_t>(one.chosen)].anchors.size(), 4u);
  EXPECT_EQ(one.evaluations[static_cast<size_t>(one.chosen)].loss.kl, 0.5);
  EXPECT_EQ(one.search_path.front(), one.best_candidate);
  // A search per count: three anchors reach KL 0 and win.
  ChoiceConfig every;
  every.search_every_count = true;
  const ChoiceResult r = choose_plan(candidates, proposals, score, every);
  ASSERT_EQ(r.searches.size(), 2u);
  EXPECT_EQ(r.searches[0].m, 3);
  EXPECT_EQ(r.searches[1].m, 4);
  EXPECT_EQ(r.evaluations[static_cast<size_t>(r.chosen)].anchors, (std::vector<int>{0, 7, 13}));
  EXPECT_EQ(r.evaluations[static_cast<size_t>(r.chosen)].loss.kl, 0.0);
  EXPECT_EQ(r.chosen, r.searches[0].final_plan);
  EXPECT_EQ(r.search_path, r.searches[0].path);
  EXPECT_EQ(r.best_candidate, one.best_candidate);  // still the best candidate overall
  EXPECT_EQ(r.search_evaluations, r.searches[0].evaluations + r.searches[1].evaluations);
  EXPECT_LE(r.searches[0].evaluations, every.max_search_evaluations);
  // Each count's best scored plan is now a searched one.
  const std::vector<int> best = best_evaluation_per_anchor_count(r);
  ASSERT_EQ(best.size(), 5u);
  EXPECT_EQ(r.evaluations[static_cast<size_t>(best[3])].loss.kl, 0.0);
  EXPECT_EQ(r.evaluations[static_cast<size_t>(best[4])].loss.kl, 0.5);
  EXPECT_NE(r.evaluations[static_cast<size_t>(best[3])].stage, Stage::Candidate);
}

TEST(Choice, BadInput) {
  const CoverageMatrix c = shifted_coverage(6, 2, 1);
  const std::vector<StatisticProposal> spec_only = {proposal(Statistic::Spec, c, importance(6))};
  FakeScorer fake;
  fake.target = {0};
  EXPECT_KASCADE_ERROR(choose_plan({}, spec_only, fake.scorer()), "no candidate plans");
  EXPECT_KASCADE_ERROR(choose_plan({candidate({0, 3}, c, Statistic::Paper, "p")}, spec_only, fake.scorer()),
                       "no coverage for statistic 'paper'");
  const PlanScorer nan_scorer = [](const std::vector<int>&, const HeadMap&, Pooling) {
    return CandidateLoss{NAN, 1.0, {}};
  };
  EXPECT_KASCADE_ERROR(choose_plan({candidate({0, 3}, c, Statistic::Spec, "s")}, spec_only, nan_scorer), "not finite");
}
