// prefill_attend.cuh — attend_kernel: flash attention of one CTA of query rows over a KeySource
// (dense causal, the anchor's LSE-only pass, and the sparse pass over a selection plus the
// diagonal), composed from named parts, and its launcher:
//   prefill_attend_cta.cuh       the CTA: warp roles, named barriers, K/V rings, smem, AttendLoop
//   produce_key_blocks (here)    the producer warpgroup: key rows resolved, copied into the rings
//                                by KeyBlockCopy (prefill_producer.cuh)
//   prefill_mainloop_sm90.cuh    the consumers' main loop on wgmma (sm_90a), ping-pong
//   prefill_mainloop_sm80.cuh    the consumers' main loop on mma.sync (other targets)
//   prefill_softmax.cuh          the online softmax both main loops run
//   prefill_epilogue.cuh         row sums, output and LSE stores
// The kernel itself picks the CTA's work (its position block and KeySource). Building blocks are
// in prefill_common.cuh; the schedule of the main loop is described there.
#pragma once

#include "../common/async_barrier.cuh"
#include "prefill_attend_cta.cuh"
#include "prefill_common.cuh"
#include "prefill_epilogue.cuh"
#include "prefill_mainloop_sm80.cuh"
#include "prefill_mainloop_sm90.cuh"
#include "prefill_producer.cuh"
#include "prefill_softmax.cuh"

namespace kascade::cuda::prefill {

// ---- producer ----------------------------------------------------------------------------
// The producer warpgroup: thread t resolves key row t of every block to its element offset in
// the paged cache, one block ahead (a selected key needs two dependent loads, its position and
// then its page id, which land while the block before is copied), and each warp copies its 32
// rows of K (and V) into the rings (KeyBlockCopy, prefill_producer.cuh).
template <int D, typename T, bool kOutput>
__device__ __forceinline__ void produce_key_blocks(const AttendParams& p, const KeySource& keys, int num_blocks,
                                                   int kv_head, const int32_t* seq_pages, T* k_smem, T* v_smem,
                                                   const KRing& k_ring, const VRing& v_ring) {
  constexpr int kTile = AttendSmem<D, T>::kTileElems;
  const int resolver = static_cast<int>(threadIdx.x) - kThreads;  // the block row this thread resolves
  const int64_t column = int64_t(kv_head) * p.kv.head_stride + KeyBlockCopy<D, T>::column_offset(resolver);
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
  const KeyBlockCopy<D, T> copy_rows(resolver);

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
  RowSoftmax softmax;
  const bool active = mma_rows_active(valid_rows);
  cp_async_wait<0>();
  named_barrier_sync(kQReadyBarrier, kThreads);  // every consumer's Q rows landed
  const bool releases = lane == 0;  // one empty-slot arrival per consumer warp

  const AttendLoop<T> loop{q_smem,     k_smem,       v_smem,    k_ring, v_ring,
                           num_blocks, unmasked_end, warpgroup, active, releases};
#if KASCADE_PREFILL_WGMMA
  attend_mainloop_sm90<D, T, kOutput>(p, loop, mask, acc, softmax);
#else
  attend_mainloop_sm80<D, T, kOutput>(p, loop, mask, acc, softmax);
#endif
  attend_epilogue<D, T, kOutput>(p, g, first_local, kv_head, valid_rows, softmax, acc);
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
