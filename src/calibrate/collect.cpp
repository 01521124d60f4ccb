// One layer's dense attention on a development prompt -> SPEC 6 statistics.
//
// pooled_masses works tile by tile: for one query head, the scores of the tile's T rows against
// key i are T independent dot products, computed with the rows innermost ([key][row] layout), so
// the compiler vectorises over rows without reassociating any sum. Each row's softmax is then
// exact (max-subtracted, fp32), and the probabilities are summed over the rows into the pooled
// mass of each candidate key and the diagonal mass. Threads take interleaved tiles (late tiles
// cost more) and write disjoint rows of the output.
#include "kascade/calibrate_collect.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "kascade/budget.h"
#include "kascade/error.h"
#include "kascade/tensor.h"

namespace kascade {

namespace {

void check_shape(const float* q, const float* k, const LayerAttentionShape& s, int tile) {
  KASCADE_CHECK(q != nullptr && k != nullptr, "calibration: null q or k");
  KASCADE_CHECK(s.hq >= 1 && s.hkv >= 1 && s.hq % s.hkv == 0,
                "calibration: hq " << s.hq << " must be a positive multiple of hkv " << s.hkv);
  KASCADE_CHECK(s.n >= 1 && s.head_dim >= 1 && tile >= 1,
                "calibration: bad shape n " << s.n << ", head_dim " << s.head_dim << ", tile " << tile);
}

// Adds the pooled masses of tile tau of one selection set (query heads h0..h1-1).
void pool_tile(const float* q, const float* k, const LayerAttentionShape& s, int tile, int tau, int h0, int h1,
               float scale, std::vector<float>& scores, std::vector<float>& q_t, float* mass, float* diagonal) {
  const int n = s.n, d = s.head_dim, group = s.hq / s.hkv;
  const int b = tau * tile, e = std::min(n, b + tile), rows = e - b;
  scores.resize(static_cast<size_t>(e) * tile);
  q_t.resize(static_cast<size_t>(d) * tile);
  std::vector<float> inv_total(static_cast<size_t>(tile));
  for (int h = h0; h < h1; ++h) {
    const float* kg = k + static_cast<size_t>(h / group) * n * d;
    // q_t [D][rows]: this head's queries of the tile, pre-scaled.
    for (int r = 0; r < rows; ++r) {
      const float* qr = q + (static_cast<size_t>(h) * n + b + r) * d;
      for (int j = 0; j < d; ++j) q_t[static_cast<size_t>(j) * tile + r] = qr[j] * scale;
    }
    // scores [key][rows] for keys 0..e-1.
    for (int i = 0; i < e; ++i) {
      float* si = &scores[static_cast<size_t>(i) * tile];
      std::fill(si, si + rows, 0.0f);
      const float* ki = kg + static_cast<size_t>(i) * d;
      for (int j = 0; j < d; ++j) {
        const float kij = ki[j];
        const float* qj = &q_t[static_cast<size_t>(j) * tile];
        for (int r = 0; r < rows; ++r) si[r] += kij * qj[r];
      }
    }
    // Row r (position b + r) sees keys 0..b+r: max, exp, total.
    for (int r = 0; r < rows; ++r) {
      const int last = b + r;
      float row_max = -INFINITY;
      for (int i = 0; i <= last; ++i) row_max = std::max(row_max, scores[static_cast<size_t>(i) * tile + r]);
      double total = 0.0;
      for (int i = 0; i <= last; ++i) {
        float& v = scores[static_cast<size_t>(i) * tile + r];
        v = std::exp(v - row_max);
        total += v;
      }
      for (int i = last + 1; i < e; ++i) scores[static_cast<size_t>(i) * tile + r] = 0.0f;  // causal mask
      inv_total[static_cast<size_t>(r)] = static_cast<float>(1.0 / total);
    }
    // Pool over the rows: candidates i < b into mass, the tile's own keys into the diagonal.
    for (int i = 0; i < e; ++i) {
      const float* si = &scores[static_cast<size_t>(i) * tile];
      float sum = 0.0f;
      for (int r = 0; r < rows; ++r) sum += si[r] * inv_total[static_cast<size_t>(r)];
      if (i < b) {
        mass[i] += sum;
      } else {
        *diagonal += sum;
      }
    }
  }
}

}  // namespace

PooledMasses pooled_masses(const float* q, const float* k, const LayerAttentionShape& shape, int tile) {
  check_shape(q, k, shape, tile);
  PooledMasses out;
  out.sets = shape.pooling == Pooling::All ? 1 : shape.hkv;
  out.tiles = static_cast<int>(num_tiles(0, shape.n, tile));
  out.n = shape.n;
  out.mass.assign(static_cast<size_t>(out.sets) * out.tiles * out.n, 0.0f);
  out.diagonal.assign(static_cast<size_t>(out.sets) * out.tiles, 0.0f);
  SparsityParams scale_source;
  scale_source.scale = shape.scale;
  const float scale = scale_source.scale_for(shape.head_dim);
  const int heads_per_set = shape.hq / out.sets;
  const int tasks = out.sets * out.tiles;
  const int threads = std::max(1, std::min(tasks, static_cast<int>(std::thread::hardware_concurrency())));
  auto work = [&](int first) {
    std::vector<float> scores, q_t;
    // Task = (tile, set) with tiles interleaved across threads: each thread gets early and late tiles.
    for (int task = first; task < tasks; task += threads) {
      const int tau = task / out.sets, set = task % out.sets;
      const size_t row = static_cast<size_t>(set) * out.tiles + tau;
      pool_tile(q, k, shape, tile, tau, set * heads_per_set, (set + 1) * heads_per_set, scale, scores, q_t,
                out.mass.data() + row * out.n, out.diagonal.data() + row);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (std::thread& t : pool) t.join();
  return out;
}

std::vector<float> decode_row_masses(const float* q, const float* keys, const LayerAttentionShape& shape) {
  check_shape(q, keys, shape, 1);
  const int sets = shape.pooling == Pooling::All ? 1 : shape.hkv;
  const int n = shape.n, d = shape.head_dim, group = shape.hq / shape.hkv;
  const size_t key_stride = static_cast<size_t>(shape.hkv) * d;
  SparsityParams scale_source;
  scale_source.scale = shape.scale;
  const float scale = scale_source.scale_for(d);
  std::vector<float> mass(static_cast<size_t>(sets) * n, 0.0f);
  std::vector<float> scores(static_cast<size_t>(n));
  for (int h = 0; h < shape.hq; ++h) {
    const float* qh = q + static_cast<size_t>(h) * d;
    const float* kg = keys + static_cast<size_t>(h / group) * d;
    float row_max = -INFINITY;
    for (int i = 0; i < n; ++i) {
      const float* ki = kg + static_cast<size_t>(i) * key_stride;
      float dot = 0.0f;
      for (int j = 0; j < d; ++j) dot += qh[j] * ki[j];
      scores[static_cast<size_t>(i)] = dot * scale;
      row_max = std::max(row_max, scores[static_cast<size_t>(i)]);
    }
    double total = 0.0;
    for (int i = 0; i < n; ++i) {
      scores[static_cast<size_t>(i)] = std::exp(scores[static_cast<size_t>(i)] - row_max);
      total += scores[static_cast<size_t>(i)];
    }
    const float inv_total = static_cast<float>(1.0 / total);
    float* out = mass.data() + static_cast<size_t>(sets == 1 ? 0 : h / group) * n;
    for (int i = 0; i < n; ++i) out[i] += scores[static_cast<size_t>(i)] * inv_total;
  }
  return mass;
}

// The selection sets the shape's pooling makes, checked against the statistics' own count.
static int checked_sets(const CalibrationStats& stats, const LayerAttentionShape& shape) {
  const int sets = shape.pooling == Pooling::All ? 1 : shape.hkv;
  KASCADE_CHECK(stats.num_kv_heads() == sets,
                "calibration: statistics have " << stats.num_kv_heads() << " selection sets but pooling "
                                                << to_string(shape.pooling) << " over " << shape.hkv
                                                << " kv heads makes " << sets);
  return sets;
}

void add_decode_row_attention(CalibrationStats& stats, int layer, const float* q, const float* keys,
                              const LayerAttentionShape& shape) {
  const int sets = checked_sets(stats, shape);
  std::vector<float> mass = decode_row_masses(q, keys, shape);
  stats.add_decode_row(layer, TensorView::contiguous(mass.data(), DType::F32, {sets, shape.n}));
}

void add_layer_attention(CalibrationStats& stats, int layer, const float* q, const float* k,
                         const LayerAttentionShape& shape) {
  checked_sets(stats, shape);
  PooledMasses pooled = pooled_masses(q, k, shape, stats.tile());
  const TensorView mass_view =
      TensorView::contiguous(pooled.mass.data(), DType::F32, {pooled.sets, pooled.tiles, pooled.n});
  const TensorView diagonal_view = TensorView::contiguous(pooled.diagonal.data(), DType::F32, {pooled.sets, pooled.tiles});
  stats.add_layer(layer, mass_view, diagonal_view);
}

}  // namespace kascade
