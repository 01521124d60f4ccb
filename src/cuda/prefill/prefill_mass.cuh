// prefill_mass.cuh — pooled_mass_kernel: the anchor's post-softmax mass of every key before a tile,
// pooled over the tile's T x G rows (or T x Hq with all-heads pooling), and its launcher.
// Building blocks are in prefill_common.cuh.
#pragma once

#include "prefill_common.cuh"

namespace kascade::cuda::prefill {

// ---- pooled mass ------------------------------------------------------------------------------
template <int D, typename T>
struct MassSmem {
  static constexpr size_t bytes() {
    return kSmemAlign + sizeof(T) * (size_t(kBlockRows) * D + kStages * size_t(kBlockKeys) * D) +
           sizeof(float) * (2 * kWarps * kBlockKeys + kKeysPerMassCta) + KeyRowTable<D>::kBytes;
  }
  static_assert(bytes() <= kMaxSmemPerCta, "pooled-mass tiles exceed the shared memory of a CTA");
};
static_assert(kKeysPerMassCta % kBlockKeys == 0, "a pooled-mass CTA reduces whole key blocks");

// Adds exp2(s * scale - lse) of key blocks [kFirst, kFirst + kCount), summed over the warp's 16
// rows, to the warp's per-key partial sums (lanes 0..3 write them).
template <int kFirst, int kCount>
__device__ __forceinline__ void column_mass(const float (&s)[kKeyBlocks8][4], const float (&row_lse)[2],
                                            float scale_log2, float* warp_partial) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = kFirst; j < kFirst + kCount; ++j) {
    float c0 = exp2_ftz(fmaf(s[j][0], scale_log2, -row_lse[0])) + exp2_ftz(fmaf(s[j][2], scale_log2, -row_lse[1]));
    float c1 = exp2_ftz(fmaf(s[j][1], scale_log2, -row_lse[0])) + exp2_ftz(fmaf(s[j][3], scale_log2, -row_lse[1]));
#pragma unroll
    for (int off = 4; off < 32; off *= 2) {
      c0 += __shfl_xor_sync(0xffffffffu, c0, off);
      c1 += __shfl_xor_sync(0xffffffffu, c1, off);
    }
    if (lane < 4) {
      warp_partial[j * 8 + 2 * lane] = c0;
      warp_partial[j * 8 + 2 * lane + 1] = c1;
    }
  }
}

// One CTA: keys [x * kKeysPerMassCta, ...) of tile tile0 + y of selection s of sequence b.
// Grid: x = key chunk, y = tile in the chunk, z = b * S + s. Every row chunk of the tile is
// reduced in a fixed order, so the result is deterministic. The warps' per-key partial sums of
// block it are double-buffered and added up after the barrier of block it + 1 (one barrier per block).
template <int D, typename T>
__global__ void __launch_bounds__(kThreads, 1) pooled_mass_kernel(const __grid_constant__ MassParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* q_smem = reinterpret_cast<T*>(align_smem(smem_raw));
  T* k_smem = q_smem + kBlockRows * D;                                           // [kStages][kBlockKeys][D]
  float* partial = reinterpret_cast<float*>(k_smem + kStages * kBlockKeys * D);  // [2][kWarps][kBlockKeys]
  float* key_mass = partial + 2 * kWarps * kBlockKeys;                     // [kKeysPerMassCta]
  int32_t* row_table = reinterpret_cast<int32_t*>(key_mass + kKeysPerMassCta);  // [kStages][kBlockKeys]
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
  const int num_key_blocks = (key_hi - key_lo + kBlockKeys - 1) / kBlockKeys;

  for (int i = threadIdx.x; i < kKeysPerMassCta; i += kThreads) key_mass[i] = 0.f;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* q = static_cast<const T*>(p.q);
  const T* kpool = static_cast<const T*>(p.kv.k);
  const int head_lo = p.num_selections == 1 ? 0 : sel;
  const int head_hi = p.num_selections == 1 ? p.num_kv_heads : sel + 1;
  const int rows_per_head = tile_len * p.group;
  const KeySource keys = {nullptr, 0, key_lo, key_hi};
  const int32_t* seq_pages = p.kv.page_indices + p.kv.page_indptr[b];
  // Thread t < kBlockKeys adds the warps' partial sums of key t of a block to key_mass.
  auto add_partials = [&](int block_index) {
    if (threadIdx.x < kBlockKeys) {
      const float* part = partial + (block_index & 1) * kWarps * kBlockKeys;
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total += part[w * kBlockKeys + threadIdx.x];
      key_mass[block_index * kBlockKeys + threadIdx.x] += total;
    }
  };

  for (int kv_head = head_lo; kv_head < head_hi; ++kv_head) {
    for (int row0 = 0; row0 < rows_per_head; row0 += kBlockRows) {
      // Tile row tr is (position tr / G, head tr % G). A chunk starts at a multiple of
      // kBlockRows, which need not be a multiple of G, so rows are addressed one by one.
      const int chunk_rows = min(kBlockRows, rows_per_head - row0);
      {
        constexpr int kChunks = D / kChunkElems;
        const int chunk = threadIdx.x % kChunks;
        for (int r = threadIdx.x / kChunks; r < kBlockRows; r += kThreads / kChunks) {
          const bool valid = r < chunk_rows;
          const T* src = q;
          if (valid) {
            const int tr = row0 + r;
            const int64_t qrow = g.q_begin + (tile_b - g.p0) + tr / p.group;
            src = q + (qrow * p.num_q_heads + kv_head * p.group + tr % p.group) * D + chunk * kChunkElems;
          }
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

      // LSE of this thread's rows; rows past the tile get +inf so that their mass is 0.
      float row_lse[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int r = warp_first_row() + lane / 4 + 8 * i;
        row_lse[i] = INFINITY;
        if (r < chunk_rows) {
          const int tr = row0 + r;
          const int64_t qrow = g.q_begin + (tile_b - g.p0) + tr / p.group;
          row_lse[i] = p.lse_log2[qrow * p.num_q_heads + kv_head * p.group + tr % p.group];
        }
      }

      const bool active = mma_rows_active(chunk_rows);
      for (int it = 0; it < num_key_blocks; ++it) {
        cp_async_wait<1>();  // K[it] landed (see attend_kernel)
        __syncthreads();
        // MMAs first; the copies, the table upkeep and the partial sums of the previous block
        // run while they execute. The exponentials of the first 64 keys overlap the MMAs of the
        // second 64.
        float s[kKeyBlocks8][4];
        if (active) issue_scores<D, T, 2>(s, q_smem, k_smem + (it % kStages) * kTile);
        KeyRowTable<D>::copy_rows(k_smem + ((it + 2) % kStages) * kTile, kbase,
                                  row_table + ((it + 2) % kStages) * kBlockKeys, p.kv, it + 2 < num_key_blocks);
        cp_async_commit();
        rows.advance(row_table, it, keys, p.kv, seq_pages);
        if (it > 0) add_partials(it - 1);

        float* warp_partial = partial + (it & 1) * kWarps * kBlockKeys + warp * kBlockKeys;
        if (active) {
          wgmma_wait<1>();
          wgmma_fence_operands<0, kKeyBlocks8 / 2>(s);
          column_mass<0, kKeyBlocks8 / 2>(s, row_lse, p.scale_log2, warp_partial);
          wgmma_wait<0>();
          wgmma_fence_operands(s);
          column_mass<kKeyBlocks8 / 2, kKeyBlocks8 / 2>(s, row_lse, p.scale_log2, warp_partial);
        } else {
          // Padding rows only: no mass (written so that the sum stays plain).
          for (int k = lane; k < kBlockKeys; k += 32) warp_partial[k] = 0.f;
        }
      }
      cp_async_wait<0>();
      __syncthreads();  // the last block's partial sums are complete; q_smem / k_smem are free
      add_partials(num_key_blocks - 1);
    }
  }
  __syncthreads();
  float* out = p.mass + ((int64_t(b) * p.chunk_tiles + blockIdx.y) * p.num_selections + sel) * p.mass_stride;
  for (int i = threadIdx.x; i < key_hi - key_lo; i += kThreads) out[key_lo + i] = key_mass[i];
}

template <int D, typename T>
void PrefillKernels<D, T>::pooled_mass(const MassParams& p, dim3 grid, cudaStream_t stream) {
  launch_with_smem<pooled_mass_kernel<D, T>, MassSmem<D, T>::bytes()>(p, grid, stream);
}

}  // namespace kascade::cuda::prefill
