// src/torch/ops_cpu.cpp — the operators' CPU path: the reference oracle (kascade/reference.h).
//
// q is widened to fp32, the oracle's batch entry points gather each sequence out of the paged
// cache (any strides, f32/f16/bf16 widened exactly), and the fp32 output is rounded once to the
// output's dtype. Selections move between the oracle's per-sequence form ([S, tiles, k] with
// counts) and the caller's buffers ([B, S, max_tiles, k_max], -1 padded; tiles past a sequence's
// last have count 0), so a CPU anchor feeds a CPU reuse call exactly as the GPU buffers do.
#include <algorithm>
#include <cstring>

#include "kascade/budget.h"
#include "kascade/error.h"
#include "kascade/reference.h"
#include "op_args.h"

namespace kascade::torch_ops {
namespace {

std::vector<float> widen(const void* data, DType dtype, size_t count) {
  std::vector<float> out(count);
  switch (dtype) {
    case DType::F32: std::memcpy(out.data(), data, count * sizeof(float)); break;
    case DType::F16:
      for (size_t i = 0; i < count; ++i) out[i] = f16_to_float(static_cast<const uint16_t*>(data)[i]);
      break;
    case DType::BF16:
      for (size_t i = 0; i < count; ++i) out[i] = bf16_to_float(static_cast<const uint16_t*>(data)[i]);
      break;
    default: KASCADE_FAIL("kascade: " << dtype_name(dtype) << " is not a float type");
  }
  return out;
}

void narrow(const std::vector<float>& values, DType dtype, void* data) {
  switch (dtype) {
    case DType::F32: std::memcpy(data, values.data(), values.size() * sizeof(float)); break;
    case DType::F16:
      for (size_t i = 0; i < values.size(); ++i) static_cast<uint16_t*>(data)[i] = float_to_f16(values[i]);
      break;
    case DType::BF16:
      for (size_t i = 0; i < values.size(); ++i) static_cast<uint16_t*>(data)[i] = float_to_bf16(values[i]);
      break;
    default: KASCADE_FAIL("kascade: " << dtype_name(dtype) << " is not a float type");
  }
}

// The caller's buffer (kascade::Selection): indices [B, S, tiles, k_max], counts [B, S, tiles].
int64_t slot_of(const Selection& buf, int b, int s, int tau) {
  return (static_cast<int64_t>(b) * buf.num_sets + s) * buf.max_tiles + tau;
}
int32_t* row_of(const Selection& buf, int b, int s, int tau) { return buf.indices + slot_of(buf, b, s, tau) * buf.k_max; }
int32_t& count_of(const Selection& buf, int b, int s, int tau) { return buf.counts[slot_of(buf, b, s, tau)]; }

void store_selections(const char* op, const std::vector<ref::Selection>& sels, const Selection& buf) {
  for (size_t b = 0; b < sels.size(); ++b) {
    const ref::Selection& sel = sels[b];
    KASCADE_CHECK(sel.num_sets == buf.num_sets && sel.num_tiles <= buf.max_tiles && sel.k_max <= buf.k_max,
                  op << ": internal: sequence " << b << "'s selection [" << sel.num_sets << ", " << sel.num_tiles
                     << ", " << sel.k_max << "] does not fit the buffer [" << buf.num_sets << ", " << buf.max_tiles
                     << ", " << buf.k_max << "]");
    const int bi = static_cast<int>(b);
    for (int s = 0; s < buf.num_sets; ++s) {
      for (int tau = 0; tau < buf.max_tiles; ++tau) {
        int32_t* row = row_of(buf, bi, s, tau);
        std::fill(row, row + buf.k_max, -1);
        if (tau >= sel.num_tiles) {
          count_of(buf, bi, s, tau) = 0;
          continue;
        }
        const int c = sel.row_count(s, tau);
        std::copy(sel.row(s, tau), sel.row(s, tau) + c, row);
        count_of(buf, bi, s, tau) = c;
      }
    }
  }
}

// Sequence b's selection out of the caller's buffer, its first `tiles` tiles; the oracle
// validates it against the call (ascending candidates, counts within the budget).
ref::Selection load_selection(const char* op, const Selection& buf, int b, int tiles) {
  ref::Selection sel = ref::Selection::empty(buf.num_sets, tiles, static_cast<int>(buf.k_max));
  for (int s = 0; s < buf.num_sets; ++s) {
    for (int tau = 0; tau < tiles; ++tau) {
      const int32_t c = count_of(buf, b, s, tau);
      KASCADE_CHECK(c >= 0 && c <= buf.k_max, op << ": sel_counts[" << b << ", " << s << ", " << tau << "] = " << c
                                                 << " is outside 0.." << buf.k_max);
      std::copy(row_of(buf, b, s, tau), row_of(buf, b, s, tau) + buf.k_max, sel.row(s, tau));
      sel.count[static_cast<size_t>(s) * tiles + tau] = c;
    }
  }
  return sel;
}

std::vector<int> host_head_map(const int32_t* head_map, int hkv) {
  if (head_map == nullptr) return {};
  return std::vector<int>(head_map, head_map + hkv);
}

// Rethrows the oracle's messages with the op's name in front.
template <typename F>
void with_op_name(const char* op, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    throw Error(std::string(op) + ": " + e.what());
  }
}

using ReuseSelections = const std::vector<ref::Selection>*;

// The oracle run both phases share: q ([q_rows, Hq, D]) widened to fp32; for reuse the head map
// and each sequence's selection (tiles_of(b) tiles) read out of the caller's buffer; `oracle`
// (call, q, reuse selections or null) runs the phase's batch entry point; its fp32 output is
// narrowed into out and a selecting role's selections stored.
template <typename PhaseCall, typename TilesOf, typename Oracle>
void run_oracle(const PhaseCall& c, Phase phase, int64_t q_rows, TilesOf tiles_of, Oracle oracle) {
  const auto& s = c.shape;
  const std::vector<float> q =
      widen(c.tensors.q, s.dtype, static_cast<size_t>(q_rows) * s.num_q_heads * s.head_dim);
  ref::Call call;
  call.phase = phase;
  call.params = c.params;
  call.role = c.role;
  std::vector<ref::Selection> reuse;
  if (c.role == Role::Reuse) {
    call.head_map = host_head_map(c.head_map, s.num_kv_heads);
    for (int b = 0; b < s.batch; ++b) reuse.push_back(load_selection(c.op, c.selection, b, tiles_of(b)));
  }
  ref::BatchResult r;
  with_op_name(c.op, [&] { r = oracle(call, q.data(), c.role == Role::Reuse ? &reuse : nullptr); });
  narrow(r.out, s.dtype, c.tensors.out);
  if (role_selects(c.role)) store_selections(c.op, r.selections, c.selection);
}

}  // namespace

void run_decode_cpu(const DecodeCall& c) {
  run_oracle(
      c, Phase::Decode, c.shape.batch, [](int) { return 1; },
      [&](const ref::Call& call, const float* q, ReuseSelections reuse) {
        return ref::decode_batch(call, q, c.shape.num_q_heads, c.tensors.kv, reuse);
      });
}

void run_prefill_cpu(const PrefillCall& c) {
  const PrefillShape& s = c.shape;
  const auto tiles_of = [&](int b) {
    const int64_t p1 = s.seq_lens_host[b];
    const int64_t p0 = p1 - (s.q_indptr_host[b + 1] - s.q_indptr_host[b]);
    return static_cast<int>(num_tiles(p0, p1, c.params.tile));
  };
  run_oracle(c, Phase::Prefill, s.q_indptr_host[s.batch], tiles_of,
             [&](const ref::Call& call, const float* q, ReuseSelections reuse) {
               return ref::prefill_batch(call, q, s.q_indptr_host, s.num_q_heads, c.tensors.kv, reuse);
             });
}

}  // namespace kascade::torch_ops
