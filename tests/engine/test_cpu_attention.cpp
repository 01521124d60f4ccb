// The CPU engine's fp32 attention (kascade/engine/cpu_attention.h) against the fp64 oracle
// (kascade/reference.h) under SPEC 7: outputs within the fp32 tolerance given the same
// selection, selections equivalent by covered mass; for every role, decode and prefill (fresh
// and continued, a partial last tile), both poolings, a head map, strided views of a larger
// cache, serial and threaded; over fp32 and f16 caches (the oracle is given the f16-rounded keys
// and values, so the tolerance stays fp32's: only the accumulation may differ).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "../../src/engine/cpu_kernels.h"
#include "kascade/engine/cpu_attention.h"
#include "kascade/kv_cache.h"
#include "kascade/error.h"
#include "kascade/reference.h"

namespace cpu = kascade::engine::cpu;
namespace ref = kascade::ref;
using kascade::Phase;
using kascade::Pooling;
using kascade::Role;

namespace {

struct Case {
  int hq = 6, hkv = 2, d = 40;  // d = 40: five 8-lane blocks, so the lane loops see odd counts
  int n = 300, nq = 1;
  int capacity_pad = 37;        // cache rows past n: the view's head stride is larger than n
  Phase phase = Phase::Decode;
  Role role = Role::Anchor;
  Pooling pooling = Pooling::Group;
  std::vector<int> head_map;
  kascade::DType kv = kascade::DType::F32;  // the engine's cache type
};

struct Data {
  std::vector<float> q, k, v;              // oracle layout: [hq][nq][d], [hkv][n][d]
  std::vector<float> q_tokens, k_cache, v_cache;  // engine layout: [nq][hq][d], [hkv][cap][d]
  std::vector<uint16_t> k_cache_f16, v_cache_f16;  // the same caches as f16 (Case::kv F16)
  std::vector<uint8_t> k_cache_f8, v_cache_f8;      // as e4m3 codes (Case::kv F8E4M3) ...
  std::vector<float> k_scale, v_scale;              // ... with these per kv head scales
  int capacity = 0;
};

Data make_data(const Case& c, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  Data x;
  x.capacity = c.n + c.capacity_pad;
  x.q.resize(static_cast<size_t>(c.hq) * c.nq * c.d);
  x.k.resize(static_cast<size_t>(c.hkv) * c.n * c.d);
  x.v.resize(x.k.size());
  // Scaled queries make the softmax peaked enough that top-k is not a coin toss.
  for (float& f : x.q) f = 2.5f * normal(rng);
  for (float& f : x.k) f = normal(rng);
  for (float& f : x.v) f = normal(rng);
  if (c.kv == kascade::DType::F16) {
    // What the f16 cache holds is what the oracle attends to.
    for (float& f : x.k) f = kascade::round_to(kascade::DType::F16, f);
    for (float& f : x.v) f = kascade::round_to(kascade::DType::F16, f);
  }
  // e4m3 scales differ per head (head g's values map their maximum to 448 / (g + 2)); with
  // Case::kv F8E4M3 the oracle attends to the dequantised values.
  for (int g = 0; g < c.hkv; ++g) {
    x.k_scale.push_back(4.5f / (kascade::kE4M3Max / static_cast<float>(g + 2)));
    x.v_scale.push_back(3.7f / (kascade::kE4M3Max / static_cast<float>(g + 3)));
  }
  auto to_e4m3 = [&](float f, int g, const std::vector<float>& scale) {
    return kascade::float_to_e4m3(f / scale[static_cast<size_t>(g)]);
  };
  if (c.kv == kascade::DType::F8E4M3) {
    for (size_t i = 0; i < x.k.size(); ++i) {
      const int g = static_cast<int>(i / (static_cast<size_t>(c.n) * c.d));
      x.k[i] = kascade::dequantize_e4m3(to_e4m3(x.k[i], g, x.k_scale), x.k_scale[static_cast<size_t>(g)]);
      x.v[i] = kascade::dequantize_e4m3(to_e4m3(x.v[i], g, x.v_scale), x.v_scale[static_cast<size_t>(g)]);
    }
  }
  x.q_tokens.resize(x.q.size());
  for (int h = 0; h < c.hq; ++h) {
    for (int t = 0; t < c.nq; ++t) {
      for (int e = 0; e < c.d; ++e) {
        x.q_tokens[(static_cast<size_t>(t) * c.hq + h) * c.d + e] = x.q[(static_cast<size_t>(h) * c.nq + t) * c.d + e];
      }
    }
  }
  // Padding rows hold NaN: reading past n would show in the output.
  x.k_cache.assign(static_cast<size_t>(c.hkv) * x.capacity * c.d, NAN);
  x.v_cache.assign(x.k_cache.size(), NAN);
  for (int g = 0; g < c.hkv; ++g) {
    std::copy(x.k.begin() + static_cast<std::ptrdiff_t>(g) * c.n * c.d,
              x.k.begin() + static_cast<std::ptrdiff_t>(g + 1) * c.n * c.d,
              x.k_cache.begin() + static_cast<std::ptrdiff_t>(g) * x.capacity * c.d);
    std::copy(x.v.begin() + static_cast<std::ptrdiff_t>(g) * c.n * c.d,
              x.v.begin() + static_cast<std::ptrdiff_t>(g + 1) * c.n * c.d,
              x.v_cache.begin() + static_cast<std::ptrdiff_t>(g) * x.capacity * c.d);
  }
  for (float f : x.k_cache) x.k_cache_f16.push_back(kascade::float_to_f16(f));
  for (float f : x.v_cache) x.v_cache_f16.push_back(kascade::float_to_f16(f));
  for (size_t i = 0; i < x.k_cache.size(); ++i) {
    const int g = static_cast<int>(i / (static_cast<size_t>(x.capacity) * c.d));
    x.k_cache_f8.push_back(to_e4m3(x.k_cache[i], g, x.k_scale));  // NaN padding stays NaN
    x.v_cache_f8.push_back(to_e4m3(x.v_cache[i], g, x.v_scale));
  }
  return x;
}

void set_cache(const Case& c, const Data& x, cpu::AttentionView& view) {
  view.kv_type = c.kv;
  view.k = x.k_cache.data();
  view.v = x.v_cache.data();
  if (c.kv == kascade::DType::F16) {
    view.k = x.k_cache_f16.data();
    view.v = x.v_cache_f16.data();
  } else if (c.kv == kascade::DType::F8E4M3) {
    view.k = x.k_cache_f8.data();
    view.v = x.v_cache_f8.data();
    view.k_scale = x.k_scale.data();
    view.v_scale = x.v_scale.data();
  }
  view.kv_head_stride = static_cast<int64_t>(x.capacity) * c.d;
}

ref::Call make_call(const Case& c) {
  ref::Call call;
  call.phase = c.phase;
  call.role = c.role;
  call.params.rho = 0.1;
  call.params.k_min = 16;
  call.params.tile = 8;
  call.params.pooling = c.pooling;
  call.p0 = c.phase == Phase::Prefill ? c.n - c.nq : 0;
  call.head_map = c.role == Role::Reuse ? c.head_map : std::vector<int>{};
  return call;
}

// Runs the engine's attention on the engine layout; returns the output in the oracle's layout.
std::vector<float> run_engine(const Case& c, Data& x, const ref::Call& call, const ref::Selection* reuse,
                              cpu::ThreadPool* pool, ref::Selection* selection) {
  std::vector<float> out_tokens(x.q.size(), NAN);
  cpu::AttentionView view;
  view.hq = c.hq;
  view.hkv = c.hkv;
  view.nq = c.nq;
  view.n = c.n;
  view.d = c.d;
  view.q = x.q_tokens.data();
  view.q_head_stride = c.d;
  view.q_token_stride = static_cast<int64_t>(c.hq) * c.d;
  set_cache(c, x, view);
  view.out = out_tokens.data();
  view.out_head_stride = c.d;
  view.out_token_stride = view.q_token_stride;
  cpu::AttentionWorkspace ws;
  ref::Selection sel = cpu::attend(pool, ws, call, view, reuse);
  if (selection) *selection = sel;
  std::vector<float> out(x.q.size());
  for (int h = 0; h < c.hq; ++h) {
    for (int t = 0; t < c.nq; ++t) {
      for (int e = 0; e < c.d; ++e) {
        out[(static_cast<size_t>(h) * c.nq + t) * c.d + e] = out_tokens[(static_cast<size_t>(t) * c.hq + h) * c.d + e];
      }
    }
  }
  return out;
}

// Checks one case: the output against the oracle given the same selection (for anchors, the
// engine's own selection attended by the oracle's reuse role), the selection by covered mass.
void check_case(const Case& c, cpu::ThreadPool* pool, unsigned seed) {
  SCOPED_TRACE(std::string(kascade::to_string(c.role)) + " " + kascade::to_string(c.phase) + " n=" +
               std::to_string(c.n) + " nq=" + std::to_string(c.nq) + " pooling=" + kascade::to_string(c.pooling) +
               " cache " + kascade::dtype_name(c.kv) + (pool ? " threaded" : " serial"));
  Data x = make_data(c, seed);
  const ref::Call call = make_call(c);
  const double tolerance = ref::output_tolerance(kascade::DType::F32);
  if (c.role == Role::Reuse) {
    // The selection of an anchor call with the same shape, reused through the head map.
    ref::Call anchor = call;
    anchor.role = Role::Anchor;
    anchor.head_map.clear();
    const ref::Result a = ref::attend(anchor, x.q.data(), x.k.data(), x.v.data(), c.hq, c.hkv, c.nq, c.n, c.d);
    const ref::Result expected =
        ref::attend(call, x.q.data(), x.k.data(), x.v.data(), c.hq, c.hkv, c.nq, c.n, c.d, &a.selection);
    const std::vector<float> out = run_engine(c, x, call, &a.selection, pool, nullptr);
    EXPECT_EQ(ref::check_close("reuse output", expected.out.data(), out.data(), out.size(), tolerance), "");
    return;
  }
  ref::Selection selection;
  const std::vector<float> out = run_engine(c, x, call, nullptr, pool, &selection);
  const ref::Result expected = ref::attend(call, x.q.data(), x.k.data(), x.v.data(), c.hq, c.hkv, c.nq, c.n, c.d);
  const ref::Pooled pooled = ref::pooled_mass(call, x.q.data(), x.k.data(), c.hq, c.hkv, c.nq, c.n, c.d);
  if (kascade::role_selects(c.role)) {
    EXPECT_EQ(ref::compare_selections(pooled, expected.selection, selection), "");
  } else {
    EXPECT_EQ(selection.num_sets, 0);
  }
  if (c.role == Role::Dense || c.role == Role::Layer0) {
    EXPECT_EQ(ref::check_close("dense output", expected.out.data(), out.data(), out.size(), tolerance), "");
    return;
  }
  ref::Call same = call;
  same.role = Role::Reuse;
  const ref::Result given =
      ref::attend(same, x.q.data(), x.k.data(), x.v.data(), c.hq, c.hkv, c.nq, c.n, c.d, &selection);
  EXPECT_EQ(ref::check_close("anchor output", given.out.data(), out.data(), out.size(), tolerance), "");
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (Role role : {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse}) {
    for (Pooling pooling : {Pooling::Group, Pooling::All}) {
      Case decode;
      decode.role = role;
      decode.pooling = pooling;
      decode.head_map = {1, 1};
      cases.push_back(decode);
      Case fresh = decode;  // a fresh prompt: p0 = 0, the last tile partial (61 = 7 * 8 + 5)
      fresh.phase = Phase::Prefill;
      fresh.n = 61;
      fresh.nq = 61;
      cases.push_back(fresh);
      Case continued = fresh;  // a chunk after 200 cached tokens, budgets above k_min
      continued.n = 261;
      continued.nq = 61;
      cases.push_back(continued);
    }
  }
  Case tiny;  // fewer keys than k_min: the selection is every key, the anchor equals dense
  tiny.n = 9;
  tiny.d = 3;
  cases.push_back(tiny);
  return cases;
}

TEST(CpuAttention, EveryRoleMatchesTheOracleSerialAndThreaded) {
  cpu::ThreadPool pool(3);
  for (kascade::DType kv : {kascade::DType::F32, kascade::DType::F16, kascade::DType::F8E4M3}) {
    unsigned seed = 1;
    for (Case c : all_cases()) {
      c.kv = kv;
      check_case(c, nullptr, seed);
      check_case(c, &pool, seed);
      ++seed;
    }
  }
}

TEST(CpuAttention, LongDecodeRowsMatchTheOracle) {
  cpu::ThreadPool pool(2);
  Case c;
  c.hq = 9;
  c.hkv = 3;
  c.d = 64;
  c.n = 4099;
  for (kascade::DType kv : {kascade::DType::F32, kascade::DType::F16}) {
    for (Role role : {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse}) {
      c.role = role;
      c.kv = kv;
      c.head_map = {2, 0, 1};
      check_case(c, &pool, 77);
    }
  }
}

TEST(CpuAttention, LongPrefillOverAnF16CacheMatchesTheOracle) {
  // Blocked dense prefill and anchor tiles over more keys than one block, head dim 64.
  cpu::ThreadPool pool(2);
  Case c;
  c.hq = 9;
  c.hkv = 3;
  c.d = 64;
  c.n = 700;
  c.nq = 100;
  c.phase = Phase::Prefill;
  c.kv = kascade::DType::F16;
  for (Role role : {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse}) {
    c.role = role;
    c.head_map = {1, 2, 0};
    check_case(c, &pool, 78);
  }
}

// An e4m3 cache attends exactly as the f32 cache of its dequantised values: the same fp32
// arithmetic on the same numbers, every role, decode and prefill, short and long, bit for bit.
TEST(CpuAttention, Fp8CacheEqualsTheF32CacheOfItsDequantisedValues) {
  cpu::ThreadPool pool(2);
  std::vector<Case> cases = all_cases();
  Case long_decode;
  long_decode.hq = 9;
  long_decode.hkv = 3;
  long_decode.d = 64;
  long_decode.n = 4099;
  Case long_prefill = long_decode;
  long_prefill.n = 700;
  long_prefill.nq = 100;
  long_prefill.phase = Phase::Prefill;
  for (Role role : {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse}) {
    for (Case c : {long_decode, long_prefill}) {
      c.role = role;
      c.head_map = {2, 0, 1};
      cases.push_back(c);
    }
  }
  unsigned seed = 40;
  for (Case c : cases) {
    SCOPED_TRACE(std::string(kascade::to_string(c.role)) + " " + kascade::to_string(c.phase) + " n=" +
                 std::to_string(c.n) + " nq=" + std::to_string(c.nq));
    c.kv = kascade::DType::F8E4M3;
    Data x = make_data(c, seed++);
    const ref::Call call = make_call(c);
    ref::Selection reuse;
    if (c.role == Role::Reuse) {  // an anchor's selection over the same cache
      Case anchor = c;
      anchor.role = Role::Anchor;
      run_engine(anchor, x, make_call(anchor), nullptr, &pool, &reuse);
    }
    const ref::Selection* reuse_ptr = c.role == Role::Reuse ? &reuse : nullptr;
    ref::Selection sel_fp8, sel_f32;
    const std::vector<float> fp8 = run_engine(c, x, call, reuse_ptr, &pool, &sel_fp8);
    Case f32 = c;
    f32.kv = kascade::DType::F32;
    const std::vector<float> from_f32 = run_engine(f32, x, call, reuse_ptr, &pool, &sel_f32);
    ASSERT_EQ(fp8.size(), from_f32.size());
    for (size_t i = 0; i < fp8.size(); ++i) ASSERT_EQ(fp8[i], from_f32[i]) << "output element " << i;
    EXPECT_EQ(sel_fp8.index, sel_f32.index);
  }
}

TEST(CpuAttention, Fp8CacheWithoutScalesIsRejected) {
  Case c;
  c.kv = kascade::DType::F8E4M3;
  Data x = make_data(c, 8);
  EXPECT_NO_THROW(run_engine(c, x, make_call(c), nullptr, nullptr, nullptr));
  x.v_scale.clear();
  x.v_scale.shrink_to_fit();  // data() null
  try {
    run_engine(c, x, make_call(c), nullptr, nullptr, nullptr);
    FAIL() << "an f8e4m3 cache without v_scale was read";
  } catch (const kascade::Error& e) {
    EXPECT_NE(std::string(e.what()).find("an f8e4m3 cache needs k_scale and v_scale"), std::string::npos) << e.what();
  }
}

TEST(CpuAttention, CheckFiniteNamesTheTensorAndRow) {
  for (kascade::DType kv : {kascade::DType::F32, kascade::DType::F16, kascade::DType::F8E4M3}) {
    SCOPED_TRACE(kascade::dtype_name(kv));
    Case c;
    c.kv = kv;
    Data x = make_data(c, 5);
    cpu::AttentionView view;
    view.hq = c.hq;
    view.hkv = c.hkv;
    view.nq = 1;
    view.n = c.n;
    view.d = c.d;
    view.q = x.q_tokens.data();
    view.q_head_stride = c.d;
    view.q_token_stride = static_cast<int64_t>(c.hq) * c.d;
    set_cache(c, x, view);
    EXPECT_NO_THROW(cpu::check_finite(view, "test"));  // the NaN padding past n is not read
    const size_t at = (static_cast<size_t>(1) * x.capacity + 17) * c.d + 3;
    x.v_cache[at] = INFINITY;
    x.v_cache_f16[at] = kascade::float_to_f16(INFINITY);
    x.v_cache_f8[at] = kascade::kE4M3NanCode;  // e4m3 has no infinity
    try {
      cpu::check_finite(view, "test");
      FAIL() << "an infinite value passed";
    } catch (const kascade::Error& e) {
      EXPECT_NE(std::string(e.what()).find("values of head 1 at row 17"), std::string::npos) << e.what();
    }
  }
}

TEST(CpuAttention, RejectsACacheTypeItDoesNotRead) {
  Case c;
  Data x = make_data(c, 6);
  cpu::AttentionView view;
  view.hq = c.hq;
  view.hkv = c.hkv;
  view.nq = 1;
  view.n = c.n;
  view.d = c.d;
  view.q = x.q_tokens.data();
  view.q_head_stride = c.d;
  view.q_token_stride = static_cast<int64_t>(c.hq) * c.d;
  set_cache(c, x, view);
  view.kv_type = kascade::DType::BF16;
  std::vector<float> out(x.q.size());
  view.out = out.data();
  view.out_head_stride = c.d;
  view.out_token_stride = view.q_token_stride;
  cpu::AttentionWorkspace ws;
  try {
    cpu::attend(nullptr, ws, make_call(c), view, nullptr);
    FAIL() << "a bf16 cache was read";
  } catch (const kascade::Error& e) {
    EXPECT_NE(std::string(e.what()).find("type bf16 (supported: f32, f16, f8e4m3)"), std::string::npos) << e.what();
  }
}

TEST(CpuAttention, SharedPoolRunsEveryTaskOnceAndRethrows) {
  std::vector<int> hits(1000, 0);
  cpu::parallel_for_shared(2, 1000, [&](int i) { ++hits[static_cast<size_t>(i)]; });
  for (int h : hits) EXPECT_EQ(h, 1);
  EXPECT_THROW(cpu::parallel_for_shared(2, 10,
                                        [](int i) {
                                          if (i == 7) throw kascade::Error("task 7");
                                        }),
               kascade::Error);
}

}  // namespace
