// tests/gpu/decode_cases.cpp — decode roles (dense, layer0, anchor, reuse) against the CPU oracle.
//
// Each case builds a ragged batch over a shuffled paged KV cache, runs one decode call through the
// public API (kascade/attention.h) and checks, under SPEC 7:
//   - outputs: relative L2 error against kascade::ref given the same selection (for anchor and
//     reuse the oracle's reuse path is fed the selection the GPU used), no NaN/Inf, every element
//     written (poisoned buffers), nothing written outside (guard regions);
//   - selections (layer0, anchor): well formed, counts = k(n), covered pooled mass within 1e-3 of
//     the oracle's selection (kascade::ref::compare_selections);
//   - determinism: a second run gives bitwise identical outputs and selections.
// The graph case captures all four roles in a CUDA graph, then replays it after changing the
// sequence lengths and page tables in device memory.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>

#include "gpu_test.h"
#include "kascade/attention.h"
#include "kascade/budget.h"
#include "kascade/reference.h"

namespace kascade::gpu_test {
namespace {

struct DecodeSpec {
  Role role = Role::Dense;
  DType dtype = DType::BF16;
  int head_dim = 128;
  int hq = 8;
  int hkv = 2;
  int page_size = 16;      // 0: contiguous (one page of max length per sequence)
  bool interleaved = false;  // K and V in one pool [pages, 2, P, Hkv, D]
  std::vector<int> lens;
  double rho = 0.1;
  int k_min = 128;
  int k_multiple = 1;
  Pooling pooling = Pooling::Group;
  bool remap_heads = false;  // reuse: a non-identity head map
  float scale = NAN;
  float q_amplitude = 2.5f;  // 0: every logit is 0, all keys tie (the top-k's tie-breaking path)
  uint64_t seed = 1;
};

std::string describe(const DecodeSpec& s) {
  std::ostringstream os;
  os << "type=" << dtype_name(s.dtype) << ",D=" << s.head_dim << ",hq=" << s.hq << ",hkv=" << s.hkv
     << ",page=" << (s.page_size == 0 ? std::string("contiguous") : std::to_string(s.page_size))
     << (s.interleaved ? ",interleaved" : "") << ",lens=[";
  for (size_t i = 0; i < s.lens.size(); ++i) os << (i ? " " : "") << s.lens[i];
  os << "],rho=" << s.rho << ",k_min=" << s.k_min;
  if (s.k_multiple != 1) os << ",k_multiple=" << s.k_multiple;
  os << ",pool=" << to_string(s.pooling);
  if (s.remap_heads) os << ",map=permuted";
  if (!std::isnan(s.scale)) os << ",scale=" << s.scale;
  if (s.q_amplitude != 2.5f) os << ",q_amp=" << s.q_amplitude;
  os << ",seed=" << s.seed;
  return os.str();
}

// A paged KV cache on host and device: pages in shuffled order, K and V split or interleaved.
struct PagedCache {
  DType dtype;
  int batch = 0, hkv = 0, head_dim = 0, page_size = 0;
  int64_t num_pages = 0;
  bool shuffle_pages = true;
  std::vector<int32_t> lens, page_indptr, page_indices;
  std::vector<uint16_t> pool;  // K pool then V pool (split), or the interleaved pool
  int64_t page_stride = 0, token_stride = 0, head_stride = 0, v_offset = 0;
  DeviceBuffer d_pool, d_indptr, d_indices, d_lens;

  // Allocates the pools (room for `pages_capacity` pages, at least what `seq_lens` needs) with random
  // values and installs a page table for `seq_lens`.
  void build(const DecodeSpec& s, const std::vector<int>& seq_lens, int64_t pages_capacity, std::mt19937_64& rng) {
    dtype = s.dtype;
    hkv = s.hkv;
    head_dim = s.head_dim;
    const int max_len = *std::max_element(seq_lens.begin(), seq_lens.end());
    page_size = s.page_size == 0 ? max_len : s.page_size;
    shuffle_pages = s.page_size != 0;
    int64_t needed = 0;
    for (int n : seq_lens) needed += (n + page_size - 1) / page_size;
    num_pages = std::max<int64_t>(pages_capacity, needed + 3);  // spare pages stay unread
    head_stride = head_dim;
    token_stride = static_cast<int64_t>(hkv) * head_dim;
    const int64_t page_elems = token_stride * page_size;
    page_stride = s.interleaved ? 2 * page_elems : page_elems;
    v_offset = s.interleaved ? page_elems : num_pages * page_elems;
    const size_t total = static_cast<size_t>(num_pages) * page_elems * 2;
    pool = random_storage(dtype, total, 1.0f, rng).bits;
    d_pool = DeviceBuffer(total * sizeof(uint16_t));
    d_pool.upload(pool.data(), total * sizeof(uint16_t));
    d_indptr = DeviceBuffer((seq_lens.size() + 1) * sizeof(int32_t));
    d_indices = DeviceBuffer(static_cast<size_t>(num_pages) * sizeof(int32_t));
    d_lens = DeviceBuffer(seq_lens.size() * sizeof(int32_t));
    repage(seq_lens, rng);
  }

  // A new page table (a fresh random choice and order of pages) for new lengths, uploaded into the
  // same device buffers: what an engine does between decode steps.
  void repage(const std::vector<int>& seq_lens, std::mt19937_64& rng) {
    batch = static_cast<int>(seq_lens.size());
    lens.assign(seq_lens.begin(), seq_lens.end());
    page_indptr.assign(1, 0);
    for (int n : seq_lens) page_indptr.push_back(page_indptr.back() + (n + page_size - 1) / page_size);
    KASCADE_CHECK(page_indptr.back() <= num_pages, "test cache: " << page_indptr.back() << " pages needed, "
                                                                   << num_pages << " allocated");
    std::vector<int32_t> order(num_pages);
    std::iota(order.begin(), order.end(), 0);
    if (shuffle_pages) std::shuffle(order.begin(), order.end(), rng);
    page_indices.assign(order.begin(), order.begin() + page_indptr.back());
    d_indptr.upload(page_indptr.data(), page_indptr.size() * sizeof(int32_t));
    d_indices.upload(page_indices.data(), page_indices.size() * sizeof(int32_t));
    d_lens.upload(lens.data(), lens.size() * sizeof(int32_t));
  }

  PagedKV view(const void* base, const int32_t* indptr, const int32_t* indices, const int32_t* seq_lens) const {
    PagedKV kv;
    kv.k = base;
    kv.v = static_cast<const uint16_t*>(base) + v_offset;
    kv.dtype = dtype;
    kv.batch = batch;
    kv.num_kv_heads = hkv;
    kv.head_dim = head_dim;
    kv.page_size = page_size;
    kv.page_stride = page_stride;
    kv.token_stride = token_stride;
    kv.head_stride = head_stride;
    kv.page_indptr = indptr;
    kv.page_indices = indices;
    kv.seq_lens = seq_lens;
    return kv;
  }
  PagedKV host_view() const { return view(pool.data(), page_indptr.data(), page_indices.data(), lens.data()); }
  PagedKV device_view() const {
    return view(d_pool.get(), static_cast<const int32_t*>(d_indptr.get()), static_cast<const int32_t*>(d_indices.get()),
                static_cast<const int32_t*>(d_lens.get()));
  }
};

SparsityParams sparsity_of(const DecodeSpec& s) {
  SparsityParams p;
  p.rho = s.rho;
  p.k_min = s.k_min;
  p.k_multiple = s.k_multiple;
  p.pooling = s.pooling;
  p.scale = s.scale;
  return p;
}

// The GPU selection buffer [B, S, 1, k_max] as one oracle Selection per sequence.
std::vector<ref::Selection> split_selection(const std::vector<int32_t>& indices, const std::vector<int32_t>& counts,
                                            int batch, int sets, int64_t k_max) {
  std::vector<ref::Selection> out;
  for (int b = 0; b < batch; ++b) {
    ref::Selection sel = ref::Selection::empty(sets, 1, static_cast<int>(k_max));
    for (int s = 0; s < sets; ++s) {
      sel.count[s] = counts[static_cast<size_t>(b) * sets + s];
      std::copy_n(indices.begin() + (static_cast<size_t>(b) * sets + s) * k_max, k_max, sel.row(s, 0));
    }
    out.push_back(std::move(sel));
  }
  return out;
}

// A random valid selection of k(n) keys per (sequence, set), as a reuse layer receives it.
void random_selection(const std::vector<int32_t>& lens, const SparsityParams& sp, int sets, int64_t k_max,
                      std::mt19937_64& rng, std::vector<int32_t>& indices, std::vector<int32_t>& counts) {
  const int batch = static_cast<int>(lens.size());
  indices.assign(static_cast<size_t>(batch) * sets * k_max, -1);
  counts.assign(static_cast<size_t>(batch) * sets, 0);
  for (int b = 0; b < batch; ++b) {
    const int n = lens[b];
    const int k = static_cast<int>(budget_k(n, sp.rho, sp.k_min, sp.k_multiple));
    std::vector<int32_t> all(n);
    std::iota(all.begin(), all.end(), 0);
    for (int s = 0; s < sets; ++s) {
      std::shuffle(all.begin(), all.end(), rng);
      std::vector<int32_t> pick(all.begin(), all.begin() + k);
      std::sort(pick.begin(), pick.end());
      std::copy(pick.begin(), pick.end(), indices.begin() + (static_cast<size_t>(b) * sets + s) * k_max);
      counts[static_cast<size_t>(b) * sets + s] = k;
    }
  }
}

// Compares the GPU's selections with the oracle's by covered pooled mass, sequence by sequence.
std::string compare_decode_selections(const ref::Call& anchor_call, const std::vector<float>& q, int hq,
                                      const PagedCache& cache, const std::vector<ref::Selection>& expected,
                                      const std::vector<ref::Selection>& actual) {
  const int d = cache.head_dim;
  std::vector<float> k, v;
  for (int b = 0; b < cache.batch; ++b) {
    ref::gather_sequence(cache.host_view(), b, k, v);
    const ref::Pooled pooled = ref::pooled_mass(anchor_call, q.data() + static_cast<size_t>(b) * hq * d, k.data(), hq,
                                                cache.hkv, 1, cache.lens[b], d);
    const std::string diff = ref::compare_selections(pooled, expected[b], actual[b]);
    if (!diff.empty()) return "sequence " + std::to_string(b) + " (n=" + std::to_string(cache.lens[b]) + "): " + diff;
  }
  return "";
}

// Buffers and results of one decode call.
struct DecodeRun {
  std::vector<float> out;
  std::vector<int32_t> sel_indices, sel_counts;
};

class DecodeCase : public TestCase {
 public:
  explicit DecodeCase(DecodeSpec spec) : s_(std::move(spec)) {}
  std::string op() const override { return std::string("decode_") + to_string(s_.role); }
  std::string vars() const override { return describe(s_); }

  CaseResult run() override {
    const int max_len = *std::max_element(s_.lens.begin(), s_.lens.end());
    DecodeShape shape{static_cast<int>(s_.lens.size()), s_.hq, s_.hkv, s_.head_dim, s_.dtype, max_len + 5};
    const char* why = nullptr;
    if (!decode_supports(shape, &why)) return CaseResult::unsupported(why);
    std::mt19937_64 rng(s_.seed);
    const SparsityParams sp = sparsity_of(s_);
    const int batch = shape.batch, d = s_.head_dim;
    // Queries of amplitude 2.5 give peaked but not one-hot attention (logit std ~2.5).
    const StorageArray q = random_storage(s_.dtype, static_cast<size_t>(batch) * s_.hq * d, s_.q_amplitude, rng);
    PagedCache cache;
    cache.build(s_, s_.lens, 0, rng);

    const Selection geometry = decode_selection(shape, sp);
    const int sets = geometry.num_sets;
    const int64_t k_max = geometry.k_max;
    const size_t out_elems = static_cast<size_t>(batch) * s_.hq * d;
    DeviceBuffer d_q(q.bits.size() * 2);
    d_q.upload(q.bits.data(), q.bits.size() * 2);
    GuardedBuffer d_out(out_elems * 2);
    GuardedBuffer d_sel(static_cast<size_t>(batch) * sets * k_max * sizeof(int32_t));
    GuardedBuffer d_counts(static_cast<size_t>(batch) * sets * sizeof(int32_t));
    const size_t ws_bytes = decode_workspace_size(shape, s_.role, sp);
    DeviceBuffer d_ws(ws_bytes);

    // Reuse input: a random selection and (optionally) a permuted head map.
    std::vector<int32_t> reuse_indices, reuse_counts, head_map;
    DeviceBuffer d_map(static_cast<size_t>(s_.hkv) * sizeof(int32_t));
    if (s_.role == Role::Reuse) {
      random_selection(cache.lens, sp, sets, k_max, rng, reuse_indices, reuse_counts);
      KASCADE_CUDA_CHECK(cudaMemcpy(d_sel.get(), reuse_indices.data(), reuse_indices.size() * 4, cudaMemcpyHostToDevice));
      KASCADE_CUDA_CHECK(cudaMemcpy(d_counts.get(), reuse_counts.data(), reuse_counts.size() * 4, cudaMemcpyHostToDevice));
      head_map.resize(s_.hkv);
      for (int g = 0; g < s_.hkv; ++g) {
        head_map[g] = s_.remap_heads ? static_cast<int32_t>(rng() % static_cast<uint64_t>(s_.hkv)) : g;
      }
      d_map.upload(head_map.data(), head_map.size() * sizeof(int32_t));
    }

    DecodeTensors t;
    t.q = d_q.get();
    t.out = d_out.get();
    t.kv = cache.device_view();
    t.num_q_heads = s_.hq;
    const Selection sel = selection_on(geometry, d_sel.get(), d_counts.get());
    auto launch = [&]() {
      const Workspace ws{d_ws.get(), ws_bytes};
      switch (s_.role) {
        case Role::Dense: decode_dense(t, shape, sp, ws, nullptr); break;
        case Role::Layer0: decode_layer0(t, shape, sp, sel, ws, nullptr); break;
        case Role::Anchor: decode_anchor(t, shape, sp, sel, ws, nullptr); break;
        case Role::Reuse:
          decode_reuse(t, shape, sp, sel, s_.remap_heads ? static_cast<const int32_t*>(d_map.get()) : nullptr, ws,
                       nullptr);
          break;
      }
      KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
    };
    auto collect = [&]() {
      DecodeRun r;
      std::vector<uint16_t> out_bits(out_elems);
      d_out.download(out_bits.data(), out_elems * 2);
      r.out = widen(s_.dtype, out_bits);
      r.sel_indices.resize(static_cast<size_t>(batch) * sets * k_max);
      r.sel_counts.resize(static_cast<size_t>(batch) * sets);
      d_sel.download(r.sel_indices.data(), r.sel_indices.size() * 4);
      d_counts.download(r.sel_counts.data(), r.sel_counts.size() * 4);
      return r;
    };

    launch();
    const DecodeRun first = collect();
    for (const GuardedBuffer* buf : {&d_out, &d_sel, &d_counts}) {
      const std::string guard = buf->check_guards(buf == &d_out ? "out" : buf == &d_sel ? "selection" : "counts");
      if (!guard.empty()) return CaseResult::fail(guard);
    }
    d_out.poison();
    if (s_.role == Role::Layer0 || s_.role == Role::Anchor) {
      d_sel.poison();
      d_counts.poison();
    }
    launch();
    const DecodeRun second = collect();
    if (std::memcmp(first.out.data(), second.out.data(), first.out.size() * sizeof(float)) != 0 ||
        first.sel_indices != second.sel_indices || first.sel_counts != second.sel_counts) {
      return CaseResult::fail("a repeated run is not bitwise identical");
    }

    // The oracle.
    ref::Call call;
    call.phase = Phase::Decode;
    call.params = sp;
    const std::vector<float> q_ref = q.values;
    const double tolerance = ref::output_tolerance(s_.dtype);
    const PagedKV host_kv = cache.host_view();
    if (s_.role == Role::Dense || s_.role == Role::Layer0) {
      call.role = s_.role;
      const ref::BatchResult expected = ref::decode_batch(call, q_ref.data(), s_.hq, host_kv);
      const std::string close = ref::check_close("out", expected.out.data(), first.out.data(), out_elems, tolerance);
      if (!close.empty()) return CaseResult::fail(close);
      if (s_.role == Role::Dense) return CaseResult::pass();
      const auto actual = split_selection(first.sel_indices, first.sel_counts, batch, sets, k_max);
      ref::Call anchor_call = call;
      anchor_call.role = Role::Anchor;
      const std::string diff =
          compare_decode_selections(anchor_call, q_ref, s_.hq, cache, expected.selections, actual);
      return diff.empty() ? CaseResult::pass() : CaseResult::fail("selection: " + diff);
    }
    if (s_.role == Role::Anchor) {
      call.role = Role::Anchor;
      const ref::BatchResult expected = ref::decode_batch(call, q_ref.data(), s_.hq, host_kv);
      const auto actual = split_selection(first.sel_indices, first.sel_counts, batch, sets, k_max);
      const std::string diff = compare_decode_selections(call, q_ref, s_.hq, cache, expected.selections, actual);
      if (!diff.empty()) return CaseResult::fail("selection: " + diff);
      // The output, given the selection the GPU made: the oracle's reuse path with the identity map.
      ref::Call reuse_call = call;
      reuse_call.role = Role::Reuse;
      const ref::BatchResult given = ref::decode_batch(reuse_call, q_ref.data(), s_.hq, host_kv, &actual);
      const std::string close = ref::check_close("out", given.out.data(), first.out.data(), out_elems, tolerance);
      return close.empty() ? CaseResult::pass() : CaseResult::fail(close);
    }
    call.role = Role::Reuse;
    call.head_map.assign(head_map.begin(), head_map.end());
    const auto input = split_selection(reuse_indices, reuse_counts, batch, sets, k_max);
    const ref::BatchResult expected = ref::decode_batch(call, q_ref.data(), s_.hq, host_kv, &input);
    const std::string close = ref::check_close("out", expected.out.data(), first.out.data(), out_elems, tolerance);
    return close.empty() ? CaseResult::pass() : CaseResult::fail(close);
  }

 private:
  DecodeSpec s_;
};

// Layer 0 and a reuse layer captured once in a CUDA graph, replayed with new lengths and page tables.
// Every role captured once in a CUDA graph (layer 0 -> reuse of its selection through a head
// map -> an anchor with its own selection -> dense), replayed after changing the sequence lengths
// and the page tables in device memory; each replay is compared with the oracle.
class DecodeGraphCase : public TestCase {
 public:
  std::string op() const override { return "decode_graph"; }
  std::string vars() const override {
    return "type=bf16,D=128,hq=8,hkv=2,page=16,lens=[3000 17 1200]->[2100 4000 130],roles=layer0,reuse,anchor,dense,seed=7";
  }

  CaseResult run() override {
    std::mt19937_64 rng(7);
    DecodeSpec s;
    s.hq = 8;
    s.hkv = 2;
    const std::vector<std::vector<int>> steps = {{3000, 17, 1200}, {2100, 4000, 130}};
    const int max_len = 4096;
    const int batch = 3, d = s.head_dim, hq = s.hq;
    DecodeShape shape{batch, s.hq, s.hkv, d, s.dtype, max_len};
    const SparsityParams sp = sparsity_of(s);
    const double tol = ref::output_tolerance(s.dtype);
    const int64_t capacity_pages = 3 * max_len / s.page_size + 8;
    // Two layers' caches. Both read cache A's page-table buffers (one table per step, as an engine
    // keeps it); cache B's pool holds different values at the same pages.
    PagedCache cache_a, cache_b;
    cache_a.build(s, steps[0], capacity_pages, rng);
    cache_b.build(s, steps[0], capacity_pages, rng);
    auto share_table = [&]() {
      cache_b.batch = cache_a.batch;
      cache_b.lens = cache_a.lens;
      cache_b.page_indptr = cache_a.page_indptr;
      cache_b.page_indices = cache_a.page_indices;
    };
    share_table();
    const size_t q_elems = static_cast<size_t>(batch) * hq * d;
    std::vector<StorageArray> q;
    std::vector<std::unique_ptr<DeviceBuffer>> d_q;
    std::vector<std::unique_ptr<GuardedBuffer>> d_out;
    for (int layer = 0; layer < 4; ++layer) {
      q.push_back(random_storage(s.dtype, q_elems, 2.5f, rng));
      d_q.push_back(std::make_unique<DeviceBuffer>(q_elems * 2));
      d_q.back()->upload(q.back().bits.data(), q_elems * 2);
      d_out.push_back(std::make_unique<GuardedBuffer>(q_elems * 2));
    }
    const Selection geometry = decode_selection(shape, sp);
    const int sets = geometry.num_sets;
    const int64_t k_max = geometry.k_max;
    const size_t sel_bytes = static_cast<size_t>(batch) * sets * k_max * 4, count_bytes = static_cast<size_t>(batch) * sets * 4;
    GuardedBuffer d_sel0(sel_bytes), d_counts0(count_bytes), d_sel2(sel_bytes), d_counts2(count_bytes);
    const std::vector<int32_t> head_map = {1, 1};
    DeviceBuffer d_map(head_map.size() * 4);
    d_map.upload(head_map.data(), head_map.size() * 4);
    size_t ws_bytes = 0;
    for (Role role : {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse}) {
      ws_bytes = std::max(ws_bytes, decode_workspace_size(shape, role, sp));
    }
    DeviceBuffer d_ws(ws_bytes);
    const Workspace ws{d_ws.get(), ws_bytes};
    const Selection sel0 = selection_on(geometry, d_sel0.get(), d_counts0.get());
    const Selection sel2 = selection_on(geometry, d_sel2.get(), d_counts2.get());
    // Layers 0 and 3 read cache A, layers 1 and 2 cache B.
    auto tensors = [&](int layer) {
      DecodeTensors t;
      t.q = d_q[layer]->get();
      t.out = d_out[layer]->get();
      t.kv = cache_a.device_view();
      if (layer == 1 || layer == 2) {
        t.kv.k = cache_b.d_pool.get();
        t.kv.v = static_cast<const uint16_t*>(cache_b.d_pool.get()) + cache_b.v_offset;
      }
      t.num_q_heads = hq;
      return t;
    };
    auto output = [&](int layer) {
      std::vector<uint16_t> bits(q_elems);
      d_out[layer]->download(bits.data(), q_elems * 2);
      return widen(s.dtype, bits);
    };
    auto selection = [&](const GuardedBuffer& indices_buf, const GuardedBuffer& counts_buf) {
      std::vector<int32_t> indices(static_cast<size_t>(batch) * sets * k_max), counts(static_cast<size_t>(batch) * sets);
      indices_buf.download(indices.data(), indices.size() * 4);
      counts_buf.download(counts.data(), counts.size() * 4);
      return split_selection(indices, counts, batch, sets, k_max);
    };
    auto check_step = [&]() -> std::string {
      ref::Call call;
      call.params = sp;
      call.role = Role::Layer0;
      ref::Call anchor_call = call;
      anchor_call.role = Role::Anchor;
      ref::Call reuse_call = call;
      reuse_call.role = Role::Reuse;
      // Layer 0: dense output and its selection.
      const ref::BatchResult dense0 = ref::decode_batch(call, q[0].values.data(), hq, cache_a.host_view());
      std::string problem = ref::check_close("layer0 out", dense0.out.data(), output(0).data(), q_elems, tol);
      const auto actual0 = selection(d_sel0, d_counts0);
      if (problem.empty()) problem = compare_decode_selections(anchor_call, q[0].values, hq, cache_a, dense0.selections, actual0);
      if (!problem.empty()) return "layer 0: " + problem;
      // Layer 1: reuse of layer 0's selection through the head map.
      reuse_call.head_map.assign(head_map.begin(), head_map.end());
      const ref::BatchResult reused = ref::decode_batch(reuse_call, q[1].values.data(), hq, cache_b.host_view(), &actual0);
      problem = ref::check_close("reuse out", reused.out.data(), output(1).data(), q_elems, tol);
      if (!problem.empty()) return "layer 1: " + problem;
      // Layer 2: an anchor's selection, and its output given that selection.
      const ref::BatchResult anchor = ref::decode_batch(anchor_call, q[2].values.data(), hq, cache_b.host_view());
      const auto actual2 = selection(d_sel2, d_counts2);
      problem = compare_decode_selections(anchor_call, q[2].values, hq, cache_b, anchor.selections, actual2);
      if (!problem.empty()) return "layer 2 selection: " + problem;
      reuse_call.head_map.clear();
      const ref::BatchResult given = ref::decode_batch(reuse_call, q[2].values.data(), hq, cache_b.host_view(), &actual2);
      problem = ref::check_close("anchor out", given.out.data(), output(2).data(), q_elems, tol);
      if (!problem.empty()) return "layer 2: " + problem;
      // Layer 3: dense.
      const ref::BatchResult dense3 = ref::decode_batch(call, q[3].values.data(), hq, cache_a.host_view());
      problem = ref::check_close("dense out", dense3.out.data(), output(3).data(), q_elems, tol);
      return problem.empty() ? "" : "layer 3: " + problem;
    };

    cudaStream_t stream;
    KASCADE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    std::string failure;
    try {
      KASCADE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      decode_layer0(tensors(0), shape, sp, sel0, ws, stream);
      decode_reuse(tensors(1), shape, sp, sel0, static_cast<const int32_t*>(d_map.get()), ws, stream);
      decode_anchor(tensors(2), shape, sp, sel2, ws, stream);
      decode_dense(tensors(3), shape, sp, ws, stream);
      KASCADE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      KASCADE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      for (size_t step = 0; step < steps.size() && failure.empty(); ++step) {
        if (step > 0) {
          cache_a.repage(steps[step], rng);
          share_table();
        }
        for (auto& out : d_out) out->poison();
        d_sel0.poison();
        d_sel2.poison();
        KASCADE_CUDA_CHECK(cudaGraphLaunch(exec, stream));
        KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream));
        failure = check_step();
        if (!failure.empty()) failure = "step " + std::to_string(step) + ", " + failure;
      }
    } catch (...) {
      if (exec) cudaGraphExecDestroy(exec);
      if (graph) cudaGraphDestroy(graph);
      cudaStreamDestroy(stream);
      throw;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
    return failure.empty() ? CaseResult::pass() : CaseResult::fail(failure);
  }
};

// API misuse must throw kascade::Error with a message, before any launch.
class DecodeApiErrorsCase : public TestCase {
 public:
  std::string op() const override { return "decode_api_errors"; }
  std::string vars() const override { return "workspace too small, head dim 96, group 16, selection too small"; }
  CaseResult run() override {
    SparsityParams sp;
    DecodeShape shape{2, 8, 2, 128, DType::BF16, 1000};
    auto expect_error = [](const char* what, auto&& fn) -> std::string {
      try {
        fn();
      } catch (const Error& e) {
        if (std::string(e.what()).empty()) return std::string(what) + ": empty message";
        return "";
      }
      return std::string(what) + ": no error";
    };
    DecodeTensors t;  // null pointers: the checks must fire before any launch
    std::string problem = expect_error("workspace", [&] { decode_dense(t, shape, sp, {nullptr, 0}, nullptr); });
    DecodeShape bad_dim = shape;
    bad_dim.head_dim = 96;
    if (problem.empty()) problem = expect_error("head dim", [&] { (void)decode_workspace_size(bad_dim, Role::Dense, sp); });
    DecodeShape bad_group{1, 32, 2, 128, DType::BF16, 100};
    if (problem.empty()) problem = expect_error("group", [&] { (void)decode_workspace_size(bad_group, Role::Dense, sp); });
    if (problem.empty()) {
      problem = expect_error("selection", [&] {
        Selection sel = decode_selection(shape, sp);
        sel.k_max -= 1;  // one key short of budget_k(max_seq_len)
        decode_anchor(t, shape, sp, sel, {nullptr, 0}, nullptr);
      });
    }
    return problem.empty() ? CaseResult::pass() : CaseResult::fail(problem);
  }
};

// Device data the host cannot check: a head-map entry out of range must give its heads an empty
// key set (zero output) and a selection entry outside [0, n) must be skipped, never read.
class DecodeReuseGuardsCase : public TestCase {
 public:
  std::string op() const override { return "decode_reuse_guards"; }
  std::string vars() const override { return "type=bf16,D=128,hq=8,hkv=2,page=16,lens=[3000 500],map=[1 7],seed=11"; }
  CaseResult run() override {
    std::mt19937_64 rng(11);
    DecodeSpec s;
    s.lens = {3000, 500};
    const int batch = 2, d = s.head_dim, group = s.hq / s.hkv;
    DecodeShape shape{batch, s.hq, s.hkv, d, s.dtype, 3000};
    const SparsityParams sp = sparsity_of(s);
    PagedCache cache;
    cache.build(s, s.lens, 0, rng);
    const StorageArray q = random_storage(s.dtype, static_cast<size_t>(batch) * s.hq * d, 2.5f, rng);
    const Selection geometry = decode_selection(shape, sp);
    const int sets = geometry.num_sets;
    const int64_t k_max = geometry.k_max;
    std::vector<int32_t> indices, counts;
    random_selection(cache.lens, sp, sets, k_max, rng, indices, counts);
    // Corrupt entry 5 of set 1 of every sequence: the oracle's expectation drops that entry.
    std::vector<int32_t> expected_indices = indices, expected_counts = counts;
    for (int b = 0; b < batch; ++b) {
      int32_t* row = indices.data() + (static_cast<size_t>(b) * sets + 1) * k_max;
      row[5] = cache.lens[b] + 5;
      int32_t* expected_row = expected_indices.data() + (static_cast<size_t>(b) * sets + 1) * k_max;
      const int count = expected_counts[b * sets + 1]--;
      std::copy(expected_row + 6, expected_row + count, expected_row + 5);
      expected_row[count - 1] = -1;
    }
    const std::vector<int32_t> head_map = {1, 7};
    DeviceBuffer d_q(q.bits.size() * 2), d_sel(indices.size() * 4), d_counts(counts.size() * 4), d_map(8);
    d_q.upload(q.bits.data(), q.bits.size() * 2);
    d_sel.upload(indices.data(), indices.size() * 4);
    d_counts.upload(counts.data(), counts.size() * 4);
    d_map.upload(head_map.data(), 8);
    const size_t out_elems = static_cast<size_t>(batch) * s.hq * d;
    GuardedBuffer d_out(out_elems * 2);
    const size_t ws_bytes = decode_workspace_size(shape, Role::Reuse, sp);
    DeviceBuffer d_ws(ws_bytes);
    DecodeTensors t;
    t.q = d_q.get();
    t.out = d_out.get();
    t.kv = cache.device_view();
    t.num_q_heads = s.hq;
    const Selection sel = selection_on(geometry, d_sel.get(), d_counts.get());
    decode_reuse(t, shape, sp, sel, static_cast<const int32_t*>(d_map.get()), {d_ws.get(), ws_bytes}, nullptr);
    KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
    const std::string guard = d_out.check_guards("out");
    if (!guard.empty()) return CaseResult::fail(guard);
    std::vector<uint16_t> bits(out_elems);
    d_out.download(bits.data(), out_elems * 2);
    const std::vector<float> out = widen(s.dtype, bits);
    // kv head 0 reads the cleaned set 1 (the oracle, identity-mapped onto a copy of it).
    ref::Call call;
    call.params = sp;
    call.role = Role::Reuse;
    call.head_map = {1, 1};
    const auto input = split_selection(expected_indices, expected_counts, batch, sets, k_max);
    const ref::BatchResult expected = ref::decode_batch(call, q.values.data(), s.hq, cache.host_view(), &input);
    for (int b = 0; b < batch; ++b) {
      const size_t first = static_cast<size_t>(b) * s.hq * d;
      const std::string close = ref::check_close("kv head 0 out", expected.out.data() + first, out.data() + first,
                                                 static_cast<size_t>(group) * d, ref::output_tolerance(s.dtype));
      if (!close.empty()) return CaseResult::fail("sequence " + std::to_string(b) + ": " + close);
      for (size_t i = first + static_cast<size_t>(group) * d; i < first + static_cast<size_t>(s.hq) * d; ++i) {
        if (out[i] != 0.f) return CaseResult::fail("kv head 1 (map entry 7) is not zero at element " + std::to_string(i));
      }
    }
    return CaseResult::pass();
  }
};

void make_decode_cases(CaseList& cases) {
  uint64_t seed = 100;
  auto add = [&](DecodeSpec s) {
    s.seed = seed++;
    cases.push_back(std::make_unique<DecodeCase>(std::move(s)));
  };
  const Role roles[] = {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse};
  // Shape grid: head dims, groups (1, 3, 4, 8), storage types, page sizes, awkward ragged lengths.
  struct Shape { int d, hq, hkv; DType dtype; int page; bool interleaved; std::vector<int> lens; };
  const std::vector<Shape> shapes = {
      {128, 8, 2, DType::BF16, 16, false, {1, 17, 97, 1023, 4224}},
      {64, 9, 3, DType::BF16, 16, false, {113, 239, 2000}},
      {128, 4, 4, DType::F16, 1, false, {130, 1500}},
      {64, 16, 2, DType::F16, 64, true, {4224, 257, 5}},
      {128, 32, 8, DType::BF16, 0, false, {3000, 700}},
      {64, 6, 2, DType::BF16, 64, false, {9000}},
  };
  for (const Shape& sh : shapes) {
    for (Role role : roles) {
      DecodeSpec s;
      s.role = role;
      s.head_dim = sh.d;
      s.hq = sh.hq;
      s.hkv = sh.hkv;
      s.dtype = sh.dtype;
      s.page_size = sh.page;
      s.interleaved = sh.interleaved;
      s.lens = sh.lens;
      s.remap_heads = role == Role::Reuse && sh.hkv > 1;
      add(s);
    }
  }
  // Policy variants: rho 0.05 / 1.0, all-heads pooling, k_multiple, n below k_min, custom scale.
  for (Role role : {Role::Layer0, Role::Anchor, Role::Reuse}) {
    DecodeSpec s;
    s.role = role;
    s.lens = {5000, 60, 2500};
    s.rho = 0.05;
    s.remap_heads = role == Role::Reuse;
    add(s);
    s.rho = 1.0;
    add(s);
    s.rho = 0.1;
    s.pooling = Pooling::All;
    s.hq = 12;
    s.hkv = 3;
    s.head_dim = 64;
    add(s);
    s.pooling = Pooling::Group;
    s.k_multiple = 64;
    s.dtype = DType::F16;
    s.scale = 0.2f;
    add(s);
    s.k_multiple = 1;
    s.lens = {100, 127, 128, 1};  // n at or below k_min: the whole context is selected
    add(s);
  }
  // All keys tie (zero queries): the selection must still have k(n) keys and the oracle's mass.
  for (Role role : {Role::Layer0, Role::Anchor}) {
    DecodeSpec s;
    s.role = role;
    s.lens = {3000, 129, 20000};
    s.q_amplitude = 0.f;
    add(s);
  }
  // Long contexts (ragged, up to 130k keys).
  for (Role role : roles) {
    DecodeSpec s;
    s.role = role;
    s.hq = 8;
    s.hkv = 2;
    s.lens = {130000, 17, 33000};
    s.remap_heads = role == Role::Reuse;
    add(s);
  }
  cases.push_back(std::make_unique<DecodeGraphCase>());
  cases.push_back(std::make_unique<DecodeApiErrorsCase>());
  cases.push_back(std::make_unique<DecodeReuseGuardsCase>());
}

CaseRegistrar decode_registrar("decode", make_decode_cases);

}  // namespace
}  // namespace kascade::gpu_test
