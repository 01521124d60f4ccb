// kascade/engine/attention_schedule.h — how every layer's attention runs, as data: the roles of
// a plan (SPEC 2) generalised so that the comparison policies of SPEC 8 run on the same kernels
// as Kascade (the GPU backend executes a schedule natively; the eval builds one per policy).
//
// Each layer has a rule and, when it selects or reads a selection, a selection slot:
//   Dense        exact attention, nothing selected;
//   DenseSelect  exact attention, and its top-k of the pooled post-softmax mass goes into `slot`
//                (layer 0 of a plan, SPEC 4/5; the filter layers of OmniKV / TidalDecode);
//   Select       top-k into `slot`, then attention over that selection (a plan's anchors; every
//                layer of the oracle);
//   Reuse        attention over the selection in `slot` (written earlier in the same step),
//                kv head g reading set head_map[g] (empty map: identity; ignored with all-heads
//                pooling);
//   Streaming    decode: sinks 0..min(4,k)-1 plus the most recent k - sinks keys into `slot`, then
//                attention over them (StreamingLLM, SPEC 8);
//   Quest        decode: the k keys of the pages (16 keys) with the highest upper bound of q.k
//                over the group's heads into `slot` (whole pages in bound order, the last cut from
//                its lowest position), then attention over them (Quest, SPEC 8).
// `pooling` is the selection's pooling (Group: one set per kv head; All: one set for all).
// With `prefill_dense`, prefill calls of every layer attend densely (decode-only policies).
//
//   AttentionSchedule s = schedule_from_plan(plan);         // exactly what the plan computes
//   s.validate(config.layers, config.hkv);                  // throws naming the layer and field
#pragma once

#include <string>
#include <vector>

#include "kascade/types.h"

namespace kascade {
struct Plan;
}

namespace kascade::engine {

enum class LayerRule { Dense, DenseSelect, Select, Reuse, Streaming, Quest };
const char* to_string(LayerRule rule);

struct LayerSchedule {
  LayerRule rule = LayerRule::Dense;
  int slot = -1;                 // selection slot written (DenseSelect, Select, Streaming, Quest) or read (Reuse)
  Pooling pooling = Pooling::Group;
  std::vector<int> head_map;     // Reuse with group pooling: [hkv] source sets, or empty (identity)
};

struct AttentionSchedule {
  std::string name;              // for messages ("kascade", "oracle", ...)
  SparsityParams sparsity;       // the budget (rho, k_min, k_multiple, tile, budget mode); pooling per layer
  std::vector<LayerSchedule> layers;
  int slots = 0;                 // selection slots used (0..slots-1)
  bool prefill_dense = false;    // prefill calls attend densely (decode-only policies)

  // Throws kascade::Error naming the schedule, layer and problem unless: one entry per layer,
  // slots in range, every Reuse slot written by an earlier layer, a Reuse layer's pooling equal
  // to its writer's, head maps of hkv entries in [0, hkv).
  void validate(int num_layers, int num_kv_heads) const;
  // Whether a layer reads only a selection's keys (Reuse, Streaming, Quest): the engine's
  // AttentionStats count every causal key for the others, which rank all of them (backend.h).
  bool reads_selection_only(int layer) const;
  // Whether a layer attends to a selection (Select, Reuse, Streaming, Quest): the accuracy
  // study's "keys attended" counts the selection for these, every causal key for the others.
  bool attends_selection(int layer) const;
};

// Every layer dense.
AttentionSchedule dense_schedule(int layers);
// The plan's roles: layer 0 DenseSelect, other anchors Select, the rest Reuse through the head map,
// all with the plan's sparsity and pooling.
AttentionSchedule schedule_from_plan(const Plan& plan);

}  // namespace kascade::engine
