// prefill_common.cuh — building blocks of the prefill family (SPEC 5) on tensor cores: wgmma on
// sm_90a (Q.K^T with both operands in smem, P.V with P from registers), mma.sync m16n8k16 with
// ldmatrix fragments on other targets.
//
// Layering (bottom up):
//   - MMA helpers: mma.sync / wgmma (bf16 or fp16 in, fp32 accumulate; mma.sync and cp.async are
//     the ../common/mma_sm80.cuh primitives), smem descriptors, and the cp.async loader that
//     copies Q rows into 128-byte-swizzled smem tiles (SwizzledTile: a layout both ldmatrix and
//     wgmma read; the producers' copy of paged K/V rows is KeyBlockCopy, prefill_producer.cuh);
//   - KeySource: the keys one CTA attends to, as a virtual index range: first `list_count`
//     gathered positions (a tile's selection), then the contiguous range [range_begin, range_end)
//     under the causal mask (the diagonal; for dense attention the whole prefix);
//   - issue_scores / issue_pv: Q.K^T of one warpgroup's 64-row slab against a 128-key block
//     issued asynchronously (wgmma) in one or two commit groups, and P.V; the online-softmax
//     step (softmax_update) is in prefill_softmax.cuh;
//   - attend_kernel<D, T, kOutput> (prefill_attend.cuh): flash attention over a KeySource for one
//     CTA of 128 query rows (two consumer warpgroups, one 64-row slab each, threads 0..255, plus
//     a producer warpgroup, threads 256..383, that issues the K/V copies; prefill_attend_cta.cuh).
//     Its consumers run prefill_mainloop_sm90.cuh (wgmma) or, on other targets,
//     prefill_mainloop_sm80.cuh (each warp owns 16 rows and takes each key block in two 64-key
//     halves, mma_sync_scores / mma_sync_pv), then prefill_epilogue.cuh. Rows are
//     (position, head of the GQA group) pairs, so the K/V rows loaded once serve the whole group.
//     kOutput=false is the anchor's LSE-only pass (no P.V, no V loads);
//   - pooled_mass_kernel (prefill_mass.cuh): recomputes scores per key block with the same
//     issue_scores and reduces exp(s - lse) over a tile's T x G rows (or T x Hq with all-heads
//     pooling) into per-key mass, for keys < b;
//   (the per-tile top-k over the pooled mass is in prefill_topk.cu.)
//
// Main-loop schedule of attend_kernel on sm_90a (warp-specialised; the producer is in
// prefill_attend.cuh, the consumers' loop in prefill_mainloop_sm90.cuh):
//   producer warpgroup: thread t resolves key row t of block j+1 (selection entry -> page id ->
//     element offset) while it copies block j: per block, wait until the ring slot is empty
//     (mbarrier), cp.async the K rows (then the V rows), cp.async.mbarrier.arrive on the slot's
//     full barrier. kAttendStages-deep rings for K and V (3 slots of 128 keys each; MbarrierRing,
//     ../common/async_barrier.cuh);
//   consumer warpgroup g, block j:
//     wait K[j] (and V[j-1]) full
//     take the turn (named barrier): issue S = Q.K[j]^T and O += P[j-1].V[j-1] (wgmma, async),
//       hand the turn to the other warpgroup (ping-pong: its MMAs run during our softmax)
//     wait for S; release K[j]; mask; online softmax of block j, P[j] packed into the fragment
//       set the P.V in flight does not read (two sets, alternating)  <- while the tensor cores do P.V
//     wait for P.V; release V[j-1]; rescale O
// Nothing between a wgmma issue and its wait branches or writes the registers of a wgmma in
// flight; otherwise ptxas moves the wait up (or serialises the wgmma pipeline) and the overlap is
// lost. Hence: no branch around the wgmma issue (every warpgroup computes), predicated barrier
// arrivals, and steps with and without the causal mask compiled apart.
// The LSE-only pass (no P.V) issues S as one commit group: the other warpgroup's MMAs run during
// its exponentials.
// Scores live in the log2 domain: s2 = q.k * scale * log2(e); the LSE buffers hold log2 values.
// Not done yet in attend_kernel: TMA for contiguous rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "../common/async_barrier.cuh"
#include "../common/cuda_check.h"
#include "../common/device_math.cuh"
#include "../common/mma_sm80.cuh"
#include "prefill_params.h"
#include "kascade/budget.h"

// wgmma (sm_90a) computes Q.K^T and P.V; other targets use mma.sync (ldmatrix fragments) for both.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KASCADE_PREFILL_WGMMA 1
#else
#define KASCADE_PREFILL_WGMMA 0
#endif
namespace kascade::cuda::prefill {

// ---- tensor-core instructions ----------------------------------------------------------------
// mma.sync m16n8k16 and the fp32 -> bf16/fp16 packing are Mma16816<T> (../common/mma_sm80.cuh).
// The wgmma instructions are written once for both storage types: KASCADE_ASM_FOR_STORAGE_TYPE
// splices the PTX type name ("bf16" / "f16") into the instruction text.

// d += A.B on one m16n8k16 tile, A as the four registers of an ldmatrix_x4 fragment.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Mma16816<T>::run(d, a[0], a[1], a[2], a[3], b0, b1);
}

// Operands of the wgmma accumulators d[n-block][4] (the mma.sync C layout of 8 or 16 n-blocks):
// n-block j is operands %4j .. %4j+3. Asm text must be a string literal, so the operand
// references are spelled by the preprocessor ten at a time: "%<tens>0, ..., %<tens>9" (no tens
// digit for %0 .. %9).
#define KASCADE_WGMMA_ACC_BLOCK(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define KASCADE_WGMMA_ACC_8_BLOCKS(first)                                                          \
  KASCADE_WGMMA_ACC_BLOCK(first + 0), KASCADE_WGMMA_ACC_BLOCK(first + 1),                          \
  KASCADE_WGMMA_ACC_BLOCK(first + 2), KASCADE_WGMMA_ACC_BLOCK(first + 3),                          \
  KASCADE_WGMMA_ACC_BLOCK(first + 4), KASCADE_WGMMA_ACC_BLOCK(first + 5),                          \
  KASCADE_WGMMA_ACC_BLOCK(first + 6), KASCADE_WGMMA_ACC_BLOCK(first + 7)
#define KASCADE_WGMMA_REFS_TEN(tens)                                                               \
  "%" #tens "0, %" #tens "1, %" #tens "2, %" #tens "3, %" #tens "4, "                              \
  "%" #tens "5, %" #tens "6, %" #tens "7, %" #tens "8, %" #tens "9"
#define KASCADE_WGMMA_REFS_0_31                                                                    \
  KASCADE_WGMMA_REFS_TEN() ", " KASCADE_WGMMA_REFS_TEN(1) ", " KASCADE_WGMMA_REFS_TEN(2) ", %30, %31"
#define KASCADE_WGMMA_REFS_0_63                                                                    \
  KASCADE_WGMMA_REFS_TEN() ", " KASCADE_WGMMA_REFS_TEN(1) ", " KASCADE_WGMMA_REFS_TEN(2) ", "      \
  KASCADE_WGMMA_REFS_TEN(3) ", " KASCADE_WGMMA_REFS_TEN(4) ", " KASCADE_WGMMA_REFS_TEN(5) ", "     \
  "%60, %61, %62, %63"

// Q.K^T: m64nNk16 with A and B K-major smem descriptors, then scale_d; scale_d = 0 makes the
// instruction overwrite the accumulators. N = 64 (operands %32 .. %34) or 128 (%64 .. %66).
#define KASCADE_WGMMA_QK64_TEXT(TYPE)                                                              \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                     \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " "                                  \
  "{" KASCADE_WGMMA_REFS_0_31 "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
#define KASCADE_WGMMA_QK128_TEXT(TYPE)                                                             \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                     \
  "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " "                                 \
  "{" KASCADE_WGMMA_REFS_0_63 "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
// P.V: A (P) from four registers in the mma.sync A layout, B (V) MN-major (transposed) from a
// smem descriptor; accumulates. N = 64 (8 n-blocks) or 128 (16 n-blocks).
#define KASCADE_WGMMA_PV64_TEXT(TYPE)                                                              \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " "                                  \
  "{" KASCADE_WGMMA_REFS_0_31 "}, {%32, %33, %34, %35}, %36, 1, 1, 1, 1;\n"
#define KASCADE_WGMMA_PV128_TEXT(TYPE)                                                             \
  "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " "                                 \
  "{" KASCADE_WGMMA_REFS_0_63 "}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"

// wgmma m64nNk16 (N = 64 or 128 as the accumulator array says), A and B K-major from smem
// (descriptors), fp32 accumulators in the mma.sync C layout of N / 8 n-blocks; scale_d = 0
// overwrites the accumulators.
template <typename T>
__device__ __forceinline__ void wgmma_ss(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#if KASCADE_PREFILL_WGMMA
  KASCADE_ASM_FOR_STORAGE_TYPE(T, KASCADE_WGMMA_QK64_TEXT,
                               : KASCADE_WGMMA_ACC_8_BLOCKS(0)
                               : "l"(desc_a), "l"(desc_b), "r"(scale_d));
#else
  (void)d, (void)desc_a, (void)desc_b, (void)scale_d;
#endif
}
template <typename T>
__device__ __forceinline__ void wgmma_ss(float (&d)[16][4], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#if KASCADE_PREFILL_WGMMA
  KASCADE_ASM_FOR_STORAGE_TYPE(T, KASCADE_WGMMA_QK128_TEXT,
                               : KASCADE_WGMMA_ACC_8_BLOCKS(0), KASCADE_WGMMA_ACC_8_BLOCKS(8)
                               : "l"(desc_a), "l"(desc_b), "r"(scale_d));
#else
  (void)d, (void)desc_a, (void)desc_b, (void)scale_d;
#endif
}
// wgmma m64n64k16 with A (P) from registers in the mma.sync A layout and B (V) from smem,
// MN-major (transposed); accumulates into d (the mma.sync C layout of 8 n-blocks).
template <typename T>
__device__ __forceinline__ void wgmma_pv(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc_b) {
#if KASCADE_PREFILL_WGMMA
  KASCADE_ASM_FOR_STORAGE_TYPE(T, KASCADE_WGMMA_PV64_TEXT,
                               : KASCADE_WGMMA_ACC_8_BLOCKS(0)
                               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
#else
  (void)d, (void)a, (void)desc_b;
#endif
}
// The same with N = 128: d is the mma.sync C layout of 16 n-blocks.
template <typename T>
__device__ __forceinline__ void wgmma_pv(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc_b) {
#if KASCADE_PREFILL_WGMMA
  KASCADE_ASM_FOR_STORAGE_TYPE(T, KASCADE_WGMMA_PV128_TEXT,
                               : KASCADE_WGMMA_ACC_8_BLOCKS(0), KASCADE_WGMMA_ACC_8_BLOCKS(8)
                               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
#else
  (void)d, (void)a, (void)desc_b;
#endif
}
#undef KASCADE_WGMMA_ACC_BLOCK
#undef KASCADE_WGMMA_ACC_8_BLOCKS
#undef KASCADE_WGMMA_REFS_TEN
#undef KASCADE_WGMMA_REFS_0_31
#undef KASCADE_WGMMA_REFS_0_63
#undef KASCADE_WGMMA_QK64_TEXT
#undef KASCADE_WGMMA_QK128_TEXT
#undef KASCADE_WGMMA_PV64_TEXT
#undef KASCADE_WGMMA_PV128_TEXT

// ---- low-level helpers ---------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// cp.async (cp_async16 with zero fill, cp_async_commit, cp_async_wait) is in ../common/mma_sm80.cuh.

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// A smem tile of kRows x D 16-bit elements in the layout wgmma calls K-major with 128-byte
// swizzle: D is cut into 64-element (128-byte) column panels stored one after the other
// ([D / 64][kRows][64]); inside a panel, 16-byte chunk c of row r sits at chunk c ^ (r % 8).
// ldmatrix reading 8 rows at one logical chunk therefore touches 8 different bank groups, and
// the same bytes are a valid wgmma operand (8-row groups 1024 bytes apart, panel base 1024-aligned).
constexpr int kPanelElems = 64;
template <int D, int kRows>
struct SwizzledTile {
  static_assert(D % kPanelElems == 0, "head dim must be a multiple of the 64-element panel");
  static_assert(kRows % 8 == 0, "swizzle atoms are 8 rows");
  static constexpr int kPanelStride = kRows * kPanelElems;  // elements between column panels
  __device__ static __forceinline__ int offset(int row, int chunk) {
    return (chunk / 8) * kPanelStride + row * kPanelElems + (((chunk & 7) ^ (row & 7)) * kChunkElems);
  }
};

// *ptr through the read-only path when `pred`, else `fallback`, as one predicated load: the
// producers resolve the key rows of a block ahead without a branch per row.
__device__ __forceinline__ int load_if(bool pred, const int32_t* ptr, int fallback) {
  int value;
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\nmov.b32 %0, %3;\n@p ld.global.nc.b32 %0, [%1];\n}\n"
      : "=r"(value)
      : "l"(ptr), "r"(static_cast<int>(pred)), "r"(fallback));
  return value;
}

// The keys a CTA reads, in virtual order: list[0..list_count) then range_begin..range_end-1.
struct KeySource {
  const int32_t* list;
  int list_count;
  int range_begin, range_end;
  __device__ __forceinline__ int size() const { return list_count + (range_end - range_begin); }
  // Position of virtual key v, -1 when v >= size() (branch-free, see load_if).
  __device__ __forceinline__ int position(int v) const {
    const bool in_list = v < list_count;
    const int listed = load_if(in_list, list + (in_list ? v : 0), 0);
    return v >= size() ? -1 : in_list ? listed : range_begin + (v - list_count);
  }
};

// Issues cp.async for the CTA's query rows: row r = (position first_pos_local + r / group,
// head first_head + r % group); rows at or past valid_rows are zero-filled.
template <int D, typename T>
__device__ __forceinline__ void load_q_rows(T* dst, const T* q, int64_t first_row, int num_q_heads, int first_head,
                                            int group, int valid_rows) {
  constexpr int kChunks = D / kChunkElems;
  constexpr int kRowsPerPass = kThreads / kChunks;
  const int chunk = threadIdx.x % kChunks;
#pragma unroll
  for (int r = threadIdx.x / kChunks; r < kBlockRows; r += kRowsPerPass) {
    const bool valid = r < valid_rows;
    const T* src = q;
    if (valid) {
      const int64_t row = first_row + r / group;
      src = q + (row * num_q_heads + first_head + r % group) * D + chunk * kChunkElems;
    }
    cp_async16(dst + SwizzledTile<D, kBlockRows>::offset(r, chunk), src, valid);
  }
}

// Warp w owns query rows 16w .. 16w+15 of the CTA; warpgroup g (warps 4g .. 4g+3) owns the 64-row
// slab 64g .. 64g+63, which is what one wgmma of that warpgroup computes.
static_assert(kWarps == 4 * kWarpgroups && kBlockRows == kWarpgroups * 64, "one 64-row slab per warpgroup");
__device__ __forceinline__ int warp_first_row() { return static_cast<int>(threadIdx.x / 32) * kRowsPerWarp; }
__device__ __forceinline__ int slab_first_row() { return static_cast<int>(threadIdx.x / 128) * 64; }
// Whether this thread's MMA unit holds any of the first `valid_rows` rows; a unit of padding rows
// only skips the arithmetic (it still copies its share of K/V and meets every barrier). Under
// wgmma every warpgroup computes: a wgmma issued inside a branch makes ptxas serialise the whole
// wgmma pipeline (C7518), which costs more than the padding rows of a partial CTA. Under
// mma.sync the unit is the warp.
__device__ __forceinline__ bool mma_rows_active(int valid_rows) {
#if KASCADE_PREFILL_WGMMA
  (void)valid_rows;
  return true;
#else
  return warp_first_row() < valid_rows;
#endif
}

// Shared-memory matrix descriptor of a K-major, 128-byte-swizzled operand (SwizzledTile): start
// address, leading byte offset 16 (unused with this swizzle), 1024 bytes between 8-row groups.
__device__ __forceinline__ uint64_t sw128_descriptor(const void* p) {
  const uint64_t addr = smem_addr(p);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t{16 >> 4} << 16) | (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// Descriptor of an MN-major (transposed) 128-byte-swizzled operand: V [keys][D] as B of P.V,
// where keys are K and D is N. 64-element N panels are kPanelStrideBytes apart (leading byte
// offset), groups of 8 keys 1024 bytes apart (stride byte offset).
template <int kPanelStrideBytes>
__device__ __forceinline__ uint64_t sw128_mn_descriptor(const void* p) {
  static_assert(kPanelStrideBytes % 16 == 0 && (kPanelStrideBytes >> 4) < (1 << 14), "descriptor field");
  const uint64_t addr = smem_addr(p);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t{kPanelStrideBytes >> 4} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() {
#if KASCADE_PREFILL_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if KASCADE_PREFILL_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits until at most kPending of this warpgroup's wgmma commit groups are in flight.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#if KASCADE_PREFILL_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// Ties registers written by an asynchronous wgmma to the program point after its wait, so that
// the compiler cannot move their reads above it.
// Blocks [kFirst, kFirst + kCount) only (default: all): a fence on the accumulators of a group
// still in flight would make ptxas wait for it.
template <int kFirst = 0, int kCount = -1, int kBlocks>
__device__ __forceinline__ void wgmma_fence_operands(float (&x)[kBlocks][4]) {
#if KASCADE_PREFILL_WGMMA
  constexpr int kEnd = kCount < 0 ? kBlocks : kFirst + kCount;
#pragma unroll
  for (int j = kFirst; j < kEnd; ++j)
    asm volatile("" : "+f"(x[j][0]), "+f"(x[j][1]), "+f"(x[j][2]), "+f"(x[j][3])::"memory");
#else
  (void)x;
#endif
}
// No proxy fence between the cp.async copies and the wgmma reads of the same smem: completion
// (cp.async.wait_group) plus the CTA barrier publishes them, as in CUTLASS's sm90 cp.async GMMA
// mainloops. A fence.proxy.async here compiles to MEMBAR.ALL.CTA, which also waits for the
// copies still in flight for later blocks and so reduced the smem ring to one stage.

// ---- scores of one slab against one key block ---------------------------------------------------
// s[j][*]: this thread's two rows (warp_first_row() + lane / 4, + 8) against keys 8j .. 8j+7 of the
// block, in the mma.sync C layout (the wgmma accumulator layout is the same).

// mma.sync (targets without wgmma): S = Q . K^T for the warp's 16 rows against keys first_key ..
// first_key + 8 kBlocks - 1 of the K tile, s[j] holding keys first_key + 8j ..; a key range
// shorter than the block lets a caller keep fewer scores live at once.
template <int D, typename T, int kBlocks>
__device__ __forceinline__ void mma_sync_scores(float (&s)[kBlocks][4], const T* q_smem, const T* k_tile,
                                                int first_key) {
  static_assert(kBlocks % 2 == 0 && kBlocks <= kKeyBlocks8, "whole 16-key steps inside the block");
  // The warp's Q fragment per k-step; each K fragment serves both 8-key blocks of 16 keys.
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kBlocks; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, q_smem + SwizzledTile<D, kBlockRows>::offset(warp_first_row() + lane % 16, kk * 2 + lane / 16));
#pragma unroll
    for (int jj = 0; jj < kBlocks / 2; ++jj) {
      // Two 8-key blocks (16 keys) x 16 dims: matrices (keys +0, d +0), (keys +0, d +8),
      // (keys +8, d +0), (keys +8, d +8).
      const int key = first_key + jj * 16 + (lane / 16) * 8 + (lane % 8);
      const int chunk = kk * 2 + (lane / 8) % 2;
      uint32_t b[4];
      ldmatrix_x4(b, k_tile + SwizzledTile<D, kBlockKeys>::offset(key, chunk));
      mma_16816<T>(s[2 * jj], a, b[0], b[1]);
      mma_16816<T>(s[2 * jj + 1], a, b[2], b[3]);
    }
  }
}

// mma.sync: O += P . V over keys first_key .. first_key + 16 kSteps - 1 of the V tile, P as the
// register A fragments of those keys (pa[kk]: keys first_key + 16kk ..).
template <int D, typename T, int kSteps>
__device__ __forceinline__ void mma_sync_pv(float (&acc)[D / 8][4], const uint32_t (&pa)[kSteps][4], const T* v_tile,
                                            int first_key) {
  static_assert(kSteps <= kBlockKeys / 16, "P covers keys inside the block");
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk)
#pragma unroll
    for (int jd = 0; jd < D / 16; ++jd) {
      // V rows are keys (the k dimension): transposed loads give the B fragments of two 8-wide
      // column blocks of D.
      const int key = first_key + kk * 16 + ((lane / 8) % 2) * 8 + (lane % 8);
      const int chunk = jd * 2 + lane / 16;
      uint32_t bv[4];
      ldmatrix_x4_trans(bv, v_tile + SwizzledTile<D, kBlockKeys>::offset(key, chunk));
      mma_16816<T>(acc[2 * jd], pa[kk], bv[0], bv[1]);
      mma_16816<T>(acc[2 * jd + 1], pa[kk], bv[2], bv[3]);
    }
}

// Part [kFirstBlock, kFirstBlock + kBlocks) of S = Q(slab) . K^T through wgmma (N = 8 kBlocks keys),
// committed as one group.
template <int D, typename T, int kFirstBlock, int kBlocks>
__device__ __forceinline__ void issue_score_part(float (&s)[kKeyBlocks8][4], const T* q_slab, const T* k_tile) {
#if KASCADE_PREFILL_WGMMA
  static_assert((kBlocks == 8 && kFirstBlock % 8 == 0 && kFirstBlock + 8 <= kKeyBlocks8) ||
                    (kBlocks == 16 && kFirstBlock == 0 && kKeyBlocks8 == 16),
                "a score part is 64 or 128 keys");
  float(&d)[kBlocks][4] = *reinterpret_cast<float(*)[kBlocks][4]>(&s[kFirstBlock]);
  const T* k_part = k_tile + kFirstBlock * 8 * kPanelElems;  // key rows are 64 elements inside a panel
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    // K-step kk reads column panel kk / 4 at a 32-byte offset (kk % 4) inside the swizzled row.
    const int panel = kk / 4, within = (kk % 4) * 16;
    const uint64_t desc_q = sw128_descriptor(q_slab + panel * SwizzledTile<D, kBlockRows>::kPanelStride + within);
    const uint64_t desc_k = sw128_descriptor(k_part + panel * SwizzledTile<D, kBlockKeys>::kPanelStride + within);
    wgmma_ss<T>(d, desc_q, desc_k, kk > 0 ? 1 : 0);
  }
  wgmma_commit();
#else
  (void)s, (void)q_slab, (void)k_tile;
#endif
}

// S = Q . K^T (unscaled fp32) for this thread's rows. Under wgmma it is issued asynchronously in
// kParts commit groups of kBlockKeys / kParts keys, part p complete after wgmma_wait<kParts-1-p>;
// mma.sync computes the warp's 16 rows at once. Every thread of the CTA whose unit is active
// calls it (wgmma is warpgroup-wide).
template <int D, typename T, int kParts>
__device__ __forceinline__ void issue_scores(float (&s)[kKeyBlocks8][4], const T* q_smem, const T* k_tile) {
  static_assert(kParts == 1 || kParts == 2, "scores are issued in one or two parts");
#if KASCADE_PREFILL_WGMMA
  const T* q_slab = q_smem + slab_first_row() * kPanelElems;
  wgmma_fence();
  issue_score_part<D, T, 0, kKeyBlocks8 / kParts>(s, q_slab, k_tile);
  if constexpr (kParts == 2) issue_score_part<D, T, kKeyBlocks8 / 2, kKeyBlocks8 / 2>(s, q_slab, k_tile);
#else
  mma_sync_scores<D, T>(s, q_smem, k_tile, 0);
#endif
}

// O += P . V for one key block: P as register A fragments, V [keys][D] from its swizzled tile.
// Under wgmma it is issued asynchronously as one commit group; mma.sync computes it at once.
template <int D, typename T>
__device__ __forceinline__ void issue_pv(float (&acc)[D / 8][4], const uint32_t (&pa)[kBlockKeys / 16][4],
                                         const T* v_tile) {
#if KASCADE_PREFILL_WGMMA
  // V k-step kk = keys 16kk .. = 2 swizzle atoms of 8 keys, 16 * 64 elements further; N panels of
  // 64 head dims are a tile panel apart.
  constexpr int kPanelBytes = SwizzledTile<D, kBlockKeys>::kPanelStride * int(sizeof(T));
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kBlockKeys / 16; ++kk)
    wgmma_pv<T>(acc, pa[kk], sw128_mn_descriptor<kPanelBytes>(v_tile + kk * 16 * kPanelElems));
  wgmma_commit();
#else
  mma_sync_pv<D, T>(acc, pa, v_tile, 0);
#endif
}

// 2^x on the special-function unit with subnormal results flushed to zero: exp2f adds a range
// test and two multiplies per call to produce subnormals, which as softmax weights or pooled mass
// are zero to within the output precision anyway. exp2_ftz(-inf) = 0.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Reduces x[0 .. kCount) pairwise (kCount a power of two); x is overwritten. Compile-time widths
// keep the array in registers.
template <int kCount, typename Op>
__device__ __forceinline__ float tree_reduce(float (&x)[kCount], Op op) {
  static_assert((kCount & (kCount - 1)) == 0, "tree width must be a power of two");
  if constexpr (kCount == 1) {
    return x[0];
  } else {
    float half[kCount / 2];
#pragma unroll
    for (int j = 0; j < kCount / 2; ++j) half[j] = op(x[j], x[j + kCount / 2]);
    return tree_reduce<kCount / 2>(half, op);
  }
}

// The swizzled operand tiles need 1024-byte alignment; the dynamic smem request includes the slack.
constexpr size_t kSmemAlign = 1024;
__device__ __forceinline__ unsigned char* align_smem(unsigned char* p) {
  return p + ((kSmemAlign - (smem_addr(p) & (kSmemAlign - 1))) & (kSmemAlign - 1));
}
constexpr size_t kMaxSmemPerCta = 227 * 1024;  // sm_90 opt-in limit

// ---- launchers --------------------------------------------------------------------------------
// Raises a kernel's dynamic shared-memory limit (the limit is per function).
template <typename Kernel>
inline void allow_dynamic_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    KASCADE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
  }
}

// Launches kKernel with kBlockThreads threads per CTA and kSmem bytes of dynamic shared memory,
// raising its limit once per process (the flag is per instantiation, so per kernel).
template <auto kKernel, size_t kSmem, int kBlockThreads = kThreads, typename Params>
void launch_with_smem(const Params& p, dim3 grid, cudaStream_t stream) {
  static const bool ready = (allow_dynamic_smem(kKernel, kSmem), true);
  (void)ready;
  kKernel<<<grid, kBlockThreads, kSmem, stream>>>(p);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

// ---- warp-specialised CTA shape ----------------------------------------------------------------
// attend_kernel and pooled_mass_kernel share one CTA shape: kWarpgroups consumer warpgroups
// (threads 0 .. kThreads-1, one 64-row slab each, so that the slab helpers above apply to them
// unchanged) and one producer warpgroup after them that issues every copy into an mbarrier ring.
// After the CTA's one __syncthreads the roles part: the producer gives registers back and the
// consumers claim them (setmaxnreg; one CTA per SM owns the register file). The producer is
// threads kThreads .. kCtaThreads-1.
template <int kProducerRegisters, int kConsumerRegisters>
struct SplitCta {
  static constexpr int kProducerThreads = 128;
  static constexpr int kCtaThreads = kThreads + kProducerThreads;
  // What the launch gives each thread (__launch_bounds__(kCtaThreads, 1)): the register file's
  // share rounded down to a multiple of 8. A split asking for more than the CTA holds makes the
  // consumers' claim wait forever, so it must not compile.
  static constexpr int kLaunchRegisters = (64 * 1024 / kCtaThreads) / 8 * 8;
  static_assert(kProducerThreads * kProducerRegisters + kThreads * kConsumerRegisters <= kCtaThreads * kLaunchRegisters,
                "the warpgroups' registers exceed what the CTA is launched with");
  static_assert(kWarpgroups == 2, "the consumer schedule alternates between two warpgroups");
  static_assert(kBlockKeys == kProducerThreads, "each producer thread resolves one key row of a block");

  __device__ static __forceinline__ void enter_producer() { warpgroup_release_registers<kProducerRegisters>(); }
  __device__ static __forceinline__ void enter_consumer() { warpgroup_claim_registers<kConsumerRegisters>(); }
};

// Explicit instantiations: one translation unit per (kernel, storage type, head dim) under
// instantiations/, so that the units compile in parallel and a change to one kernel rebuilds its
// units only.
#define KASCADE_INSTANTIATE_PREFILL_ATTEND(T, D)                                                   \
  template void kascade::cuda::prefill::PrefillKernels<D, T>::attend(const AttendParams&, bool, dim3, cudaStream_t);
#define KASCADE_INSTANTIATE_PREFILL_MASS(T, D)                                                     \
  template void kascade::cuda::prefill::PrefillKernels<D, T>::pooled_mass(const MassParams&, dim3, cudaStream_t);

}  // namespace kascade::cuda::prefill
