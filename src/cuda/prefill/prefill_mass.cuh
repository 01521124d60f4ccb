// prefill_mass.cuh — pooled_mass_kernel: the anchor's post-softmax mass of every key before a tile,
// pooled over the tile's T x G rows (or T x Hq with all-heads pooling), and its launcher.
// Building blocks are in prefill_common.cuh.
//
// The kernel computes the transposed scores S^T = K . Q^T: a 64-key slab of the K block is the
// MMA's M side (one slab per warpgroup, one 16-key strip per warp under mma.sync) and the 128
// query rows of the tile are its N side. The sum over query rows that pools the mass then runs
// inside each thread (its 2 keys x 32 query columns, plain adds), and only the four lanes that
// share a key exchange their partial sums (2 shuffles). With Q as the M side instead, every
// 8-key block needed 3 rounds of shuffles over the 8 row groups of a warp and a cross-warp sum
// through shared memory, which cost as much as the exponentials.
#pragma once

#include <type_traits>

#include "prefill_common.cuh"

namespace kascade::cuda::prefill {

// ---- pooled mass ------------------------------------------------------------------------------
template <int D, typename T>
struct MassSmem {
  static constexpr size_t bytes() {
    return kSmemAlign + sizeof(T) * (size_t(kBlockRows) * D + kStages * size_t(kBlockKeys) * D) +
           KeyRowTable<D>::kBytes;
  }
  static_assert(bytes() <= kMaxSmemPerCta, "pooled-mass tiles exceed the shared memory of a CTA");
};
static_assert(kKeysPerMassCta % kBlockKeys == 0, "a pooled-mass CTA reduces whole key blocks");
// The K block and the query rows swap MMA sides: both are [128][D] swizzled tiles, so issue_scores
// reads either as the A (64-row slab) or the B (N = 128) operand.
static_assert(kBlockRows == kBlockKeys, "the K block and the query rows must be tiles of the same shape");

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
__global__ void __launch_bounds__(kThreads, 1) pooled_mass_kernel(const __grid_constant__ MassParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* q_smem = reinterpret_cast<T*>(align_smem(smem_raw));
  T* k_smem = q_smem + kBlockRows * D;                                                  // [kStages][kBlockKeys][D]
  int32_t* row_table = reinterpret_cast<int32_t*>(k_smem + kStages * kBlockKeys * D);  // [kStages][kBlockKeys]
  constexpr int kTile = kBlockKeys * D;

  const int b = blockIdx.z / p.num_selections, sel = blockIdx.z % p.num_selections;
  const int tau = p.tile0 + blockIdx.y;
  const SeqGeometry g = seq_geometry(p.q_indptr, p.seq_lens, b);
  if (tau >= num_tiles(g.p0, g.p1, p.tile)) return;
  const int tile_b = static_cast<int>(tile_begin(g.p0, tau, p.tile));
  const int tile_len = static_cast<int>(tile_end(g.p0, g.p1, tau, p.tile)) - tile_b;
  const int key_lo = blockIdx.x * kKeysPerMassCta;
  if (key_lo >= tile_b) return;
  const int key_hi = min(tile_b, key_lo + kKeysPerMassCta);
  const int key_count = key_hi - key_lo;
  const int num_key_blocks = (key_count + kBlockKeys - 1) / kBlockKeys;
  float* out = p.mass + ((int64_t(b) * p.chunk_tiles + blockIdx.y) * p.num_selections + sel) * p.mass_stride + key_lo;

  const int lane = threadIdx.x % 32;
  // This thread's keys in a block: accumulator rows warp_first_row() + lane / 4 (+ 8); after the
  // quad exchange lane 4i holds the first one's total and lane 4i + 1 the second's.
  const int owned_key = warp_first_row() + lane / 4 + ((lane & 1) ? 8 : 0);
  const bool writes_key = (lane & 3) < 2;
  const T* q = static_cast<const T*>(p.q);
  const T* kpool = static_cast<const T*>(p.kv.k);
  const int head_lo = p.num_selections == 1 ? 0 : sel;
  const int head_hi = p.num_selections == 1 ? p.num_kv_heads : sel + 1;
  const int rows_per_head = tile_len * p.group;
  const KeySource keys = {nullptr, 0, key_lo, key_hi};
  const int32_t* seq_pages = p.kv.page_indices + p.kv.page_indptr[b];
  // Row tr of the tile is (position tr / G, head tr % G) of kv head `kv_head`.
  auto q_row_index = [&](int kv_head, int tr) {
    const int64_t position_row = g.q_begin + (tile_b - g.p0) + tr / p.group;
    return position_row * p.num_q_heads + kv_head * p.group + tr % p.group;
  };

  bool first_pass = true;
  for (int kv_head = head_lo; kv_head < head_hi; ++kv_head) {
    for (int row0 = 0; row0 < rows_per_head; row0 += kBlockRows) {
      // A chunk starts at a multiple of kBlockRows, which need not be a multiple of G, so rows are
      // addressed one by one.
      const int chunk_rows = min(kBlockRows, rows_per_head - row0);
      {
        constexpr int kChunks = D / kChunkElems;
        const int chunk = threadIdx.x % kChunks;
        for (int r = threadIdx.x / kChunks; r < kBlockRows; r += kThreads / kChunks) {
          const bool valid = r < chunk_rows;
          const T* src = valid ? q + q_row_index(kv_head, row0 + r) * D + chunk * kChunkElems : q;
          cp_async16(q_smem + SwizzledTile<D, kBlockRows>::offset(r, chunk), src, valid);
        }
      }
      KeyRowTable<D> rows;
      rows.start(row_table, keys, p.kv, seq_pages);
      __syncthreads();
      const T* kbase = KeyRowTable<D>::column_base(kpool, p.kv, kv_head);
      KeyRowTable<D>::copy_rows(k_smem, kbase, row_table, p.kv);  // copy group 0: Q and K[0]
      cp_async_commit();
      KeyRowTable<D>::copy_rows(k_smem + kTile, kbase, row_table + kBlockKeys, p.kv, 1 < num_key_blocks);
      cp_async_commit();  // group 1: K[1]

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

      // Software pipeline over the key blocks: the scores of block it + 1 are multiplied while
      // the exponentials of block it run, in two accumulator sets (st[0] for even blocks, st[1]
      // for odd ones; the indices must be compile-time constants to stay in registers).
      float st[2][kKeyBlocks8][4];
      cp_async_wait<1>();  // Q and K[0] landed (K[1] in flight)
      __syncthreads();
      if (mma_rows_active(key_count)) issue_scores<D, T, 1>(st[0], k_smem, q_smem);

      // Block it: with kIssueNext, waits for K[it + 1], issues its scores and the copy of
      // K[it + 2] (into the slot of block it - 1, whose scores every warp has waited for before
      // this barrier); then the pooled mass of block it from st[kCurrent].
      auto step = [&](auto current, auto issue_next, int it) {
        constexpr int kCurrent = decltype(current)::value;
        if constexpr (decltype(issue_next)::value) {
          cp_async_wait<0>();
          __syncthreads();
          if (mma_rows_active(key_count - (it + 1) * kBlockKeys))
            issue_scores<D, T, 1>(st[1 - kCurrent], k_smem + ((it + 1) % kStages) * kTile, q_smem);
          KeyRowTable<D>::copy_rows(k_smem + ((it + 2) % kStages) * kTile, kbase,
                                    row_table + ((it + 2) % kStages) * kBlockKeys, p.kv, it + 2 < num_key_blocks);
          cp_async_commit();
          rows.advance(row_table, it, keys, p.kv, seq_pages);
          wgmma_wait<1>();
        } else {
          wgmma_wait<0>();
        }
        if (mma_rows_active(key_count - it * kBlockKeys)) {
          wgmma_fence_operands(st[kCurrent]);
          float mass[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
          add_key_mass<0, kKeyBlocks8>(st[kCurrent], column_lse, p.scale_log2, mass);
          // The four lanes of a quad hold the same two keys over different columns.
          float key0 = mass[0][0] + mass[0][1], key1 = mass[1][0] + mass[1][1];
#pragma unroll
          for (int off = 1; off < 4; off *= 2) {
            key0 += __shfl_xor_sync(0xffffffffu, key0, off);
            key1 += __shfl_xor_sync(0xffffffffu, key1, off);
          }
          const float total = (lane & 1) ? key1 : key0;
          const int key = it * kBlockKeys + owned_key;
          if (writes_key && key < key_count) out[key] = first_pass ? total : out[key] + total;
        }
      };
      using Even = std::integral_constant<int, 0>;
      using Odd = std::integral_constant<int, 1>;
      using Next = std::true_type;
      using Last = std::false_type;
      int it = 0;
      for (; it + 2 < num_key_blocks; it += 2) {
        step(Even{}, Next{}, it);
        step(Odd{}, Next{}, it + 1);
      }
      if (num_key_blocks - it == 2) {
        step(Even{}, Next{}, it);
        step(Odd{}, Last{}, it + 1);
      } else {
        step(Even{}, Last{}, it);
      }
      cp_async_wait<0>();
      __syncthreads();  // q_smem / k_smem are free for the next row chunk
      first_pass = false;
    }
  }
}

template <int D, typename T>
void PrefillKernels<D, T>::pooled_mass(const MassParams& p, dim3 grid, cudaStream_t stream) {
  launch_with_smem<pooled_mass_kernel<D, T>, MassSmem<D, T>::bytes()>(p, grid, stream);
}

}  // namespace kascade::cuda::prefill
