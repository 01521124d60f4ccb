// prefill_attend_cta.cuh — the CTA of attend_kernel (prefill_attend.cuh) as its parts share it:
// the warp roles and their registers, the named barriers, the K and V rings, the shared-memory
// budget, and AttendLoop, what the kernel hands a consumer main loop
// (prefill_mainloop_sm90.cuh, prefill_mainloop_sm80.cuh).
#pragma once

#include "../common/async_barrier.cuh"
#include "prefill_common.cuh"

namespace kascade::cuda::prefill {

// CTA shape: SplitCta (prefill_common.cuh); the producer warpgroup issues every K/V copy into an
// mbarrier ring of kAttendStages slots.
constexpr int kAttendStages = 3;
// Registers per thread once the roles split: the producer keeps few, the consumers hold the O
// accumulators, S and two P fragment sets.
using AttendCta = SplitCta</*producer*/ 56, /*consumers*/ 224>;
constexpr int kAttendProducerThreads = AttendCta::kProducerThreads;
constexpr int kAttendThreads = AttendCta::kCtaThreads;
// Named barriers (0 is __syncthreads): Q landed for every consumer; the turn of consumer
// warpgroup g to issue its MMAs is barrier kTurnBarrier + g.
constexpr int kQReadyBarrier = 1;
constexpr int kTurnBarrier = 2;

// The K and V rings (MbarrierRing, ../common/async_barrier.cuh), one barrier array. Full: the
// producer's kAttendProducerThreads copying threads arrive (cp.async, when their copies landed);
// empty: each consumer warp arrives once it no longer reads the slot. Key block j of the CTA is
// use j of both rings.
using KRing = MbarrierRing<kAttendStages, 0>;
using VRing = MbarrierRing<kAttendStages, 1>;

template <int D, typename T>
struct AttendSmem {
  static constexpr int kTileElems = kBlockKeys * D;
  static constexpr size_t bytes(bool with_v) {
    return kSmemAlign +
           sizeof(T) * (size_t(kBlockRows) * D + kAttendStages * size_t(kTileElems) * (with_v ? 2 : 1)) +
           sizeof(uint64_t) * (KRing::kBarriers + VRing::kBarriers);
  }
  static_assert(bytes(true) <= kMaxSmemPerCta, "attention tiles exceed the shared memory of a CTA");
};

// What a consumer main loop reads besides the parameters: the CTA's tiles and rings, its key
// blocks, and this thread's part in them.
template <typename T>
struct AttendLoop {
  const T* q_smem;   // [kBlockRows][D], SwizzledTile
  const T* k_smem;   // [kAttendStages][kBlockKeys][D]
  const T* v_smem;   // [kAttendStages][kBlockKeys][D], with output only
  KRing k_ring;
  VRing v_ring;
  int num_blocks;    // key blocks of the CTA's KeySource
  int unmasked_end;  // virtual keys below it are visible to every row of the CTA
  int warpgroup;     // this thread's consumer warpgroup (0 or 1)
  bool active;       // mma_rows_active: this thread's MMA unit holds valid rows
  bool releases;     // this thread arrives on the empty barriers (one per consumer warp)

  // The first key blocks, whose keys every row sees: their steps compile without the mask.
  __device__ __forceinline__ int unmasked_blocks() const { return min(num_blocks, unmasked_end / kBlockKeys); }
};

}  // namespace kascade::cuda::prefill
