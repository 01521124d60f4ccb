// String forms of the shared enums (see kascade/types.h).
#include "kascade/types.h"

#include "kascade/error.h"

namespace kascade {

const char* to_string(Phase p) { return p == Phase::Decode ? "decode" : "prefill"; }
const char* to_string(Role r) {
  switch (r) {
    case Role::Dense: return "dense";
    case Role::Layer0: return "layer0";
    case Role::Anchor: return "anchor";
    case Role::Reuse: return "reuse";
  }
  return "?";
}
const char* to_string(BudgetMode b) { return b == BudgetMode::Rolling ? "rolling" : "fixed"; }
const char* to_string(Pooling p) { return p == Pooling::Group ? "group" : "all"; }

Phase parse_phase(const std::string& s) {
  if (s == "decode") return Phase::Decode;
  if (s == "prefill") return Phase::Prefill;
  KASCADE_FAIL("unknown mode '" << s << "' (expected decode or prefill)");
}
Role parse_role(const std::string& s) {
  if (s == "dense") return Role::Dense;
  if (s == "layer0") return Role::Layer0;
  if (s == "anchor") return Role::Anchor;
  if (s == "reuse") return Role::Reuse;
  KASCADE_FAIL("unknown role '" << s << "' (expected dense, layer0, anchor or reuse)");
}
BudgetMode parse_budget(const std::string& s) {
  if (s == "rolling") return BudgetMode::Rolling;
  if (s == "fixed") return BudgetMode::Fixed;
  KASCADE_FAIL("unknown budget '" << s << "' (expected rolling or fixed)");
}
Pooling parse_pooling(const std::string& s) {
  if (s == "group") return Pooling::Group;
  if (s == "all") return Pooling::All;
  KASCADE_FAIL("unknown pooling '" << s << "' (expected group or all)");
}

}  // namespace kascade
