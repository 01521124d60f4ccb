// kascade/calibrate_collect.h — turns one layer's dense attention on a development prompt into
// the SPEC 6 statistics: the tile-pooled post-softmax masses P_l[g][tau][.] and diagonal masses
// d_l[g][tau] of SPEC 5, fed to CalibrationStats::add_layer.
//
// pooled_masses() computes them in fp32 with loops the compiler vectorises (the scores of one
// tile's rows against each key at once) on all hardware threads: about 10x faster than the fp64
// oracle (kascade::ref::pooled_mass), which the tests compare it with (equal within 1e-5 of the
// tile's total mass T * G).
//
//   kascade::CalibrationStats stats(layers, hkv);                  // Pooling::All: (layers, 1)
//   stats.begin_prompt(kascade::num_tiles(0, n, stats.tile()), n);
//   for (int l = 0; l < layers; ++l)
//     kascade::add_layer_attention(stats, l, q_l, k_l, {hq, hkv, n, head_dim, scale, Pooling::Group});
//   stats.end_prompt();
//
// q_l [Hq, n, D] and k_l [Hkv, n, D] are the layer's queries and keys after RoPE (and any q/k
// norm) for positions 0..n-1 of the prompt, fp32 contiguous, the shapes of SPEC 9. Peak memory
// is the pooled masses of one layer, 4 * S * ceil(n / T) * n bytes (S = Hkv, or 1 with
// Pooling::All): 1.5 MiB for SmolLM2 at n = 2048, plus 4 * T * n bytes of scores per thread.
// Decode rows of a generated answer (the `paper` statistic) go through add_decode_row_attention,
// one row and layer at a time, after the prompt's layers.
#pragma once

#include <vector>

#include "kascade/calibrate.h"
#include "kascade/types.h"

namespace kascade {

struct LayerAttentionShape {
  int hq = 0;
  int hkv = 0;
  int n = 0;              // prompt tokens (queries and keys)
  int head_dim = 0;
  float scale = NAN;      // NaN: 1/sqrt(head_dim)
  Pooling pooling = Pooling::Group;  // Group: one set per kv head; All: one set pooled over all Hq heads
};

// P and d for a prompt prefilled from position 0 (SPEC 5 step 2): mass [S, tiles, n] (entries
// i >= b of tile tau are 0), diagonal [S, tiles]; S = hkv (Pooling::Group) or 1 (Pooling::All).
struct PooledMasses {
  int sets = 0, tiles = 0, n = 0;
  std::vector<float> mass;
  std::vector<float> diagonal;
};
PooledMasses pooled_masses(const float* q, const float* k, const LayerAttentionShape& shape, int tile);

// The pooled softmax of one decode row (SPEC 4 steps 1-2): the query of the token at position
// n - 1 over the keys 0..n-1, its own included. q [Hq * D] (the row's heads, as the engine's
// query/key hook gives them), keys [n][Hkv * D] token-major (the hook's layout, rows appended as
// they come). Returns [S][n], S = hkv (Pooling::Group: summed over the group's heads) or 1
// (Pooling::All: over all Hq heads); each head's row sums to 1.
std::vector<float> decode_row_masses(const float* q, const float* keys, const LayerAttentionShape& shape);

// Adds decode row `layer` of the open prompt to `stats` (CalibrationStats::add_decode_row):
// shape.n = prompt tokens + row index + 1 keys.
void add_decode_row_attention(CalibrationStats& stats, int layer, const float* q, const float* keys,
                              const LayerAttentionShape& shape);

// Adds layer `layer` of the open prompt to `stats`. The statistics must have one set per kv
// head (Pooling::Group) or one set (Pooling::All), and the open prompt must have n tokens.
void add_layer_attention(CalibrationStats& stats, int layer, const float* q, const float* k,
                         const LayerAttentionShape& shape);

}  // namespace kascade
