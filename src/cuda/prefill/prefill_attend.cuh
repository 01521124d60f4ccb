// prefill_attend.cuh — attend_kernel: flash attention of one CTA of query rows over a KeySource
// (dense causal, the anchor's LSE-only pass, and the sparse pass over a selection plus the diagonal),
// its online softmax, and its launcher. Building blocks are in prefill_common.cuh; the schedule of
// the main loop is described there.
#pragma once

#include "prefill_common.cuh"

namespace kascade::cuda::prefill {

// ---- online softmax -----------------------------------------------------------------------------
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
template <int kFirst, int kCount, bool kMasked, bool kPack, typename T>
__device__ __forceinline__ void softmax_update(const float (&s)[kKeyBlocks8][4], RowSoftmax& st,
                                               float (&correction)[2], const BlockMask& mask, float scale_log2,
                                               uint32_t (&p_out)[kBlockKeys / 16][4]) {
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

// ---- attention ------------------------------------------------------------------------------
template <int D, typename T>
struct AttendSmem {
  static constexpr int kTileElems = kBlockKeys * D;
  static constexpr size_t bytes(bool with_v) {
    return kSmemAlign + sizeof(T) * (size_t(kBlockRows) * D + kStages * size_t(kTileElems) * (with_v ? 2 : 1)) +
           KeyRowTable<D>::kBytes;
  }
  static_assert(bytes(true) <= kMaxSmemPerCta, "attention tiles exceed the shared memory of a CTA");
};

// One CTA: P positions x G heads of one kv head, all keys of its KeySource, online softmax; the
// schedule of its main loop is in the file comment.
// Grid: x = position block (heaviest first), y = kv head, z = sequence.
template <int D, typename T, bool kOutput>
__global__ void __launch_bounds__(kThreads, 1) attend_kernel(const __grid_constant__ AttendParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* q_smem = reinterpret_cast<T*>(align_smem(smem_raw));
  T* k_smem = q_smem + kBlockRows * D;                          // [kStages][kBlockKeys][D]
  T* v_smem = k_smem + kStages * AttendSmem<D, T>::kTileElems;  // [kStages][kBlockKeys][D] (kOutput only)
  int32_t* row_table = reinterpret_cast<int32_t*>(v_smem + (kOutput ? kStages * AttendSmem<D, T>::kTileElems : 0));
  constexpr int kTile = AttendSmem<D, T>::kTileElems;

  const int b = blockIdx.z, kv_head = blockIdx.y;
  const int block = p.num_position_blocks - 1 - blockIdx.x;  // long causal rows first
  const SeqGeometry g = seq_geometry(p.q_indptr, p.seq_lens, b);
  const int first_local = block * p.positions_per_cta;
  if (first_local >= g.nq) return;
  const int num_pos = min(p.positions_per_cta, g.nq - first_local);
  const int pos_lo = g.p0 + first_local, pos_hi = pos_lo + num_pos;

  KeySource keys;
  if (p.sel_indices == nullptr) {
    keys = {nullptr, 0, 0, pos_hi};
  } else {
    const int tau = first_local / p.tile;
    const int sel = p.num_selections == 1 ? 0 : (p.head_map ? p.head_map[kv_head] : kv_head);
    const int64_t slot = (int64_t(b) * p.num_selections + sel) * p.max_tiles + tau;
    keys = {p.sel_indices + slot * p.k_max, p.sel_counts[slot], g.p0 + tau * p.tile, pos_hi};
  }
  const int num_keys = keys.size();
  // Virtual keys < unmasked_end are visible to every row of the CTA (list keys precede the tile,
  // range keys up to pos_lo precede every row).
  const int unmasked_end = min(num_keys, keys.list_count + (pos_lo + 1 - keys.range_begin));

  const T* q = static_cast<const T*>(p.q);
  const T* kbase = KeyRowTable<D>::column_base(static_cast<const T*>(p.kv.k), p.kv, kv_head);
  const T* vbase = KeyRowTable<D>::column_base(static_cast<const T*>(p.kv.v), p.kv, kv_head);
  const int valid_rows = num_pos * p.group;
  load_q_rows<D>(q_smem, q, g.q_begin + first_local, p.num_q_heads, kv_head * p.group, p.group, valid_rows);
  const int32_t* seq_pages = p.kv.page_indices + p.kv.page_indptr[b];
  const int num_blocks = (num_keys + kBlockKeys - 1) / kBlockKeys;
  // Prologue: row table of blocks 0 .. kStages-1, then copy group 0 = Q and K[0], group 1 =
  // V[0] and K[1].
  KeyRowTable<D> rows;
  rows.start(row_table, keys, p.kv, seq_pages);
  __syncthreads();
  KeyRowTable<D>::copy_rows(k_smem, kbase, row_table, p.kv);
  // The first step's P.V reads the last V slot with P = 0: zero-filled here, in group 0.
  if (kOutput) KeyRowTable<D>::copy_rows(v_smem + (kStages - 1) * kTile, vbase, row_table, p.kv, false);
  cp_async_commit();
  if (kOutput) KeyRowTable<D>::copy_rows(v_smem, vbase, row_table, p.kv);
  KeyRowTable<D>::copy_rows(k_smem + kTile, kbase, row_table + kBlockKeys, p.kv, 1 < num_blocks);
  cp_async_commit();

  const int lane = threadIdx.x % 32;
  BlockMask mask;
  mask.num_keys = num_keys, mask.list_count = keys.list_count, mask.range_begin = keys.range_begin;
  // This thread's rows: warp_first_row() + lane/4 (+8). Rows past valid_rows get position pos_lo
  // so that their softmax stays finite; they are never stored.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp_first_row() + lane / 4 + 8 * i;
    mask.row_pos[i] = r < valid_rows ? pos_lo + r / p.group : pos_lo;
  }

  constexpr int kAccBlocks = kOutput ? D / 8 : 1;
  float acc[kAccBlocks][4];
#pragma unroll
  for (int j = 0; j < kAccBlocks; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  // P of blocks 0, 2, 4 .. and 1, 3, 5 ..: the A operands of their P.V (p_even starts as 0 for
  // the first step's P.V).
  uint32_t p_even[kBlockKeys / 16][4], p_odd[kBlockKeys / 16][4];
#pragma unroll
  for (int kk = 0; kk < kBlockKeys / 16; ++kk)
#pragma unroll
    for (int r = 0; r < 4; ++r) p_even[kk][r] = 0u, p_odd[kk][r] = 0u;
  RowSoftmax softmax;

  const bool active = mma_rows_active(valid_rows);
  // One main-loop step per key block; kMasked steps (the blocks reaching past unmasked_end, at
  // most two per CTA) apply the causal / key-count mask, the others carry no mask code at all, so
  // that no branch sits between a wgmma issue and its wait (ptxas would move the wait above it).
  // P alternates between two fragment sets, so that the softmax of block it writes the set
  // that the P.V in flight (block it-1) does not read.
  auto step = [&](int it, auto masked_tag, const uint32_t(&p_in)[kBlockKeys / 16][4],
                  uint32_t(&p_out)[kBlockKeys / 16][4]) {
    constexpr bool kMasked = decltype(masked_tag)::value;
    // Copy group it (K[it], V[it-1]) has landed (group it+1 may still be in flight); every
    // unit is done with K[it-1] and V[it-2], whose buffers the copies of group it+2 reuse.
    cp_async_wait<1>();
    __syncthreads();
    // The tensor-core work of this block is issued first, so that the copies and the table
    // upkeep below run while it executes.
    const int buf = it % kStages;
    float s[kKeyBlocks8][4];
    if (active) {
      issue_scores<D, T, kOutput ? 1 : 2>(s, q_smem, k_smem + buf * kTile);
      // P.V of the previous block (V[it-1]); in the first step P is 0 and the V slot it reads
      // was zero-filled by the prologue, so every step issues the same groups.
      if constexpr (kOutput) issue_pv<D, T>(acc, p_in, v_smem + ((it + kStages - 1) % kStages) * kTile);
    }
    const int32_t* table_next = row_table + ((it + 1) % kStages) * kBlockKeys;
    const int32_t* table_after = row_table + ((it + 2) % kStages) * kBlockKeys;
    if (kOutput)
      KeyRowTable<D>::copy_rows(v_smem + ((it + 1) % kStages) * kTile, vbase, table_next, p.kv, it + 1 < num_blocks);
    KeyRowTable<D>::copy_rows(k_smem + ((it + 2) % kStages) * kTile, kbase, table_after, p.kv, it + 2 < num_blocks);
    cp_async_commit();
    rows.advance(row_table, it, keys, p.kv, seq_pages);
    if (!active) return;

    mask.v0 = it * kBlockKeys;
    float correction[2];
    if constexpr (kOutput) {
      wgmma_wait<1>();
      wgmma_fence_operands(s);
      softmax_update<0, kKeyBlocks8, kMasked, true, T>(s, softmax, correction, mask, p.scale_log2, p_out);
      // Pins the softmax above the P.V wait: the compiler may otherwise sink this register-only
      // arithmetic past the wait and lose the overlap.
      pin_registers(softmax, correction);
      wgmma_wait<0>();
      wgmma_fence_operands(acc);
#pragma unroll
      for (int j = 0; j < kAccBlocks; ++j) {
        acc[j][0] *= correction[0], acc[j][1] *= correction[0];
        acc[j][2] *= correction[1], acc[j][3] *= correction[1];
      }
    } else {
      // LSE only: the exponentials of the first 64 keys overlap the MMAs of the second 64.
      wgmma_wait<1>();
      wgmma_fence_operands<0, kKeyBlocks8 / 2>(s);
      softmax_update<0, kKeyBlocks8 / 2, kMasked, false, T>(s, softmax, correction, mask, p.scale_log2, p_out);
      pin_registers(softmax, correction);  // above the wait, as in the output pass
      wgmma_wait<0>();
      wgmma_fence_operands(s);
      softmax_update<kKeyBlocks8 / 2, kKeyBlocks8 / 2, kMasked, false, T>(s, softmax, correction, mask,
                                                                         p.scale_log2, p_out);
    }
  };
  const int unmasked_blocks = min(num_blocks, unmasked_end / kBlockKeys);
  int it = 0;
  auto step_with_parity = [&](int i, auto masked_tag) {
#if KASCADE_PREFILL_WGMMA
    if (i % 2 == 0) {
      step(i, masked_tag, p_even, p_odd);
    } else {
      step(i, masked_tag, p_odd, p_even);
    }
#else
    step(i, masked_tag, p_even, p_even);  // mma.sync: P.V has read P before the softmax rewrites it
#endif
  };
  for (; it < unmasked_blocks; ++it) step_with_parity(it, std::false_type{});
  for (; it < num_blocks; ++it) step_with_parity(it, std::true_type{});
  if constexpr (kOutput) {
    // P.V of the last block.
    cp_async_wait<0>();
    __syncthreads();
    if (active && num_blocks > 0) {
      // The last step (num_blocks - 1) wrote the odd set when num_blocks - 1 is even (two calls,
      // not a selected reference, so that both sets stay in registers).
      const T* v_last = v_smem + ((num_blocks - 1) % kStages) * kTile;
      if (KASCADE_PREFILL_WGMMA && num_blocks % 2 == 1) {
        issue_pv<D, T>(acc, p_odd, v_last);
      } else {
        issue_pv<D, T>(acc, p_even, v_last);
      }
      wgmma_wait<0>();
      wgmma_fence_operands(acc);
    }
  } else {
    cp_async_wait<0>();
  }

  // Epilogue: full row sums, then output and LSE of valid rows.
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

template <int D, typename T>
void PrefillKernels<D, T>::attend(const AttendParams& p, bool with_output, dim3 grid, cudaStream_t stream) {
  if (with_output) {
    launch_with_smem<attend_kernel<D, T, true>, AttendSmem<D, T>::bytes(true)>(p, grid, stream);
  } else {
    launch_with_smem<attend_kernel<D, T, false>, AttendSmem<D, T>::bytes(false)>(p, grid, stream);
  }
}

}  // namespace kascade::cuda::prefill
