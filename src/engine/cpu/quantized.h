// src/engine/cpu/quantized.h — matrix products against weights kept in their GGUF block type
// (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, F16, BF16) or in fp32, for the CPU backend.
//
// How: a task dequantizes kPanelRows weight rows into an L1/L2-resident fp32 buffer, packs
// them as a panel and streams every token past it (gemm.h), so the weights are read from memory
// in their compact form once per product and the arithmetic is the fp32 arithmetic of a
// dequantized model (the golden logits do not move); fp32 weights are packed the same way.
// Q4_0/Q4_1/Q8_0 rows are dequantized with eight-lane vectors (AVX2+FMA chosen at run time, or
// the portable build); the k-quants and f16/bf16 go through the scalar dequantizers of
// dequantize.cpp. Decode products (at most 4 tokens) of Q4_0/Q4_1/Q8_0 on an AVX2 CPU skip the
// tile: each block is widened in registers and multiplied with the tokens,
// d * (q . x) + m * sum(x); other decode products run the row kernel of cpu_kernels.h.
// Internal to the engine.
//
//   cpu::WeightRef w = cpu::weight_ref(layer.wq, layer.quantized.wq);
//   cpu::matmul(pool, x, tokens, dim, w, qd, y);
#pragma once

#include <cstdint>
#include <vector>

#include "../cpu_kernels.h"
#include "gemm.h"
#include "kascade/engine/model.h"

namespace kascade::engine::cpu {

// A weight matrix [out][in]: fp32 rows (quantized null) or quantized blocks.
struct WeightRef {
  const float* fp32 = nullptr;
  const QuantizedMatrix* quantized = nullptr;
};
// The quantized matrix when it holds data, else the fp32 vector.
WeightRef weight_ref(const std::vector<float>& fp32, const QuantizedMatrix& quantized);

// y[t][o] = sum_i x[t][i] * w[o][i] (+ bias[o]), rows of w split across the pool. `path`
// Portable forces the baseline dequantizers and panel products and skips the fused decode
// products (tests compare the two); the row kernel of decode picks its build at load time.
void matmul(ThreadPool& pool, const float* x, int tokens, int in, WeightRef w, int out, float* y,
            const float* bias = nullptr, SimdPath path = SimdPath::Auto);

// Row `row` of w as `in` floats (the embedding lookup).
void weight_row(WeightRef w, int in, int64_t row, float* dst);

// Rows r0..r0+rows-1 of m as fp32 into dst [rows][m.cols].
void dequantize_rows(const QuantizedMatrix& m, int64_t r0, int rows, float* dst, SimdPath path = SimdPath::Auto);

}  // namespace kascade::engine::cpu
