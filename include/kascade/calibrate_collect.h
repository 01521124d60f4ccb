// kascade/calibrate_collect.h — turns one layer's dense attention on a development prompt into
// the SPEC 6 statistics: the tile-pooled post-softmax masses P_l[g][tau][.] and diagonal masses
// d_l[g][tau] of SPEC 5 (computed by the CPU oracle, kascade::ref::pooled_mass, so calibration
// ranks keys exactly as the anchors do), fed to CalibrationStats::add_layer.
//
//   kascade::CalibrationStats stats(layers, hkv);                  // Pooling::All: (layers, 1)
//   stats.begin_prompt(kascade::num_tiles(0, n, stats.tile()), n);
//   for (int l = 0; l < layers; ++l)
//     kascade::add_layer_attention(stats, l, q_l, k_l, {hq, hkv, n, head_dim, scale, Pooling::Group});
//   stats.end_prompt();
//
// q_l [Hq, n, D] and k_l [Hkv, n, D] are the layer's queries and keys after RoPE (and any q/k
// norm) for positions 0..n-1 of the prompt, fp32 contiguous, the shapes of SPEC 9. Peak memory
// is the pooled masses of one layer, 12 * S * ceil(n / T) * n bytes (S = Hkv, or 1 with
// Pooling::All): 4.5 MiB for SmolLM2 at n = 2048.
#pragma once

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

// Adds layer `layer` of the open prompt to `stats`. The statistics must have one set per kv
// head (Pooling::Group) or one set (Pooling::All), and the open prompt must have n tokens.
void add_layer_attention(CalibrationStats& stats, int layer, const float* q, const float* k,
                         const LayerAttentionShape& shape);

}  // namespace kascade
