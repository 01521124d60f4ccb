// prefill_epilogue.cuh — attend_kernel's epilogue: the full row sums of the online softmax, then
// the output rows (O / sum, in the storage type) and the row LSE (log2) of the CTA's valid rows.
#pragma once

#include "prefill_softmax.cuh"

namespace kascade::cuda::prefill {

// Row r < valid_rows of the CTA is (position first_local + r / G of sequence g, head
// kv_head * G + r % G); this thread stores its rows warp_first_row() + lane / 4 (+ 8).
template <int D, typename T, bool kOutput, int kAccBlocks>
__device__ __forceinline__ void attend_epilogue(const AttendParams& p, const SeqGeometry& g, int first_local,
                                                int kv_head, int valid_rows, const RowSoftmax& softmax,
                                                const float (&acc)[kAccBlocks][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float total = softmax.sum[i];
    total += __shfl_xor_sync(0xffffffffu, total, 1);
    total += __shfl_xor_sync(0xffffffffu, total, 2);
    const int r = warp_first_row() + lane / 4 + 8 * i;
    if (r >= valid_rows) continue;
    const int64_t qrow = g.q_begin + first_local + r / p.group;
    const int head = kv_head * p.group + r % p.group;
    const int64_t row_index = qrow * p.num_q_heads + head;
    if (p.lse_log2 != nullptr && lane % 4 == 0) p.lse_log2[row_index] = softmax.max[i] + log2f(total);
    if constexpr (kOutput) {
      const float inv = 1.f / total;
      T* out = static_cast<T*>(p.out) + row_index * D;
#pragma unroll
      for (int j = 0; j < kAccBlocks; ++j) {
        const uint32_t packed = Mma16816<T>::pack(acc[j][2 * i] * inv, acc[j][2 * i + 1] * inv);
        *reinterpret_cast<uint32_t*>(out + j * 8 + 2 * (lane % 4)) = packed;
      }
    }
  }
}

}  // namespace kascade::cuda::prefill
