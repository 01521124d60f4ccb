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
