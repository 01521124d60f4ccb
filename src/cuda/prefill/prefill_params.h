// prefill_params.h — the POD parameter blocks of the prefill kernels and their host launchers.
//
// Host code (prefill_launch.cu) fills these and calls the launchers; the kernels themselves are
// compiled only in the instantiation units (instantiations/*.cu, prefill_topk.cu), one per
// (storage type, head dim), so that the host code does not rebuild them.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "../common/device_math.cuh"

namespace kascade::cuda::prefill {

// Two warpgroups per CTA, each owning one 64-row wgmma slab of the CTA's 128 query rows
// (warp w owns rows 16w .. 16w+15), 128 keys per main-loop step. Measured on the H100,
// Llama-3.1-8B shape, 32k dense causal (TFLOP/s; cuDNN SDPA 590 in the same runs):
//   4 warps x 16 rows, mma.sync, 64 rows per CTA ......................... 136
//   8 warps x 16 rows, K/V addresses fetched two blocks ahead ............ 187
//   4 warps x 2 m16 tiles (K/V fragments shared by both), mma.sync ...... 210
//   same tiles, Q.K^T and P.V on wgmma (sm_90a), 64-key blocks ........... 296
//   2 warpgroups x 64 rows, 128-key blocks, 3-stage ring, smem row table,
//   softmax of block j during the P.V of block j-1 ......................... 350 (356 at 128k;
//   cuDNN 596 / 567, bench/results/prefill_h100_d08cb0e.json)
//   + a producer warpgroup filling mbarrier rings (384 threads, setmaxnreg
//   56 / 224), the two consumer warpgroups taking turns on the tensor cores
//   (attend_kernel, prefill_attend.cuh) ................................. 540 (547 at 128k;
//   cuDNN 603 / 571, bench/results/prefill_h100_fd8fd13-lse-one-group.json)
// The attention kernel's own CTA constants (producer threads, register split, ring depth) are in
// prefill_attend_cta.cuh.
constexpr int kWarpgroups = 2;
constexpr int kWarps = 4 * kWarpgroups;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 16;                     // one m16 MMA tile per warp
constexpr int kBlockRows = kWarps * kRowsPerWarp;    // query rows per CTA
constexpr int kBlockKeys = 128;                      // keys per main-loop step
constexpr int kKeyBlocks8 = kBlockKeys / 8;          // 8-key accumulator blocks per step
constexpr int kKeysPerMassCta = 16384;               // keys one pooled-mass CTA reduces (128 blocks: its prologue, Q rows and ring start, is paid once per 128 blocks)
constexpr int kTopkThreads = 512;
constexpr int kChunkElems = 8;                       // 16-byte chunk = 8 x 16-bit elements

// ---- parameters --------------------------------------------------------------------------
struct KvView {
  const void* k;                 // [num_pages, P, Hkv, D] (strided)
  const void* v;                 // [num_pages, P, Hkv, D] (strided)
  const int32_t* page_indptr;    // [B + 1]
  const int32_t* page_indices;   // [page_indptr[B]]
  int64_t page_stride, token_stride, head_stride;  // elements
  FastDivmod page_size;
};

struct AttendParams {
  const void* q;              // [total_q, Hq, D]
  const int32_t* q_indptr;    // [B + 1]
  const int32_t* seq_lens;    // [B] p1 per sequence
  KvView kv;
  void* out;                  // [total_q, Hq, D]; unused when the kernel has no output
  float* lse_log2;            // [total_q, Hq] row LSE in log2 units of s2; may be null
  const int32_t* sel_indices; // [B, S, max_tiles, k_max]; null: dense (keys 0..t)
  const int32_t* sel_counts;  // [B, S, max_tiles]
  const int32_t* head_map;    // [Hkv] selection read by each kv head; null: identity
  int num_selections, max_tiles, k_max;
  int num_q_heads, group;
  int tile;                   // T: a sparse CTA's positions lie inside one tile
  int positions_per_cta;      // P: rows of a CTA = P * group <= kBlockRows
  int num_position_blocks;    // gridDim.x
  float scale_log2;           // softmax scale * log2(e)
};

struct MassParams {
  const void* q;              // [total_q, Hq, D]
  const int32_t* q_indptr;    // [B + 1]
  const int32_t* seq_lens;    // [B]
  KvView kv;
  const float* lse_log2;      // [total_q, Hq]
  float* mass;                // [B, chunk_tiles, S, mass_stride]
  int64_t mass_stride;        // >= max p1
  int tile0;                  // first tile of this chunk
  int chunk_tiles;
  int num_selections;         // Hkv (group pooling) or 1 (all heads)
  int num_q_heads, num_kv_heads, group;
  int tile;
  float scale_log2;
};

struct TopkParams {
  const int32_t* q_indptr;    // [B + 1]
  const int32_t* seq_lens;    // [B]
  const float* mass;          // [B, chunk_tiles, S, mass_stride]
  int64_t mass_stride;
  int32_t* sel_indices;       // [B, S, max_tiles, k_max]
  int32_t* sel_counts;        // [B, S, max_tiles]
  int tile0, chunk_tiles, num_selections, max_tiles, k_max;
  int tile;
  bool rolling;
  double rho;
  int k_min, k_multiple;
};

// Sequence geometry of batch entry b.
struct SeqGeometry {
  int64_t q_begin;  // first row of the sequence in q / out
  int nq;           // queries
  int p1;           // keys 0..p1-1
  int p0;           // first query position
};
__device__ __forceinline__ SeqGeometry seq_geometry(const int32_t* q_indptr, const int32_t* seq_lens, int b) {
  SeqGeometry g;
  g.q_begin = q_indptr[b];
  g.nq = q_indptr[b + 1] - q_indptr[b];
  g.p1 = seq_lens[b];
  g.p0 = g.p1 - g.nq;
  return g;
}

// Launchers (grid computed by the caller; dynamic shared memory limits raised on first use).
template <int D, typename T>
struct PrefillKernels {
  // with_output = false: the LSE-only pass (p.out unused, p.lse_log2 required).
  static void attend(const AttendParams& p, bool with_output, dim3 grid, cudaStream_t stream);
  static void pooled_mass(const MassParams& p, dim3 grid, cudaStream_t stream);
};
void launch_topk(const TopkParams& p, dim3 grid, cudaStream_t stream);

}  // namespace kascade::cuda::prefill
