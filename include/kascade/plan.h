// kascade/plan.h — the Kascade plan: which layers are anchors and whose selection each reuse
// layer's kv heads read (SPEC 2), with the top-k policy (SPEC 3, 5) and where it came from.
//
// A plan is a versioned JSON file, loaded strictly: unknown keys, missing fields, wrong types,
// out-of-range values and a head map of the wrong shape are errors naming the JSON path:
//   plan.json: head_map[3][1]: 5 is not a kv head (hkv = 3)
//
//   kascade::Plan plan = kascade::load_plan("plan.json");
//   kascade::check_plan_matches(plan, model.layers, model.hq, model.hkv, model.head_dim);
//   for (int layer = 0; layer < plan.layers; ++layer) {
//     switch (plan.role_of(layer)) {      // Layer0, Anchor or Reuse
//       case kascade::Role::Reuse: {
//         const int anchor = plan.anchor_of(layer);    // the anchor whose selections it reads
//         const int src = plan.head_map[layer][g];     // kv head of that anchor read by kv head g
//         ...
//   }
//   kascade::SparsityParams p = plan.params();         // rho, k_min, k_multiple, tile, budget, pooling
//
// The JSON layout (version 1); `provenance` fields and the whole `calibration` object are
// optional, everything else is required:
//   {
//     "format": "kascade-plan", "version": 1,
//     "model": {"name": "smollm2-135m", "layers": 30, "hq": 9, "hkv": 3, "head_dim": 64},
//     "anchors": [0, 8, 17],                      // sorted, unique, contains 0, each < layers
//     "head_map": [[0, 1, 2], ...],               // [layers][hkv]; anchors map to themselves
//     "sparsity": {"rho": 0.1, "k_min": 128, "k_multiple": 1, "tile": 32,
//                  "budget": "rolling", "pooling": "group"},
//     "provenance": {"dev_set": "...", "date": "...", "tool_version": "...", "notes": "..."},
//     "calibration": {"k_cal": 64, "importance": [w per layer], "layer_scores": [[S l1][l2]],
//                     "objective": 12.5, "candidates": [{"anchors": [0, 9, 20], "score": 11.9}],
//                     "selection": {"statistic": "paper", "held_out": "...",
//                                   "evaluated": [{"anchors": [0, 9, 20], "pooling": "group",
//                                                  "stage": "candidate", "source": "paper dp m=3",
//                                                  "kl": 0.012, "answer_loss": 1.31}, ...],
//                                   "search_path": [0, 7], "chosen": 7}}
//   }
// `tile` may be any positive size: SPEC 5 defines the method for every T; a kernel that supports
// only some tile sizes rejects the others when it is called. With pooling "all" there is one
// selection per anchor, so the head map must be the identity (a non-identity map would be
// silently ignored).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "kascade/error.h"
#include "kascade/types.h"

namespace kascade {

constexpr const char* kPlanFormat = "kascade-plan";
constexpr int kPlanVersion = 1;
// Caps that keep a corrupted file from asking for absurd allocations; far above any model.
constexpr int kPlanMaxLayers = 4096;
constexpr int kPlanMaxHeads = 4096;
constexpr int kPlanMaxHeadDim = 4096;

struct PlanProvenance {
  std::string dev_set;       // the development prompts the plan was calibrated on
  std::string date;          // when (ISO 8601 by convention)
  std::string tool_version;  // the kascade version that produced it
  std::string notes;         // free-form
};

// Optional calibration results kept beside the plan (SPEC 6); every vector is either empty
// (absent) or fully shaped, every number finite.
struct PlanCandidate {
  std::vector<int> anchors;  // an anchor set (same rules as Plan::anchors)
  double score = 0;          // its DP objective
};
// How the plan was chosen by held-out loss (issue 14): every plan scored, in order, the
// coordinate search's path and the chosen one, which must be this plan (its anchors and pooling).
struct PlanEvaluation {
  std::vector<int> anchors;           // same rules as Plan::anchors
  Pooling pooling = Pooling::Group;
  std::string stage;                  // "candidate", "search" or "pooling"
  std::string source;                 // what proposed it, e.g. "paper dp m=5; even m=5 (paper map)"
  double kl = 0;                      // held-out mean next-token KL against dense (>= 0): the choice
  double answer_loss = 0;             // held-out answer log-loss, nats per token: the tie-break
};
struct PlanSelection {
  std::string statistic;              // the statistic whose k_cal, w, S and candidates are recorded
  std::string held_out;               // what the losses were measured on (optional)
  std::vector<PlanEvaluation> evaluated;  // non-empty
  std::vector<int> search_path;       // indices into evaluated: the start, then each accepted move
  int chosen = 0;                     // index into evaluated
};
struct PlanCalibration {
  std::optional<int> k_cal;                       // selection size used for coverage
  std::vector<double> importance;                 // w[l], [layers] or empty
  std::vector<std::vector<double>> layer_scores;  // S[l1][l2], [layers][layers] or empty
  std::optional<double> objective;                // sum over j of S[a(j)][j] for the chosen anchors
  std::vector<PlanCandidate> candidates;          // best set for each anchor count tried
  std::optional<PlanSelection> selection;         // the choice by held-out loss, when made
};

struct Plan {
  // Model identity and shape.
  std::string model_name;
  int layers = 0;
  int hq = 0;
  int hkv = 0;
  int head_dim = 0;
  // Layer roles and head map (SPEC 2).
  std::vector<int> anchors;             // sorted, unique, anchors[0] == 0
  std::vector<std::vector<int>> head_map;  // [layers][hkv]
  // Top-k policy (SPEC 3, 5): the "sparsity" object. Its scale is not part of a plan and stays
  // NaN (the model's own 1/sqrt(D) or configured scale applies).
  SparsityParams sparsity;
  PlanProvenance provenance;
  std::optional<PlanCalibration> calibration;

  // The anchor a(layer) = max{a in anchors : a <= layer}. Throws for a layer out of range.
  int anchor_of(int layer) const;
  // Index of anchor_of(layer) in `anchors` (the slot of its selection buffer).
  int anchor_slot(int layer) const;
  // Role::Layer0 for layer 0, Role::Anchor for the other anchors, Role::Reuse otherwise.
  Role role_of(int layer) const;
  // Kv head of anchor_of(layer) whose selection kv head `kv_head` of `layer` reads.
  int source_head(int layer, int kv_head) const;
  // The top-k policy as the attention calls take it (scale left to the model: NaN).
  const SparsityParams& params() const { return sparsity; }
};

// Parses plan JSON text; `name` (usually the path) prefixes every error. Validates fully.
Plan parse_plan(const std::string& text, const std::string& name);
// Reads and parses a plan file.
Plan load_plan(const std::string& path);
// The JSON text of a plan (validated first), keys in the documented order, 2-space indented.
std::string to_json(const Plan& plan);
// Writes to_json(plan) to `path` via `path.tmp` and a rename.
void save_plan(const std::string& path, const Plan& plan);
// Throws kascade::Error naming the field ("<name>: anchors[2]: ...") unless every rule holds.
void validate_plan(const Plan& plan, const std::string& name = "plan");
// Throws unless the plan was made for a model of this shape, naming the mismatched field.
void check_plan_matches(const Plan& plan, int layers, int hq, int hkv, int head_dim);

// A plan with the given anchors, the identity head map and default sparsity parameters.
Plan make_uniform_plan(const std::string& model_name, int layers, int hq, int hkv, int head_dim,
                       const std::vector<int>& anchors);

}  // namespace kascade
