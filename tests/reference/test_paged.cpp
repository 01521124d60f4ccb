// The oracle's batch entry points over paged KV layouts: every page size, page order and K/V
// layout must give exactly the result of attend() on the contiguous per-sequence arrays, 16-bit
// storage must be the fp32 values rounded through round_to(), and an f8e4m3 cache must be the
// f32 cache of its dequantised values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "helpers.h"
#include "kascade/reference.h"

namespace kascade::ref {
namespace {

using testing::make_call;

constexpr int kHq = 6, kHkv = 2, kD = 8;

// Three sequences of awkward lengths, each with its own contiguous [Hkv, n, D] K and V.
struct Batch {
  std::vector<int> lens{37, 1, 70};
  std::vector<std::vector<float>> k, v;
  Batch() {
    for (size_t b = 0; b < lens.size(); ++b) {
      k.push_back(testing::random_values(static_cast<size_t>(kHkv) * lens[b] * kD, 10 + 2 * b));
      v.push_back(testing::random_values(static_cast<size_t>(kHkv) * lens[b] * kD, 11 + 2 * b));
    }
  }
  int size() const { return static_cast<int>(lens.size()); }
};

// Per kv head FP8 scales of a batch: the head's absolute maximum over every sequence maps to
// 448 (e4m3's largest value) for K, and to 224 for V (a second, different scale).
std::vector<float> head_scales(const std::vector<std::vector<float>>& x, float target) {
  std::vector<float> amax(kHkv, 0.0f);
  for (const std::vector<float>& seq : x) {
    const size_t per_head = seq.size() / kHkv;
    for (size_t i = 0; i < seq.size(); ++i) amax[i / per_head] = std::max(amax[i / per_head], std::fabs(seq[i]));
  }
  for (float& a : amax) a /= target;
  return amax;
}

// A paged copy of a Batch: pages handed out in shuffled order from one pool, K and V split or
// interleaved ([num_pages, 2, P, Hkv, D]), elements stored as f32, f16, bf16 or f8e4m3 (with
// per kv head scales, shared by the batch or, with per_sequence_scales, one set per sequence).
struct PagedCopy {
  std::vector<uint8_t> pool;
  std::vector<int32_t> indptr, indices, seq_lens;
  std::vector<float> k_scales, v_scales;  // f8e4m3 only: [Hkv] or [batch, Hkv]
  PagedKV kv;

  PagedCopy(const Batch& batch, int page_size, bool interleaved, DType dtype, uint32_t seed,
            bool per_sequence_scales = false) {
    int total_pages = 0;
    indptr.push_back(0);
    for (int n : batch.lens) {
      total_pages += (n + page_size - 1) / page_size;
      indptr.push_back(total_pages);
      seq_lens.push_back(n);
    }
    total_pages += 1;  // one page nobody owns, so that page ids are not simply dense
    indices.resize(total_pages);
    std::iota(indices.begin(), indices.end(), 0);
    std::shuffle(indices.begin(), indices.end(), std::mt19937(seed));
    indices.resize(indptr.back());

    const int64_t page_elems = static_cast<int64_t>(page_size) * kHkv * kD;
    const int64_t pool_elems = page_elems * 2 * total_pages;
    pool.assign(pool_elems * dtype_size(dtype), 0xAB);  // garbage where nothing is stored
    kv.dtype = dtype;
    kv.batch = batch.size();
    kv.num_kv_heads = kHkv;
    kv.head_dim = kD;
    kv.page_size = page_size;
    kv.page_indptr = indptr.data();
    kv.page_indices = indices.data();
    kv.seq_lens = seq_lens.data();
    const size_t esize = dtype_size(dtype);
    if (dtype == DType::F8E4M3) {
      if (per_sequence_scales) {
        for (int b = 0; b < batch.size(); ++b) {
          for (float x : head_scales({batch.k[b]}, kE4M3Max)) k_scales.push_back(x);
          for (float x : head_scales({batch.v[b]}, kE4M3Max / 2)) v_scales.push_back(x);
        }
        kv.scale_seq_stride = kHkv;
      } else {
        k_scales = head_scales(batch.k, kE4M3Max);
        v_scales = head_scales(batch.v, kE4M3Max / 2);
      }
      kv.k_scale = k_scales.data();
      kv.v_scale = v_scales.data();
    }
    if (interleaved) {
      kv.head_stride = kD;
      kv.token_stride = static_cast<int64_t>(kHkv) * kD;
      kv.page_stride = 2 * page_elems;
      kv.k = pool.data();
      kv.v = pool.data() + page_elems * esize;
    } else {
      kv.set_packed_strides();
      kv.k = pool.data();
      kv.v = pool.data() + page_elems * total_pages * esize;
    }
    for (int b = 0; b < batch.size(); ++b)
      for (int pos = 0; pos < batch.lens[b]; ++pos)
        for (int g = 0; g < kHkv; ++g)
          for (int e = 0; e < kD; ++e) {
            const size_t src = (static_cast<size_t>(g) * batch.lens[b] + pos) * kD + e;
            const int64_t dst = kv.offset(b, pos, g) + e;
            store(kv.k, dst, batch.k[b][src], b, g);
            store(kv.v, dst, batch.v[b][src], b, g);
          }
  }

  void store(const void* base, int64_t at, float x, int b, int head) {
    uint8_t* p = const_cast<uint8_t*>(static_cast<const uint8_t*>(base));
    if (kv.dtype == DType::F8E4M3) {
      p[at] = float_to_e4m3(x / (base == kv.k ? kv.key_scale(b, head) : kv.value_scale(b, head)));
    } else if (kv.dtype == DType::F32) {
      std::memcpy(p + at * 4, &x, 4);
    } else {
      const uint16_t bits = kv.dtype == DType::F16 ? float_to_f16(x) : float_to_bf16(x);
      std::memcpy(p + at * 2, &bits, 2);
    }
  }
};

std::vector<float> rounded(const std::vector<float>& x, DType dtype) {
  std::vector<float> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = round_to(dtype, x[i]);
  return r;
}

struct Layout {
  int page_size;
  bool interleaved;
};
const Layout kLayouts[] = {{1, false}, {3, true}, {16, false}, {16, true}, {70, false}};

Call anchor_call(Phase phase) {
  Call c = make_call(phase, Role::Anchor);
  c.params.k_min = 5;
  c.params.tile = 8;
  return c;
}

TEST(ReferencePaged, GatherRoundsThroughTheStorageType) {
  const Batch batch;
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    const PagedCopy paged(batch, 3, true, dtype, 5);
    std::vector<float> k, v;
    for (int b = 0; b < batch.size(); ++b) {
      gather_sequence(paged.kv, b, k, v);
      EXPECT_EQ(k, rounded(batch.k[b], dtype)) << dtype_name(dtype) << " sequence " << b;
      EXPECT_EQ(v, rounded(batch.v[b], dtype)) << dtype_name(dtype) << " sequence " << b;
    }
  }
}

TEST(ReferencePaged, DecodeBatchEqualsContiguousForEveryLayout) {
  const Batch batch;
  const std::vector<float> q = testing::random_values(static_cast<size_t>(batch.size()) * kHq * kD, 99);
  const Call call = anchor_call(Phase::Decode);
  for (const Layout& layout : kLayouts) {
    SCOPED_TRACE("page size " + std::to_string(layout.page_size) + (layout.interleaved ? " interleaved" : " split"));
    const PagedCopy paged(batch, layout.page_size, layout.interleaved, DType::F32, layout.page_size);
    const BatchResult r = decode_batch(call, q.data(), kHq, paged.kv);
    ASSERT_EQ(r.out.size(), q.size());
    ASSERT_EQ(r.selections.size(), 3u);
    for (int b = 0; b < batch.size(); ++b) {
      const Result single = attend(call, q.data() + static_cast<size_t>(b) * kHq * kD, batch.k[b].data(),
                                   batch.v[b].data(), kHq, kHkv, 1, batch.lens[b], kD);
      EXPECT_TRUE(std::equal(single.out.begin(), single.out.end(), r.out.begin() + static_cast<size_t>(b) * kHq * kD));
      EXPECT_EQ(single.selection.index, r.selections[b].index);
    }
    // Reuse through the batch path with the anchor's selections: identity reuse equals the anchor.
    Call reuse = call;
    reuse.role = Role::Reuse;
    EXPECT_EQ(decode_batch(reuse, q.data(), kHq, paged.kv, &r.selections).out, r.out);
  }
}

TEST(ReferencePaged, RaggedPrefillEqualsContiguousForEveryLayoutAndDtype) {
  const Batch batch;
  // Sequence b queries its last nq_b positions (chunked prefill: p0 = n - nq).
  const std::vector<int32_t> q_indptr{0, 20, 21, 91};
  const std::vector<float> q = testing::random_values(static_cast<size_t>(q_indptr.back()) * kHq * kD, 98);
  const Call call = anchor_call(Phase::Prefill);
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    for (const Layout& layout : kLayouts) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " page size " + std::to_string(layout.page_size) +
                   (layout.interleaved ? " interleaved" : " split"));
      const PagedCopy paged(batch, layout.page_size, layout.interleaved, dtype, 7 * layout.page_size);
      const BatchResult r = prefill_batch(call, q.data(), q_indptr.data(), kHq, paged.kv);
      ASSERT_EQ(r.out.size(), q.size());
      for (int b = 0; b < batch.size(); ++b) {
        const int nq = q_indptr[b + 1] - q_indptr[b];
        const int n = batch.lens[b];
        std::vector<float> q_seq(static_cast<size_t>(kHq) * nq * kD);  // [nq, Hq, D] -> [Hq, nq, D]
        for (int t = 0; t < nq; ++t)
          for (int h = 0; h < kHq; ++h)
            for (int e = 0; e < kD; ++e)
              q_seq[(static_cast<size_t>(h) * nq + t) * kD + e] = q[((q_indptr[b] + t) * kHq + h) * kD + e];
        Call seq_call = call;
        seq_call.p0 = n - nq;
        const std::vector<float> k = rounded(batch.k[b], dtype), v = rounded(batch.v[b], dtype);
        const Result single = attend(seq_call, q_seq.data(), k.data(), v.data(), kHq, kHkv, nq, n, kD);
        for (int t = 0; t < nq; ++t)
          for (int h = 0; h < kHq; ++h)
            for (int e = 0; e < kD; ++e)
              ASSERT_EQ(r.out[((q_indptr[b] + t) * kHq + h) * kD + e], single.out[(static_cast<size_t>(h) * nq + t) * kD + e])
                  << "sequence " << b << " t " << t << " h " << h;
        EXPECT_EQ(r.selections[b].index, single.selection.index);
        EXPECT_EQ(r.selections[b].num_tiles, num_query_tiles(seq_call, nq, n));
      }
    }
  }
}

// The f32 batch holding exactly what an f8e4m3 copy stores: each value through e4m3 with its
// kv head's scale, dequantised by dequantize_e4m3.
Batch dequantized(const Batch& batch, const PagedCopy& fp8) {
  Batch out = batch;
  for (int b = 0; b < batch.size(); ++b) {
    const size_t per_head = static_cast<size_t>(batch.lens[b]) * kD;
    for (size_t i = 0; i < per_head * kHkv; ++i) {
      const int head = static_cast<int>(i / per_head);
      const float ks = fp8.kv.key_scale(b, head), vs = fp8.kv.value_scale(b, head);
      out.k[b][i] = dequantize_e4m3(float_to_e4m3(batch.k[b][i] / ks), ks);
      out.v[b][i] = dequantize_e4m3(float_to_e4m3(batch.v[b][i] / vs), vs);
    }
  }
  return out;
}

TEST(ReferencePaged, Fp8CacheEqualsTheF32CacheOfItsDequantisedValuesForEveryRole) {
  const Batch batch;
  const std::vector<int32_t> q_indptr{0, 20, 21, 91};
  const std::vector<float> q_prefill = testing::random_values(static_cast<size_t>(q_indptr.back()) * kHq * kD, 96);
  const std::vector<float> q_decode = testing::random_values(static_cast<size_t>(batch.size()) * kHq * kD, 95);
  for (const Layout& layout : kLayouts) for (bool per_sequence : {false, true}) {
    SCOPED_TRACE("page size " + std::to_string(layout.page_size) + (layout.interleaved ? " interleaved" : " split") +
                 (per_sequence ? ", scales per sequence" : ", scales shared"));
    const PagedCopy fp8(batch, layout.page_size, layout.interleaved, DType::F8E4M3, 11 * layout.page_size,
                        per_sequence);
    // Per-sequence scales differ between sequences (else the case would test nothing new).
    if (per_sequence) {
      ASSERT_NE(fp8.kv.key_scale(0, 0), fp8.kv.key_scale(1, 0));
    }
    ASSERT_NE(fp8.k_scales, fp8.v_scales);
    const Batch values = dequantized(batch, fp8);
    // The scales matter: without them the values would be the raw e4m3 ones.
    ASSERT_NE(values.k[0][0], e4m3_to_float(float_to_e4m3(batch.k[0][0] / fp8.k_scales[0])));
    const PagedCopy f32(values, layout.page_size, layout.interleaved, DType::F32, 11 * layout.page_size);
    std::vector<float> k, v;
    for (int b = 0; b < batch.size(); ++b) {
      gather_sequence(fp8.kv, b, k, v);
      EXPECT_EQ(k, values.k[b]);
      EXPECT_EQ(v, values.v[b]);
    }
    for (Phase phase : {Phase::Decode, Phase::Prefill}) {
      for (Role role : {Role::Dense, Role::Layer0, Role::Anchor}) {
        SCOPED_TRACE(std::string(to_string(phase)) + " " + to_string(role));
        Call call = anchor_call(phase);
        call.role = role;
        auto run = [&](const PagedCopy& copy, const std::vector<Selection>* reuse, const Call& c) {
          return phase == Phase::Decode ? decode_batch(c, q_decode.data(), kHq, copy.kv, reuse)
                                        : prefill_batch(c, q_prefill.data(), q_indptr.data(), kHq, copy.kv, reuse);
        };
        const BatchResult from_fp8 = run(fp8, nullptr, call), from_f32 = run(f32, nullptr, call);
        EXPECT_EQ(from_fp8.out, from_f32.out);
        ASSERT_EQ(from_fp8.selections.size(), from_f32.selections.size());
        for (size_t b = 0; b < from_fp8.selections.size(); ++b) {
          EXPECT_EQ(from_fp8.selections[b].index, from_f32.selections[b].index);
        }
        if (role == Role::Dense) continue;
        Call reuse = call;
        reuse.role = Role::Reuse;
        reuse.head_map = {1, 0};
        EXPECT_EQ(run(fp8, &from_f32.selections, reuse).out, run(f32, &from_f32.selections, reuse).out);
      }
    }
  }
}

TEST(ReferencePaged, Fp8CacheWithoutScalesIsRejected) {
  const Batch batch;
  const std::vector<float> q = testing::random_values(static_cast<size_t>(batch.size()) * kHq * kD, 94);
  PagedCopy fp8(batch, 16, false, DType::F8E4M3, 3);
  const Call call = anchor_call(Phase::Decode);
  EXPECT_NO_THROW(decode_batch(call, q.data(), kHq, fp8.kv));
  fp8.kv.v_scale = nullptr;
  try {
    decode_batch(call, q.data(), kHq, fp8.kv);
    FAIL() << "an f8e4m3 cache without v_scale was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f8e4m3 cache needs k_scale and v_scale"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no v_scale"), std::string::npos) << e.what();
  }
  fp8.kv.v_scale = fp8.v_scales.data();
  fp8.k_scales[1] = 0.0f;
  EXPECT_THROW(decode_batch(call, q.data(), kHq, fp8.kv), Error);
  fp8.k_scales[1] = fp8.v_scales[1];
  fp8.kv.scale_seq_stride = 1;  // per-sequence sets must hold Hkv scales each
  EXPECT_THROW(decode_batch(call, q.data(), kHq, fp8.kv), Error);
  PagedCopy per_sequence(batch, 16, false, DType::F8E4M3, 3, true);
  EXPECT_NO_THROW(decode_batch(call, q.data(), kHq, per_sequence.kv));
  per_sequence.k_scales.back() = std::nanf("");  // the last sequence's last head
  EXPECT_THROW(decode_batch(call, q.data(), kHq, per_sequence.kv), Error);
  // Other dtypes ignore the scales.
  PagedCopy f16(batch, 16, false, DType::F16, 3);
  EXPECT_NO_THROW(decode_batch(call, q.data(), kHq, f16.kv));
}

TEST(ReferencePaged, RejectsBadBatches) {
  const Batch batch;
  const std::vector<float> q = testing::random_values(static_cast<size_t>(batch.size()) * kHq * kD, 97);
  PagedCopy paged(batch, 16, false, DType::F32, 3);
  EXPECT_THROW(decode_batch(anchor_call(Phase::Prefill), q.data(), kHq, paged.kv), Error);
  Call with_p0 = anchor_call(Phase::Decode);
  with_p0.p0 = 4;
  EXPECT_THROW(decode_batch(with_p0, q.data(), kHq, paged.kv), Error);
  Call reuse = anchor_call(Phase::Decode);
  reuse.role = Role::Reuse;
  EXPECT_THROW(decode_batch(reuse, q.data(), kHq, paged.kv), Error);  // no selections
  paged.indptr[1] = 2;  // sequence 0 needs 3 pages of 16 for 37 tokens
  paged.indptr[2] = 3;
  EXPECT_THROW(decode_batch(anchor_call(Phase::Decode), q.data(), kHq, paged.kv), Error);
  PagedCopy wrong_type(batch, 16, false, DType::F32, 3);
  wrong_type.kv.dtype = DType::I32;
  EXPECT_THROW(decode_batch(anchor_call(Phase::Decode), q.data(), kHq, wrong_type.kv), Error);
}

}  // namespace
}  // namespace kascade::ref
