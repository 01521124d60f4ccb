// anchor_phases.h — the launch sequence of layer 0 and the anchor seen phase by phase, for the
// benchmark.
//
// prefill_anchor (kascade/attention_prefill.h) runs four phases: the exact row LSE, the pooled
// mass and the per-tile top-k (alternating, one chunk of tiles at a time) and the sparse pass;
// prefill_layer0 the first three (its LSE pass writes the dense output). prefill_selecting_observed
// is either call with an observer told, on the call's stream, when each launch of a phase begins
// and ends, so that a benchmark can record CUDA events around them and add up the time of each
// phase:
//
//   struct Events : kascade::cuda::prefill::AnchorPhaseObserver {
//     void begin(AnchorPhase phase, cudaStream_t s) override { /* cudaEventRecord(start, s) */ }
//     void end(AnchorPhase phase, cudaStream_t s) override { /* cudaEventRecord(stop, s) */ }
//   };
//   prefill_selecting_observed(kascade::Role::Anchor, tensors, shape, sp, sel, ws, stream, &events);
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "kascade/attention_prefill.h"

namespace kascade::cuda::prefill {

enum class AnchorPhase { Lse, Mass, Topk, Sparse };
constexpr int kAnchorPhaseCount = 4;
const char* anchor_phase_name(AnchorPhase phase);  // "lse", "mass", "topk", "sparse"

class AnchorPhaseObserver {
 public:
  virtual ~AnchorPhaseObserver() = default;
  virtual void begin(AnchorPhase phase, cudaStream_t stream) = 0;
  virtual void end(AnchorPhase phase, cudaStream_t stream) = 0;
};

// prefill_layer0 (role Layer0) or prefill_anchor (role Anchor) with an observer (nullptr: none,
// exactly that call).
void prefill_selecting_observed(Role role, const PrefillTensors& t, const PrefillShape& shape,
                                const SparsityParams& sparsity, const Selection& selection, Workspace ws,
                                cudaStream_t stream, AnchorPhaseObserver* observer);

}  // namespace kascade::cuda::prefill
