// The streaming accumulator of SPEC 6: per-prompt top-k_cal selections, worst-tile coverage,
// the mean over prompts, the top-k mass share and the layer importance.
//
// Per prompt the only state that grows with the prompt is the selections of the layers seen so
// far, [L, Hkv, tiles, k_cal] int32; the coverage of a new layer l2 is computed tile by tile from
// its own pooled mass and those stored index lists, and immediately folded into the running
// minimum. docs/calibration.md states the memory bound.
#include <algorithm>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>

#include "kascade/calibrate.h"
#include "kascade/error.h"

namespace kascade {

namespace {

// Reads one element of a strided F32 view of rank <= 3 (the caller checked dtype and rank).
inline float view_at(const TensorView& v, int64_t a, int64_t b, int64_t c = 0) {
  const float* base = static_cast<const float*>(v.data);
  return base[a * v.stride[0] + b * v.stride[1] + (v.rank > 2 ? c * v.stride[2] : 0)];
}

inline bool is_mass(float x) { return std::isfinite(x) && x >= 0.0f; }

// The k largest of row[0..b) (k < b, values finite), ties toward the lower index, written to
// `out` in ascending index order. The k-th largest value is found with a min-heap of the k best
// values so far: after the first few hundred keys almost every value loses one comparison with
// the heap's top, so this is one pass at about one comparison per key (a selection over the copied
// row was 4x slower at b = 8192, k = 64). Then every index above that value is taken, and as many
// of the indices equal to it, lowest first, as fill the k slots.
void select_top_k(const float* row, int64_t b, int64_t k, std::vector<float>& heap, int32_t* out) {
  heap.assign(row, row + k);
  std::make_heap(heap.begin(), heap.end(), std::greater<float>());
  for (int64_t i = k; i < b; ++i) {
    if (row[i] > heap.front()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<float>());
      heap.back() = row[i];
      std::push_heap(heap.begin(), heap.end(), std::greater<float>());
    }
  }
  const float threshold = heap.front();
  int64_t above = 0;
  for (int64_t i = 0; i < b; ++i) above += row[i] > threshold;
  int64_t ties_left = k - above;
  int64_t taken = 0;
  for (int64_t i = 0; i < b && taken < k; ++i) {
    if (row[i] > threshold || (row[i] == threshold && ties_left-- > 0)) out[taken++] = static_cast<int32_t>(i);
  }
}

}  // namespace

CalibrationStats::CalibrationStats(int num_layers, int num_kv_heads, int k_cal, int tile)
    : num_layers_(num_layers), num_kv_heads_(num_kv_heads), k_cal_(k_cal), tile_(tile) {
  KASCADE_CHECK(num_layers >= 1, "CalibrationStats: num_layers must be >= 1, got " << num_layers);
  KASCADE_CHECK(num_kv_heads >= 1, "CalibrationStats: num_kv_heads must be >= 1, got " << num_kv_heads);
  KASCADE_CHECK(k_cal >= 1, "CalibrationStats: k_cal must be >= 1, got " << k_cal);
  KASCADE_CHECK(tile >= 1, "CalibrationStats: tile must be >= 1, got " << tile);
  const size_t L = static_cast<size_t>(num_layers), H = static_cast<size_t>(num_kv_heads);
  prompt_min_.assign(L * L * H * H, 0.0);
  prompt_min_from_row_.assign(L * L * H * H, 0);
  row_selections_.assign(L * H * static_cast<size_t>(k_cal), -1);
  prompt_sum_.assign(L * L * H * H, 0.0);
  prompt_tiles_counted_.assign(L * H, 0);
  prompt_has_tile_.assign(L * H, 0);
  prompt_share_sum_.assign(L, 0.0);
  prompt_share_count_.assign(L, 0);
  coverage_sum_.assign(L * L * H * H, 0.0);
  coverage_mean_sum_.assign(L * L * H * H, 0.0);
  coverage_count_.assign(L * H, 0);
  share_sum_.assign(L, 0.0);
  share_count_.assign(L, 0);
  importance_sum_.assign(L, 0.0);
  importance_count_.assign(L, 0);
}

size_t CalibrationStats::cov_index(int l1, int l2, int g1, int g2) const {
  const size_t L = static_cast<size_t>(num_layers_), H = static_cast<size_t>(num_kv_heads_);
  return ((static_cast<size_t>(l1) * L + static_cast<size_t>(l2)) * H + static_cast<size_t>(g1)) * H +
         static_cast<size_t>(g2);
}

size_t CalibrationStats::sel_offset(int layer, int g, int64_t tau) const {
  const size_t H = static_cast<size_t>(num_kv_heads_), T = static_cast<size_t>(prompt_tiles_);
  return ((static_cast<size_t>(layer) * H + static_cast<size_t>(g)) * T + static_cast<size_t>(tau)) *
         static_cast<size_t>(k_cal_);
}

void CalibrationStats::begin_prompt(int64_t tiles, int64_t n) {
  KASCADE_CHECK(!prompt_open_, "CalibrationStats::begin_prompt: the previous prompt is still open (call end_prompt)");
  KASCADE_CHECK(n >= 1 && n <= std::numeric_limits<int32_t>::max(),
                "CalibrationStats::begin_prompt: prompt length n must be in 1.." << std::numeric_limits<int32_t>::max()
                                                                                  << ", got " << n);
  const int64_t expected = num_tiles(0, n, tile_);
  KASCADE_CHECK(tiles == expected, "CalibrationStats::begin_prompt: " << tiles << " tiles for n = " << n
                                                                      << " tokens, expected ceil(n / " << tile_
                                                                      << ") = " << expected);
  // The one allocation that grows with the prompt: the selections of every layer.
  const size_t selection_count = static_cast<size_t>(num_layers_) * static_cast<size_t>(num_kv_heads_) *
                                 static_cast<size_t>(tiles) * static_cast<size_t>(k_cal_);
  try {
    selections_.assign(selection_count, -1);
  } catch (const std::exception&) {
    KASCADE_FAIL("CalibrationStats::begin_prompt: cannot allocate the selections of a prompt of n = "
                 << n << " tokens (" << selection_count * sizeof(int32_t) << " bytes)");
  }
  prompt_open_ = true;
  prompt_tiles_ = tiles;
  prompt_n_ = n;
  next_layer_ = 0;
  next_tile_ = 0;
  std::fill(prompt_min_.begin(), prompt_min_.end(), std::numeric_limits<double>::infinity());
  std::fill(prompt_min_from_row_.begin(), prompt_min_from_row_.end(), 0);
  rows_begun_ = 0;
  next_row_layer_ = 0;
  prompt_counted_rows_ = prompt_skipped_trivial_rows_ = 0;
  std::fill(prompt_sum_.begin(), prompt_sum_.end(), 0.0);
  std::fill(prompt_tiles_counted_.begin(), prompt_tiles_counted_.end(), 0);
  std::fill(prompt_has_tile_.begin(), prompt_has_tile_.end(), 0);
  std::fill(prompt_share_sum_.begin(), prompt_share_sum_.end(), 0.0);
  std::fill(prompt_share_count_.begin(), prompt_share_count_.end(), 0);
  prompt_counted_ = prompt_skipped_trivial_ = prompt_skipped_zero_ = 0;
}

void CalibrationStats::add_layer(int layer, const TensorView& pooled, const TensorView& diagonal) {
  KASCADE_CHECK(prompt_open_, "CalibrationStats::add_layer: no open prompt (call begin_prompt first)");
  KASCADE_CHECK(pooled.rank == 3 && pooled.shape[1] == prompt_tiles_,
                "CalibrationStats::add_layer: layer " << layer << " pooled has shape " << pooled.shape_str()
                                                      << ", expected [" << num_kv_heads_ << ", " << prompt_tiles_
                                                      << ", " << prompt_n_ << "] (all tiles)");
  add_layer_tiles(layer, 0, pooled, diagonal);
}

void CalibrationStats::check_open_layer(int layer, int64_t first_tile, const TensorView& pooled,
                                        const TensorView& diagonal) const {
  KASCADE_CHECK(prompt_open_, "CalibrationStats::add_layer: no open prompt (call begin_prompt first)");
  KASCADE_CHECK(layer >= 0 && layer < num_layers_,
                "CalibrationStats::add_layer: layer " << layer << " out of range 0.." << num_layers_ - 1);
  KASCADE_CHECK(layer == next_layer_ && first_tile == next_tile_,
                "CalibrationStats::add_layer: got layer " << layer << " from tile " << first_tile
                                                          << ", expected layer " << next_layer_ << " from tile "
                                                          << next_tile_ << " (layers in increasing order, tiles in order)");
  KASCADE_CHECK(pooled.dtype == DType::F32 && diagonal.dtype == DType::F32,
                "CalibrationStats::add_layer: layer " << layer << " pooled and diagonal must be f32, got "
                                                      << dtype_name(pooled.dtype) << " and "
                                                      << dtype_name(diagonal.dtype));
  KASCADE_CHECK(pooled.rank == 3 && pooled.shape[0] == num_kv_heads_ && pooled.shape[1] >= 1 &&
                    first_tile + pooled.shape[1] <= prompt_tiles_ && pooled.shape[2] == prompt_n_,
                "CalibrationStats::add_layer: layer " << layer << " pooled has shape " << pooled.shape_str()
                                                      << ", expected [" << num_kv_heads_ << ", 1.."
                                                      << prompt_tiles_ - first_tile << ", " << prompt_n_ << "]");
  KASCADE_CHECK(diagonal.rank == 2 && diagonal.shape[0] == num_kv_heads_ && diagonal.shape[1] == pooled.shape[1],
                "CalibrationStats::add_layer: layer " << layer << " diagonal has shape " << diagonal.shape_str()
                                                      << ", expected [" << num_kv_heads_ << ", " << pooled.shape[1]
                                                      << "]");
  KASCADE_CHECK(pooled.data != nullptr && diagonal.data != nullptr,
                "CalibrationStats::add_layer: layer " << layer << " null data pointer");
  // Validate every value before touching any state, so that bad input leaves the accumulator as it was.
  for (int g = 0; g < num_kv_heads_; ++g) {
    for (int64_t t = 0; t < pooled.shape[1]; ++t) {
      const int64_t b = tile_begin(0, first_tile + t, tile_);
      const float d = view_at(diagonal, g, t);
      KASCADE_CHECK(is_mass(d), "CalibrationStats::add_layer: layer " << layer << " diagonal[g=" << g << "][tau="
                                                                       << first_tile + t << "] = " << d
                                                                       << " is not a finite non-negative mass");
      for (int64_t i = 0; i < b; ++i) {
        const float p = view_at(pooled, g, t, i);
        KASCADE_CHECK(is_mass(p), "CalibrationStats::add_layer: layer "
                                      << layer << " pooled[g=" << g << "][tau=" << first_tile + t << "][i=" << i
                                      << "] = " << p << " is not a finite non-negative mass");
      }
    }
  }
}

void CalibrationStats::add_layer_tiles(int layer, int64_t first_tile, const TensorView& pooled,
                                       const TensorView& diagonal) {
  check_open_layer(layer, first_tile, pooled, diagonal);
  const int H = num_kv_heads_;
  const int64_t chunk = pooled.shape[1];
  // Scratch reused across the chunk's tiles: the tile's candidate rows of every kv head, and a
  // copy of one row for the selection.
  std::vector<float> rows;
  std::vector<float> scratch;
  for (int64_t t = 0; t < chunk; ++t) {
    const int64_t tau = first_tile + t;
    const int64_t b = tile_begin(0, tau, tile_);
    if (b <= k_cal_) {
      // Every selection of this tile is its whole prefix (none at all when b = 0), so every
      // coverage is exactly 1 whatever is reused: the tile says nothing about reuse. Left out, so
      // that short prompts do not pull the mean over prompts towards 1.
      prompt_skipped_trivial_ += H;
      continue;
    }
    const int64_t k = k_cal_;
    rows.resize(static_cast<size_t>(H) * static_cast<size_t>(b));
    for (int g = 0; g < H; ++g) {
      float* row = rows.data() + static_cast<size_t>(g) * static_cast<size_t>(b);
      for (int64_t i = 0; i < b; ++i) row[i] = view_at(pooled, g, t, i);
      select_top_k(row, b, k, scratch, selections_.data() + sel_offset(layer, g, tau));
    }
    // Coverage of every (l1 <= layer, g1) for every g2 on this tile.
    for (int g2 = 0; g2 < H; ++g2) {
      const float* row = rows.data() + static_cast<size_t>(g2) * static_cast<size_t>(b);
      const double d = view_at(diagonal, g2, t);
      auto covered = [&](int l1, int g1) {
        const int32_t* sel = selections_.data() + sel_offset(l1, g1, tau);
        double sum = 0.0;
        for (int64_t s = 0; s < k; ++s) sum += row[sel[s]];
        return sum + d;
      };
      const double denominator = covered(layer, g2);
      if (denominator == 0.0) {
        // No mass in the tile at all (the numerators are 0 too): 0/0 is no evidence either way.
        ++prompt_skipped_zero_;
        continue;
      }
      ++prompt_counted_;
      double all_candidates = 0.0;
      for (int64_t i = 0; i < b; ++i) all_candidates += row[i];
      prompt_share_sum_[static_cast<size_t>(layer)] += denominator / (all_candidates + d);
      ++prompt_share_count_[static_cast<size_t>(layer)];
      const size_t slot = static_cast<size_t>(layer) * static_cast<size_t>(H) + static_cast<size_t>(g2);
      prompt_has_tile_[slot] = 1;
      ++prompt_tiles_counted_[slot];
      for (int l1 = 0; l1 <= layer; ++l1) {
        for (int g1 = 0; g1 < H; ++g1) {
          const size_t at = cov_index(l1, layer, g1, g2);
          const double c = covered(l1, g1) / denominator;
          if (c < prompt_min_[at]) {
            prompt_min_[at] = c;
            prompt_min_from_row_[at] = 0;
          }
          prompt_sum_[at] += c;
        }
      }
    }
  }
  next_tile_ = first_tile + chunk;
  if (next_tile_ == prompt_tiles_) {
    ++next_layer_;
    next_tile_ = 0;
  }
}

void CalibrationStats::add_decode_row(int layer, const TensorView& pooled) {
  KASCADE_CHECK(prompt_open_, "CalibrationStats::add_decode_row: no open prompt (call begin_prompt first)");
  KASCADE_CHECK(next_layer_ == num_layers_, "CalibrationStats::add_decode_row: the prompt's tiles are incomplete (layer "
                                                << next_layer_ << " of " << num_layers_
                                                << " is next); decode rows come after all layers of the prompt");
  // A new row starts at layer 0 once the previous row has all its layers.
  const bool starts_row = rows_begun_ == 0 || next_row_layer_ == num_layers_;
  const int expected = starts_row ? 0 : next_row_layer_;
  KASCADE_CHECK(layer == expected, "CalibrationStats::add_decode_row: got layer "
                                       << layer << ", expected layer " << expected << " of decode row "
                                       << (starts_row ? rows_begun_ : rows_begun_ - 1) << " (layers in increasing order)");
  const int64_t row = starts_row ? rows_begun_ : rows_begun_ - 1;
  const int64_t n = prompt_n_ + row + 1;  // keys 0..n-1: the prompt, the earlier rows and the row itself
  KASCADE_CHECK(n <= std::numeric_limits<int32_t>::max(), "CalibrationStats::add_decode_row: too many rows");
  const int H = num_kv_heads_;
  KASCADE_CHECK(pooled.dtype == DType::F32, "CalibrationStats::add_decode_row: layer "
                                                << layer << " pooled must be f32, got " << dtype_name(pooled.dtype));
  KASCADE_CHECK(pooled.rank == 2 && pooled.shape[0] == H && pooled.shape[1] == n,
                "CalibrationStats::add_decode_row: layer " << layer << " row " << row << " pooled has shape "
                                                           << pooled.shape_str() << ", expected [" << H << ", " << n
                                                           << "]");
  KASCADE_CHECK(pooled.data != nullptr, "CalibrationStats::add_decode_row: layer " << layer << " null data pointer");
  for (int g = 0; g < H; ++g) {
    for (int64_t i = 0; i < n; ++i) {
      const float p = view_at(pooled, g, i);
      KASCADE_CHECK(is_mass(p), "CalibrationStats::add_decode_row: layer " << layer << " row " << row << " pooled[g=" << g
                                                                            << "][i=" << i << "] = " << p
                                                                            << " is not a finite non-negative mass");
    }
  }
  if (starts_row) ++rows_begun_;
  next_row_layer_ = layer + 1;
  if (n <= k_cal_) {
    // Every selection is all n keys: no real choice, coverage 1 whatever is reused.
    prompt_skipped_trivial_rows_ += H;
    return;
  }
  const int64_t k = k_cal_;
  std::vector<float> rows(static_cast<size_t>(H) * static_cast<size_t>(n));
  std::vector<float> scratch;
  auto selection = [&](int l, int g) {
    return row_selections_.data() + (static_cast<size_t>(l) * static_cast<size_t>(H) + static_cast<size_t>(g)) *
                                        static_cast<size_t>(k_cal_);
  };
  for (int g = 0; g < H; ++g) {
    float* r = rows.data() + static_cast<size_t>(g) * static_cast<size_t>(n);
    for (int64_t i = 0; i < n; ++i) r[i] = view_at(pooled, g, i);
    select_top_k(r, n, k, scratch, selection(layer, g));
  }
  for (int g2 = 0; g2 < H; ++g2) {
    const float* r = rows.data() + static_cast<size_t>(g2) * static_cast<size_t>(n);
    auto covered = [&](int l1, int g1) {
      const int32_t* sel = selection(l1, g1);
      double sum = 0.0;
      for (int64_t s = 0; s < k; ++s) sum += r[sel[s]];
      return sum;
    };
    const double denominator = covered(layer, g2);
    if (denominator == 0.0) {
      ++prompt_skipped_zero_;
      continue;
    }
    ++prompt_counted_rows_;
    double all_keys = 0.0;
    for (int64_t i = 0; i < n; ++i) all_keys += r[i];
    prompt_share_sum_[static_cast<size_t>(layer)] += denominator / all_keys;
    ++prompt_share_count_[static_cast<size_t>(layer)];
    const size_t slot = static_cast<size_t>(layer) * static_cast<size_t>(H) + static_cast<size_t>(g2);
    prompt_has_tile_[slot] = 1;
    ++prompt_tiles_counted_[slot];
    // The row's own layers only: rows are longer than k_cal at every layer once they are at one
    // (n does not depend on the layer), so the earlier layers' selections of this row exist.
    for (int l1 = 0; l1 <= layer; ++l1) {
      for (int g1 = 0; g1 < H; ++g1) {
        const size_t at = cov_index(l1, layer, g1, g2);
        const double c = covered(l1, g1) / denominator;
        if (c < prompt_min_[at]) {
          prompt_min_[at] = c;
          prompt_min_from_row_[at] = 1;
        }
        prompt_sum_[at] += c;
      }
    }
  }
}

void CalibrationStats::end_prompt() {
  KASCADE_CHECK(prompt_open_, "CalibrationStats::end_prompt: no open prompt");
  KASCADE_CHECK(next_layer_ == num_layers_, "CalibrationStats::end_prompt: only "
                                                << next_layer_ << " of " << num_layers_
                                                << " layers were added (the next expected is layer " << next_layer_
                                                << " from tile " << next_tile_ << ")");
  KASCADE_CHECK(rows_begun_ == 0 || next_row_layer_ == num_layers_,
                "CalibrationStats::end_prompt: decode row " << rows_begun_ - 1 << " has only " << next_row_layer_
                                                            << " of " << num_layers_ << " layers");
  const int L = num_layers_, H = num_kv_heads_;
  for (int l2 = 0; l2 < L; ++l2) {
    for (int g2 = 0; g2 < H; ++g2) {
      const size_t slot = static_cast<size_t>(l2) * static_cast<size_t>(H) + static_cast<size_t>(g2);
      if (!prompt_has_tile_[slot]) continue;  // this prompt has no evidence for (l2, g2)
      ++coverage_count_[slot];
      const double tiles = static_cast<double>(prompt_tiles_counted_[slot]);
      for (int l1 = 0; l1 <= l2; ++l1) {
        for (int g1 = 0; g1 < H; ++g1) {
          const size_t at = cov_index(l1, l2, g1, g2);
          coverage_sum_[at] += prompt_min_[at];
          coverage_mean_sum_[at] += prompt_sum_[at] / tiles;
          if (l1 < l2) {
            ++minima_total_;
            minima_from_rows_ += prompt_min_from_row_[at];
          }
        }
      }
    }
    share_sum_[static_cast<size_t>(l2)] += prompt_share_sum_[static_cast<size_t>(l2)];
    share_count_[static_cast<size_t>(l2)] += prompt_share_count_[static_cast<size_t>(l2)];
  }
  counted_tiles_ += prompt_counted_;
  counted_rows_ += prompt_counted_rows_;
  skipped_trivial_rows_ += prompt_skipped_trivial_rows_;
  skipped_trivial_tiles_ += prompt_skipped_trivial_;
  skipped_zero_mass_tiles_ += prompt_skipped_zero_;
  ++prompts_done_;
  prompt_open_ = false;
}

void CalibrationStats::add_importance(int layer, const float* x, const float* attn_out, int64_t tokens,
                                      int64_t hidden) {
  KASCADE_CHECK(layer >= 0 && layer < num_layers_,
                "CalibrationStats::add_importance: layer " << layer << " out of range 0.." << num_layers_ - 1);
  KASCADE_CHECK(x != nullptr && attn_out != nullptr,
                "CalibrationStats::add_importance: layer " << layer << " null data pointer");
  KASCADE_CHECK(tokens >= 1 && hidden >= 1, "CalibrationStats::add_importance: layer "
                                                << layer << " needs tokens >= 1 and hidden >= 1, got tokens = "
                                                << tokens << ", hidden = " << hidden);
  KASCADE_CHECK(importance_hidden_ == 0 || importance_hidden_ == hidden,
                "CalibrationStats::add_importance: layer " << layer << " hidden size " << hidden
                                                           << " differs from the earlier " << importance_hidden_);
  double sum = 0.0;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x + t * hidden;
    const float* at = attn_out + t * hidden;
    double x_dot_y = 0.0, x_norm2 = 0.0, y_norm2 = 0.0;
    for (int64_t c = 0; c < hidden; ++c) {
      const double xv = xt[c], yv = static_cast<double>(xt[c]) + static_cast<double>(at[c]);
      x_dot_y += xv * yv;
      x_norm2 += xv * xv;
      y_norm2 += yv * yv;
    }
    KASCADE_CHECK(std::isfinite(x_dot_y) && std::isfinite(x_norm2) && std::isfinite(y_norm2),
                  "CalibrationStats::add_importance: layer " << layer << " token " << t
                                                             << " has a non-finite value in x or attn_out");
    KASCADE_CHECK(x_norm2 > 0.0 && y_norm2 > 0.0, "CalibrationStats::add_importance: layer "
                                                      << layer << " token " << t << ": "
                                                      << (x_norm2 > 0.0 ? "x + attn_out" : "x")
                                                      << " is the zero vector, the cosine is undefined");
    const double cosine = x_dot_y / (std::sqrt(x_norm2) * std::sqrt(y_norm2));
    sum += 1.0 - std::max(-1.0, std::min(1.0, cosine));
  }
  importance_hidden_ = hidden;
  importance_sum_[static_cast<size_t>(layer)] += sum;
  importance_count_[static_cast<size_t>(layer)] += tokens;
}

void CalibrationStats::merge(const CalibrationStats& other) {
  KASCADE_CHECK(num_layers_ == other.num_layers_ && num_kv_heads_ == other.num_kv_heads_ && k_cal_ == other.k_cal_ &&
                    tile_ == other.tile_,
                "CalibrationStats::merge: shapes differ (layers " << num_layers_ << " vs " << other.num_layers_
                                                                  << ", kv heads " << num_kv_heads_ << " vs "
                                                                  << other.num_kv_heads_ << ", k_cal " << k_cal_
                                                                  << " vs " << other.k_cal_ << ", tile " << tile_
                                                                  << " vs " << other.tile_ << ")");
  KASCADE_CHECK(!prompt_open_ && !other.prompt_open_, "CalibrationStats::merge: both accumulators must have no open prompt");
  KASCADE_CHECK(importance_hidden_ == 0 || other.importance_hidden_ == 0 || importance_hidden_ == other.importance_hidden_,
                "CalibrationStats::merge: importance hidden sizes differ (" << importance_hidden_ << " vs "
                                                                            << other.importance_hidden_ << ")");
  auto add_into = [](auto& into, const auto& from) {
    for (size_t i = 0; i < into.size(); ++i) into[i] += from[i];
  };
  add_into(coverage_sum_, other.coverage_sum_);
  add_into(coverage_mean_sum_, other.coverage_mean_sum_);
  add_into(coverage_count_, other.coverage_count_);
  add_into(share_sum_, other.share_sum_);
  add_into(share_count_, other.share_count_);
  add_into(importance_sum_, other.importance_sum_);
  add_into(importance_count_, other.importance_count_);
  if (importance_hidden_ == 0) importance_hidden_ = other.importance_hidden_;
  prompts_done_ += other.prompts_done_;
  counted_tiles_ += other.counted_tiles_;
  skipped_trivial_tiles_ += other.skipped_trivial_tiles_;
  skipped_zero_mass_tiles_ += other.skipped_zero_mass_tiles_;
  counted_rows_ += other.counted_rows_;
  skipped_trivial_rows_ += other.skipped_trivial_rows_;
  minima_from_rows_ += other.minima_from_rows_;
  minima_total_ += other.minima_total_;
}

int64_t CalibrationStats::importance_tokens(int layer) const {
  KASCADE_CHECK(layer >= 0 && layer < num_layers_,
                "CalibrationStats::importance_tokens: layer " << layer << " out of range 0.." << num_layers_ - 1);
  return importance_count_[static_cast<size_t>(layer)];
}

int64_t CalibrationStats::first_informative_position() const {
  // The first tile start b = tau * tile with b > k_cal.
  return (static_cast<int64_t>(k_cal_) / tile_ + 1) * tile_;
}

CoverageMatrix CalibrationStats::coverage(TileAggregate aggregate) const {
  const std::vector<double>& per_prompt_sum = aggregate == TileAggregate::Min ? coverage_sum_ : coverage_mean_sum_;
  const int L = num_layers_, H = num_kv_heads_;
  CoverageMatrix result(L, H);
  for (int l2 = 0; l2 < L; ++l2) {
    for (int g2 = 0; g2 < H; ++g2) {
      const int64_t count = coverage_count_[static_cast<size_t>(l2) * static_cast<size_t>(H) + static_cast<size_t>(g2)];
      KASCADE_CHECK(count > 0, "CalibrationStats::coverage: no informative tile for layer "
                                   << l2 << " kv head " << g2 << " in " << prompts_done_
                                   << " prompts (a prompt needs more than " << first_informative_position()
                                   << " tokens, so that a tile starts after k_cal = " << k_cal_
                                   << " candidates, and non-zero attention mass)");
      for (int l1 = 0; l1 <= l2; ++l1)
        for (int g1 = 0; g1 < H; ++g1)
          result.at(l1, l2, g1, g2) = per_prompt_sum[cov_index(l1, l2, g1, g2)] / static_cast<double>(count);
    }
  }
  return result;
}

std::vector<double> CalibrationStats::importance() const {
  std::vector<double> w(static_cast<size_t>(num_layers_));
  for (int l = 0; l < num_layers_; ++l) {
    const int64_t count = importance_count_[static_cast<size_t>(l)];
    KASCADE_CHECK(count > 0, "CalibrationStats::importance: no tokens were given for layer " << l);
    w[static_cast<size_t>(l)] = importance_sum_[static_cast<size_t>(l)] / static_cast<double>(count);
  }
  return w;
}

std::vector<double> CalibrationStats::topk_mass_share() const {
  std::vector<double> share(static_cast<size_t>(num_layers_));
  for (int l = 0; l < num_layers_; ++l) {
    const int64_t count = share_count_[static_cast<size_t>(l)];
    KASCADE_CHECK(count > 0, "CalibrationStats::topk_mass_share: no informative tile for layer " << l);
    share[static_cast<size_t>(l)] = share_sum_[static_cast<size_t>(l)] / static_cast<double>(count);
  }
  return share;
}

}  // namespace kascade
