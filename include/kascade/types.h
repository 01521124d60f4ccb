// kascade/types.h — the vocabulary shared by the plan, the CPU oracle and the GPU API.
//
// SparsityParams carries SPEC 3/5's knobs (rho, k_min, k_multiple, tile, budget, pooling,
// scale); Role and Phase name what one attention call computes, in decode and prefill alike.
// Parsing helpers accept exactly the strings to_string writes and throw kascade::Error otherwise
// (SPEC 9's case.json names layer 0's role "dense": the oracle's CLI maps it, reference_cmd.cpp).
#pragma once

#include <cmath>
#include <string>

#include "kascade/budget.h"

namespace kascade {

enum class Phase { Decode, Prefill };
// What one attention call of a layer computes (SPEC 2, 4, 5):
//   Dense   exact attention, nothing selected;
//   Layer0  exact attention plus the selection its reuse layers read (layer 0 of a plan);
//   Anchor  the selection, then attention over it;
//   Reuse   attention over an anchor's selection, read through the head map.
enum class Role { Dense, Layer0, Anchor, Reuse };
enum class BudgetMode { Rolling, Fixed };
enum class Pooling { Group, All };

struct SparsityParams {
  double rho = kDefaultRho;
  int k_min = kDefaultKMin;
  int k_multiple = 1;
  int tile = kDefaultTile;
  BudgetMode budget = BudgetMode::Rolling;
  Pooling pooling = Pooling::Group;
  float scale = NAN;  // NaN: 1/sqrt(D)

  float scale_for(int head_dim) const {
    return std::isnan(scale) ? 1.0f / std::sqrt(static_cast<float>(head_dim)) : scale;
  }
  bool rolling() const { return budget == BudgetMode::Rolling; }
};

const char* to_string(Phase p);
const char* to_string(Role r);
const char* to_string(BudgetMode b);
const char* to_string(Pooling p);
Phase parse_phase(const std::string& s);        // "decode" | "prefill"
Role parse_role(const std::string& s);          // "dense" | "layer0" | "anchor" | "reuse"
BudgetMode parse_budget(const std::string& s);  // "rolling" | "fixed"
Pooling parse_pooling(const std::string& s);    // "group" | "all"

// Whether a call of this role writes a selection (Layer0, Anchor).
inline bool role_selects(Role r) { return r == Role::Layer0 || r == Role::Anchor; }

}  // namespace kascade
