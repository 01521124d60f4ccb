// prefill_softmax.cuh — the online softmax of attend_kernel's main loops (prefill_mainloop_sm90.cuh,
// prefill_mainloop_sm80.cuh): the mask of a key block, the running row max and sum of this
// thread's two rows, and the rescaling of the output accumulators. Scores are in the log2 domain
// (prefill_common.cuh).
#pragma once

#include "prefill_common.cuh"

namespace kascade::cuda::prefill {

// Which keys of a block this thread's rows may see: virtual key v is visible when v < num_keys and,
// for a range key (v >= list_count), its position range_begin + v - list_count is at most the row's
// position. Only the blocks that reach past the keys visible to every row of the CTA apply it
// (the kMasked steps of the main loop).
struct BlockMask {
  int v0;  // virtual index of the block's first key
  int num_keys, list_count, range_begin;
  int row_pos[2];
};

// Running max (log2 domain) and this thread's part of the running sum of exp2(s2 - max) of its
// two rows.
struct RowSoftmax {
  float max[2] = {-INFINITY, -INFINITY};
  float sum[2] = {0.f, 0.f};
};

// Orders the softmax state before the next asm statement (a wgmma wait): an empty asm that
// reads and rewrites the registers.
__device__ __forceinline__ void pin_registers(RowSoftmax& st, float (&correction)[2]) {
  asm volatile("" : "+f"(st.max[0]), "+f"(st.max[1]), "+f"(st.sum[0]), "+f"(st.sum[1]), "+f"(correction[0]),
               "+f"(correction[1])::"memory");
}

// Online-softmax step over key blocks [kFirst, kFirst + kCount) of raw scores s: masks invisible
// keys, raises the row max (scores scaled by scale_log2 into the log2 domain) and adds
// exp2(s2 - max) to the row sum; with kPack the probabilities are also packed to the storage type
// as the A fragments of P.V (p_out[kk] for keys 16kk .. 16kk+15). correction[i] =
// exp2(old max - new max) is the factor for whatever was accumulated against the old max.
// It runs between a wgmma issue and its wait, so it is branch-free (selects) and writes neither
// s nor the P fragments of the P.V in flight: ptxas tracks the registers of a whole wgmma
// pipeline stage, and writing any of them makes it wait for every group first.
// s holds kScoreBlocks 8-key blocks starting at virtual key mask.v0 (a whole key block, or a part
// of it on the mma.sync path), p_out the fragments of the same keys.
template <int kFirst, int kCount, bool kMasked, bool kPack, typename T, int kScoreBlocks, int kPSteps>
__device__ __forceinline__ void softmax_update(const float (&s)[kScoreBlocks][4], RowSoftmax& st,
                                               float (&correction)[2], const BlockMask& mask, float scale_log2,
                                               uint32_t (&p_out)[kPSteps][4]) {
  static_assert(kFirst + kCount <= kScoreBlocks && 2 * kPSteps == kScoreBlocks, "steps inside the score array");
  static_assert(!kPack || (kFirst % 2 == 0 && kCount % 2 == 0), "packed P covers whole 16-key steps");
  const int lane = threadIdx.x % 32;
  // Score e of key block j, -inf where masked.
  auto score = [&](int j, int e) {
    if constexpr (kMasked) {
      const int v = mask.v0 + j * 8 + 2 * (lane % 4) + (e & 1);
      const bool in_keys = v < mask.num_keys;
      const bool causal = (v < mask.list_count) | (mask.range_begin + (v - mask.list_count) <= mask.row_pos[e / 2]);
      return in_keys & causal ? s[j][e] : -INFINITY;
    } else {
      return s[j][e];
    }
  };
  // The 4 lanes of a row are lanes 4r .. 4r+3. scale_log2 > 0, so the max of raw scores scaled is
  // the max of scaled scores, and exp2(s * scale - max) is one FFMA and one MUFU per score.
  // Pairwise (tree) reductions: a running max or sum would be a chain of kCount dependent
  // instructions per row, which two warps per scheduler cannot hide.
  float m_safe[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float partial[kCount];
#pragma unroll
    for (int j = 0; j < kCount; ++j) partial[j] = fmaxf(score(kFirst + j, 2 * i), score(kFirst + j, 2 * i + 1));
    float raw_max = tree_reduce<kCount>(partial, [](float a, float b) { return fmaxf(a, b); });
    raw_max = fmaxf(raw_max, __shfl_xor_sync(0xffffffffu, raw_max, 1));
    raw_max = fmaxf(raw_max, __shfl_xor_sync(0xffffffffu, raw_max, 2));
    const float mx = fmaxf(st.max[i], raw_max * scale_log2);
    // A row whose keys so far are all masked keeps -inf; use 0 so exp2 gives 0, not NaN.
    m_safe[i] = mx == -INFINITY ? 0.f : mx;
    correction[i] = exp2_ftz(st.max[i] - m_safe[i]);
    st.max[i] = mx;
  }
  float row_partial[2][kCount];
#pragma unroll
  for (int j = 0; j < kCount; ++j) {
    float prob[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) prob[e] = exp2_ftz(fmaf(score(kFirst + j, e), scale_log2, -m_safe[e / 2]));
    row_partial[0][j] = prob[0] + prob[1];
    row_partial[1][j] = prob[2] + prob[3];
    if constexpr (kPack) {
      // The C layout of key blocks 2kk, 2kk+1 is the A layout of keys 16kk .. 16kk+15.
      const int kk = (kFirst + j) / 2, half = (kFirst + j) % 2;
      p_out[kk][2 * half] = Mma16816<T>::pack(prob[0], prob[1]);
      p_out[kk][2 * half + 1] = Mma16816<T>::pack(prob[2], prob[3]);
    }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
    st.sum[i] = st.sum[i] * correction[i] + tree_reduce<kCount>(row_partial[i], [](float a, float b) { return a + b; });
}

// Rescales this thread's output accumulators (rows lane / 4 and + 8) by the softmax corrections.
template <int kAccBlocks>
__device__ __forceinline__ void rescale_rows(float (&acc)[kAccBlocks][4], const float (&correction)[2]) {
#pragma unroll
  for (int j = 0; j < kAccBlocks; ++j) {
    acc[j][0] *= correction[0], acc[j][1] *= correction[0];
    acc[j][2] *= correction[1], acc[j][3] *= correction[1];
  }
}

}  // namespace kascade::cuda::prefill
