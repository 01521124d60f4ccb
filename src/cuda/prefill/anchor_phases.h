// anchor_phases.h — the anchor's launch sequence seen phase by phase, for the benchmark.
//
// prefill_anchor (kascade/attention_prefill.h) runs four phases: the exact row LSE (with the
// dense output for layer 0), the pooled mass and the per-tile top-k (alternating, one chunk of
// tiles at a time) and the sparse pass. prefill_anchor_observed is the same call with an observer
// told, on the call's stream, when each launch of a phase begins and ends, so that a benchmark can
// record CUDA events around them and add up the time of each phase:
//
//   struct Events : kascade::cuda::prefill::AnchorPhaseObserver {
//     void begin(AnchorPhase phase, cudaStream_t s) override { /* cudaEventRecord(start, s) */ }
//     void end(AnchorPhase phase, cudaStream_t s) override { /* cudaEventRecord(stop, s) */ }
//   };
//   prefill_anchor_observed(args, sp, false, sel, ws, ws_bytes, stream, &events);
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

// prefill_anchor with an observer (nullptr: none, exactly prefill_anchor).
void prefill_anchor_observed(const PrefillArgs& args, const SparsityParams& sp, bool dense_output,
                             const SelectionBuffer& selection, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream, AnchorPhaseObserver* observer);

}  // namespace kascade::cuda::prefill
