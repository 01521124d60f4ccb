// The oracle's batch entry points over paged KV layouts: every page size, page order and K/V
// layout must give exactly the result of attend() on the contiguous per-sequence arrays, and
// 16-bit storage must be the fp32 values rounded through round_to().
#include <gtest/gtest.h>

#include <algorithm>
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

// A paged copy of a Batch: pages handed out in shuffled order from one pool, K and V split or
// interleaved ([num_pages, 2, P, Hkv, D]), elements stored as f32, f16 or bf16.
struct PagedCopy {
  std::vector<uint8_t> pool;
  std::vector<int32_t> indptr, indices, seq_lens;
  PagedKV kv;

  PagedCopy(const Batch& batch, int page_size, bool interleaved, DType dtype, uint32_t seed) {
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
            store(kv.k, dst, batch.k[b][src]);
            store(kv.v, dst, batch.v[b][src]);
          }
  }

  void store(const void* base, int64_t at, float x) {
    uint8_t* p = const_cast<uint8_t*>(static_cast<const uint8_t*>(base));
    if (kv.dtype == DType::F32) {
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
