// The CPU engine's threaded radix top-k (src/engine/cpu/top_k.h) against the rule written out
// (SPEC 4.3: the k largest, ties toward the lower index, output ascending), like the oracle's
// partial_sort: random values, heavy ties, every value equal, k at and around n, sizes around
// the chunk boundary, negative values and signed zeros, serial and on two threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../../src/engine/cpu/top_k.h"
#include "../../src/engine/cpu_kernels.h"

namespace cpu = kascade::engine::cpu;

namespace {

std::vector<int32_t> expected_top_k(const std::vector<float>& values, int k) {
  const int n = static_cast<int>(values.size());
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return values[x] > values[y]; });
  order.resize(static_cast<size_t>(std::clamp(k, 0, n)));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<int32_t> run(cpu::ThreadPool* pool, const std::vector<float>& values, int k) {
  cpu::TopKScratch scratch;
  const int n = static_cast<int>(values.size());
  std::vector<int32_t> out(static_cast<size_t>(std::clamp(k, 0, n)), -1);
  cpu::select_top_k(pool, values.data(), n, k, scratch, out.data());
  return out;
}

void check(const std::vector<float>& values, int k, const std::string& what) {
  SCOPED_TRACE(what + " n=" + std::to_string(values.size()) + " k=" + std::to_string(k));
  cpu::ThreadPool pool(2);
  const std::vector<int32_t> want = expected_top_k(values, k);
  EXPECT_EQ(run(nullptr, values, k), want);
  EXPECT_EQ(run(&pool, values, k), want);
}

std::vector<float> random_values(int n, unsigned seed, int distinct) {
  std::mt19937 rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  if (distinct > 0) {
    std::uniform_int_distribution<int> pick(0, distinct - 1);
    for (float& x : v) x = 0.001f * static_cast<float>(pick(rng));
  } else {
    std::exponential_distribution<float> mass(1000.f);  // pooled masses: many small, a few large
    for (float& x : v) x = mass(rng);
  }
  return v;
}

}  // namespace

TEST(CpuTopK, RandomValuesAcrossChunkBoundaries) {
  const int c = cpu::kTopKChunk;
  for (int n : {1, 2, 7, 300, c - 1, c, c + 1, 2 * c, 3 * c + 5, 8192}) {
    for (int k : {1, n / 10, n / 2, n - 1, n, n + 3}) {
      check(random_values(n, static_cast<unsigned>(n + k), 0), k, "random");
    }
  }
}

TEST(CpuTopK, TiesGoToTheLowerIndex) {
  const int c = cpu::kTopKChunk;
  for (int n : {10, c + 1, 3 * c + 5}) {
    for (int k : {1, n / 10, n / 2, n - 1}) {
      check(random_values(n, 7u, 3), k, "three values");
      check(std::vector<float>(static_cast<size_t>(n), 0.25f), k, "all equal");
    }
  }
  // The tie straddles a chunk boundary: equal values on both sides, k ends inside the run.
  std::vector<float> v(static_cast<size_t>(2 * c), 0.0f);
  for (int i = c - 5; i < c + 5; ++i) v[i] = 1.0f;
  check(v, 7, "tie across a chunk boundary");
}

TEST(CpuTopK, NegativeValuesAndSignedZeros) {
  std::vector<float> v = {-1.0f, 0.0f, -0.0f, 2.0f, -3.5f, 0.0f, -0.0f, -1.0f, 1e-30f, -1e-30f};
  for (int k = 0; k <= static_cast<int>(v.size()); ++k) check(v, k, "signed");
  std::vector<float> wide = random_values(5000, 3u, 0);
  for (size_t i = 0; i < wide.size(); i += 2) wide[i] = -wide[i];
  check(wide, 777, "half negative");
}

TEST(CpuTopK, KBelowOneSelectsNothing) {
  const std::vector<float> v = random_values(50, 1u, 0);
  cpu::TopKScratch scratch;
  std::vector<int32_t> out(1, -7);
  cpu::select_top_k(nullptr, v.data(), 50, 0, scratch, out.data());
  EXPECT_EQ(out[0], -7);
}
