// tests/gpu/prefill_cases.h — the prefill cases of the GPU-vs-oracle suite (prefill_cases.cu).
//
//   for (const auto& c : kascade::gpu_test::prefill_cases()) {
//     std::string problem = kascade::gpu_test::run_prefill_case(c);   // "" = pass
//   }
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kascade/tensor.h"

namespace kascade::gpu_test {

struct SeqSpec {
  int nq = 1;  // queries (the last nq positions)
  int p1 = 1;  // keys in the cache, queries included
};

struct PrefillCase {
  DType dtype = DType::BF16;
  int hq = 8, hkv = 2, head_dim = 128;
  std::vector<SeqSpec> seqs = {{64, 64}};
  int page_size = 16;
  int tile = 32;
  double rho = 0.1;
  int k_min = 128;
  int k_multiple = 1;
  bool fixed_budget = false;
  bool all_heads = false;
  float q_scale = 2.0f;  // peaked attention so that the top-k is meaningful
  uint32_t seed = 1;

  std::string vars() const;
};

std::vector<PrefillCase> prefill_cases();
// Runs all four roles of one case; "" when every comparison passes, else the first failure.
std::string run_prefill_case(const PrefillCase& c);

}  // namespace kascade::gpu_test
