// fp32 attention of every role over views (see attention.h).
//
// Work is cut into (query head, tile) tasks; decode is the single tile {b = n, t = n - 1}. A
// call that selects (layer 0 with reuse layers, anchors) goes tile by tile: the exact softmax
// rows of every head of the tile (in parallel), then per selection set the pooled masses and
// the top-k, then the output. Rows are scored against blocks of keys that stay in L1 while the
// tile's queries pass over them.
//
// The kernels read fp32 rows. Each role is one template over the cache's element type T
// (float, uint16_t for f16, uint8_t for e4m3): it asks for the rows it is about to use through
// range_rows / gathered_rows, which hand fp32 storage back in place and widen f16 rows (e4m3
// rows times their kv head's scale) into per-thread scratch, once per block that the call's rows
// or heads share.
#include "kascade/engine/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>

#include "../cpu_kernels.h"
#include "f16_rows.h"
#include "kascade/budget.h"
#include "kascade/error.h"
#include "simd.h"
#include "top_k.h"

namespace kascade::engine::cpu {

namespace {

using simd::load8;
using simd::store8;
using simd::sum8;
using simd::v8;

constexpr int kKeyBlock = 128;  // keys per block: 32 KiB of fp32 keys at head dim 64

// s[j] = scale * q . key(j) for `count` keys; keys are rows of d floats, key j at
// base + idx[j] * d (idx non-null) or base + j * d.
// The eight lane sums of a[0..8) as one vector (lane j: the sum of a[j]'s lanes), by a tree of
// pairwise additions.
inline v8 sum8_each(const v8* a) {
  using simd::v8i;
  auto pairs = [](v8 x, v8 y) {
    return __builtin_shuffle(x, y, v8i{0, 2, 8, 10, 4, 6, 12, 14}) +
           __builtin_shuffle(x, y, v8i{1, 3, 9, 11, 5, 7, 13, 15});
  };
  const v8 u0 = pairs(pairs(a[0], a[1]), pairs(a[2], a[3]));
  const v8 u1 = pairs(pairs(a[4], a[5]), pairs(a[6], a[7]));
  return __builtin_shuffle(u0, u1, v8i{0, 1, 2, 3, 8, 9, 10, 11}) +
         __builtin_shuffle(u0, u1, v8i{4, 5, 6, 7, 12, 13, 14, 15});
}

KASCADE_SIMD_CLONES
void score_keys(const float* q, const float* base, const int32_t* idx, int count, int d, float scale, float* s) {
  const int d8 = d / 8 * 8;
  int j0 = 0;
  if (d8 == d) {
    // Eight keys at a time: eight independent FMA chains, their sums reduced together.
    for (; j0 + 8 <= count; j0 += 8) {
      const float* key[8];
      for (int r = 0; r < 8; ++r) key[r] = base + static_cast<int64_t>(idx ? idx[j0 + r] : j0 + r) * d;
      v8 acc[8] = {};
      for (int i = 0; i < d; i += 8) {
        const v8 qi = load8(q + i);
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) acc[r] += qi * load8(key[r] + i);
      }
      store8(s + j0, sum8_each(acc) * simd::splat8(scale));
    }
  }
  for (int j = j0; j < count; ++j) {
    const float* key = base + static_cast<int64_t>(idx ? idx[j] : j) * d;
    v8 acc0 = {}, acc1 = {};
    int i = 0;
    for (; i + 16 <= d8; i += 16) {
      acc0 += load8(q + i) * load8(key + i);
      acc1 += load8(q + i + 8) * load8(key + i + 8);
    }
    for (; i < d8; i += 8) acc0 += load8(q + i) * load8(key + i);
    float dot = sum8(acc0 + acc1);
    for (; i < d; ++i) dot += q[i] * key[i];
    s[j] = dot * scale;
  }
}

KASCADE_SIMD_CLONES
float max_of(const float* s, int count) {
  float m = -std::numeric_limits<float>::infinity();
  int j = 0;
  if (count >= 8) {
    v8 vm = load8(s);
    for (j = 8; j + 8 <= count; j += 8) {
      const v8 x = load8(s + j);
      vm = x > vm ? x : vm;
    }
    m = simd::max8(vm);
  }
  for (; j < count; ++j) m = std::max(m, s[j]);
  return m;
}

// s[j] = exp(s[j] - shift); returns the sum (fp32, eight partial sums).
KASCADE_SIMD_CLONES
float exp_shifted(float* s, int count, float shift) {
  v8 total = {};
  int j = 0;
  for (; j + 8 <= count; j += 8) {
    const v8 e = simd::exp8(load8(s + j) - shift);
    store8(s + j, e);
    total += e;
  }
  float sum = sum8(total);
  for (; j < count; ++j) {
    s[j] = std::exp(s[j] - shift);
    sum += s[j];
  }
  return sum;
}

KASCADE_SIMD_CLONES
void scale_in_place(float* x, int count, float factor) {
  int j = 0;
  for (; j + 8 <= count; j += 8) store8(x + j, load8(x + j) * factor);
  for (; j < count; ++j) x[j] *= factor;
}

// acc[0..d) += sum_j p[j] * value(j), values addressed as in score_keys.
KASCADE_SIMD_CLONES
void add_weighted_values(const float* p, const float* base, const int32_t* idx, int count, int d, float* acc) {
  const int d8 = d / 8 * 8;
  constexpr int kMaxLanes = 32;  // head dims up to 256 keep the accumulator in registers / L1
  if (d8 == 64) {
    // Head dim 64 (the common one): the eight accumulators stay in registers.
    v8 a[8];
#pragma GCC unroll 8
    for (int l = 0; l < 8; ++l) a[l] = load8(acc + 8 * l);
    for (int j = 0; j < count; ++j) {
      const float* value = base + static_cast<int64_t>(idx ? idx[j] : j) * d;
      const v8 w = simd::splat8(p[j]);
#pragma GCC unroll 8
      for (int l = 0; l < 8; ++l) a[l] += load8(value + 8 * l) * w;
    }
#pragma GCC unroll 8
    for (int l = 0; l < 8; ++l) store8(acc + 8 * l, a[l]);
  } else if (d8 <= kMaxLanes * 8) {
    v8 a[kMaxLanes];
    const int lanes = d8 / 8;
    for (int l = 0; l < lanes; ++l) a[l] = load8(acc + 8 * l);
    for (int j = 0; j < count; ++j) {
      const float* value = base + static_cast<int64_t>(idx ? idx[j] : j) * d;
      const float w = p[j];
      for (int l = 0; l < lanes; ++l) a[l] += load8(value + 8 * l) * w;
    }
    for (int l = 0; l < lanes; ++l) store8(acc + 8 * l, a[l]);
  } else {
    for (int j = 0; j < count; ++j) {
      const float* value = base + static_cast<int64_t>(idx ? idx[j] : j) * d;
      for (int i = 0; i < d8; i += 8) store8(acc + i, load8(acc + i) + load8(value + i) * p[j]);
    }
  }
  for (int j = 0; j < count; ++j) {
    const float* value = base + static_cast<int64_t>(idx ? idx[j] : j) * d;
    for (int i = d8; i < d; ++i) acc[i] += p[j] * value[i];
  }
}

// ---- K/V rows as fp32 -----------------------------------------------------------------------
// Rows of d floats: row j at base + idx[j] * d (idx non-null) or base + j * d.
struct RowsF32 {
  const float* base = nullptr;
  const int32_t* idx = nullptr;
};

// The widened f16 rows a call keeps at once, one per-thread buffer each.
enum WidenSlot { kKeySlot, kValueSlot, kDiagonalKeySlot, kDiagonalValueSlot, kWidenSlots };

float* widen_scratch(WidenSlot slot, size_t size) {
  thread_local std::vector<float> scratch[kWidenSlots];
  std::vector<float>& buffer = scratch[slot];
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
}

// Rows first..first+count-1 of one kv head (`head` points at its row 0) as fp32.
inline const float* range_rows(const float* head, int first, int /*count*/, int d, WidenSlot /*slot*/) {
  return head + static_cast<int64_t>(first) * d;
}
inline const float* range_rows(const uint16_t* head, int first, int count, int d, WidenSlot slot) {
  float* rows = widen_scratch(slot, static_cast<size_t>(count) * d);
  widen_f16_rows(head, nullptr, first, count, d, rows);
  return rows;
}

// One kv head of an e4m3 cache: its codes (row 0) and its scale.
struct E4M3Head {
  const uint8_t* codes = nullptr;
  float scale = 1.0f;
};
inline const float* range_rows(E4M3Head head, int first, int count, int d, WidenSlot slot) {
  float* rows = widen_scratch(slot, static_cast<size_t>(count) * d);
  widen_e4m3_rows(head.codes, nullptr, first, count, d, head.scale, rows);
  return rows;
}

// Rows idx[0..count) of one kv head as fp32 (fp32 storage keeps the index list).
inline RowsF32 gathered_rows(const float* head, const int32_t* idx, int /*count*/, int /*d*/, WidenSlot /*slot*/) {
  return RowsF32{head, idx};
}
inline RowsF32 gathered_rows(const uint16_t* head, const int32_t* idx, int count, int d, WidenSlot slot) {
  float* rows = widen_scratch(slot, static_cast<size_t>(count) * d);
  widen_f16_rows(head, idx, 0, count, d, rows);
  return RowsF32{rows, nullptr};
}
inline RowsF32 gathered_rows(E4M3Head head, const int32_t* idx, int count, int d, WidenSlot slot) {
  float* rows = widen_scratch(slot, static_cast<size_t>(count) * d);
  widen_e4m3_rows(head.codes, idx, 0, count, d, head.scale, rows);
  return RowsF32{rows, nullptr};
}

// Kv head g of a K or V pool of element type T: a pointer to its row 0, with its scale for e4m3.
template <typename T>
struct KvHead {
  static const T* at(const void* pool, const float* /*scales*/, int g, int64_t head_stride) {
    return static_cast<const T*>(pool) + g * head_stride;
  }
};
template <>
struct KvHead<uint8_t> {
  static E4M3Head at(const void* pool, const float* scales, int g, int64_t head_stride) {
    return E4M3Head{static_cast<const uint8_t*>(pool) + g * head_stride, scales[g]};
  }
};

// One query over the `count` rows of sel_k / sel_v followed by `range` contiguous rows at
// range_k / range_v: one softmax over the union. `scratch` holds count + range floats. An
// empty set gives zeros.
void attend_keys(const float* q, RowsF32 sel_k, RowsF32 sel_v, int count, const float* range_k, const float* range_v,
                 int range, int d, float scale, float* scratch, float* out) {
  std::fill(out, out + d, 0.0f);
  const int total = count + range;
  if (total == 0) return;
  score_keys(q, sel_k.base, sel_k.idx, count, d, scale, scratch);
  score_keys(q, range_k, nullptr, range, d, scale, scratch + count);
  const float sum = exp_shifted(scratch, total, max_of(scratch, total));
  add_weighted_values(scratch, sel_v.base, sel_v.idx, count, d, out);
  add_weighted_values(scratch + count, range_v, nullptr, range, d, out);
  scale_in_place(out, d, 1.0f / sum);
}

// The call's geometry over a cache of element type T.
template <typename T>
struct Shape {
  const AttentionView& view;
  const ref::Call& call;
  int group, first_query, tiles;
  float scale;
  bool decode() const { return call.phase == Phase::Decode; }
  int prefix(int tau) const { return ref::tile_prefix(call, tau, view.n); }
  int t_begin(int tau) const { return decode() ? view.n - 1 : prefix(tau); }
  int t_end(int tau) const {
    return decode() ? view.n : static_cast<int>(tile_end(call.p0, view.n, tau, call.params.tile));
  }
  const float* q_row(int h, int t) const {
    return view.q + h * view.q_head_stride + static_cast<int64_t>(t - first_query) * view.q_token_stride;
  }
  float* out_row(int h, int t) const {
    return view.out + h * view.out_head_stride + static_cast<int64_t>(t - first_query) * view.out_token_stride;
  }
  auto k_head(int g) const { return KvHead<T>::at(view.k, view.k_scale, g, view.kv_head_stride); }
  auto v_head(int g) const { return KvHead<T>::at(view.v, view.v_scale, g, view.kv_head_stride); }
};

void run_tasks(ThreadPool* pool, int tasks, const std::function<void(int)>& fn) {
  if (pool) {
    pool->parallel_for(tasks, fn);
  } else {
    for (int i = 0; i < tasks; ++i) fn(i);
  }
}

std::vector<float>& row_scratch(size_t size) {
  thread_local std::vector<float> scratch;
  if (scratch.size() < size) scratch.resize(size);
  return scratch;
}

// Normalised causal softmax rows of head h for queries t_begin..t_end-1 (row r over keys
// 0..t_begin+r), written to probs + r * stride. Keys go in blocks shared by the tile's rows.
template <typename T>
void softmax_rows(const Shape<T>& s, int h, int tau, float* probs, int64_t stride) {
  const int t0 = s.t_begin(tau), t1 = s.t_end(tau), d = s.view.d;
  const auto k = s.k_head(h / s.group);
  for (int j0 = 0; j0 < t1; j0 += kKeyBlock) {
    const float* keys = range_rows(k, j0, std::min(kKeyBlock, t1 - j0), d, kKeySlot);
    for (int t = std::max(t0, j0); t < t1; ++t) {
      const int j1 = std::min(t + 1, j0 + kKeyBlock);
      score_keys(s.q_row(h, t), keys, nullptr, j1 - j0, d, s.scale, probs + (t - t0) * stride + j0);
    }
  }
  for (int t = t0; t < t1; ++t) {
    float* row = probs + (t - t0) * stride;
    const float sum = exp_shifted(row, t + 1, max_of(row, t + 1));
    scale_in_place(row, t + 1, 1.0f / sum);
  }
}

// Dense outputs of head h's rows from their normalised probabilities.
template <typename T>
void dense_from_probs(const Shape<T>& s, int h, int tau, const float* probs, int64_t stride) {
  const int t0 = s.t_begin(tau), t1 = s.t_end(tau), d = s.view.d;
  const auto v = s.v_head(h / s.group);
  for (int t = t0; t < t1; ++t) std::fill(s.out_row(h, t), s.out_row(h, t) + d, 0.0f);
  for (int j0 = 0; j0 < t1; j0 += kKeyBlock) {
    const float* values = range_rows(v, j0, std::min(kKeyBlock, t1 - j0), d, kValueSlot);
    for (int t = std::max(t0, j0); t < t1; ++t) {
      const int j1 = std::min(t + 1, j0 + kKeyBlock);
      add_weighted_values(probs + (t - t0) * stride + j0, values, nullptr, j1 - j0, d, s.out_row(h, t));
    }
  }
}

// Dense causal attention of head h's rows without keeping probabilities (head dims beyond the
// blocked prefill's).
template <typename T>
void dense_rows(const Shape<T>& s, int h, int tau) {
  const int t0 = s.t_begin(tau), t1 = s.t_end(tau), g = h / s.group, d = s.view.d;
  float* scratch = row_scratch(static_cast<size_t>(t1)).data();
  const float* keys = range_rows(s.k_head(g), 0, t1, d, kKeySlot);
  const float* values = range_rows(s.v_head(g), 0, t1, d, kValueSlot);
  for (int t = t0; t < t1; ++t) {
    attend_keys(s.q_row(h, t), RowsF32{}, RowsF32{}, 0, keys, values, t + 1, d, s.scale, scratch, s.out_row(h, t));
  }
}

// Dense causal prefill, blocked: kFlashQueries query rows of a head pass together over the keys
// in blocks of kFlashKeys with a running (online) softmax per row. Queries sit in vector
// lanes (qt [d][16], transposed once per task): a key element broadcast against two query
// vectors gives the scores of 16 rows, so every key and value load feeds 16 rows' FMAs, where
// one row at a time would reload its query for every key. fp32 throughout; masked (future)
// keys get weight exactly 0.
constexpr int kFlashQueries = 16;
constexpr int kFlashKeys = 64;

constexpr int kFlashMaxHeadDim = 256;

// One query head's state in a flash task.
struct FlashScratch {
  alignas(32) float qt[kFlashMaxHeadDim * kFlashQueries];  // queries, transposed and scaled
  alignas(32) float ot[kFlashMaxHeadDim * kFlashQueries];  // running output, transposed
  alignas(32) float pt[kFlashKeys * kFlashQueries];        // a key block's scores, then weights
  alignas(32) float m[kFlashQueries];                      // running max per row
  alignas(32) float l[kFlashQueries];                      // running sum per row
};

// pt[j][0..16) = qt . key(j0 + j) for the block's keys (rows of d floats from `keys`).
KASCADE_SIMD_CLONES
void flash_scores(const float* qt, const float* keys, int count, int d, float* pt) {
  int j = 0;
  for (; j + 4 <= count; j += 4) {
    const float* k0 = keys + static_cast<int64_t>(j) * d;
    v8 a0 = {}, b0 = {}, a1 = {}, b1 = {}, a2 = {}, b2 = {}, a3 = {}, b3 = {};
    for (int i = 0; i < d; ++i) {
      const v8 q0 = load8(qt + i * kFlashQueries), q1 = load8(qt + i * kFlashQueries + 8);
      const v8 e0 = simd::splat8(k0[i]), e1 = simd::splat8(k0[d + i]);
      const v8 e2 = simd::splat8(k0[2 * d + i]), e3 = simd::splat8(k0[3 * d + i]);
      a0 += e0 * q0; b0 += e0 * q1;
      a1 += e1 * q0; b1 += e1 * q1;
      a2 += e2 * q0; b2 += e2 * q1;
      a3 += e3 * q0; b3 += e3 * q1;
    }
    float* p = pt + j * kFlashQueries;
    store8(p, a0); store8(p + 8, b0);
    store8(p + 16, a1); store8(p + 24, b1);
    store8(p + 32, a2); store8(p + 40, b2);
    store8(p + 48, a3); store8(p + 56, b3);
  }
  for (; j < count; ++j) {
    const float* key = keys + static_cast<int64_t>(j) * d;
    v8 a = {}, b = {};
    for (int i = 0; i < d; ++i) {
      const v8 e = simd::splat8(key[i]);
      a += e * load8(qt + i * kFlashQueries);
      b += e * load8(qt + i * kFlashQueries + 8);
    }
    store8(pt + j * kFlashQueries, a);
    store8(pt + j * kFlashQueries + 8, b);
  }
}

// ot[i][0..16) += sum_j pt[j][0..16) * value(j)[i] over the block's values.
KASCADE_SIMD_CLONES
void flash_values(const float* pt, const float* values, int count, int d, float* ot) {
  int i = 0;
  for (; i + 4 <= d; i += 4) {
    v8 a0 = load8(ot + i * kFlashQueries), b0 = load8(ot + i * kFlashQueries + 8);
    v8 a1 = load8(ot + (i + 1) * kFlashQueries), b1 = load8(ot + (i + 1) * kFlashQueries + 8);
    v8 a2 = load8(ot + (i + 2) * kFlashQueries), b2 = load8(ot + (i + 2) * kFlashQueries + 8);
    v8 a3 = load8(ot + (i + 3) * kFlashQueries), b3 = load8(ot + (i + 3) * kFlashQueries + 8);
    for (int j = 0; j < count; ++j) {
      const float* value = values + static_cast<int64_t>(j) * d + i;
      const v8 p0 = load8(pt + j * kFlashQueries), p1 = load8(pt + j * kFlashQueries + 8);
      const v8 e0 = simd::splat8(value[0]), e1 = simd::splat8(value[1]);
      const v8 e2 = simd::splat8(value[2]), e3 = simd::splat8(value[3]);
      a0 += e0 * p0; b0 += e0 * p1;
      a1 += e1 * p0; b1 += e1 * p1;
      a2 += e2 * p0; b2 += e2 * p1;
      a3 += e3 * p0; b3 += e3 * p1;
    }
    store8(ot + i * kFlashQueries, a0); store8(ot + i * kFlashQueries + 8, b0);
    store8(ot + (i + 1) * kFlashQueries, a1); store8(ot + (i + 1) * kFlashQueries + 8, b1);
    store8(ot + (i + 2) * kFlashQueries, a2); store8(ot + (i + 2) * kFlashQueries + 8, b2);
    store8(ot + (i + 3) * kFlashQueries, a3); store8(ot + (i + 3) * kFlashQueries + 8, b3);
  }
  for (; i < d; ++i) {
    v8 a = load8(ot + i * kFlashQueries), b = load8(ot + i * kFlashQueries + 8);
    for (int j = 0; j < count; ++j) {
      const v8 e = simd::splat8(values[static_cast<int64_t>(j) * d + i]);
      a += e * load8(pt + j * kFlashQueries);
      b += e * load8(pt + j * kFlashQueries + 8);
    }
    store8(ot + i * kFlashQueries, a);
    store8(ot + i * kFlashQueries + 8, b);
  }
}

// The online softmax step of one key block: scores in pt become weights exp(s - m_new) (zero
// for keys after a row's position: key j0 + j is visible to lane r while j0 + j <= last[r]);
// the running max m, sum l and output ot are rescaled by exp(m_old - m_new).
KASCADE_SIMD_CLONES
void flash_softmax_step(float* pt, int count, int j0, const float* last, int d, float* m, float* l, float* ot) {
  v8 m0 = load8(m), m1 = load8(m + 8);
  const v8 last0 = load8(last), last1 = load8(last + 8);
  const bool masked = j0 + count - 1 > last[0];  // lanes hold ascending positions
  const v8 neg = simd::splat8(-std::numeric_limits<float>::infinity());
  v8 x0 = m0, x1 = m1;
  for (int j = 0; j < count; ++j) {
    v8 s0 = load8(pt + j * kFlashQueries), s1 = load8(pt + j * kFlashQueries + 8);
    if (masked) {
      const v8 key = simd::splat8(static_cast<float>(j0 + j));
      s0 = key > last0 ? neg : s0;
      s1 = key > last1 ? neg : s1;
      store8(pt + j * kFlashQueries, s0);
      store8(pt + j * kFlashQueries + 8, s1);
    }
    x0 = s0 > x0 ? s0 : x0;
    x1 = s1 > x1 ? s1 : x1;
  }
  // Every row sees key 0, so after the first block its max is finite and exp(-inf) is 0 below.
  const v8 alpha0 = simd::exp8(m0 - x0), alpha1 = simd::exp8(m1 - x1);
  v8 sum0 = {}, sum1 = {};
  for (int j = 0; j < count; ++j) {
    const v8 s0 = load8(pt + j * kFlashQueries), s1 = load8(pt + j * kFlashQueries + 8);
    v8 e0 = simd::exp8(s0 - x0), e1 = simd::exp8(s1 - x1);
    if (masked) {
      e0 = s0 == neg ? v8{} : e0;
      e1 = s1 == neg ? v8{} : e1;
    }
    store8(pt + j * kFlashQueries, e0);
    store8(pt + j * kFlashQueries + 8, e1);
    sum0 += e0;
    sum1 += e1;
  }
  store8(l, load8(l) * alpha0 + sum0);
  store8(l + 8, load8(l + 8) * alpha1 + sum1);
  store8(m, x0);
  store8(m + 8, x1);
  for (int i = 0; i < d; ++i) {
    store8(ot + i * kFlashQueries, load8(ot + i * kFlashQueries) * alpha0);
    store8(ot + i * kFlashQueries + 8, load8(ot + i * kFlashQueries + 8) * alpha1);
  }
}

// Rows t0..t1-1 (at most kFlashQueries, positions) of query heads h0..h0+heads-1 (one kv
// group's), dense causal: each key block is read (f16: widened) once for those heads, which pass
// over it in turn.
template <typename T>
void flash_rows(const Shape<T>& s, int h0, int heads, int t0, int t1) {
  const int d = s.view.d, rows = t1 - t0, g = h0 / s.group;
  thread_local std::vector<FlashScratch> scratch;  // one per head of the task
  if (scratch.size() < static_cast<size_t>(heads)) scratch.resize(static_cast<size_t>(heads));
  for (int i = 0; i < heads; ++i) {
    FlashScratch& f = scratch[static_cast<size_t>(i)];
    for (int r = 0; r < kFlashQueries; ++r) {
      const float* q = r < rows ? s.q_row(h0 + i, t0 + r) : nullptr;
      for (int e = 0; e < d; ++e) f.qt[e * kFlashQueries + r] = q ? q[e] * s.scale : 0.0f;
      f.m[r] = -std::numeric_limits<float>::infinity();
      f.l[r] = 0.0f;
    }
    std::fill(f.ot, f.ot + d * kFlashQueries, 0.0f);
  }
  // Lanes past the rows repeat the last row's position: their keys are the real rows' keys.
  alignas(32) float last[kFlashQueries];
  for (int r = 0; r < kFlashQueries; ++r) last[r] = static_cast<float>(t0 + std::min(r, rows - 1));
  const auto k = s.k_head(g);
  const auto v = s.v_head(g);
  for (int j0 = 0; j0 < t1; j0 += kFlashKeys) {
    const int count = std::min(kFlashKeys, t1 - j0);
    const float* keys = range_rows(k, j0, count, d, kKeySlot);
    const float* values = range_rows(v, j0, count, d, kValueSlot);
    for (int i = 0; i < heads; ++i) {
      FlashScratch& f = scratch[static_cast<size_t>(i)];
      flash_scores(f.qt, keys, count, d, f.pt);
      flash_softmax_step(f.pt, count, j0, last, d, f.m, f.l, f.ot);
      flash_values(f.pt, values, count, d, f.ot);
    }
  }
  for (int i = 0; i < heads; ++i) {
    const FlashScratch& f = scratch[static_cast<size_t>(i)];
    for (int r = 0; r < rows; ++r) {
      float* out = s.out_row(h0 + i, t0 + r);
      const float inv = 1.0f / f.l[r];
      for (int e = 0; e < d; ++e) out[e] = f.ot[e * kFlashQueries + r] * inv;
    }
  }
}

// A task is 16 query positions of one head (fp32 cache: the head's state stays in L1 while the
// key blocks stream past) or of a kv group's heads (f16: each block is widened once for the
// group, not once per head). Measured, 9/3 heads, d 64, a 512-query chunk over 8192 keys, one
// thread (min of 4 runs on the loaded machine): fp32 236 ms per head, 272 ms per group; f16
// 251 ms per head, 242 ms per group.
template <typename T>
void dense_prefill(ThreadPool* pool, const Shape<T>& s) {
  const int nq = s.view.nq, blocks = (nq + kFlashQueries - 1) / kFlashQueries;
  const int heads = std::is_same<T, float>::value ? 1 : s.group;
  run_tasks(pool, s.view.hq / heads * blocks, [&](int task) {
    const int h0 = task / blocks * heads, b = task % blocks;
    const int t0 = s.first_query + b * kFlashQueries;
    flash_rows(s, h0, heads, t0, std::min(s.first_query + nq, t0 + kFlashQueries));
  });
}

// Head h's rows over selection row `keys` (count entries) plus the tile's diagonal b..t
// (decode: b = n, no diagonal).
template <typename T>
void selected_rows(const Shape<T>& s, int h, int tau, const int32_t* keys, int count) {
  const int t0 = s.t_begin(tau), t1 = s.t_end(tau), g = h / s.group, b = s.prefix(tau), d = s.view.d;
  const int diagonal = std::max(0, t1 - b);
  const RowsF32 sel_k = gathered_rows(s.k_head(g), keys, count, d, kKeySlot);
  const RowsF32 sel_v = gathered_rows(s.v_head(g), keys, count, d, kValueSlot);
  const float* diagonal_k = range_rows(s.k_head(g), b, diagonal, d, kDiagonalKeySlot);
  const float* diagonal_v = range_rows(s.v_head(g), b, diagonal, d, kDiagonalValueSlot);
  float* scratch = row_scratch(static_cast<size_t>(count + diagonal + 1)).data();
  for (int t = t0; t < t1; ++t) {
    attend_keys(s.q_row(h, t), sel_k, sel_v, count, diagonal_k, diagonal_v, t + 1 - b, d, s.scale, scratch,
                s.out_row(h, t));
  }
}

// Decode reads the cache in chunks of keys that every query head of a kv group passes over while
// the chunk is in L1/L2: the group's cache is read from memory once, not once per query head
// (decode at long context is bound by those reads), and (kv head, chunk) tasks keep both
// threads busy where 9 head tasks would not divide evenly.
constexpr int kDecodeChunk = 256;

int decode_chunks(int n) { return (n + kDecodeChunk - 1) / kDecodeChunk; }

// Decode over a list of keys per kv head: the causal keys 0..n-1 (dense), or the selection the
// head's group reads (reuse). Each (kv head, chunk of its list) task leaves per query head of the
// group a partial softmax (max, sum of exp, exp-weighted values) over the chunk, whose rows it
// reads (f16: widens) once for the whole group; the partials of a head are merged exactly. An
// empty list gives zeros.
struct KeyList {
  const int32_t* idx = nullptr;  // null: positions 0..count-1
  int count = 0;
};

template <typename T>
void decode_over_keys(ThreadPool* pool, AttentionWorkspace& ws, const Shape<T>& s,
                      const std::function<KeyList(int g)>& keys_of) {
  const AttentionView& v = s.view;
  const int d = v.d, t = v.n - 1;
  std::vector<KeyList> lists(static_cast<size_t>(v.hkv));
  int chunks = 0;
  for (int g = 0; g < v.hkv; ++g) {
    lists[static_cast<size_t>(g)] = keys_of(g);
    chunks = std::max(chunks, decode_chunks(lists[static_cast<size_t>(g)].count));
  }
  const int64_t part_size = d + 2;
  ws.partial.resize(static_cast<size_t>(v.hq) * chunks * part_size);
  run_tasks(pool, v.hkv * chunks, [&](int task) {
    const int g = task / chunks, c = task % chunks;
    const KeyList& list = lists[static_cast<size_t>(g)];
    const int j0 = c * kDecodeChunk, count = std::max(0, std::min(list.count, j0 + kDecodeChunk) - j0);
    float* scores = row_scratch(static_cast<size_t>(kDecodeChunk)).data();
    const RowsF32 keys = list.idx ? gathered_rows(s.k_head(g), list.idx + j0, count, d, kKeySlot)
                                  : RowsF32{range_rows(s.k_head(g), j0, count, d, kKeySlot), nullptr};
    const RowsF32 values = list.idx ? gathered_rows(s.v_head(g), list.idx + j0, count, d, kValueSlot)
                                    : RowsF32{range_rows(s.v_head(g), j0, count, d, kValueSlot), nullptr};
    for (int h = g * s.group; h < (g + 1) * s.group; ++h) {
      float* part = ws.partial.data() + (static_cast<int64_t>(h) * chunks + c) * part_size;
      std::fill(part + 2, part + 2 + d, 0.0f);
      part[0] = -std::numeric_limits<float>::infinity();
      part[1] = 0.0f;
      if (count == 0) continue;
      score_keys(s.q_row(h, t), keys.base, keys.idx, count, d, s.scale, scores);
      part[0] = max_of(scores, count);
      part[1] = exp_shifted(scores, count, part[0]);
      add_weighted_values(scores, values.base, values.idx, count, d, part + 2);
    }
  });
  for (int h = 0; h < v.hq; ++h) {
    const float* parts = ws.partial.data() + static_cast<int64_t>(h) * chunks * part_size;
    float m = -std::numeric_limits<float>::infinity();
    for (int c = 0; c < chunks; ++c) m = std::max(m, parts[c * part_size]);
    float* out = s.out_row(h, t);
    std::fill(out, out + d, 0.0f);
    if (m == -std::numeric_limits<float>::infinity()) continue;  // no keys
    float sum = 0;
    for (int c = 0; c < chunks; ++c) {
      const float* part = parts + c * part_size;
      if (part[1] == 0.0f) continue;  // an empty chunk (its max is -inf)
      const float w = std::exp(part[0] - m);
      sum += w * part[1];
      for (int i = 0; i < d; ++i) out[i] += w * part[2 + i];
    }
    scale_in_place(out, d, 1.0f / sum);
  }
}

int selection_width(const ref::Call& call, int n) {
  const SparsityParams& sp = call.params;
  if (call.phase == Phase::Decode) return static_cast<int>(budget_k(n, sp.rho, sp.k_min, sp.k_multiple));
  return static_cast<int>(max_tile_budget(sp.rolling(), call.p0, n, sp.tile, sp.rho, sp.k_min, sp.k_multiple));
}

// Decode of a selecting role (layer 0 with reuse layers, anchors), in passes threaded over key
// chunks, the cache read once per kv group:
//   1. (kv head, chunk) tasks: per query head the chunk's scores, their max m_c and
//      e = exp(s - m_c) kept in the head's probs row, sum(e), and for layer 0 sum(e * v);
//   2. per head the chunks merge exactly (as decode_over_keys' partials): factor[h][c] =
//      exp(m_c - m) / Z turns e into the normalised probability p;
//   3. (set, chunk) tasks pool p into the mass; the top-k is select_top_k's threaded radix
//      select;
//   4. anchors attend from the kept p (renormalised over the selection: the same softmax, no
//      second pass over the selected keys' K), in (head, part of the selection) tasks.
constexpr int kSelectedPart = 256;  // selected keys per output task
constexpr float kMinSelectedMass = 1e-20f;  // below: a head's selected probabilities underflow

template <typename T>
ref::Selection decode_with_selection(ThreadPool* pool, AttentionWorkspace& ws, const Shape<T>& s, bool dense_output,
                                     bool attend_selection) {
  const AttentionView& v = s.view;
  const ref::Call& call = s.call;
  const int n = v.n, d = v.d, t = n - 1, chunks = decode_chunks(n);
  const bool all = call.params.pooling == Pooling::All;
  const int sets = ref::num_selection_sets(call, v.hkv), heads_per_set = all ? v.hq : s.group;
  ref::Selection sel = ref::Selection::empty(sets, 1, selection_width(call, n));
  ws.probs.resize(static_cast<size_t>(v.hq) * n);
  ws.mass.resize(static_cast<size_t>(sets) * n);
  // Per (head, chunk): max, sum of exp, then d weighted values (layer 0 only).
  const int64_t part_size = dense_output ? d + 2 : 2;
  ws.partial.resize(static_cast<size_t>(v.hq) * chunks * part_size);
  auto probs = [&](int h) { return ws.probs.data() + static_cast<int64_t>(h) * n; };
  auto part = [&](int h, int c) { return ws.partial.data() + (static_cast<int64_t>(h) * chunks + c) * part_size; };

  run_tasks(pool, v.hkv * chunks, [&](int task) {
    const int g = task / chunks, c = task % chunks;
    const int j0 = c * kDecodeChunk, count = std::min(n, j0 + kDecodeChunk) - j0;
    const float* keys = range_rows(s.k_head(g), j0, count, d, kKeySlot);
    const float* values = dense_output ? range_rows(s.v_head(g), j0, count, d, kValueSlot) : nullptr;
    for (int h = g * s.group; h < (g + 1) * s.group; ++h) {
      float* e = probs(h) + j0;
      float* p = part(h, c);
      score_keys(s.q_row(h, t), keys, nullptr, count, d, s.scale, e);
      p[0] = max_of(e, count);
      p[1] = exp_shifted(e, count, p[0]);
      if (dense_output) {
        std::fill(p + 2, p + 2 + d, 0.0f);
        add_weighted_values(e, values, nullptr, count, d, p + 2);
      }
    }
  });

  std::vector<float> factor(static_cast<size_t>(v.hq) * chunks);
  for (int h = 0; h < v.hq; ++h) {
    float m = -std::numeric_limits<float>::infinity();
    for (int c = 0; c < chunks; ++c) m = std::max(m, part(h, c)[0]);
    float sum = 0;
    for (int c = 0; c < chunks; ++c) {
      factor[static_cast<size_t>(h) * chunks + c] = std::exp(part(h, c)[0] - m);
      sum += factor[static_cast<size_t>(h) * chunks + c] * part(h, c)[1];
    }
    for (int c = 0; c < chunks; ++c) factor[static_cast<size_t>(h) * chunks + c] /= sum;
    if (dense_output) {
      float* out = s.out_row(h, t);
      std::fill(out, out + d, 0.0f);
      for (int c = 0; c < chunks; ++c) {
        const float w = factor[static_cast<size_t>(h) * chunks + c];
        const float* values = part(h, c) + 2;
        for (int i = 0; i < d; ++i) out[i] += w * values[i];
      }
    }
  }

  run_tasks(pool, sets * chunks, [&](int task) {
    const int set = task / chunks, c = task % chunks;
    const int j0 = c * kDecodeChunk, count = std::min(n, j0 + kDecodeChunk) - j0;
    float* mass = ws.mass.data() + static_cast<int64_t>(set) * n + j0;
    std::fill(mass, mass + count, 0.0f);
    const int h0 = all ? 0 : set * s.group;
    for (int h = h0; h < h0 + heads_per_set; ++h) {
      const float f = factor[static_cast<size_t>(h) * chunks + c];
      const float* e = probs(h) + j0;
      for (int i = 0; i < count; ++i) mass[i] += e[i] * f;
    }
  });
  // The top-k runs on the calling thread: on this 2-core machine under load, its four threaded
  // passes (a barrier each) cost more than they save (anchor decode on 2 threads at 8k keys:
  // 1.9 ms serial, 3.5 ms threaded; at 32k keys 8.1 vs 9.1 ms).
  thread_local TopKScratch top_k_scratch;
  const int k = ref::tile_budget(call, 0, n);
  for (int set = 0; set < sets; ++set) {
    select_top_k(nullptr, ws.mass.data() + static_cast<int64_t>(set) * n, n, k, top_k_scratch, sel.row(set, 0));
    sel.count[static_cast<size_t>(set)] = k;
  }
  if (!attend_selection) return sel;

  // Each (kv head, part) task leaves, per query head of the group, sum(p) and sum(p * v) over its
  // part of the selection (the part's value rows read once for the group); the parts add (p is
  // normalised over the whole row already).
  const int parts = std::max(1, std::min(4, k / kSelectedPart));
  const int64_t out_part_size = d + 1;
  std::vector<float> selected_partial(static_cast<size_t>(v.hq) * parts * out_part_size);
  run_tasks(pool, v.hkv * parts, [&](int task) {
    const int g = task / parts, r = task % parts, set = all ? 0 : g;
    const int32_t* keys = sel.row(set, 0);
    const int i0 = static_cast<int>(static_cast<int64_t>(k) * r / parts);
    const int i1 = static_cast<int>(static_cast<int64_t>(k) * (r + 1) / parts);
    float* w = row_scratch(static_cast<size_t>(i1 - i0)).data();
    const RowsF32 values = gathered_rows(s.v_head(g), keys + i0, i1 - i0, d, kValueSlot);
    for (int h = g * s.group; h < (g + 1) * s.group; ++h) {
      const float* e = probs(h);
      const float* f = factor.data() + static_cast<size_t>(h) * chunks;
      float* acc = selected_partial.data() + (static_cast<int64_t>(h) * parts + r) * out_part_size;
      float sum = 0;
      for (int i = i0; i < i1; ++i) {
        w[i - i0] = e[keys[i]] * f[keys[i] / kDecodeChunk];
        sum += w[i - i0];
      }
      acc[0] = sum;
      std::fill(acc + 1, acc + 1 + d, 0.0f);
      add_weighted_values(w, values.base, values.idx, i1 - i0, d, acc + 1);
    }
  });
  for (int h = 0; h < v.hq; ++h) {
    float* out = s.out_row(h, t);
    std::fill(out, out + d, 0.0f);
    float sum = 0;
    for (int r = 0; r < parts; ++r) {
      const float* acc = selected_partial.data() + (static_cast<int64_t>(h) * parts + r) * out_part_size;
      sum += acc[0];
      for (int i = 0; i < d; ++i) out[i] += acc[1 + i];
    }
    // The selection holds the pooled mass's largest keys, not necessarily this head's: where its
    // probabilities there underflow, the softmax is taken again over the selected keys' scores.
    if (sum < kMinSelectedMass) {
      const int set = all ? 0 : h / s.group;
      selected_rows(s, h, 0, sel.row(set, 0), sel.row_count(set, 0));
    } else {
      scale_in_place(out, d, 1.0f / sum);
    }
  }
  return sel;
}

// attend() over a cache of element type T (the view checked by the caller).
template <typename T>
ref::Selection attend_stored(ThreadPool* pool, AttentionWorkspace& ws, const ref::Call& call, const AttentionView& v,
                             const ref::Selection* reuse) {
  const Shape<T> s{v, call, v.hq / v.hkv, v.n - v.nq, ref::num_query_tiles(call, v.nq, v.n),
                   call.params.scale_for(v.d)};
  const int tiles = s.tiles;
  ref::Selection sel;

  if (call.role == Role::Reuse && s.decode()) {
    const bool all = call.params.pooling == Pooling::All;
    decode_over_keys(pool, ws, s, [&](int g) {
      const int set = all ? 0 : call.head_map.empty() ? g : call.head_map[static_cast<size_t>(g)];
      return KeyList{reuse->row(set, 0), reuse->row_count(set, 0)};
    });
    return sel;
  }
  if (call.role == Role::Reuse) {
    const bool all = call.params.pooling == Pooling::All;
    run_tasks(pool, v.hq * tiles, [&](int task) {
      const int h = task / tiles, tau = task % tiles, g = h / s.group;
      const int set = all ? 0 : call.head_map.empty() ? g : call.head_map[static_cast<size_t>(g)];
      selected_rows(s, h, tau, reuse->row(set, tau), reuse->row_count(set, tau));
    });
    return sel;
  }
  if (call.role == Role::Dense && s.decode()) {
    decode_over_keys(pool, ws, s, [&](int) { return KeyList{nullptr, v.n}; });
    return sel;
  }
  if (call.role == Role::Dense && v.d <= kFlashMaxHeadDim) {
    dense_prefill(pool, s);
    return sel;
  }
  if (call.role == Role::Dense) {
    run_tasks(pool, v.hq * tiles, [&](int task) { dense_rows(s, task / tiles, task % tiles); });
    return sel;
  }

  if (s.decode()) return decode_with_selection(pool, ws, s, call.role != Role::Anchor, call.role == Role::Anchor);
  // Prefill of Layer0 or Anchor: tile by tile.
  const int sets = ref::num_selection_sets(call, v.hkv);
  const int heads_per_set = call.params.pooling == Pooling::All ? v.hq : s.group;
  sel = ref::Selection::empty(sets, tiles, selection_width(call, v.n));
  const int max_rows = std::min(call.params.tile, v.nq);
  const int64_t stride = v.n;
  ws.probs.resize(static_cast<size_t>(v.hq) * max_rows * stride);
  ws.mass.resize(static_cast<size_t>(sets) * v.n);
  for (int tau = 0; tau < tiles; ++tau) {
    const int t0 = s.t_begin(tau), t1 = s.t_end(tau), b = s.prefix(tau);
    auto head_probs = [&](int h) { return ws.probs.data() + static_cast<size_t>(h) * max_rows * stride; };
    run_tasks(pool, v.hq, [&](int h) {
      softmax_rows(s, h, tau, head_probs(h), stride);
      if (call.role == Role::Layer0) dense_from_probs(s, h, tau, head_probs(h), stride);
    });
    run_tasks(pool, sets, [&](int set) {
      float* mass = ws.mass.data() + static_cast<size_t>(set) * v.n;
      std::fill(mass, mass + b, 0.0f);
      const int h0 = call.params.pooling == Pooling::All ? 0 : set * s.group;
      for (int h = h0; h < h0 + heads_per_set; ++h) {
        for (int t = t0; t < t1; ++t) {
          const float* row = head_probs(h) + (t - t0) * stride;
          const int last = std::min(b, t + 1);
          for (int i = 0; i < last; ++i) mass[i] += row[i];
        }
      }
      const int k = ref::tile_budget(call, tau, v.n);
      thread_local TopKScratch top_k_scratch;  // one per thread that runs set tasks
      select_top_k(nullptr, mass, b, k, top_k_scratch, sel.row(set, tau));
      sel.count[static_cast<size_t>(set) * tiles + tau] = k;
    });
    if (call.role == Role::Anchor) {
      run_tasks(pool, v.hq, [&](int h) {
        const int set = call.params.pooling == Pooling::All ? 0 : h / s.group;
        selected_rows(s, h, tau, sel.row(set, tau), sel.row_count(set, tau));
      });
    }
  }
  return sel;
}

// The cache types attention reads, and the scales an e4m3 cache needs: one error line naming `who`.
void check_kv_type(const AttentionView& v, const char* who) {
  KASCADE_CHECK(v.kv_type == DType::F32 || v.kv_type == DType::F16 || v.kv_type == DType::F8E4M3,
                who << ": keys and values of type " << dtype_name(v.kv_type) << " (supported: f32, f16, f8e4m3)");
  KASCADE_CHECK(v.kv_type != DType::F8E4M3 || (v.k_scale != nullptr && v.v_scale != nullptr),
                who << ": an f8e4m3 cache needs k_scale and v_scale (one float per kv head)");
}

}  // namespace

ref::Selection attend(ThreadPool* pool, AttentionWorkspace& ws, const ref::Call& call, const AttentionView& view,
                      const ref::Selection* reuse) {
  const AttentionView& v = view;
  KASCADE_CHECK(v.hq >= 1 && v.hkv >= 1 && v.hq % v.hkv == 0 && v.d >= 1 && v.nq >= 1 && v.n >= v.nq,
                "cpu attention: bad shape hq=" << v.hq << " hkv=" << v.hkv << " nq=" << v.nq << " n=" << v.n
                                               << " d=" << v.d);
  KASCADE_CHECK(call.phase == Phase::Prefill || v.nq == 1, "cpu attention: decode takes one query, got " << v.nq);
  KASCADE_CHECK(call.role != Role::Reuse || reuse != nullptr, "cpu attention: role reuse needs the anchor's selection");
  check_kv_type(v, "cpu attention");
  switch (v.kv_type) {
    case DType::F32: return attend_stored<float>(pool, ws, call, v, reuse);
    case DType::F16: return attend_stored<uint16_t>(pool, ws, call, v, reuse);
    default: return attend_stored<uint8_t>(pool, ws, call, v, reuse);  // F8E4M3: check_kv_type admits no other
  }
}

void parallel_for_shared(int threads, int tasks, const std::function<void(int)>& fn) {
  static std::mutex mutex;
  static std::unique_ptr<ThreadPool> pool;
  const int wanted = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::unique_lock<std::mutex> lock(mutex, std::try_to_lock);
  if (!lock.owns_lock() || wanted == 1) {
    for (int i = 0; i < tasks; ++i) fn(i);
    return;
  }
  if (!pool || pool->size() != wanted) pool = std::make_unique<ThreadPool>(wanted);
  pool->parallel_for(tasks, fn);
}

void check_finite(const AttentionView& v, const char* who) {
  auto check = [&](const float* rows, int count, const char* what, int head, int first_row) {
    for (int i = 0; i < count; ++i) {
      KASCADE_CHECK(std::isfinite(rows[i]), who << ": " << what << " of head " << head << " at row "
                                                 << first_row + i / v.d << " holds " << rows[i]
                                                 << " (attention inputs must be finite)");
    }
  };
  for (int h = 0; h < v.hq; ++h) {
    for (int t = 0; t < v.nq; ++t) check(v.q + h * v.q_head_stride + t * v.q_token_stride, v.d, "query", h, t);
  }
  check_kv_type(v, who);
  std::vector<float> row(static_cast<size_t>(v.d));
  auto check_cache = [&](const void* cache, const float* scales, const char* what, int g) {
    if (v.kv_type == DType::F32) {
      check(static_cast<const float*>(cache) + g * v.kv_head_stride, v.n * v.d, what, g, 0);
      return;
    }
    for (int i = 0; i < v.n; ++i) {
      const int64_t at = g * v.kv_head_stride + static_cast<int64_t>(i) * v.d;
      if (v.kv_type == DType::F16) {
        widen_f16(static_cast<const uint16_t*>(cache) + at, v.d, row.data());
      } else {
        widen_e4m3(static_cast<const uint8_t*>(cache) + at, v.d, scales[g], row.data());
      }
      check(row.data(), v.d, what, g, i);
    }
  };
  for (int g = 0; g < v.hkv; ++g) {
    check_cache(v.k, v.k_scale, "keys", g);
    check_cache(v.v, v.v_scale, "values", g);
  }
}

}  // namespace kascade::engine::cpu
