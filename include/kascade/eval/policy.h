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
// The rule of every policy, per layer, precisely enough to implement it elsewhere (the GPU path
// of scoring.h runs the same rules natively and is compared with this code). Common terms:
//   L       the model's layers, numbered 0..L-1; a "forward step" calls layers 0..L-1 in order.
//   n       keys of the call (decode: keys 0..n-1, the query sits at n-1 and is a candidate).
//   k       the budget: decode k(n) = min(n, max(k_min, floor(rho * n))) (kascade/budget.h);
//           prefill tile tau starting at b: rolling k(b) or fixed min(b, k(p1)) (SPEC 5).
//   dense   exact causal attention over keys 0..t (decode: all n keys).
//   group top-k   per kv head g: p[h][i] = softmax over the call's keys of q_h.k_i * scale for
//           every query head h of g (the FULL row, keys 0..n-1 in decode, 0..t in prefill),
//           P[g][i] = sum over those heads (prefill: and over the tile's queries) of p[h][i], for
//           candidates i (decode: i < n; prefill: i < b); the k largest P, ties to the LOWER key
//           index; the result is an ascending index set (ref::Selection row).
//   all-heads top-k   the same with P[i] summed over all Hq heads: one set, copied to every kv head.
//   attend to S   each query head h of kv head g attends to S[g] only, softmax renormalised over
//           S[g] (prefill: S[g] of the query's tile plus the tile's diagonal keys b..t, one
//           softmax over the union, SPEC 5 step 4).
// "Decode only" policies attend densely at every layer of a prefill call (Phase::Prefill) and keep no
// state from it. Selections made in one forward step are read only within that step (decode:
// the same query position n-1; rows processed as a batch keep one selection per (layer, n)).
//
// Policies (names as the CLI spells them):
//   dense          every layer dense.
//   oracle         layer 0 dense; every layer l >= 1 takes its own group top-k and attends to
//                  it (the SPEC 4/5 anchor rule at every layer). Decode and prefill.
//   kascade        the plan as calibrated (SPEC 2-5), with the plan's own pooling: layer 0
//                  dense, and it takes the top-k for its reuse layers; an anchor a > 0 takes its
//                  top-k and attends to it; a reuse layer j attends, for kv head g, to row
//                  map[j][g] of its anchor a(j) = the last anchor <= j (the plan's head map).
//                  With group pooling (head-aware) the top-k is per kv head; with all-heads
//                  pooling (the plan's sparsity.pooling = all) one top-k pooled over all query
//                  heads is shared by every kv head and the head map does not apply.
//                  Decode and prefill (per tile).
//   kascade-pooled the plan's anchors with the all-heads top-k whatever the plan's pooling
//                  (anchors attend to it, reuse layers read it for every kv head; the head map
//                  does not apply). Decode and prefill.
//   streaming      StreamingLLM: layer 0 dense; every layer l >= 1 attends to the kSinkTokens
//                  first candidates 0..s-1 (s = min(kSinkTokens, k)) plus the k - s candidates
//                  just before b (decode: n-(k-s)..n-1, the query itself included), the same
//                  for every kv head. Decode and prefill (per tile, candidates < b).
//   quest          Quest: layer 0 dense; every layer l >= 1 in decode scores pages of
//                  kQuestPage keys (page p = keys 16p..16p+15, the last page partial and
//                  including the query), per kv head g: bound(p) = max over the group's heads h
//                  of sum_c max(q_h[c] * min_c(p), q_h[c] * max_c(p)) (min/max per dimension
//                  over the page's keys, unscaled q.k); every key takes its page's bound, the k
//                  largest with ties to the lower index (whole pages in bound order, the last
//                  one cut from its lowest position). Decode only.
//   omnikv         OmniKV-style: filter layers f_i = floor(i * L / m), i = 0..m-1 (m = the plan's
//                  anchor count, evenly_spaced_layers; layer 0 is always one). A filter layer
//                  attends densely and takes the all-heads top-k; every other layer attends to
//                  the selection of the last filter layer before it, every kv head the same.
//                  Decode only.
//   tidal          TidalDecode/LessIsMore-style: layers 0 and 1 dense. Selection layers
//                  tidal_selection_layers(L, m) with m = max(1, anchors - 1) (the plan's anchor
//                  count): S = floor(2 * (L - 2) / 3), c = min(m, max(1, S)),
//                  s_i = 2 + floor(i * S / c), i = 0..c-1 (evenly spaced from layer 2 over the
//                  first two thirds of the layers after it; L = 30 with 5 anchors: 2 6 11 15).
//                  A selection layer attends densely and takes the all-heads top-k; every other
//                  layer l >= 3 attends to the selection of the latest selection layer s < l,
//                  every kv head the same. L <= 2: every layer dense. Decode only.
// Every sparse policy keeps layer 0 dense, as Kascade does, so that the first layer is not
// what separates them.
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
  const Plan* plan = nullptr;  // kascade, kascade-pooled (omnikv and tidal: its anchor count)
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
// The fixed filter layers of the omnikv policy: `count` layers evenly spaced from layer 0,
// floor(i * layers / count) for i = 0..count-1.
std::vector<int> evenly_spaced_layers(int layers, int count);
// The selection layers of the tidal policy for `requested` (>= 1) selection layers, by the rule
// above (ascending; empty when layers <= 2). `requested` is lowered to what fits.
std::vector<int> tidal_selection_layers(int layers, int requested);

}  // namespace kascade::eval
