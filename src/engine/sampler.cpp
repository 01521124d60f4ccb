// Greedy and temperature/top-p sampling (see sampler.h).
#include "kascade/engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "kascade/error.h"

namespace kascade::engine {

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  KASCADE_CHECK(std::isfinite(params.temperature) && params.temperature >= 0,
                "sampler: temperature must be >= 0, got " << params.temperature);
  KASCADE_CHECK(params.top_p > 0 && params.top_p <= 1, "sampler: top_p must be in (0, 1], got " << params.top_p);
}

int32_t Sampler::sample(const float* logits, int vocab) {
  KASCADE_CHECK(vocab > 0, "sampler: empty vocabulary");
  for (int i = 0; i < vocab; ++i) {
    KASCADE_CHECK(std::isfinite(logits[i]), "sampler: logit " << i << " is not finite (" << logits[i] << ")");
  }
  if (params_.temperature == 0.f) {
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  }
  // Softmax of logits / T over the candidates, most likely first (ties: lower id first).
  candidates_.resize(static_cast<size_t>(vocab));
  for (int i = 0; i < vocab; ++i) candidates_[static_cast<size_t>(i)] = {logits[i], i};
  std::sort(candidates_.begin(), candidates_.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  const double top = candidates_[0].first;
  double total = 0;
  for (auto& c : candidates_) {
    c.first = static_cast<float>(std::exp((c.first - top) / params_.temperature));
    total += c.first;
  }
  // Nucleus: the shortest prefix whose probability reaches top_p.
  size_t keep = 0;
  double kept = 0;
  while (keep < candidates_.size() && (keep == 0 || kept < params_.top_p * total)) kept += candidates_[keep++].first;
  const double r = std::uniform_real_distribution<double>(0.0, kept)(rng_);
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += candidates_[i].first;
    if (r < acc) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

}  // namespace kascade::engine
