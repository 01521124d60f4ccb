// kascade/eval/policy.h — the key-selection policies of the accuracy study (SPEC 8), each a rule
// that picks keys and hands them to one shared attention (the CPU oracle's reuse role), so that
// two policies differ by their rule and nothing else.
//
// A policy sees one layer's attention inputs in the oracle's layout and returns a KeySet: either
// "dense" or a ref::Selection with one row per kv head (SPEC 9 format: ascending candidates
// < b, padded with -1). attend_layer() computes the output from it:
//
//   auto policy = kascade::eval::make_policy("kascade", ctx);   // ctx: plan, budget, layers
//   policy->reset();                                            // a new sequence
//   kascade::eval::LayerInputs in{layer, Phase::Decode, ...};   // q [Hq,nq,D], k/v [Hkv,n,D]
//   double keys = kascade::eval::attend_layer(*policy, ctx.params, in, out);  // out [Hq,nq,D]
//
// Policies (names as the CLI spells them), all at the budget k of kascade/budget.h:
//   dense          every layer dense.
//   oracle         every layer after 0 selects its own group-pooled top-k (SPEC 4/5 anchor rule).
//   kascade        the plan: layer 0 dense, anchors select (group pooling), reuse layers read
//                  their anchor's selection through the head map (SPEC 2-5).
//   kascade-pooled the plan's anchors with one selection pooled over all Hq heads (SPEC 2).
//   streaming      StreamingLLM: kSinkTokens first keys plus the most recent keys, k in total.
//   quest          Quest: pages of kQuestPage keys ranked by the upper bound of q.k from the
//                  page's per-dimension min/max keys (max over the group's heads); decode only.
//   omnikv         OmniKV-style: fixed, evenly spaced filter layers (as many as the plan's
//                  anchors) attend densely and select the all-heads-pooled top-k, which the
//                  layers up to the next filter layer share; decode only.
// Every sparse policy keeps layer 0 dense, as Kascade does, so that the first layer is not
// what separates them. "Decode only" policies attend densely in prefill calls.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kascade/plan.h"
#include "kascade/reference.h"
#include "kascade/types.h"

namespace kascade::eval {

constexpr int kSinkTokens = 4;   // StreamingLLM's attention sinks
constexpr int kQuestPage = 16;   // Quest's page size (tokens)

// One layer's attention call for one sequence in the oracle's layout. Prefill: queries at
// positions p0..n-1 (nq = n - p0), tiled as SPEC 5. Decode: nq = 1, the query at n - 1.
struct LayerInputs {
  int layer = 0;
  Phase phase = Phase::Decode;
  int hq = 0, hkv = 0, nq = 0, n = 0, d = 0;
  const float* q = nullptr;  // [hq][nq][d]
  const float* k = nullptr;  // [hkv][n][d]
  const float* v = nullptr;  // [hkv][n][d]
  int p0() const { return n - nq; }
};

// The keys one layer attends to: dense, or a selection with hkv rows per tile (decode: 1 tile)
// that the oracle's reuse role reads with the identity head map.
struct KeySet {
  bool dense = true;
  ref::Selection selection;
};

// What a policy needs to know besides the layer inputs.
struct PolicyContext {
  SparsityParams params;  // rho, k_min, tile, budget mode (pooling is the policy's own)
  int layers = 0;
  const Plan* plan = nullptr;  // kascade, kascade-pooled (and omnikv: its anchor count)
};

class SelectionPolicy {
 public:
  virtual ~SelectionPolicy() = default;
  virtual const char* name() const = 0;
  // Forgets state carried between layers (selections of anchors) before a new sequence.
  virtual void reset() {}
  // Layers are called in order 0..L-1 for every forward step. Calls for different rows
  // (context lengths n) of the same layer may run concurrently.
  virtual KeySet select(const LayerInputs& in) = 0;
};

// The names make_policy accepts, in the study's order.
const std::vector<std::string>& policy_names();
// Throws kascade::Error for an unknown name, or when the policy needs a plan and ctx has none.
std::unique_ptr<SelectionPolicy> make_policy(const std::string& name, const PolicyContext& ctx);

// The shared attention: the oracle's dense role for a dense KeySet, else its reuse role over
// the selection, with `params` (the policy's budget, which the oracle checks the selection
// against). out [hq][nq][d]. Returns the keys attended, summed over heads and queries
// (prefill: the selection plus the diagonal keys b..t of each tile).
double attend_layer(SelectionPolicy& policy, const SparsityParams& params, const LayerInputs& in, float* out);

// ---- selection rules as pure functions (each policy is one of these plus bookkeeping) --------
// The call the oracle sees for `in` with these params (pooling as given).
ref::Call make_call(const LayerInputs& in, const SparsityParams& params, Role role, Pooling pooling);
// Top-k of the pooled post-softmax mass (SPEC 4/5; ties to the lower index) with Pooling::Group
// (one row per kv head) or Pooling::All (one row copied to every kv head).
ref::Selection pooled_top_k(const LayerInputs& in, const SparsityParams& params, Pooling pooling);
// Sinks 0..min(kSinkTokens, k)-1 plus the most recent k - sinks candidates of each tile.
ref::Selection streaming_selection(const LayerInputs& in, const SparsityParams& params);
// Quest's page-bound ranking (decode only): each key scores its page's upper bound, top k.
ref::Selection quest_selection(const LayerInputs& in, const SparsityParams& params);
// Rows of `source` rearranged so that kv head g reads source row map[g].
ref::Selection remap_sets(const ref::Selection& source, const std::vector<int>& map);
// The fixed filter layers of the omnikv policy: `count` layers evenly spaced from layer 0.
std::vector<int> evenly_spaced_layers(int layers, int count);

}  // namespace kascade::eval
