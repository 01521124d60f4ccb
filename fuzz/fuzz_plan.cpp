// Fuzz target for the plan parser (kascade/plan.h). Malformed input must end in kascade::Error
// and nothing else; an accepted plan must round-trip through to_json exactly and answer every
// per-layer query consistently.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kascade/plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  kascade::Plan plan;
  try {
    plan = kascade::parse_plan(text, "fuzz.json");
  } catch (const kascade::Error&) {
    return 0;
  }
  const std::string json = kascade::to_json(plan);
  if (kascade::to_json(kascade::parse_plan(json, "re-encoded.json")) != json) __builtin_trap();
  kascade::check_plan_matches(plan, plan.layers, plan.hq, plan.hkv, plan.head_dim);
  for (int layer = 0; layer < plan.layers; ++layer) {
    const int anchor = plan.anchor_of(layer);
    if (anchor > layer || plan.role_of(anchor) == kascade::Role::Reuse) __builtin_trap();
    if ((plan.role_of(layer) == kascade::Role::Layer0) != (layer == 0)) __builtin_trap();
    for (int g = 0; g < plan.hkv; ++g) {
      const int src = plan.source_head(layer, g);
      if (src < 0 || src >= plan.hkv) __builtin_trap();
    }
  }
  return 0;
}
