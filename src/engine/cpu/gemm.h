// src/engine/cpu/gemm.h — the fp32 matrix-matrix product of prefill against weight panels:
// kPanelRows weight rows transposed into a panel [in][kPanelRows], multiplied with tokens in
// register tiles of up to 6 tokens x 16 rows (each weight load feeds 6 FMAs, each broadcast
// activation 2). A task packs one panel (from fp32 rows or a dequantized tile) and streams every
// token past it. AVX2+FMA intrinsics where the CPU has them, eight-lane vector extensions (the
// portable build) otherwise; the arithmetic is fp32 throughout.
// Internal to the engine.
//
//   cpu::pack_panel(tile, rows, in, panel);
//   cpu::panel_product(x, tokens, in, panel, rows, y + r0, out);
#pragma once

#include <cstdint>

namespace kascade::engine::cpu {

// Which kernels run: Auto takes AVX2+FMA where the CPU has it; Portable forces the baseline
// build (tests compare the two).
enum class SimdPath { Auto, Portable };
bool cpu_has_avx2_fma();  // AVX2, FMA and F16C (the f16 block scales)

constexpr int kPanelRows = 16;

// panel[k * kPanelRows + r] = w[r * in + k] for r < rows (1..kPanelRows), zero for r >= rows.
void pack_panel(const float* w, int rows, int in, float* panel);

// y[t * y_stride + r] = sum_k x[t * in + k] * panel[k * kPanelRows + r] for t < tokens and
// r < rows; y's entries r >= rows are not written.
void panel_product(const float* x, int tokens, int in, const float* panel, int rows, float* y, int64_t y_stride,
                   SimdPath path = SimdPath::Auto);

}  // namespace kascade::engine::cpu
