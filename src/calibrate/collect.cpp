// One layer's dense attention on a development prompt -> SPEC 6 statistics, through the oracle.
#include "kascade/calibrate_collect.h"

#include <vector>

#include "kascade/budget.h"
#include "kascade/error.h"
#include "kascade/reference.h"
#include "kascade/tensor.h"

namespace kascade {

void add_layer_attention(CalibrationStats& stats, int layer, const float* q, const float* k,
                         const LayerAttentionShape& shape) {
  KASCADE_CHECK(q != nullptr && k != nullptr, "calibration: layer " << layer << ": null q or k");
  const int sets = shape.pooling == Pooling::All ? 1 : shape.hkv;
  KASCADE_CHECK(stats.num_kv_heads() == sets,
                "calibration: statistics have " << stats.num_kv_heads() << " selection sets but pooling "
                                                << to_string(shape.pooling) << " over " << shape.hkv
                                                << " kv heads makes " << sets);
  // An anchor's prefill call over the whole prompt (p0 = 0, SPEC 5) yields exactly P and d; the
  // budget does not matter here, only the masses are used (calibration selects k_cal itself).
  ref::Call call;
  call.phase = Phase::Prefill;
  call.role = Role::Anchor;
  call.p0 = 0;
  call.params.tile = stats.tile();
  call.params.pooling = shape.pooling;
  call.params.scale = shape.scale;
  const ref::Pooled pooled = ref::pooled_mass(call, q, k, shape.hq, shape.hkv, shape.n, shape.n, shape.head_dim);

  // CalibrationStats reads f32; masses are at most T * G, so fp32 keeps them to ~1e-7 relative.
  const std::vector<float> mass(pooled.mass.begin(), pooled.mass.end());
  const std::vector<float> diagonal(pooled.diagonal.begin(), pooled.diagonal.end());
  const TensorView mass_view = TensorView::contiguous(const_cast<float*>(mass.data()), DType::F32,
                                                      {pooled.num_sets, pooled.num_tiles, pooled.n});
  const TensorView diagonal_view =
      TensorView::contiguous(const_cast<float*>(diagonal.data()), DType::F32, {pooled.num_sets, pooled.num_tiles});
  stats.add_layer(layer, mass_view, diagonal_view);
}

}  // namespace kascade
