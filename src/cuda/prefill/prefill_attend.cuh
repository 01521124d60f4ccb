// prefill_attend.cuh — attend_kernel: flash attention of one CTA of query rows over a KeySource
// (dense causal, the anchor's LSE-only pass, and the sparse pass over a selection plus the diagonal),
// its online softmax, and its launcher. Building blocks are in prefill_common.cuh; the schedule of
// the main loop is described there.
#pragma once

#include "../common/async_barrier.cuh"
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

// ---- attention ------------------------------------------------------------------------------
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

// The producer warpgroup: thread t resolves key row t of every block to its element offset in
// the paged cache, one block ahead (a selected key needs two dependent loads, its position and
// then its page id, which land while the block before is copied), and each warp copies its 32
// rows of K (and V) into the ring with cp.async, the offsets passed along by shuffles.
template <int D, typename T, bool kOutput>
__device__ __forceinline__ void produce_key_blocks(const AttendParams& p, const KeySource& keys, int num_blocks,
                                                   int kv_head, const int32_t* seq_pages, T* k_smem, T* v_smem,
                                                   const KRing& k_ring, const VRing& v_ring) {
  constexpr int kChunks = D / kChunkElems;    // 16-byte chunks of a row
  constexpr int kRowsPerCopy = 32 / kChunks;  // rows one warp-wide cp.async covers
  constexpr int kTile = AttendSmem<D, T>::kTileElems;
  const int resolver = static_cast<int>(threadIdx.x) - kThreads;  // the block row this thread resolves
  const int warp = resolver / 32, lane = resolver % 32, chunk = lane % kChunks;
  const int64_t column = int64_t(kv_head) * p.kv.head_stride + chunk * kChunkElems;
  const T* k_column = static_cast<const T*>(p.kv.k) + column;
  const T* v_column = static_cast<const T*>(p.kv.v) + column;

  auto page_of = [&](int position) {
    uint32_t page_in_seq = 0, slot = 0;
    p.kv.page_size.divmod(static_cast<uint32_t>(max(position, 0)), page_in_seq, slot);
    return load_if(position >= 0, seq_pages + page_in_seq, 0);
  };
  // Element offset of the row at `position` in page `page`; -1 past the keys.
  auto row_offset = [&](int position, int page) {
    uint32_t page_in_seq = 0, slot = 0;
    p.kv.page_size.divmod(static_cast<uint32_t>(max(position, 0)), page_in_seq, slot);
    return position < 0 ? int64_t{-1} : int64_t(page) * p.kv.page_stride + int64_t(slot) * p.kv.token_stride;
  };
  // Copy i writes row r = i * kRowsPerCopy + lane / kChunks of the warp's 32; its swizzled
  // position (SwizzledTile::offset) splits into a part fixed per lane and a compile-time part,
  // since r % 8 = (i * kRowsPerCopy) % 8 ^ lane / kChunks (spelled out so that the compiler
  // does not keep one precomputed offset per copy in registers).
  static_assert(kChunks % 8 == 0 && kRowsPerCopy <= 8, "a row is whole swizzle atoms");
  const int lane_row = lane / kChunks;
  const int lane_swizzle = (chunk % 8) ^ lane_row;
  const int lane_offset = (chunk / 8) * SwizzledTile<D, kBlockKeys>::kPanelStride + (warp * 32 + lane_row) * kPanelElems;
  // The warp's rows 32 warp .. 32 warp + 31 of one tile; rows past the keys are zero-filled (a
  // zero P times stale V could still be NaN).
  auto copy_rows = [&](T* tile, const T* column_base, int64_t offset) {
    const uint32_t offset_lo = static_cast<uint32_t>(offset);
    const uint32_t offset_hi = static_cast<uint32_t>(static_cast<uint64_t>(offset) >> 32);
    T* lane_tile = tile + lane_offset;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int r = i * kRowsPerCopy + lane_row;
      const uint64_t hi = __shfl_sync(0xffffffffu, offset_hi, r), lo = __shfl_sync(0xffffffffu, offset_lo, r);
      const int64_t row = static_cast<int64_t>((hi << 32) | lo);
      const bool valid = row >= 0;
      T* dst = lane_tile + i * kRowsPerCopy * kPanelElems + (lane_swizzle ^ ((i * kRowsPerCopy) % 8)) * kChunkElems;
      cp_async16(dst, column_base + (valid ? row : 0), valid);
    }
  };

  int position_next = keys.position(resolver);
  int64_t offset = row_offset(position_next, page_of(position_next));  // block 0: one stall
  position_next = keys.position(kBlockKeys + resolver);
  for (int block = 0; block < num_blocks; ++block) {
    const int page_next = page_of(position_next);                              // block + 1
    const int position_after = keys.position((block + 2) * kBlockKeys + resolver);  // block + 2
    const int slot = block % KRing::kSlots;  // (through KRing::slot the loop compiles to other code)
    k_ring.wait_empty(block);
    copy_rows(k_smem + slot * kTile, k_column, offset);
    k_ring.arrive_full_after_copies(block);
    if constexpr (kOutput) {
      v_ring.wait_empty(block);
      copy_rows(v_smem + slot * kTile, v_column, offset);
      v_ring.arrive_full_after_copies(block);
    }
    offset = row_offset(position_next, page_next);
    position_next = position_after;
  }
  cp_async_wait<0>();  // no copy outlives its thread
}

// One CTA: P positions x G heads of one kv head, all keys of its KeySource, online softmax; the
// schedule of its main loop is in the file comment of prefill_common.cuh.
// Grid: x = position block (heaviest first), y = kv head, z = sequence.
template <int D, typename T, bool kOutput>
__global__ void __launch_bounds__(kAttendThreads, 1) attend_kernel(const __grid_constant__ AttendParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  constexpr int kTile = AttendSmem<D, T>::kTileElems;
  T* q_smem = reinterpret_cast<T*>(align_smem(smem_raw));
  T* k_smem = q_smem + kBlockRows * D;       // [kAttendStages][kBlockKeys][D]
  T* v_smem = k_smem + kAttendStages * kTile;  // [kAttendStages][kBlockKeys][D] (kOutput only)
  uint64_t* ring_barriers = reinterpret_cast<uint64_t*>(v_smem + (kOutput ? kAttendStages * kTile : 0));
  const KRing k_ring{ring_barriers};
  const VRing v_ring{ring_barriers};

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
  const int num_blocks = (num_keys + kBlockKeys - 1) / kBlockKeys;
  const int32_t* seq_pages = p.kv.page_indices + p.kv.page_indptr[b];

  if (threadIdx.x == 0) init_rings(kAttendProducerThreads, kWarps, k_ring, v_ring);
  __syncthreads();  // the only CTA-wide barrier: the roles part here
  if (threadIdx.x >= kThreads) {  // the producer warpgroup
    AttendCta::enter_producer();
    produce_key_blocks<D, T, kOutput>(p, keys, num_blocks, kv_head, seq_pages, k_smem, v_smem, k_ring, v_ring);
    return;
  }
  AttendCta::enter_consumer();

  // Virtual keys < unmasked_end are visible to every row of the CTA (list keys precede the tile,
  // range keys up to pos_lo precede every row).
  const int unmasked_end = min(num_keys, keys.list_count + (pos_lo + 1 - keys.range_begin));
  const int valid_rows = num_pos * p.group;
  load_q_rows<D>(q_smem, static_cast<const T*>(p.q), g.q_begin + first_local, p.num_q_heads, kv_head * p.group,
                 p.group, valid_rows);
  cp_async_commit();

  const int lane = threadIdx.x % 32;
  const int warpgroup = static_cast<int>(threadIdx.x) / 128;
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
#if KASCADE_PREFILL_WGMMA
  // P of blocks 0, 2, 4 .. and 1, 3, 5 ..: the A operands of their P.V.
  uint32_t p_even[kBlockKeys / 16][4], p_odd[kBlockKeys / 16][4];
#endif
  RowSoftmax softmax;
  const bool active = mma_rows_active(valid_rows);
  cp_async_wait<0>();
  named_barrier_sync(kQReadyBarrier, kThreads);  // every consumer's Q rows landed
  const bool releases = lane == 0;  // one empty-slot arrival per consumer warp

#if KASCADE_PREFILL_WGMMA
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
    k_ring.wait_full(it);
    if constexpr (kWithPv) v_ring.wait_full(it - 1);
    take_turn();
    float s[kKeyBlocks8][4];
    if (active) {
      issue_scores<D, T, 1>(s, q_smem, k_smem + KRing::slot(it) * kTile);
      if constexpr (kOutput) {  // (kOutput first: the call does not compile for the LSE-only pass)
        if constexpr (!kFirst) issue_pv<D, T>(acc, p_in, v_smem + VRing::slot(it - 1) * kTile);
      }
    }
    pass_turn();

    mask.v0 = it * kBlockKeys;
    float correction[2] = {1.f, 1.f};
    if constexpr (kOutput) {
      if (active) {
        wgmma_wait<kWithPv ? 1 : 0>();
        wgmma_fence_operands(s);
      }
      k_ring.release_if(releases, it);
      if (active) {
        softmax_update<0, kKeyBlocks8, kMasked, true, T>(s, softmax, correction, mask, p.scale_log2, p_out);
        // Pins the softmax above the P.V wait: the compiler may otherwise sink this register-only
        // arithmetic past the wait and lose the overlap.
        pin_registers(softmax, correction);
      }
      if constexpr (kWithPv) {
        if (active) {
          wgmma_wait<0>();
          wgmma_fence_operands(acc);
        }
        v_ring.release_if(releases, it - 1);
        rescale_rows(acc, correction);
      }
    } else {
      // LSE only: S in one commit group; the other warpgroup's MMAs run during the exponentials.
      // (Split in two 64-key halves, the first half's exponentials overlapping the second half's
      // MMAs, the pass took 11.26 / 185.2 ms at 32k / 128k against 11.06 / 178.8, H100.)
      if (active) {
        wgmma_wait<0>();
        wgmma_fence_operands(s);
      }
      k_ring.release_if(releases, it);
      if (active)
        softmax_update<0, kKeyBlocks8, kMasked, false, T>(s, softmax, correction, mask,
                                                          p.scale_log2, p_out);
    }
  };
  const int unmasked_blocks = min(num_blocks, unmasked_end / kBlockKeys);
  auto step_with_parity = [&](int i, auto masked_tag) {
    if (i % 2 == 0) {
      step(i, masked_tag, std::false_type{}, p_odd, p_even);
    } else {
      step(i, masked_tag, std::false_type{}, p_even, p_odd);
    }
  };
  if (num_blocks > 0) step(0, std::true_type{}, std::true_type{}, p_odd, p_even);
  int it = 1;
  for (; it < unmasked_blocks; ++it) step_with_parity(it, std::false_type{});
  for (; it < num_blocks; ++it) step_with_parity(it, std::true_type{});
  if constexpr (kOutput) {
    // P.V of the last block.
    if (num_blocks > 0) {
      const int last = num_blocks - 1;
      v_ring.wait_full(last);
      if (active) {
        // The last step wrote the odd set when `last` is odd (two calls, not a selected
        // reference, so that both sets stay in registers).
        const T* v_last = v_smem + VRing::slot(last) * kTile;
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
#else
  // mma.sync (no setmaxnreg: all 384 threads share the register file, 168 registers each): the
  // MMAs are synchronous and the warp schedulers interleave the consumer warps by themselves, so
  // there is no ping-pong and no P.V left in flight. Each 128-key block is processed as two
  // 64-key halves (scores, softmax, P.V per half), so that only 32 score floats and one half's
  // P fragments are live next to the output accumulators. sm_80 ptxas: spill-free except 12 bytes for
  // D 128 with output (a whole block at once spilled 1504 bytes, 620 for D 64 and ~190 LSE-only);
  // the halves loop stays rolled, since unrolled its two halves' live ranges overlap (332 bytes).
  (void)warpgroup;
  auto step = [&](int it, auto masked_tag) {
    constexpr bool kMasked = decltype(masked_tag)::value;
    constexpr int kHalfKeys = kBlockKeys / 2;
    const int slot = KRing::slot(it);
    k_ring.wait_full(it);
    if constexpr (kOutput) v_ring.wait_full(it);
    if (active) {
#pragma unroll 1
      for (int half = 0; half < 2; ++half) {
        float s[kHalfKeys / 8][4];
        uint32_t p_half[kHalfKeys / 16][4];
        float correction[2];
        mma_sync_scores<D, T>(s, q_smem, k_smem + slot * kTile, half * kHalfKeys);
        mask.v0 = it * kBlockKeys + half * kHalfKeys;
        softmax_update<0, kHalfKeys / 8, kMasked, kOutput, T>(s, softmax, correction, mask, p.scale_log2, p_half);
        if constexpr (kOutput) {
          rescale_rows(acc, correction);
          mma_sync_pv<D, T>(acc, p_half, v_smem + slot * kTile, half * kHalfKeys);
        }
      }
    }
    k_ring.release_if(releases, it);
    if constexpr (kOutput) v_ring.release_if(releases, it);
  };
  const int unmasked_blocks = min(num_blocks, unmasked_end / kBlockKeys);
  int it = 0;
  for (; it < unmasked_blocks; ++it) step(it, std::false_type{});
  for (; it < num_blocks; ++it) step(it, std::true_type{});
#endif

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
    launch_with_smem<attend_kernel<D, T, true>, AttendSmem<D, T>::bytes(true), kAttendThreads>(p, grid, stream);
  } else {
    launch_with_smem<attend_kernel<D, T, false>, AttendSmem<D, T>::bytes(false), kAttendThreads>(p, grid, stream);
  }
}

}  // namespace kascade::cuda::prefill
