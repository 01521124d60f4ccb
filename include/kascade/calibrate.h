// kascade/calibrate.h — SPEC 6: calibration statistics, layer scores, anchor choice, head map.
//
// These statistics propose plans; the model's held-out loss chooses among them
// (kascade/calibrate/choice.h, kascade/calibrate/protocol.h, docs/calibration.md). Both
// statistics of the protocol are a CalibrationStats: `spec` (prefill tiles, k_cal 64) and `paper`
// (prefill tiles and the decode rows of a generated answer, add_decode_row, k_cal 32).
//
// Calibration runs the dense model over development prompts and turns what it sees into a plan.
// The data flow is streaming and memory-bounded: nothing of size [L, L, Hkv, Hkv, tiles, n] is
// ever held. Per prompt, layer by layer, the caller hands over the tile-pooled post-softmax mass
// of SPEC 5 step 2 and the diagonal tile's mass; the accumulator keeps only every earlier layer's
// top-k_cal selections of the current prompt and folds each new layer into running minima.
//
//   kascade::CalibrationStats stats(num_layers, num_kv_heads);       // k_cal 64, tile 32
//   for (each prompt of n tokens) {
//     stats.begin_prompt(kascade::num_tiles(0, n, 32), n);
//     for (int l = 0; l < num_layers; ++l) {
//       stats.add_layer(l, pooled_l, diagonal_l);                       // [Hkv, tiles, n], [Hkv, tiles]
//       stats.add_importance(l, x_l, attn_out_l, n, hidden);           // [n, hidden] each
//     }
//     stats.end_prompt();
//   }
//   kascade::CoverageMatrix C = stats.coverage();                      // C[l1][l2][g1][g2]
//   kascade::LayerScores S = kascade::layer_scores(C, stats.importance());
//   std::vector<kascade::AnchorChoice> best = kascade::choose_anchors_range(S, 3, 8);
//   kascade::HeadMap map = kascade::choose_head_map(C, best.back().anchors);
// or all of it at once, then the plan:
//   kascade::CalibrationReport report = kascade::make_report(stats, 3, 8, /*chosen_m=*/5);
//   kascade::save_plan("plan.json", kascade::make_plan(report, {"smollm2-135m", 30, 9, 3, 64}));
//
// The objective of the anchor DP is SPEC 6's by default. Two documented deviations can be asked
// for (CalibrationObjective): another layer weighting than w, and the mean over tiles instead of
// the worst tile. A saved report holds w and both coverage matrices, so a plan for another
// objective is re-made from it without the model:
//   kascade::CalibrationReport old = kascade::load_report("report.json");
//   kascade::CalibrationReport variant =
//       kascade::replan(old, 3, 8, 5, {kascade::LayerWeight::Uniform, kascade::TileAggregate::Min});
//
// A tile counts towards the coverage only when its selection is a real choice (its prefix
// b > k_cal) and it has attention mass. docs/calibration.md gives the math, these rules, the
// streaming design and the memory bound.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kascade/budget.h"
#include "kascade/plan.h"
#include "kascade/tensor.h"

namespace kascade {

// How the reusing layer j is weighted in the DP objective sum over j of weight[j] * coverage:
//   Spec     weight = w[j], the importance of SPEC 6 (the default);
//   Uniform  weight = 1: every layer counts the same (deviation from SPEC 6);
//   Sqrt     weight = sqrt(w[j]): between the two (deviation from SPEC 6).
enum class LayerWeight { Spec, Uniform, Sqrt };
// How one prompt's tiles are aggregated into its coverage: Min, the worst tile (SPEC 6, the
// default), or Mean, the mean over the counted tiles (deviation from SPEC 6).
enum class TileAggregate { Min, Mean };

struct CalibrationObjective {
  LayerWeight layer_weight = LayerWeight::Spec;
  TileAggregate tile_aggregate = TileAggregate::Min;
  bool is_spec() const { return layer_weight == LayerWeight::Spec && tile_aggregate == TileAggregate::Min; }
};

std::string to_string(LayerWeight weight);        // "spec", "uniform", "sqrt"
std::string to_string(TileAggregate aggregate);   // "min", "mean"
// The inverse of to_string; throws naming `what` (e.g. "--layer-weight") and the accepted values.
LayerWeight parse_layer_weight(const std::string& text, const std::string& what);
TileAggregate parse_tile_aggregate(const std::string& text, const std::string& what);
// "layer weight spec, tile aggregate min" (+ " (SPEC 6)" or " (deviates from SPEC 6)").
std::string describe(const CalibrationObjective& objective);

// The DP's per-layer weights for the importance w under `weight` (w must be finite, >= 0 for Sqrt).
std::vector<double> layer_weights(const std::vector<double>& importance, LayerWeight weight);

// C[l1][l2][g1][g2] for l1 <= l2: the mean over prompts of the worst-tile coverage of reusing
// layer l1's kv head g1 selection for layer l2's kv head g2 (SPEC 6). Entries with l1 > l2 do
// not exist; asking for one throws.
class CoverageMatrix {
 public:
  CoverageMatrix() = default;
  CoverageMatrix(int num_layers, int num_kv_heads);

  int num_layers() const { return num_layers_; }
  int num_kv_heads() const { return num_kv_heads_; }
  double& at(int l1, int l2, int g1, int g2);
  double at(int l1, int l2, int g1, int g2) const;

 private:
  size_t index(int l1, int l2, int g1, int g2) const;
  int num_layers_ = 0;
  int num_kv_heads_ = 0;
  std::vector<double> values_;  // [L, L, Hkv, Hkv], only l1 <= l2 used
};

// S[l1][l2] for l1 <= l2: how much layer l2 is worth when it reuses anchor l1's selections.
class LayerScores {
 public:
  LayerScores() = default;
  explicit LayerScores(int num_layers);

  int num_layers() const { return num_layers_; }
  double& at(int l1, int l2);
  double at(int l1, int l2) const;

 private:
  size_t index(int l1, int l2) const;
  int num_layers_ = 0;
  std::vector<double> values_;  // [L, L], only l1 <= l2 used
};

// The streaming accumulator of SPEC 6's statistics for one model shape.
class CalibrationStats {
 public:
  // k_cal: size of each calibration selection (SPEC 6, default 64); tile: prefill tile T.
  CalibrationStats(int num_layers, int num_kv_heads, int k_cal = kDefaultKCal, int tile = kDefaultTile);

  // Opens a prompt of n tokens prefilled from position 0; num_tiles must be ceil(n / tile).
  void begin_prompt(int64_t num_tiles, int64_t n);

  // Layer `layer` of the open prompt; layers come in increasing order 0, 1, ..., L-1.
  //   pooled   F32 [Hkv, tiles, n]: P_l[g][tau][i] of SPEC 5 step 2. Only candidates i < b
  //            (b = tau * tile, the tile's first position) are read.
  //   diagonal F32 [Hkv, tiles]:    d_l[g][tau], the mass of the tile's own keys b..t summed over
  //            the tile's rows.
  // Any strides are accepted. Values must be finite and non-negative.
  void add_layer(int layer, const TensorView& pooled, const TensorView& diagonal);

  // The same, tile chunk by tile chunk, to bound the caller's memory: pooled [Hkv, chunk, n] and
  // diagonal [Hkv, chunk] hold tiles first_tile .. first_tile + chunk - 1. A layer's chunks come in
  // order and cover all tiles before the next layer starts.
  void add_layer_tiles(int layer, int64_t first_tile, const TensorView& pooled, const TensorView& diagonal);

  // Decode rows of an answer generated after the prompt (the `paper` statistic of SPEC 6): after
  // all L layers of the prompt's tiles, row r (r = 0, 1, ...: the query at position n + r, over
  // the keys 0..n + r, its own included) comes layer by layer, layers 0..L-1 in order, then row
  // r + 1. pooled F32 [Hkv, n + r + 1]: P_l[g][i] of SPEC 4 step 2 (the group-pooled softmax of
  // the row). A decode row has no diagonal term (d = 0). A row whose keys number at most k_cal
  // is trivial (every selection is all keys) and left out, as trivial tiles are. Rows and tiles
  // share the prompt's minimum (and mean).
  void add_decode_row(int layer, const TensorView& pooled);

  // Closes the prompt (all L layers must have been added, and every decode row begun must have
  // all L layers) and folds its worst-tile coverage into the mean over prompts.
  void end_prompt();

  // Layer importance samples: x [tokens, hidden] is the residual stream entering layer `layer`,
  // attn_out [tokens, hidden] the attention block's output on it. Adds 1 - cos(x, x + attn_out) per
  // token. Independent of begin_prompt/end_prompt; any order.
  void add_importance(int layer, const float* x, const float* attn_out, int64_t tokens, int64_t hidden);

  // Adds the closed prompts and importance samples of `other` (same shape, no open prompt in
  // either): calibrate disjoint parts of the dev set in parallel (threads, GPUs), then merge.
  void merge(const CalibrationStats& other);

  int num_layers() const { return num_layers_; }
  int num_kv_heads() const { return num_kv_heads_; }
  int k_cal() const { return k_cal_; }
  int tile() const { return tile_; }
  int64_t prompts() const { return prompts_done_; }
  // Tiles that entered the coverage minimum, and tiles left out: trivial ones (b <= k_cal, every
  // selection is the whole prefix) and massless ones (zero denominator), counted over (layer,
  // kv head, tile) of closed prompts.
  int64_t counted_tiles() const { return counted_tiles_; }
  int64_t skipped_trivial_tiles() const { return skipped_trivial_tiles_; }
  int64_t skipped_zero_mass_tiles() const { return skipped_zero_mass_tiles_; }
  // Decode rows that entered the coverage, and trivial ones left out (counted over (layer, kv
  // head, row) of closed prompts, as tiles are).
  int64_t counted_rows() const { return counted_rows_; }
  int64_t skipped_trivial_rows() const { return skipped_trivial_rows_; }
  // Of the per-prompt minima of reuse pairs (l1 < l2, every g1, g2, prompts with evidence for
  // (l2, g2)), how many a decode row set (strictly below every tile of the prompt), and how many
  // there were: the `paper` statistic's report of how much the answer rows decide.
  int64_t minima_from_decode_rows() const { return minima_from_rows_; }
  int64_t minima_total() const { return minima_total_; }
  int64_t importance_tokens(int layer) const;
  // The first position at which a tile can say anything about reuse: the smallest tile start
  // b > k_cal. Prompts of at most this many tokens add nothing to the coverage.
  int64_t first_informative_position() const;

  // C[l1][l2][g1][g2], each prompt's tiles aggregated by `aggregate` (SPEC 6: the worst tile);
  // throws when some (l2, g2) has no counted tile in any prompt.
  CoverageMatrix coverage(TileAggregate aggregate = TileAggregate::Min) const;
  // w[l], the mean over all tokens given to add_importance; throws when a layer has none.
  std::vector<double> importance() const;
  // Per layer: the mean over counted (prompt, kv head, tile) of the share of the tile's mass that
  // its own top-k_cal candidates plus the diagonal carry, (top + d) / (all candidates + d). 1 means
  // the layer's attention is entirely inside k_cal keys plus the diagonal.
  std::vector<double> topk_mass_share() const;

 private:
  void check_open_layer(int layer, int64_t first_tile, const TensorView& pooled, const TensorView& diagonal) const;
  size_t cov_index(int l1, int l2, int g1, int g2) const;
  size_t sel_offset(int layer, int g, int64_t tau) const;

  int num_layers_;
  int num_kv_heads_;
  int k_cal_;
  int tile_;

  // Open prompt.
  bool prompt_open_ = false;
  int64_t prompt_tiles_ = 0;
  int64_t prompt_n_ = 0;
  int next_layer_ = 0;         // the layer add_layer_tiles expects
  int64_t next_tile_ = 0;      // the tile of next_layer_ it expects
  std::vector<int32_t> selections_;       // [L, Hkv, tiles, k_cal]; only tiles with b > k_cal are used
  std::vector<double> prompt_min_;        // [L, L, Hkv, Hkv] worst-tile coverage of the open prompt
  std::vector<double> prompt_sum_;        // [L, L, Hkv, Hkv] coverage summed over its counted tiles
  std::vector<int64_t> prompt_tiles_counted_;  // [L, Hkv] counted tiles of (l2, g2) in the open prompt
  std::vector<uint8_t> prompt_has_tile_;  // [L, Hkv] (l2, g2) saw a counted tile in the open prompt
  std::vector<double> prompt_share_sum_;  // [L] top-k mass share summed over counted (g, tau)
  std::vector<int64_t> prompt_share_count_;
  int64_t prompt_counted_ = 0, prompt_skipped_trivial_ = 0, prompt_skipped_zero_ = 0;
  std::vector<uint8_t> prompt_min_from_row_;  // [L, L, Hkv, Hkv] the open prompt's minimum came from a decode row
  // Decode rows of the open prompt: the row being added and its layers' selections.
  int64_t rows_begun_ = 0;          // rows of the open prompt begun so far
  int next_row_layer_ = 0;          // the layer add_decode_row expects (of row rows_begun_ - 1, or 0)
  std::vector<int32_t> row_selections_;  // [L, Hkv, k_cal] of the current row
  int64_t prompt_counted_rows_ = 0, prompt_skipped_trivial_rows_ = 0;

  // Over closed prompts.
  int64_t prompts_done_ = 0;
  std::vector<double> coverage_sum_;     // [L, L, Hkv, Hkv] sum over prompts of the worst tile
  std::vector<double> coverage_mean_sum_;  // [L, L, Hkv, Hkv] sum over prompts of the tile mean
  std::vector<int64_t> coverage_count_;  // [L, Hkv] prompts that contributed to (l2, g2)
  std::vector<double> share_sum_;        // [L]
  std::vector<int64_t> share_count_;     // [L]
  int64_t counted_tiles_ = 0, skipped_trivial_tiles_ = 0, skipped_zero_mass_tiles_ = 0;
  int64_t counted_rows_ = 0, skipped_trivial_rows_ = 0;
  int64_t minima_from_rows_ = 0, minima_total_ = 0;

  // Importance.
  int64_t importance_hidden_ = 0;  // fixed by the first call
  std::vector<double> importance_sum_;     // [L]
  std::vector<int64_t> importance_count_;  // [L]
};

// S[l1][l2] = w[l2] * mean over g2 of (max over g1 of C[l1][l2][g1][g2]) for l1 <= l2; `importance`
// is w for SPEC 6, or any per-layer weights (layer_weights) for a variant objective.
LayerScores layer_scores(const CoverageMatrix& coverage, const std::vector<double>& importance);

// An anchor set A (sorted, contains 0) and its score sum over j of S[a(j)][j].
struct AnchorChoice {
  std::vector<int> anchors;
  double score = 0.0;
};

// The score of a given anchor set (sorted, distinct, starting at 0).
double anchor_score(const LayerScores& scores, const std::vector<int>& anchors);

// The exact best set of m anchors by dynamic programming, O(m L^2). Among equal scores the set
// whose anchors come earliest wins. Throws unless 1 <= m <= L.
AnchorChoice choose_anchors(const LayerScores& scores, int m);

// The best set for every m in m_lo..m_hi (element i is m = m_lo + i), from one DP table.
std::vector<AnchorChoice> choose_anchors_range(const LayerScores& scores, int m_lo, int m_hi);

// map[j][g2]: the kv head of anchor a(j) whose selection layer j's kv head g2 reads.
using HeadMap = std::vector<std::vector<int>>;

// map[j][g2] = argmax over g1 of C[a(j)][j][g1][g2] (ties: lowest g1); anchors map to themselves.
HeadMap choose_head_map(const CoverageMatrix& coverage, const std::vector<int>& anchors);

// What calibration saw and chose, for people and for plotting.
struct CalibrationReport {
  int num_layers = 0;
  int num_kv_heads = 0;
  int k_cal = 0;
  int tile = 0;
  int64_t prompts = 0;
  int64_t counted_tiles = 0;
  int64_t skipped_trivial_tiles = 0;
  int64_t skipped_zero_mass_tiles = 0;
  // Decode rows of generated answers (the `paper` statistic; 0 without them): rows counted and
  // trivial, and how many of the per-prompt minima of reuse pairs they set, of how many.
  int64_t counted_rows = 0;
  int64_t skipped_trivial_rows = 0;
  int64_t minima_from_decode_rows = 0;
  int64_t minima_total = 0;
  std::string dev_set;                    // what calibration ran on (empty when unknown)
  CalibrationObjective objective;         // what S, the choices and the head map were made with
  std::vector<double> importance;         // w[l]
  LayerScores scores;                     // S of the objective
  CoverageMatrix coverage;                // C, worst tile per prompt (SPEC 6)
  CoverageMatrix coverage_mean_tile;      // C, mean over tiles per prompt (empty when not recorded)
  std::vector<AnchorChoice> choices;      // best set for each m of the range
  int chosen = -1;                        // index into choices of the set the plan uses
  HeadMap head_map;                       // of the chosen set
  std::vector<double> plan_coverage;      // per layer j: mean over g2 of C[a(j)][j][map[j][g2]][g2]
  std::vector<double> topk_mass_share;    // per layer, see CalibrationStats::topk_mass_share
};

// Builds the report from the statistics: S, w, the DP for every m in m_lo..m_hi and the head map
// of the set with m = chosen_m, all under `objective` (SPEC 6 by default).
CalibrationReport make_report(const CalibrationStats& stats, int m_lo, int m_hi, int chosen_m,
                              const CalibrationObjective& objective = {});

// The same from a report's w and coverage matrices (no statistics, no model): S, the choices and
// the head map re-made for another objective or range. Throws when the report lacks the
// coverage the objective needs (reports of older versions have no mean-tile coverage).
CalibrationReport replan(const CalibrationReport& report, int m_lo, int m_hi, int chosen_m,
                         const CalibrationObjective& objective);

nlohmann::json report_to_json(const CalibrationReport& report);
// Writes report_to_json to `path` (replacing it); throws naming the path on failure.
void save_report(const CalibrationReport& report, const std::string& path);
// The inverse of report_to_json (format kascade-calibration-report, version 1): w, both coverage
// matrices when present, the objective (SPEC 6 when the report does not say), the choices and
// the head map. `what` names the source in errors.
CalibrationReport report_from_json(const nlohmann::json& json, const std::string& what);
CalibrationReport load_report(const std::string& path);

// The model a plan is made for (its identity and shape, SPEC 2).
struct CalibrationTarget {
  std::string name;
  int layers = 0;
  int hq = 0;
  int hkv = 0;
  int head_dim = 0;
};

// The plan of the report's chosen anchor set: anchors, head map, the given top-k policy and
// provenance, and the calibration results (k_cal, w, S, objective, every candidate set).
// Pooling::Group needs statistics per kv head (report.num_kv_heads == hkv); Pooling::All needs
// statistics pooled over all heads (report.num_kv_heads == 1) and gets the identity head map.
// params.tile must equal the calibration tile. The result passes validate_plan.
Plan make_plan(const CalibrationReport& report, const CalibrationTarget& model, const SparsityParams& params = {},
               const PlanProvenance& provenance = {});

}  // namespace kascade
