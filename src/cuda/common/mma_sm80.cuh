// src/cuda/common/mma_sm80.cuh — warp-level tensor-core and async-copy primitives (sm_80+, so they
// run on Hopper too): the m16n8k16 MMA with fp32 accumulators, cp.async with zero fill, and
// KASCADE_ASM_FOR_STORAGE_TYPE, which writes an inline-PTX instruction once for bf16 and fp16.
//
// Fragment layout of mma.m16n8k16 (g = lane / 4, t = lane % 4), used by the decode and prefill kernels:
//   A (row-major 16x16): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1], a2 = A[g][2t+8..2t+9], a3 = A[g+8][2t+8..2t+9]
//   B (col-major 16x8):  b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C (16x8, fp32):      c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..2t+1]
// Each 32-bit register holds two 16-bit values, the lower k (or row) index in the low half.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace kascade::cuda {

// asm volatile(TEXT(type) OPERANDS) with `type` the PTX name of the 16-bit storage type T: "bf16"
// for __nv_bfloat16, "f16" for __half. Instruction text must be a string literal, so TEXT is a
// macro that splices the name in by literal concatenation and the branch is chosen at compile
// time; the instruction and its operand list are written once for both types. OPERANDS starts
// with the colon of the output list.
#define KASCADE_ASM_FOR_STORAGE_TYPE(T, TEXT, ...)                                        \
  do {                                                                                    \
    static_assert(std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value, \
                  "16-bit storage type must be __nv_bfloat16 or __half");                 \
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {                                \
      asm volatile(TEXT("bf16") __VA_ARGS__);                                             \
    } else {                                                                              \
      asm volatile(TEXT("f16") __VA_ARGS__);                                              \
    }                                                                                     \
  } while (0)

// c += A.B on one m16n8k16 tile (fp32 accumulators) for T = __nv_bfloat16 or __half.
#define KASCADE_MMA_M16N8K16_TEXT(TYPE)                                                                 \
  "mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, " \
  "{%0,%1,%2,%3};\n"
template <typename T>
struct Mma16816 {
  static_assert(std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value,
                "Mma16816: storage type must be __nv_bfloat16 or __half");
  __device__ __forceinline__ static void run(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
    KASCADE_ASM_FOR_STORAGE_TYPE(T, KASCADE_MMA_M16N8K16_TEXT,
                                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
  // Two fp32 values as one register of two storage values (lo in the low half).
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
      return *reinterpret_cast<const uint32_t*>(&h);
    } else {
      const __half2 h = __floats2half2_rn(lo, hi);
      return *reinterpret_cast<const uint32_t*>(&h);
    }
  }
};
#undef KASCADE_MMA_M16N8K16_TEXT

// 16-byte global -> shared copy that bypasses registers; reads nothing and writes zeros when
// `valid` is false (the source address must still be a mapped address).
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* global_src, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global_src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace kascade::cuda
