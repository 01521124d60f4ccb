// prefill_mass.cuh — pooled_mass_kernel: the anchor's post-softmax mass of every key before a tile,
// pooled over the tile's T x G rows (or T x Hq with all-heads pooling), and its launcher.
// Building blocks are in prefill_common.cuh and ../common/async_barrier.cuh.
//
// Scores are computed transposed, S^T = K . Q^T: a 64-key slab of the K block is the MMA's M side
// (one slab per consumer warpgroup, one 16-key strip per warp under mma.sync) and the 128 query
// rows of the tile are its N side. The sum over query rows that pools the mass then runs inside
// each thread (its 2 keys x 32 query columns, plain adds), and only the four lanes that share a
// key exchange their partial sums (2 shuffles). With Q as the M side, every 8-key block needed 3
// rounds of shuffles over the 8 row groups of a warp and a cross-warp sum through shared memory.
//
// CTA: two consumer warpgroups (threads 0 .. kThreads-1) and one producer warpgroup. The producer
// copies the K blocks into a ring of kMassStages smem slots guarded by mbarriers (full: the copies
// landed; empty: every consumer warp's MMA has read the slot), so the consumers' instruction
// stream is only MMAs, exponentials and adds, with no CTA-wide barrier per block. The consumer
// warpgroups take turns issuing their MMAs (two named "turn" barriers), so that one warpgroup's
// exponentials run while the other's MMAs occupy the tensor cores; under wgmma each warpgroup
// also keeps its own next block's MMA in flight while it reduces the current block (two score
// sets, wgmma_wait<1>), so that its exponentials never wait for the MMA issued just before them.
//
// Measured on the H100, Llama-3.1-8B shape, rho 0.1 (mass phase of kascade-bench prefill, ms):
//                                                                          32k      128k
//   Q as M, per-warp shuffles + smem partials, CTA barrier per block ...... 18.9
//   S^T (quad exchange only), same schedule ............................... 18.7     296
//     (the same without any exponential: 15.7, so the schedule, not the MUFU, was the limit)
//   + scores of block j+1 issued before the exponentials of block j ....... 17.8
//   producer warpgroup + mbarrier ring, consumers taking turns ............ 12.8     208
//     (the same with 1 in 4, or 1 in 8, exponentials as a cubic on the FMA
//     pipe, FlashAttention-4's trick: 13.5, 13.3)
//   + 8192 keys per CTA instead of 2048 (kKeysPerMassCta) ................. 10.7     177
//   on the H200 (each step against the one before in the same run):
//   + registers split 64 / 216 instead of 56 / 224, so that the producer no
//     longer spills 12 bytes ........................................ 10.94 -> 10.72  174.2 -> 169.8
//   + 16384 keys per CTA instead of 8192 ............................. 10.57 -> 10.25  167.8 -> 163.2
//   + block j+1's MMA in flight during block j's exponentials, two
//     score sets per consumer warpgroup (this) ........................ 10.15 -> 9.47   163.1 -> 154.6
//     (the same without the turn barriers: 9.73, 156.5)
#pragma once

#include <type_traits>

#include "../common/async_barrier.cuh"
#include "prefill_common.cuh"
#include "prefill_producer.cuh"

namespace kascade::cuda::prefill {

// ---- pooled mass ------------------------------------------------------------------------------
// Registers per thread once the roles split (SplitCta, prefill_common.cuh). At 56 the producer
// spilled 12 bytes; at 216 the consumers still do not spill.
using MassCta = SplitCta</*producer*/ 64, /*consumers*/ 216>;
constexpr int kMassProducerThreads = MassCta::kProducerThreads;
constexpr int kMassThreads = MassCta::kCtaThreads;
constexpr int kMassStages = 4;
static_assert(kKeysPerMassCta % kBlockKeys == 0, "a pooled-mass CTA reduces whole key blocks");
// The K block and the query rows swap MMA sides: both are [128][D] swizzled tiles, so issue_scores
// reads either as the A (64-row slab) or the B (N = 128) operand.
static_assert(kBlockRows == kBlockKeys, "the K block and the query rows must be tiles of the same shape");
// Named barriers (0 is __syncthreads): the consumers' Q rows landed / every consumer is done with
// them; the turn of consumer warpgroup g to issue its MMAs is kMassTurnBarrier + g.
constexpr int kMassQBarrier = 1;
constexpr int kMassTurnBarrier = 2;

// The K ring (MbarrierRing, ../common/async_barrier.cuh): full after the producer's
// kMassProducerThreads copying threads arrived, empty after every consumer warp did. Its uses n
// are the CTA's key blocks counted across its row chunks and kv heads.
using MassRing = MbarrierRing<kMassStages>;

template <int D, typename T>
struct MassSmem {
  static constexpr int kTileElems = kBlockKeys * D;
  static constexpr size_t bytes() {
    return kSmemAlign + sizeof(T) * (size_t(kBlockRows) * D + kMassStages * size_t(kTileElems)) +
           sizeof(uint64_t) * MassRing::kBarriers;
  }
  static_assert(bytes() <= kMaxSmemPerCta, "pooled-mass tiles exceed the shared memory of a CTA");
};

// The CTA's share of the work: keys [key_lo, key_hi) of one tile, for the kv heads
// [head_lo, head_hi) and their rows in chunks of kBlockRows.
struct MassWork {
  int key_lo, key_hi, num_key_blocks;
  int head_lo, head_hi;
  int rows_per_head;
};

// The producer warpgroup: thread t resolves key row t of every block to its element offset in the
// paged cache one block ahead (its page id loads while the block before is copied); warp w copies
// rows 32w .. 32w+31 of each block into the ring (KeyBlockCopy, prefill_producer.cuh). Rows past
// key_hi are zero-filled (their mass is never stored).
template <int D, typename T>
__device__ __forceinline__ void produce_mass_keys(const MassParams& p, const MassWork& w, const int32_t* seq_pages,
                                                  T* k_smem, const MassRing& ring) {
  constexpr int kTile = MassSmem<D, T>::kTileElems;
  const int resolver = static_cast<int>(threadIdx.x) - kThreads;
  // Element offset of the key at `position` (-1 past key_hi); the page id load is issued here and
  // used when the offset is read.
  auto page_of = [&](int position) {
    uint32_t page_in_seq = 0, slot = 0;
    p.kv.page_size.divmod(static_cast<uint32_t>(position), page_in_seq, slot);
    return load_if(position < w.key_hi, seq_pages + page_in_seq, 0);
  };
  auto row_offset = [&](int position, int page) {
    uint32_t page_in_seq = 0, slot = 0;
    p.kv.page_size.divmod(static_cast<uint32_t>(position), page_in_seq, slot);
    return position < w.key_hi ? int64_t(page) * p.kv.page_stride + int64_t(slot) * p.kv.token_stride : int64_t{-1};
  };
  const KeyBlockCopy<D, T> copy_rows(resolver);
  int n = 0;  // ring block counter
  for (int kv_head = w.head_lo; kv_head < w.head_hi; ++kv_head) {
    const T* column = static_cast<const T*>(p.kv.k) + int64_t(kv_head) * p.kv.head_stride +
                      KeyBlockCopy<D, T>::column_offset(resolver);
    for (int row0 = 0; row0 < w.rows_per_head; row0 += kBlockRows) {
      int position = w.key_lo + resolver;
      int64_t offset = row_offset(position, page_of(position));  // block 0: one stall per pass
      for (int block = 0; block < w.num_key_blocks; ++block, ++n) {
        const int next_position = position + kBlockKeys;
        const int next_page = page_of(next_position);
        ring.wait_empty(n);
        copy_rows(k_smem + MassRing::slot(n) * kTile, column, offset);
        ring.arrive_full_after_copies(n);
        position = next_position;
        offset = row_offset(position, next_page);
      }
    }
  }
  cp_async_wait<0>();  // no copy outlives its thread
}

// Adds exp2(s^T * scale - lse(column)) over the query columns of n-blocks [kFirst, kFirst + kCount)
// of this thread's two keys (accumulator rows lane / 4 and lane / 4 + 8) to mass[0] / mass[1].
// Two running sums per key keep the add chains short.
template <int kFirst, int kCount>
__device__ __forceinline__ void add_key_mass(const float (&st)[kKeyBlocks8][4], const float (&column_lse)[kKeyBlocks8][2],
                                             float scale_log2, float (&mass)[2][2]) {
#pragma unroll
  for (int j = kFirst; j < kFirst + kCount; ++j) {
    mass[0][0] += exp2_ftz(fmaf(st[j][0], scale_log2, -column_lse[j][0]));
    mass[0][1] += exp2_ftz(fmaf(st[j][1], scale_log2, -column_lse[j][1]));
    mass[1][0] += exp2_ftz(fmaf(st[j][2], scale_log2, -column_lse[j][0]));
    mass[1][1] += exp2_ftz(fmaf(st[j][3], scale_log2, -column_lse[j][1]));
  }
}

// One CTA: keys [x * kKeysPerMassCta, ...) of tile tile0 + y of selection s of sequence b.
// Grid: x = key chunk, y = tile in the chunk, z = b * S + s. A key's mass is summed by one thread
// (the owner of its accumulator row) over every row chunk of the tile in a fixed order, so the
// result is deterministic and needs no shared-memory reduction: the owner writes it to the
// output on the first row chunk and adds to it on the later ones (all-heads pooling, T x G > 128).
template <int D, typename T>
__global__ void __launch_bounds__(kMassThreads, 1) pooled_mass_kernel(const __grid_constant__ MassParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  constexpr int kTile = MassSmem<D, T>::kTileElems;
  T* q_smem = reinterpret_cast<T*>(align_smem(smem_raw));
  T* k_smem = q_smem + kBlockRows * D;  // [kMassStages][kBlockKeys][D]
  const MassRing ring{reinterpret_cast<uint64_t*>(k_smem + kMassStages * kTile)};

  const int b = blockIdx.z / p.num_selections, sel = blockIdx.z % p.num_selections;
  const int tau = p.tile0 + blockIdx.y;
  const SeqGeometry g = seq_geometry(p.q_indptr, p.seq_lens, b);
  if (tau >= num_tiles(g.p0, g.p1, p.tile)) return;
  const int tile_b = static_cast<int>(tile_begin(g.p0, tau, p.tile));
  const int tile_len = static_cast<int>(tile_end(g.p0, g.p1, tau, p.tile)) - tile_b;
  MassWork w;
  w.key_lo = blockIdx.x * kKeysPerMassCta;
  if (w.key_lo >= tile_b) return;
  w.key_hi = min(tile_b, w.key_lo + kKeysPerMassCta);
  w.num_key_blocks = (w.key_hi - w.key_lo + kBlockKeys - 1) / kBlockKeys;
  w.head_lo = p.num_selections == 1 ? 0 : sel;
  w.head_hi = p.num_selections == 1 ? p.num_kv_heads : sel + 1;
  w.rows_per_head = tile_len * p.group;
  const int32_t* seq_pages = p.kv.page_indices + p.kv.page_indptr[b];

  if (threadIdx.x == 0) init_rings(kMassProducerThreads, kWarps, ring);
  __syncthreads();  // the only CTA-wide barrier: the roles part here
  if (threadIdx.x >= kThreads) {  // the producer warpgroup
    MassCta::enter_producer();
    produce_mass_keys<D>(p, w, seq_pages, k_smem, ring);
    return;
  }
  MassCta::enter_consumer();

  const int key_count = w.key_hi - w.key_lo;
  float* out = p.mass + ((int64_t(b) * p.chunk_tiles + blockIdx.y) * p.num_selections + sel) * p.mass_stride + w.key_lo;
  const int lane = threadIdx.x % 32;
  const int warpgroup = static_cast<int>(threadIdx.x) / 128;
  // This thread's keys in a block: accumulator rows warp_first_row() + lane / 4 (+ 8); after the
  // quad exchange lane 4i holds the first one's total and lane 4i + 1 the second's.
  const int owned_key = warp_first_row() + lane / 4 + ((lane & 1) ? 8 : 0);
  const bool writes_key = (lane & 3) < 2;
  const bool releases = lane == 0;  // one empty-slot arrival per consumer warp
  const T* q = static_cast<const T*>(p.q);
  // Row tr of the tile is (position tr / G, head tr % G) of kv head `kv_head`.
  auto q_row_index = [&](int kv_head, int tr) {
    const int64_t position_row = g.q_begin + (tile_b - g.p0) + tr / p.group;
    return position_row * p.num_q_heads + kv_head * p.group + tr % p.group;
  };
  // The consumer warpgroups take turns issuing their MMAs: warpgroup 1 hands warpgroup 0 the
  // first turn, and warpgroup 0 takes one more turn after its last block, so that every arrival on
  // a turn barrier is matched.
  auto take_turn = [&] { named_barrier_sync(kMassTurnBarrier + warpgroup, kThreads); };
  auto pass_turn = [&] { named_barrier_arrive(kMassTurnBarrier + (warpgroup ^ 1), kThreads); };
  if (warpgroup == 1) pass_turn();

  int n = 0;  // ring block counter, as the producer's
  bool first_pass = true;
  for (int kv_head = w.head_lo; kv_head < w.head_hi; ++kv_head) {
    for (int row0 = 0; row0 < w.rows_per_head; row0 += kBlockRows) {
      // A chunk starts at a multiple of kBlockRows, which need not be a multiple of G, so rows are
      // addressed one by one.
      const int chunk_rows = min(kBlockRows, w.rows_per_head - row0);
      if (!first_pass) named_barrier_sync(kMassQBarrier, kThreads);  // every MMA of the last chunk is done
      {
        constexpr int kChunks = D / kChunkElems;
        const int chunk = threadIdx.x % kChunks;
        for (int r = threadIdx.x / kChunks; r < kBlockRows; r += kThreads / kChunks) {
          const bool valid = r < chunk_rows;
          const T* src = valid ? q + q_row_index(kv_head, row0 + r) * D + chunk * kChunkElems : q;
          cp_async16(q_smem + SwizzledTile<D, kBlockRows>::offset(r, chunk), src, valid);
        }
        cp_async_commit();
      }
      // LSE of this thread's query columns 8j + 2 (lane % 4) + i; padding rows get +inf so that
      // their mass is 0.
      float column_lse[kKeyBlocks8][2];
#pragma unroll
      for (int j = 0; j < kKeyBlocks8; ++j)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int r = 8 * j + 2 * (lane % 4) + i;
          column_lse[j][i] = r < chunk_rows ? p.lse_log2[q_row_index(kv_head, row0 + r)] : INFINITY;
        }
      cp_async_wait<0>();
      named_barrier_sync(kMassQBarrier, kThreads);  // every consumer's Q rows landed

      // Block `block` of the chunk is ring block n + block.
      auto issue_block = [&](float (&st)[kKeyBlocks8][4], int block) {
        const int ring_block = n + block;
        ring.wait_full(ring_block);
        take_turn();
        if (mma_rows_active(key_count - block * kBlockKeys))
          issue_scores<D, T, 1>(st, k_smem + MassRing::slot(ring_block) * kTile, q_smem);
        pass_turn();
      };
      // Called once the scores of `block` are in st: frees its ring slot and stores the mass of
      // this thread's keys.
      auto reduce_block = [&](float (&st)[kKeyBlocks8][4], int block) {
        ring.release_if(releases, n + block);
        if (!mma_rows_active(key_count - block * kBlockKeys)) return;
        float mass[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
        add_key_mass<0, kKeyBlocks8>(st, column_lse, p.scale_log2, mass);
        // The four lanes of a quad hold the same two keys over different columns.
        float key0 = mass[0][0] + mass[0][1], key1 = mass[1][0] + mass[1][1];
#pragma unroll
        for (int off = 1; off < 4; off *= 2) {
          key0 += __shfl_xor_sync(0xffffffffu, key0, off);
          key1 += __shfl_xor_sync(0xffffffffu, key1, off);
        }
        const float total = (lane & 1) ? key1 : key0;
        const int key = block * kBlockKeys + owned_key;
        if (writes_key && key < key_count) out[key] = first_pass ? total : out[key] + total;
      };
#if KASCADE_PREFILL_WGMMA
      // Two score sets: the MMAs of block j+1 are issued before the exponentials of block j, so
      // that this warpgroup's next scores are in flight while it reduces the current ones.
      // `step` issues `next` and reduces `current` once its group (the older of the two) is done.
      // Every path into and out of the loop has exactly st_even in flight: with a path that
      // differs (a loop test ahead of the first issue, an exit after either step), ptxas cannot
      // tell which group a wait covers and serialises every wgmma of the kernel.
      auto step = [&](float (&current)[kKeyBlocks8][4], float (&next)[kKeyBlocks8][4], int block) {
        issue_block(next, block + 1);
        wgmma_wait<1>();
        wgmma_fence_operands(current);
        reduce_block(current, block);
      };
      auto last_step = [&](float (&current)[kKeyBlocks8][4], int block) {
        wgmma_wait<0>();
        wgmma_fence_operands(current);
        reduce_block(current, block);
      };
      float st_even[kKeyBlocks8][4], st_odd[kKeyBlocks8][4];
      issue_block(st_even, 0);  // a CTA has at least one key block (key_lo < tile_b)
      int block = 0;
      for (; block + 2 < w.num_key_blocks; block += 2) {
        step(st_even, st_odd, block);
        step(st_odd, st_even, block + 1);
      }
      if (block + 1 < w.num_key_blocks) {
        step(st_even, st_odd, block);
        last_step(st_odd, block + 1);
      } else {
        last_step(st_even, block);
      }
#else
      // mma.sync computes the scores at once; a second score set would not fit the registers.
      for (int block = 0; block < w.num_key_blocks; ++block) {
        float st[kKeyBlocks8][4];
        issue_block(st, block);
        reduce_block(st, block);
      }
#endif
      n += w.num_key_blocks;
      first_pass = false;
    }
  }
  if (warpgroup == 0) take_turn();
}

template <int D, typename T>
void PrefillKernels<D, T>::pooled_mass(const MassParams& p, dim3 grid, cudaStream_t stream) {
  launch_with_smem<pooled_mass_kernel<D, T>, MassSmem<D, T>::bytes(), kMassThreads>(p, grid, stream);
}

}  // namespace kascade::cuda::prefill
