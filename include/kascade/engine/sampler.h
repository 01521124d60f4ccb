// kascade/engine/sampler.h — picks the next token from logits: greedy (temperature 0) or
// seeded temperature + top-p (nucleus) sampling. The same seed gives the same tokens.
//
//   kascade::engine::Sampler s({/*temperature=*/0.7f, /*top_p=*/0.9f, /*seed=*/42});
//   int32_t next = s.sample(logits.data(), vocab);
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace kascade::engine {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy (argmax, lowest id on ties)
  float top_p = 1.f;        // keep the smallest set of most likely tokens whose mass reaches top_p
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);  // throws on temperature < 0 or top_p outside (0, 1]
  int32_t sample(const float* logits, int vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace kascade::engine
