// src/reference/batch.cpp — batch entry points of the oracle over the GPU's KV layouts.
//
// Each sequence is gathered out of the paged cache (any page size, page order, split or
// interleaved K/V, f32/f16/bf16 storage widened exactly to fp32, f8e4m3 dequantised with its kv
// head's scale by dequantize_e4m3) into [Hkv, n, D] and run
// through attend(), so the paged path is the single-sequence path plus an explicit gather.
#include <cmath>
#include <cstring>

#include "kascade/error.h"
#include "kascade/reference.h"

namespace kascade::ref {
namespace {

// `scale`: the element's kv head's scale (F8E4M3 only).
float load_element(const void* base, DType dtype, int64_t offset, float scale) {
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(base)[offset];
    case DType::F16: return f16_to_float(static_cast<const uint16_t*>(base)[offset]);
    case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(base)[offset]);
    case DType::F8E4M3: return dequantize_e4m3(static_cast<const uint8_t*>(base)[offset], scale);
    default: break;
  }
  KASCADE_FAIL("PagedKV: storage type " << dtype_name(dtype) << " is not a KV type (expected f32, f16, bf16 or f8e4m3)");
}

void validate_kv(const PagedKV& kv) {
  KASCADE_CHECK(kv.k != nullptr && kv.v != nullptr, "PagedKV: null k or v pool");
  KASCADE_CHECK(kv.dtype == DType::F32 || kv.dtype == DType::F16 || kv.dtype == DType::BF16 ||
                    kv.dtype == DType::F8E4M3,
                "PagedKV: storage type " << dtype_name(kv.dtype) << " is not f32, f16, bf16 or f8e4m3");
  KASCADE_CHECK(kv.batch >= 1, "PagedKV: batch must be positive, got " << kv.batch);
  KASCADE_CHECK(kv.num_kv_heads >= 1 && kv.head_dim >= 1 && kv.page_size >= 1,
                "PagedKV: Hkv=" << kv.num_kv_heads << ", D=" << kv.head_dim << ", page_size=" << kv.page_size
                                << " must all be positive");
  KASCADE_CHECK(kv.page_indptr != nullptr && kv.page_indices != nullptr && kv.seq_lens != nullptr,
                "PagedKV: null page_indptr, page_indices or seq_lens");
  if (kv.dtype == DType::F8E4M3) {
    KASCADE_CHECK(kv.k_scale != nullptr && kv.v_scale != nullptr,
                  "PagedKV: an f8e4m3 cache needs k_scale and v_scale (one float per kv head), got "
                      << (kv.k_scale ? "" : "no k_scale") << (!kv.k_scale && !kv.v_scale ? " and " : "")
                      << (kv.v_scale ? "" : "no v_scale"));
    KASCADE_CHECK(kv.scale_seq_stride == 0 || kv.scale_seq_stride >= kv.num_kv_heads,
                  "PagedKV: scale_seq_stride " << kv.scale_seq_stride << " must be 0 (scales shared by the batch) or at "
                                               << "least Hkv = " << kv.num_kv_heads << " (one set per sequence)");
    const int scale_sets = kv.scale_seq_stride == 0 ? 1 : kv.batch;
    for (int b = 0; b < scale_sets; ++b) {
      for (int g = 0; g < kv.num_kv_heads; ++g) {
        for (const float* scale : {kv.k_scale, kv.v_scale}) {
          const int64_t at = b * kv.scale_seq_stride + g;
          KASCADE_CHECK(std::isfinite(scale[at]) && scale[at] > 0.0f,
                        "PagedKV: " << (scale == kv.k_scale ? "k_scale" : "v_scale") << "[" << at << "] = " << scale[at]
                                    << " (scales must be finite and positive)");
        }
      }
    }
  }
  for (int b = 0; b < kv.batch; ++b) {
    const int n = kv.seq_lens[b];
    KASCADE_CHECK(n >= 1, "PagedKV: sequence " << b << " has length " << n << " (must be positive)");
    const int64_t pages = kv.page_indptr[b + 1] - kv.page_indptr[b];
    const int64_t needed = (static_cast<int64_t>(n) + kv.page_size - 1) / kv.page_size;
    KASCADE_CHECK(pages >= needed, "PagedKV: sequence " << b << " of length " << n << " needs " << needed
                                                        << " pages of " << kv.page_size << ", has " << pages);
    for (int64_t j = kv.page_indptr[b]; j < kv.page_indptr[b] + needed; ++j) {
      KASCADE_CHECK(kv.page_indices[j] >= 0, "PagedKV: page_indices[" << j << "] = " << kv.page_indices[j]
                                                                     << " is negative");
    }
  }
}

void check_batch_call(const Call& call, Phase phase, int hq, const PagedKV& kv,
                      const std::vector<Selection>* reuse) {
  KASCADE_CHECK(call.phase == phase, "reference " << to_string(phase) << " batch: the call's phase is "
                                                  << to_string(call.phase));
  KASCADE_CHECK(call.p0 == 0, "reference batch: call.p0 must be 0 (each sequence's p0 is seq_len - nq), got "
                                  << call.p0);
  KASCADE_CHECK(hq >= 1, "reference batch: Hq must be positive, got " << hq);
  validate_kv(kv);
  if (call.role == Role::Reuse) {
    KASCADE_CHECK(reuse != nullptr && static_cast<int>(reuse->size()) == kv.batch,
                  "reference batch: role reuse needs one selection per sequence (" << kv.batch << "), got "
                                                                                   << (reuse ? reuse->size() : 0));
  } else {
    KASCADE_CHECK(reuse == nullptr, "reference batch: selections to reuse were given to role "
                                        << to_string(call.role));
  }
}

}  // namespace

void gather_sequence(const PagedKV& kv, int b, std::vector<float>& k_out, std::vector<float>& v_out) {
  validate_kv(kv);
  KASCADE_CHECK(b >= 0 && b < kv.batch, "gather_sequence: sequence " << b << " outside [0, " << kv.batch << ")");
  const int n = kv.seq_lens[b];
  const int hkv = kv.num_kv_heads;
  const int d = kv.head_dim;
  k_out.resize(static_cast<size_t>(hkv) * n * d);
  v_out.resize(k_out.size());
  for (int g = 0; g < hkv; ++g) {
    for (int pos = 0; pos < n; ++pos) {
      const int64_t src = kv.offset(b, pos, g);
      const size_t dst = (static_cast<size_t>(g) * n + pos) * d;
      const bool fp8 = kv.dtype == DType::F8E4M3;
      const float k_scale = fp8 ? kv.key_scale(b, g) : 1.0f, v_scale = fp8 ? kv.value_scale(b, g) : 1.0f;
      for (int e = 0; e < d; ++e) {
        k_out[dst + e] = load_element(kv.k, kv.dtype, src + e, k_scale);
        v_out[dst + e] = load_element(kv.v, kv.dtype, src + e, v_scale);
      }
    }
  }
}

BatchResult decode_batch(const Call& call, const float* q, int hq, const PagedKV& kv,
                         const std::vector<Selection>* reuse) {
  check_batch_call(call, Phase::Decode, hq, kv, reuse);
  const int d = kv.head_dim;
  const size_t per_sequence = static_cast<size_t>(hq) * d;  // q and out rows [Hq, D] = [Hq, 1, D]
  BatchResult result;
  result.out.resize(per_sequence * kv.batch);
  std::vector<float> k, v;
  for (int b = 0; b < kv.batch; ++b) {
    gather_sequence(kv, b, k, v);
    Result r = attend(call, q + per_sequence * b, k.data(), v.data(), hq, kv.num_kv_heads, 1, kv.seq_lens[b], d,
                      reuse ? &(*reuse)[b] : nullptr);
    std::memcpy(result.out.data() + per_sequence * b, r.out.data(), per_sequence * sizeof(float));
    if (role_selects(call.role)) result.selections.push_back(std::move(r.selection));
  }
  return result;
}

BatchResult prefill_batch(const Call& call, const float* q, const int32_t* q_indptr, int hq, const PagedKV& kv,
                          const std::vector<Selection>* reuse) {
  check_batch_call(call, Phase::Prefill, hq, kv, reuse);
  KASCADE_CHECK(q_indptr != nullptr && q_indptr[0] == 0, "reference prefill batch: q_indptr must start at 0");
  const int d = kv.head_dim;
  const size_t row = static_cast<size_t>(hq) * d;  // one query position: [Hq, D]
  BatchResult result;
  result.out.resize(row * q_indptr[kv.batch]);
  std::vector<float> k, v, q_seq;
  for (int b = 0; b < kv.batch; ++b) {
    const int nq = q_indptr[b + 1] - q_indptr[b];
    const int n = kv.seq_lens[b];
    KASCADE_CHECK(nq >= 1 && nq <= n, "reference prefill batch: sequence " << b << " has " << nq
                                                                           << " queries for " << n << " keys");
    // [nq, Hq, D] slice of the ragged batch -> [Hq, nq, D] for attend().
    const float* q_rows = q + row * q_indptr[b];
    q_seq.resize(row * nq);
    for (int t = 0; t < nq; ++t)
      for (int h = 0; h < hq; ++h)
        std::memcpy(&q_seq[(static_cast<size_t>(h) * nq + t) * d], q_rows + row * t + static_cast<size_t>(h) * d,
                    d * sizeof(float));
    gather_sequence(kv, b, k, v);
    Call seq_call = call;
    seq_call.p0 = n - nq;
    Result r = attend(seq_call, q_seq.data(), k.data(), v.data(), hq, kv.num_kv_heads, nq, n, d,
                      reuse ? &(*reuse)[b] : nullptr);
    float* out_rows = result.out.data() + row * q_indptr[b];
    for (int t = 0; t < nq; ++t)
      for (int h = 0; h < hq; ++h)
        std::memcpy(out_rows + row * t + static_cast<size_t>(h) * d, &r.out[(static_cast<size_t>(h) * nq + t) * d],
                    d * sizeof(float));
    if (role_selects(call.role)) result.selections.push_back(std::move(r.selection));
  }
  return result;
}

}  // namespace kascade::ref
