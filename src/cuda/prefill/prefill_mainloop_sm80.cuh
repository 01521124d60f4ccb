// prefill_mainloop_sm80.cuh — attend_kernel's consumer main loop on targets without wgmma:
// Q.K^T and P.V on mma.sync with ldmatrix fragments, each key block in two 64-key halves.
#pragma once

#include <type_traits>

#include "prefill_attend_cta.cuh"
#include "prefill_softmax.cuh"

namespace kascade::cuda::prefill {

// Runs every key block of the CTA through Q.K^T, the online softmax and P.V into acc / softmax.
// (loop by value: taken by reference, the sm_80 kernel compiled to different code.)
template <int D, typename T, bool kOutput, int kAccBlocks>
__device__ __forceinline__ void attend_mainloop_sm80(const AttendParams& p, const AttendLoop<T> loop, BlockMask& mask,
                                                     float (&acc)[kAccBlocks][4], RowSoftmax& softmax) {
  constexpr int kTile = AttendSmem<D, T>::kTileElems;
  // mma.sync (no setmaxnreg: all 384 threads share the register file, 168 registers each): the
  // MMAs are synchronous and the warp schedulers interleave the consumer warps by themselves, so
  // there is no ping-pong and no P.V left in flight. Each 128-key block is processed as two
  // 64-key halves (scores, softmax, P.V per half), so that only 32 score floats and one half's
  // P fragments are live next to the output accumulators. sm_80 ptxas: spill-free except 12 bytes for
  // D 128 with output (a whole block at once spilled 1504 bytes, 620 for D 64 and ~190 LSE-only);
  // the halves loop stays rolled, since unrolled its two halves' live ranges overlap (332 bytes).
  auto step = [&](int it, auto masked_tag) {
    constexpr bool kMasked = decltype(masked_tag)::value;
    constexpr int kHalfKeys = kBlockKeys / 2;
    const int slot = KRing::slot(it);
    loop.k_ring.wait_full(it);
    if constexpr (kOutput) loop.v_ring.wait_full(it);
    if (loop.active) {
#pragma unroll 1
      for (int half = 0; half < 2; ++half) {
        float s[kHalfKeys / 8][4];
        uint32_t p_half[kHalfKeys / 16][4];
        float correction[2];
        mma_sync_scores<D, T>(s, loop.q_smem, loop.k_smem + slot * kTile, half * kHalfKeys);
        mask.v0 = it * kBlockKeys + half * kHalfKeys;
        softmax_update<0, kHalfKeys / 8, kMasked, kOutput, T>(s, softmax, correction, mask, p.scale_log2, p_half);
        if constexpr (kOutput) {
          rescale_rows(acc, correction);
          mma_sync_pv<D, T>(acc, p_half, loop.v_smem + slot * kTile, half * kHalfKeys);
        }
      }
    }
    loop.k_ring.release_if(loop.releases, it);
    if constexpr (kOutput) loop.v_ring.release_if(loop.releases, it);
  };
  const int unmasked_blocks = loop.unmasked_blocks();
  int it = 0;
  for (; it < unmasked_blocks; ++it) step(it, std::false_type{});
  for (; it < loop.num_blocks; ++it) step(it, std::true_type{});
}

}  // namespace kascade::cuda::prefill
