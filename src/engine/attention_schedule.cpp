// Layer schedules: validation and the schedules of a plan and of dense attention
// (kascade/engine/attention_schedule.h).
#include "kascade/engine/attention_schedule.h"

#include "kascade/error.h"
#include "kascade/plan.h"

namespace kascade::engine {

const char* to_string(LayerRule rule) {
  switch (rule) {
    case LayerRule::Dense: return "dense";
    case LayerRule::DenseSelect: return "dense-select";
    case LayerRule::Select: return "select";
    case LayerRule::Reuse: return "reuse";
    case LayerRule::Streaming: return "streaming";
    case LayerRule::Quest: return "quest";
  }
  return "?";
}

namespace {
bool writes_slot(LayerRule r) { return r != LayerRule::Dense && r != LayerRule::Reuse; }
}  // namespace

void AttentionSchedule::validate(int num_layers, int num_kv_heads) const {
  KASCADE_CHECK(static_cast<int>(layers.size()) == num_layers,
                "schedule '" << name << "': " << layers.size() << " layers for a model of " << num_layers);
  KASCADE_CHECK(slots >= 0, "schedule '" << name << "': negative slot count " << slots);
  std::vector<int> writer(static_cast<size_t>(slots), -1);
  for (int l = 0; l < num_layers; ++l) {
    const LayerSchedule& s = layers[static_cast<size_t>(l)];
    if (s.rule == LayerRule::Dense) continue;
    KASCADE_CHECK(s.slot >= 0 && s.slot < slots, "schedule '" << name << "': layer " << l << " (" << to_string(s.rule)
                                                              << ") uses slot " << s.slot << " outside [0, " << slots
                                                              << ")");
    if (writes_slot(s.rule)) {
      writer[static_cast<size_t>(s.slot)] = l;
      continue;
    }
    const int w = writer[static_cast<size_t>(s.slot)];
    KASCADE_CHECK(w >= 0, "schedule '" << name << "': layer " << l << " reads slot " << s.slot
                                       << ", which no earlier layer writes");
    KASCADE_CHECK(layers[static_cast<size_t>(w)].pooling == s.pooling,
                  "schedule '" << name << "': layer " << l << " reads slot " << s.slot << " with another pooling than layer "
                               << w << " wrote it");
    if (s.head_map.empty()) continue;
    KASCADE_CHECK(static_cast<int>(s.head_map.size()) == num_kv_heads,
                  "schedule '" << name << "': layer " << l << " has a head map of " << s.head_map.size()
                               << " entries for " << num_kv_heads << " kv heads");
    for (int src : s.head_map) {
      KASCADE_CHECK(src >= 0 && src < num_kv_heads,
                    "schedule '" << name << "': layer " << l << " head map entry " << src << " is outside [0, "
                                 << num_kv_heads << ")");
    }
  }
}

bool AttentionSchedule::reads_selection_only(int layer) const {
  const LayerRule r = layers.at(static_cast<size_t>(layer)).rule;
  return r == LayerRule::Reuse || r == LayerRule::Streaming || r == LayerRule::Quest;
}

bool AttentionSchedule::attends_selection(int layer) const {
  const LayerRule r = layers.at(static_cast<size_t>(layer)).rule;
  return r != LayerRule::Dense && r != LayerRule::DenseSelect;
}

AttentionSchedule dense_schedule(int layers) {
  AttentionSchedule s;
  s.name = "dense";
  s.layers.resize(static_cast<size_t>(layers));
  return s;
}

AttentionSchedule schedule_from_plan(const Plan& plan) {
  AttentionSchedule s;
  s.name = "plan " + plan.model_name;
  s.sparsity = plan.params();
  s.slots = static_cast<int>(plan.anchors.size());
  for (int l = 0; l < plan.layers; ++l) {
    LayerSchedule ls;
    ls.slot = plan.anchor_slot(l);
    ls.pooling = plan.sparsity.pooling;
    switch (plan.role_of(l)) {
      case Role::Dense: ls.rule = LayerRule::Dense; break;  // not a plan's role: role_of never returns it
      case Role::Layer0: ls.rule = LayerRule::DenseSelect; break;
      case Role::Anchor: ls.rule = LayerRule::Select; break;
      case Role::Reuse:
        ls.rule = LayerRule::Reuse;
        ls.head_map = plan.head_map[static_cast<size_t>(l)];
        break;
    }
    s.layers.push_back(std::move(ls));
  }
  return s;
}

}  // namespace kascade::engine
