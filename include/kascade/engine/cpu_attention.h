// kascade/engine/cpu_attention.h — the CPU engine's attention for every role of SPEC 3-5 (dense,
// layer 0, anchor, reuse; decode and prefill) in fp32 accumulation, over views of the caller's
// memory (a KV cache with a head stride, queries in any row layout): nothing is copied. Keys
// and values are fp32, f16 (IEEE half bit patterns) or f8e4m3 (codes with one scale per kv head,
// kascade/kv_cache.h's dequantize_e4m3); 16- and 8-bit rows are widened to fp32 as they are
// read (F16C where the CPU has it), the arithmetic is the same.
//
// It computes what the fp64 oracle (kascade/reference.h) computes and is tested against it
// under SPEC 7's fp32 tolerance; selections are equivalent by covered mass (fp32 pooling may
// order near-ties differently). Inputs are not checked for NaN/Inf here: callers check once
// per call with check_finite() where their inputs come from outside (the eval harness), or
// rely on the logits check of the forward pass (the backend).
//
//   cpu::AttentionView view{hq, hkv, nq, n, d, q, q_head_stride, q_token_stride,
//                           k, v, DType::F16, kv_head_stride, out, out_head_stride, out_token_stride};
//   ref::Selection sel = cpu::attend(&pool, workspace, call, view, /*reuse=*/nullptr);
//   cpu::parallel_for_shared(threads, rows, [&](int row) { cpu::attend(nullptr, ...); });
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "kascade/reference.h"
#include "kascade/tensor.h"

namespace kascade::engine::cpu {

class ThreadPool;

// One layer's attention for one sequence. Queries are at positions n - nq .. n - 1 (decode:
// nq = 1). Query t (0-based within the call) of head h is at q + h * q_head_stride +
// t * q_token_stride; key / value i (position) of kv head g at k / v + g * kv_head_stride + i * d
// elements of kv_type; out like q with its own strides. Every row is d contiguous elements.
struct AttentionView {
  int hq = 0, hkv = 0, nq = 0, n = 0, d = 0;
  const float* q = nullptr;
  int64_t q_head_stride = 0, q_token_stride = 0;
  const void* k = nullptr;  // kv_type F32: floats; F16: uint16_t bit patterns; F8E4M3: uint8_t codes
  const void* v = nullptr;
  DType kv_type = DType::F32;
  const float* k_scale = nullptr;  // [hkv], F8E4M3 only (required then): key = e4m3 code * k_scale[g]
  const float* v_scale = nullptr;  // [hkv], F8E4M3 only (required then)
  int64_t kv_head_stride = 0;
  float* out = nullptr;
  int64_t out_head_stride = 0, out_token_stride = 0;
};

// Scratch reused across calls (probability rows of one tile, pooled masses).
struct AttentionWorkspace {
  std::vector<float> probs, mass;
  std::vector<float> partial;  // decode: per (query head, key chunk) max, sum and d weighted values
};

// Runs `call` (role, phase, params, p0, head map as the oracle takes them) on the view.
// Dense: exact causal attention. Layer0: the same, and it returns the selection layer 0 hands
// its reuse layers. Anchor: selects and attends to its selection (plus the tile's diagonal in
// prefill). Reuse: attends to `reuse` (not validated here: it comes from our own anchor, or the
// caller validated it). Returns the selection (empty for Dense and Reuse). A kv_type other
// than F32, F16 or F8E4M3 (or F8E4M3 without scales) throws kascade::Error.
// pool: null runs on the calling thread (callers that parallelise over calls themselves).
ref::Selection attend(ThreadPool* pool, AttentionWorkspace& workspace, const ref::Call& call,
                      const AttentionView& view, const ref::Selection* reuse);

// Runs fn(i) for i in [0, tasks) on a process-wide pool of `threads` workers (0: all hardware
// threads), created once and kept (callers that issue many short parallel loops, such as the
// eval harness per layer). While another thread uses the pool the loop runs on the caller.
// Rethrows the first exception.
void parallel_for_shared(int threads, int tasks, const std::function<void(int)>& fn);

// Throws kascade::Error naming `who` and the tensor unless every q value and every k / v value
// of positions 0..n-1 is finite.
void check_finite(const AttentionView& view, const char* who);

}  // namespace kascade::engine::cpu
