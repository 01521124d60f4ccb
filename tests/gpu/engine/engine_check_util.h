// tests/gpu/engine/engine_check_util.h — what engine-gpu-check and engine-soak share: random
// models built in memory (a fixed seed), random token ids, the comparison of two logit rows
// (top-1 where the margin is clear, max |difference| in row stds, relative L2 of centred logits)
// and their option values' parsing.
//
//   const Model m = random_model(smollm2_shape(), 42, kFlatGain);
//   RowStats stats;  stats.add(reference_row, row, vocab, kBatchVsSingle);  stats.passed();
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"

namespace kascade::engine_check {

using kascade::engine::Model;
using kascade::engine::ModelConfig;

// Rows whose CPU top-1 margin is below this share of the row's std are near-ties that bf16
// rounding may legitimately flip (the top-2 gap of 49152 Gaussian logits is ~0.2 std on average).
constexpr double kMarginSigmas = 0.25;
// A command-line value as an integer / a number within [low, high], or one error line naming the flag.
inline long long to_integer(const std::string& flag, const std::string& value, long long low, long long high) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  KASCADE_CHECK(used == value.size() && !value.empty() && v >= low && v <= high,
                flag << ": expected an integer in [" << low << ", " << high << "], got '" << value << "'");
  return v;
}

inline double to_real(const std::string& flag, const std::string& value, double low, double high) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  KASCADE_CHECK(used == value.size() && !value.empty() && v >= low && v <= high,
                flag << ": expected a number in [" << low << ", " << high << "], got '" << value << "'");
  return v;
}

constexpr double kFlatGain = 1.5;  // q/k entry std: scores of std ~2, as flat as random models get

// Bounds on one row's difference from its reference, in units of the reference row's std.
struct RowBounds {
  double max_diff_sigmas = 0;  // max |difference|
  double max_rel_l2 = 0;       // relative L2 of the centred logits
};
// A batch against each of its sequences run alone: the same arithmetic, but a GEMM of one row runs
// through gemv and one of several rows through cuBLAS (their sums are ordered differently, and a
// flipped bf16 rounding propagates). Measured on H100 with dense attention on the SmolLM2 shape.
constexpr RowBounds kBatchVsSingle{0.1, 0.02};

// ---- random models --------------------------------------------------------------------------
class Filler {
 public:
  explicit Filler(uint64_t seed) : rng_(seed) {}
  std::vector<float> normal(size_t n, double stddev, double mean = 0) {
    std::normal_distribution<float> dist(static_cast<float>(mean), static_cast<float>(stddev));
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng_);
    return v;
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
};

// Output projections of the attention and FFN blocks are scaled by 0.5 so that the residual
// stream stays O(1). `qk_gain` sets the std of q and k entries and so the score std (~gain^2):
// (Peaked random models, gain 3.5, are chaotic: bf16 noise grows to O(1) over 30 dense layers.)
inline Model random_model(const ModelConfig& config, uint64_t seed, double qk_gain) {
  Model m;
  m.config = config;
  const ModelConfig& c = m.config;
  Filler f(seed);
  const size_t dim = static_cast<size_t>(c.dim), qd = static_cast<size_t>(c.hq) * c.head_dim,
               kvd = static_cast<size_t>(c.hkv) * c.head_dim, ffn = static_cast<size_t>(c.ffn);
  const double in_scale = 1.0 / std::sqrt(static_cast<double>(dim));
  m.token_embd = f.normal(static_cast<size_t>(c.vocab) * dim, 1.0);
  for (int l = 0; l < c.layers; ++l) {
    kascade::engine::LayerWeights w;
    w.attn_norm = f.normal(dim, 0.1, 1.0);
    w.wq = f.normal(qd * dim, qk_gain * in_scale);
    w.wk = f.normal(kvd * dim, qk_gain * in_scale);
    w.wv = f.normal(kvd * dim, in_scale);
    w.wo = f.normal(dim * qd, 0.5 / std::sqrt(static_cast<double>(qd)));
    if (c.qkv_bias) {
      w.bq = f.normal(qd, 0.1);
      w.bk = f.normal(kvd, 0.1);
      w.bv = f.normal(kvd, 0.1);
    }
    if (c.qk_norm) {
      w.q_norm = f.normal(static_cast<size_t>(c.head_dim), 0.1, qk_gain);
      w.k_norm = f.normal(static_cast<size_t>(c.head_dim), 0.1, qk_gain);
    }
    w.ffn_norm = f.normal(dim, 0.1, 1.0);
    w.w_gate = f.normal(ffn * dim, in_scale);
    w.w_up = f.normal(ffn * dim, in_scale);
    w.w_down = f.normal(dim * ffn, 0.5 / std::sqrt(static_cast<double>(ffn)));
    m.layers.push_back(std::move(w));
  }
  m.output_norm = f.normal(dim, 0.1, 1.0);
  // An untied output matrix: with tied embeddings a random model's argmax is its input token.
  if (!c.tied_embeddings) m.output = f.normal(static_cast<size_t>(c.vocab) * dim, 1.0);
  return m;
}

inline ModelConfig smollm2_shape() {
  ModelConfig c = kascade::engine::known_model_shape("smollm2-135m");
  c.tied_embeddings = false;  // see random_model: a tied random model's argmax is its input token
  return c;
}

inline std::vector<int32_t> random_tokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& t : ids) t = dist(rng);
  return ids;
}

inline int argmax(const float* row, int n) { return static_cast<int>(std::max_element(row, row + n) - row); }


// ---- comparing logit rows ---------------------------------------------------------------------
struct RowStats {
  static constexpr size_t kListedRows = 24;
  int rows = 0, compared_top1 = 0, top1_mismatches = 0, diff_failures = 0, l2_failures = 0;
  double max_abs_diff = 0, max_diff_sigmas = 0, max_rel_l2 = 0;
  std::vector<int> failed_rows;  // the first kListedRows rows (positions) over a bound

  void add(const float* cpu, const float* gpu, int vocab, const RowBounds& o) {
    ++rows;
    double mean = 0;
    for (int i = 0; i < vocab; ++i) mean += cpu[i];
    mean /= vocab;
    // The relative L2 error is taken on centred logits: softmax ignores a common offset, and a
    // row whose logits average near zero would otherwise turn a harmless shift into a large error.
    double var = 0, diff_sum = 0, diff2 = 0, max_diff = 0;
    for (int i = 0; i < vocab; ++i) {
      var += (cpu[i] - mean) * (cpu[i] - mean);
      const double d = static_cast<double>(gpu[i]) - cpu[i];
      diff_sum += d;
      diff2 += d * d;
      max_diff = std::max(max_diff, std::fabs(d));
    }
    const double sigma = std::sqrt(var / vocab);
    const double centred_diff2 = diff2 - diff_sum * diff_sum / vocab;
    const double rel_l2 = std::sqrt(std::max(centred_diff2, 0.0) / std::max(var, 1e-30));
    max_abs_diff = std::max(max_abs_diff, max_diff);
    max_diff_sigmas = std::max(max_diff_sigmas, max_diff / sigma);
    max_rel_l2 = std::max(max_rel_l2, rel_l2);
    const bool diff_ok = max_diff <= o.max_diff_sigmas * sigma;  // NaN fails too
    const bool l2_ok = rel_l2 <= o.max_rel_l2;
    if (!diff_ok) ++diff_failures;
    if (!l2_ok) ++l2_failures;
    if ((!diff_ok || !l2_ok) && failed_rows.size() < kListedRows) failed_rows.push_back(rows - 1);
    const int top = argmax(cpu, vocab);
    double second = -INFINITY;
    for (int i = 0; i < vocab; ++i) {
      if (i != top) second = std::max(second, static_cast<double>(cpu[i]));
    }
    if (cpu[top] - second > kMarginSigmas * sigma) {
      ++compared_top1;
      if (argmax(gpu, vocab) != top) ++top1_mismatches;
    }
  }
  bool passed() const { return top1_mismatches == 0 && diff_failures == 0 && l2_failures == 0 && rows > 0; }
  nlohmann::json to_json() const {
    return nlohmann::json{{"rows", rows},
                {"top1_compared", compared_top1},
                {"top1_mismatches", top1_mismatches},
                {"rows_over_diff_bound", diff_failures},
                {"rows_over_rel_l2_bound", l2_failures},
                {"max_abs_diff", max_abs_diff},
                {"max_diff_over_row_std", max_diff_sigmas},
                {"max_rel_l2", max_rel_l2},
                {"first_failed_rows", failed_rows}};
  }
};

}  // namespace kascade::engine_check
