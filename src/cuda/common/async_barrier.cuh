// src/cuda/common/async_barrier.cuh — the synchronisation primitives of warp-specialised kernels:
// shared-memory mbarriers (a producer / consumer ring of smem stages), the cp.async arrival on an
// mbarrier, named CTA barriers over a subset of the warps, and the register reallocation
// between warpgroups (setmaxnreg, sm_90a only; a no-op elsewhere).
//
// A ring stage s has a "full" barrier (producers arrive when the stage's data has landed) and an
// "empty" barrier (consumers arrive when they are done reading it). Use n of stage s waits for
// phase parity (n & 1) of its full barrier; the producer's n-th refill waits for parity
// ((n & 1) ^ 1) of the empty barrier, which a fresh barrier reports as complete, so the first
// pass over the ring does not wait. Everything here is sm_80+ except setmaxnreg.
#pragma once

#include <cstdint>

namespace kascade::cuda {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// One thread initialises; a CTA barrier must follow before any other thread uses the barrier.
__device__ __forceinline__ void mbarrier_init(uint64_t* barrier, int arrival_count) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(arrival_count)
               : "memory");
}

// Blocks until the phase of `barrier` with parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* barrier, int parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n.reg .pred done;\nwait_loop:\n"
      "mbarrier.try_wait.parity.shared.b64 done, [%0], %1;\n"
      "@!done bra wait_loop;\n}\n" ::"r"(shared_address(barrier)),
      "r"(parity)
      : "memory");
#else
  asm volatile(
      "{\n.reg .pred done;\nwait_loop:\n"
      "mbarrier.test_wait.parity.shared.b64 done, [%0], %1;\n"
      "@!done bra wait_loop;\n}\n" ::"r"(shared_address(barrier)),
      "r"(parity)
      : "memory");
#endif
}

// Arrives on `barrier` (release: the caller's earlier smem reads are ordered before it) when
// `pred`, as one predicated instruction, so that it can sit between an asynchronous MMA's issue
// and its wait without a branch.
__device__ __forceinline__ void mbarrier_arrive_if(bool pred, uint64_t* barrier) {
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 state;\nsetp.ne.b32 p, %1, 0;\n"
      "@p mbarrier.arrive.shared.b64 state, [%0];\n}\n" ::"r"(shared_address(barrier)),
      "r"(static_cast<int>(pred))
      : "memory");
}

// Arrives on `barrier` once all cp.async copies this thread issued so far have landed. Counts
// as one of the barrier's expected arrivals (.noinc): init the barrier with the number of
// copying threads.
__device__ __forceinline__ void cp_async_arrive_noinc(uint64_t* barrier) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];\n" ::"r"(shared_address(barrier)) : "memory");
}

// A ring of kStages shared-memory slots that producers fill and consumers drain: per slot a full
// and an empty mbarrier. Both sides count the ring's uses n = 0, 1, 2 ..; use n takes slot
// n % kStages with phase parity (n / kStages) & 1 (the file comment says why the producer's first
// pass over the ring does not wait). Rings that advance together (a kernel's K and V tiles) share
// one barrier array: ring kRingIndex's barriers are [full] x kStages then [empty] x kStages at
// word 2 kStages kRingIndex of it (kBarriers words per ring).
template <int kStages, int kRingIndex = 0>
struct MbarrierRing {
  static constexpr int kSlots = kStages;
  static constexpr int kBarriers = 2 * kStages;
  uint64_t* barriers;  // the shared array, word 0

  __device__ __forceinline__ static int slot(int n) { return n % kStages; }
  __device__ __forceinline__ static int parity(int n) { return (n / kStages) & 1; }
  __device__ __forceinline__ uint64_t* full(int n) const { return barriers + kFull + n % kStages; }
  __device__ __forceinline__ uint64_t* empty(int n) const { return barriers + kEmpty + n % kStages; }

  static constexpr int kFull = kBarriers * kRingIndex, kEmpty = kFull + kStages;

  // Slot s's barriers: a phase of full completes after `producer_arrivals` arrivals, one of empty
  // after `consumer_arrivals`.
  __device__ __forceinline__ void init_slot(int s, int producer_arrivals, int consumer_arrivals) const {
    mbarrier_init(full(s), producer_arrivals);
    mbarrier_init(empty(s), consumer_arrivals);
  }
  // Producer: waits until the consumers have released use n - kStages of use n's slot.
  __device__ __forceinline__ void wait_empty(int n) const { mbarrier_wait(empty(n), parity(n) ^ 1); }
  // Producer: counts this thread towards use n's slot being full once its cp.async copies so far
  // have landed.
  __device__ __forceinline__ void arrive_full_after_copies(int n) const { cp_async_arrive_noinc(full(n)); }
  // Consumer: waits until use n's slot is full.
  __device__ __forceinline__ void wait_full(int n) const { mbarrier_wait(full(n), parity(n)); }
  // Consumer: releases use n's slot when `pred` (one predicated arrival, see mbarrier_arrive_if).
  __device__ __forceinline__ void release_if(bool pred, int n) const { mbarrier_arrive_if(pred, empty(n)); }
};

// Initialises rings of the same depth slot by slot, ring after ring within a slot. One thread
// calls it; a CTA barrier must follow before any other thread uses the rings.
template <typename Ring, typename... MoreRings>
__device__ __forceinline__ void init_rings(int producer_arrivals, int consumer_arrivals, const Ring& ring,
                                           const MoreRings&... more) {
  static_assert(((MoreRings::kSlots == Ring::kSlots) && ...), "rings initialised together have one depth");
  for (int s = 0; s < Ring::kSlots; ++s) {
    ring.init_slot(s, producer_arrivals, consumer_arrivals);
    (more.init_slot(s, producer_arrivals, consumer_arrivals), ...);
  }
}

// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads (a multiple of 32):
// sync waits for all of them, arrive counts the caller without waiting.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Moves registers between the warpgroups of a CTA (all warps of a warpgroup call it with the
// same count, a multiple of 8 in 24..256). The kernel must be compiled with launch bounds whose
// per-thread share of the register file is at least what any warpgroup keeps.
template <int kRegisters>
__device__ __forceinline__ void warpgroup_release_registers() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}
template <int kRegisters>
__device__ __forceinline__ void warpgroup_claim_registers() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}

}  // namespace kascade::cuda
