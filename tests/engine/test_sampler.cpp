// Sampler: greedy ties, seeded reproducibility, the nucleus cut-off, the temperature limit and
// the distribution of draws, invalid parameters and logits.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "kascade/engine/sampler.h"
#include "kascade/error.h"

using kascade::engine::Sampler;
using kascade::engine::SamplingParams;

TEST(Sampler, GreedyTakesTheLowestIdAmongEqualMaxima) {
  Sampler s({0.f, 1.f, 0});
  const std::vector<float> logits = {0.5f, 3.f, -1.f, 3.f};
  EXPECT_EQ(s.sample(logits.data(), 4), 1);
}

TEST(Sampler, SameSeedSameDraws) {
  const std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  Sampler a({1.f, 1.f, 99}), b({1.f, 1.f, 99}), c({1.f, 1.f, 100});
  std::vector<int> da, db, dc;
  for (int i = 0; i < 50; ++i) {
    da.push_back(a.sample(logits.data(), 5));
    db.push_back(b.sample(logits.data(), 5));
    dc.push_back(c.sample(logits.data(), 5));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(Sampler, TopPKeepsOnlyTheNucleus) {
  // Probabilities at T = 1: about 0.665, 0.245, 0.090. top_p = 0.5 keeps the first alone,
  // top_p = 0.8 the first two.
  const std::vector<float> logits = {2.f, 1.f, 0.f};
  Sampler narrow({1.f, 0.5f, 1}), wider({1.f, 0.8f, 2});
  std::map<int, int> seen_narrow, seen_wider;
  for (int i = 0; i < 2000; ++i) {
    ++seen_narrow[narrow.sample(logits.data(), 3)];
    ++seen_wider[wider.sample(logits.data(), 3)];
  }
  EXPECT_EQ(seen_narrow.size(), 1u);
  EXPECT_EQ(seen_narrow.count(0), 1u);
  EXPECT_EQ(seen_wider.count(2), 0u);
  // Renormalised over the two kept tokens: 0.731 / 0.269.
  EXPECT_NEAR(seen_wider[0] / 2000.0, 0.731, 0.04);
}

TEST(Sampler, FrequenciesFollowTheSoftmaxOfLogitsOverTemperature) {
  const std::vector<float> logits = {0.f, std::log(3.f)};  // probabilities 1/4, 3/4 at T = 1
  Sampler s({1.f, 1.f, 5});
  int ones = 0;
  const int draws = 4000;
  for (int i = 0; i < draws; ++i) ones += s.sample(logits.data(), 2);
  EXPECT_NEAR(ones / static_cast<double>(draws), 0.75, 0.03);
  // T = 0.5 sharpens to 1/10, 9/10.
  Sampler sharp({0.5f, 1.f, 6});
  ones = 0;
  for (int i = 0; i < draws; ++i) ones += sharp.sample(logits.data(), 2);
  EXPECT_NEAR(ones / static_cast<double>(draws), 0.9, 0.02);
}

TEST(Sampler, RejectsBadParametersAndLogits) {
  EXPECT_THROW(Sampler({-1.f, 1.f, 0}), kascade::Error);
  EXPECT_THROW(Sampler({1.f, 0.f, 0}), kascade::Error);
  EXPECT_THROW(Sampler({1.f, 1.5f, 0}), kascade::Error);
  EXPECT_THROW(Sampler({NAN, 1.f, 0}), kascade::Error);
  Sampler s({0.f, 1.f, 0});
  const std::vector<float> bad = {0.f, NAN};
  EXPECT_THROW(s.sample(bad.data(), 2), kascade::Error);
  EXPECT_THROW(s.sample(bad.data(), 0), kascade::Error);
}
