// prefill_mainloop_sm90.cuh — attend_kernel's consumer main loop on sm_90a: Q.K^T and P.V on
// wgmma, the two consumer warpgroups taking turns on the tensor cores (ping-pong), each running
// its softmax of block j while its P.V of block j-1 is in flight. The schedule, and why nothing
// between a wgmma issue and its wait may branch, is in the file comment of prefill_common.cuh.
#pragma once

#include <type_traits>

#include "prefill_attend_cta.cuh"
#include "prefill_softmax.cuh"

namespace kascade::cuda::prefill {

// Runs every key block of the CTA through Q.K^T, the online softmax and P.V into acc / softmax.
// (loop by value: taken by reference, the sm_80 kernel compiled to different code.)
template <int D, typename T, bool kOutput, int kAccBlocks>
__device__ __forceinline__ void attend_mainloop_sm90(const AttendParams& p, const AttendLoop<T> loop, BlockMask& mask,
                                                     float (&acc)[kAccBlocks][4], RowSoftmax& softmax) {
  constexpr int kTile = AttendSmem<D, T>::kTileElems;
  const int warpgroup = loop.warpgroup;
  // P of blocks 0, 2, 4 .. and 1, 3, 5 ..: the A operands of their P.V.
  uint32_t p_even[kBlockKeys / 16][4], p_odd[kBlockKeys / 16][4];
  // The consumer warpgroups take turns issuing their MMAs (ping-pong): warpgroup g waits for its
  // turn barrier, issues Q.K^T of block j and P.V of block j-1, and hands the turn over, so that
  // its softmax of block j runs while the other warpgroup's MMAs occupy the tensor cores.
  // Warpgroup 1 hands warpgroup 0 the first turn; warpgroup 0 takes one more turn after its last
  // block, so that every arrival on a turn barrier is matched.
  auto take_turn = [&] { named_barrier_sync(kTurnBarrier + warpgroup, kThreads); };
  auto pass_turn = [&] { named_barrier_arrive(kTurnBarrier + (warpgroup ^ 1), kThreads); };
  if (warpgroup == 1) pass_turn();

  // One main-loop step per key block; kMasked steps (the blocks reaching past unmasked_end, at
  // most two per CTA, and the first) apply the causal / key-count mask, the others carry no mask
  // code at all, so that no branch sits between a wgmma issue and its wait (ptxas would move the
  // wait above it). kFirst (block 0) has no P.V before it. P alternates between two fragment
  // sets, so that the softmax of block it writes the set that the P.V in flight (block it-1)
  // does not read.
  auto step = [&](int it, auto masked_tag, auto first_tag, const uint32_t(&p_in)[kBlockKeys / 16][4],
                  uint32_t(&p_out)[kBlockKeys / 16][4]) {
    constexpr bool kMasked = decltype(masked_tag)::value;
    constexpr bool kFirst = decltype(first_tag)::value;
    constexpr bool kWithPv = kOutput && !kFirst;
    loop.k_ring.wait_full(it);
    if constexpr (kWithPv) loop.v_ring.wait_full(it - 1);
    take_turn();
    float s[kKeyBlocks8][4];
    if (loop.active) {
      issue_scores<D, T, 1>(s, loop.q_smem, loop.k_smem + KRing::slot(it) * kTile);
      if constexpr (kOutput) {  // (kOutput first: the call does not compile for the LSE-only pass)
        if constexpr (!kFirst) issue_pv<D, T>(acc, p_in, loop.v_smem + VRing::slot(it - 1) * kTile);
      }
    }
    pass_turn();

    mask.v0 = it * kBlockKeys;
    float correction[2] = {1.f, 1.f};
    if constexpr (kOutput) {
      if (loop.active) {
        wgmma_wait<kWithPv ? 1 : 0>();
        wgmma_fence_operands(s);
      }
      loop.k_ring.release_if(loop.releases, it);
      if (loop.active) {
        softmax_update<0, kKeyBlocks8, kMasked, true, T>(s, softmax, correction, mask, p.scale_log2, p_out);
        // Pins the softmax above the P.V wait: the compiler may otherwise sink this register-only
        // arithmetic past the wait and lose the overlap.
        pin_registers(softmax, correction);
      }
      if constexpr (kWithPv) {
        if (loop.active) {
          wgmma_wait<0>();
          wgmma_fence_operands(acc);
        }
        loop.v_ring.release_if(loop.releases, it - 1);
        rescale_rows(acc, correction);
      }
    } else {
      // LSE only: S in one commit group; the other warpgroup's MMAs run during the exponentials.
      // (Split in two 64-key halves, the first half's exponentials overlapping the second half's
      // MMAs, the pass took 11.26 / 185.2 ms at 32k / 128k against 11.06 / 178.8, H100.)
      if (loop.active) {
        wgmma_wait<0>();
        wgmma_fence_operands(s);
      }
      loop.k_ring.release_if(loop.releases, it);
      if (loop.active)
        softmax_update<0, kKeyBlocks8, kMasked, false, T>(s, softmax, correction, mask,
                                                          p.scale_log2, p_out);
    }
  };
  const int unmasked_blocks = loop.unmasked_blocks();
  auto step_with_parity = [&](int i, auto masked_tag) {
    if (i % 2 == 0) {
      step(i, masked_tag, std::false_type{}, p_odd, p_even);
    } else {
      step(i, masked_tag, std::false_type{}, p_even, p_odd);
    }
  };
  if (loop.num_blocks > 0) step(0, std::true_type{}, std::true_type{}, p_odd, p_even);
  int it = 1;
  for (; it < unmasked_blocks; ++it) step_with_parity(it, std::false_type{});
  for (; it < loop.num_blocks; ++it) step_with_parity(it, std::true_type{});
  if constexpr (kOutput) {
    // P.V of the last block.
    if (loop.num_blocks > 0) {
      const int last = loop.num_blocks - 1;
      loop.v_ring.wait_full(last);
      if (loop.active) {
        // The last step wrote the odd set when `last` is odd (two calls, not a selected
        // reference, so that both sets stay in registers).
        const T* v_last = loop.v_smem + VRing::slot(last) * kTile;
        if (last % 2 == 1) {
          issue_pv<D, T>(acc, p_odd, v_last);
        } else {
          issue_pv<D, T>(acc, p_even, v_last);
        }
        wgmma_wait<0>();
        wgmma_fence_operands(acc);
      }
    }
  }
  if (warpgroup == 0) take_turn();
}

}  // namespace kascade::cuda::prefill
