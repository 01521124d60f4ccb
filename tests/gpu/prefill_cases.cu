// tests/gpu/prefill_cases.cu — prefill kernels (attention_prefill.h) against the CPU oracle.
//
// Every case builds a random ragged batch (chunked prefill: p0 = p1 - nq, often unaligned) over a
// paged K/V cache with shuffled pages, runs one prefill role on the GPU and compares it with
// kascade::ref under SPEC 7:
//   prefill_dense   output vs the oracle's dense attention;
//   prefill_layer0  output vs dense, selections equivalent by covered pooled mass;
//   prefill_anchor  selections as layer0, output vs the oracle given the GPU's own selection;
//   prefill_reuse   a random valid selection (empty, partial and full rows) read through a random
//                   head map, output vs the oracle's reuse;
//   prefill_api_errors  unsupported or inconsistent arguments throw kascade::Error.
// Outputs and selections live in guarded, NaN-poisoned buffers; every role runs twice and the
// two results must be bitwise identical.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_test.h"
#include "kascade/attention_prefill.h"
#include "kascade/reference.h"

namespace kascade::gpu_test {
namespace {

std::string op_name(Role role) { return std::string("prefill_") + to_string(role); }

struct SeqSpec {
  int nq = 1;  // queries: the last nq positions
  int p1 = 1;  // keys in the cache, the queries' own included
};

struct PrefillSpec {
  DType dtype = DType::BF16;
  int hq = 8, hkv = 2, head_dim = 128;
  std::vector<SeqSpec> seqs = {{64, 64}};
  int page_size = 16;
  int tile = 32;
  double rho = 0.1;
  int k_min = 128;
  int k_multiple = 1;
  bool fixed_budget = false;
  bool all_heads = false;
  // 0: random K rows. p > 0: every K row is zero except about one in p (kept random), so that all
  // the other keys score 0 in every query row and their pooled masses tie exactly.
  int spike_period = 0;
  uint64_t seed = 1;
};

std::string describe(const PrefillSpec& c) {
  std::ostringstream os;
  os << dtype_name(c.dtype) << ",D=" << c.head_dim << ",Hq=" << c.hq << ",Hkv=" << c.hkv << ",nq/p1=";
  for (size_t i = 0; i < c.seqs.size(); ++i) os << (i ? ";" : "") << c.seqs[i].nq << "/" << c.seqs[i].p1;
  os << ",page=" << c.page_size << ",T=" << c.tile << ",rho=" << c.rho << ",k_min=" << c.k_min
     << ",k_mult=" << c.k_multiple << (c.fixed_budget ? ",fixed" : ",rolling") << (c.all_heads ? ",pool=all" : "");
  if (c.spike_period > 0) os << ",tied_keys=1-1/" << c.spike_period;
  os << ",seed=" << c.seed;
  return os.str();
}

SparsityParams sparsity_of(const PrefillSpec& c) {
  SparsityParams sp;
  sp.rho = c.rho;
  sp.k_min = c.k_min;
  sp.k_multiple = c.k_multiple;
  sp.tile = c.tile;
  sp.budget = c.fixed_budget ? BudgetMode::Fixed : BudgetMode::Rolling;
  sp.pooling = c.all_heads ? Pooling::All : Pooling::Group;
  return sp;
}

// A ragged batch over a paged cache [pages, P, Hkv, D] x 2 with pages in random order.
struct PrefillBatchData {
  std::vector<int32_t> q_indptr, seq_lens, page_indptr, page_indices;
  StorageArray q, k, v;
  DeviceBuffer d_q, d_k, d_v, d_q_indptr, d_seq_lens, d_page_indptr, d_page_indices;

  void build(const PrefillSpec& c, std::mt19937_64& rng) {
    q_indptr = {0};
    page_indptr = {0};
    for (const SeqSpec& s : c.seqs) {
      q_indptr.push_back(q_indptr.back() + s.nq);
      seq_lens.push_back(s.p1);
      page_indptr.push_back(page_indptr.back() + (s.p1 + c.page_size - 1) / c.page_size);
    }
    page_indices.resize(page_indptr.back());
    std::iota(page_indices.begin(), page_indices.end(), 0);
    std::shuffle(page_indices.begin(), page_indices.end(), rng);
    const size_t kv_elems = size_t(page_indptr.back()) * c.page_size * c.hkv * c.head_dim;
    // Queries of amplitude 2 give peaked attention, so that the top-k is meaningful.
    q = random_storage(c.dtype, size_t(q_indptr.back()) * c.hq * c.head_dim, 2.0f, rng);
    k = random_storage(c.dtype, kv_elems, 1.0f, rng);
    if (c.spike_period > 0) {
      for (size_t row = 0; row < kv_elems / c.head_dim; ++row) {
        if (rng() % uint64_t(c.spike_period) == 0) continue;
        std::fill_n(k.bits.begin() + row * c.head_dim, c.head_dim, uint16_t{0});  // +0 in bf16 and f16
        std::fill_n(k.values.begin() + row * c.head_dim, c.head_dim, 0.0f);
      }
    }
    v = random_storage(c.dtype, kv_elems, 1.0f, rng);
    upload(d_q, q.bits);
    upload(d_k, k.bits);
    upload(d_v, v.bits);
    upload(d_q_indptr, q_indptr);
    upload(d_seq_lens, seq_lens);
    upload(d_page_indptr, page_indptr);
    upload(d_page_indices, page_indices);
  }
  template <typename T>
  static void upload(DeviceBuffer& d, const std::vector<T>& h) {
    d = DeviceBuffer(h.size() * sizeof(T));
    d.upload(h.data(), h.size() * sizeof(T));
  }
  PagedKV paged(const PrefillSpec& c, bool device) const {
    PagedKV kv;
    kv.k = device ? d_k.get() : static_cast<const void*>(k.bits.data());
    kv.v = device ? d_v.get() : static_cast<const void*>(v.bits.data());
    kv.dtype = c.dtype;
    kv.batch = static_cast<int>(c.seqs.size());
    kv.num_kv_heads = c.hkv;
    kv.head_dim = c.head_dim;
    kv.page_size = c.page_size;
    kv.set_packed_strides();
    kv.page_indptr = device ? static_cast<const int32_t*>(d_page_indptr.get()) : page_indptr.data();
    kv.page_indices = device ? static_cast<const int32_t*>(d_page_indices.get()) : page_indices.data();
    kv.seq_lens = device ? static_cast<const int32_t*>(d_seq_lens.get()) : seq_lens.data();
    return kv;
  }
  PrefillShape shape(const PrefillSpec& c) const {
    return PrefillShape{static_cast<int>(c.seqs.size()), c.hq, c.hkv, c.head_dim, c.dtype, q_indptr.data(),
                        seq_lens.data()};
  }
  PrefillTensors tensors(const PrefillSpec& c, void* out) const {
    return PrefillTensors{d_q.get(), out, paged(c, true), c.hq, static_cast<const int32_t*>(d_q_indptr.get())};
  }
};

// Sequence b's slice of a selection buffer [B, S, max_tiles, k_max] as an oracle selection with
// the sequence's tile count; tiles past it must have count 0.
std::string slice_selection(const std::vector<int32_t>& idx, const std::vector<int32_t>& cnt,
                            const Selection& geometry, int b, int tiles, ref::Selection& out) {
  out = ref::Selection::empty(geometry.num_sets, tiles, static_cast<int>(geometry.k_max));
  for (int s = 0; s < geometry.num_sets; ++s) {
    for (int tau = 0; tau < geometry.max_tiles; ++tau) {
      const size_t slot = (size_t(b) * geometry.num_sets + s) * geometry.max_tiles + tau;
      if (tau >= tiles) {
        if (cnt[slot] != 0) return "tile " + std::to_string(tau) + " past the sequence's last tile has a count";
        continue;
      }
      out.count[size_t(s) * tiles + tau] = cnt[slot];
      std::copy_n(idx.begin() + slot * geometry.k_max, geometry.k_max, out.row(s, tau));
    }
  }
  return "";
}

// A random valid selection per sequence: each row a random count in 0..k_tau (full and empty rows
// included) of distinct ascending candidates < b.
void random_selection(const PrefillSpec& c, const SparsityParams& sp, const Selection& geometry,
                      std::mt19937_64& rng, std::vector<int32_t>& idx, std::vector<int32_t>& cnt) {
  idx.assign(size_t(geometry.indices_count()), -1);
  cnt.assign(size_t(geometry.counts_count()), 0);
  std::vector<int32_t> pool;
  for (size_t b = 0; b < c.seqs.size(); ++b) {
    const int p1 = c.seqs[b].p1, p0 = p1 - c.seqs[b].nq;
    const int tiles = static_cast<int>(num_tiles(p0, p1, c.tile));
    for (int s = 0; s < geometry.num_sets; ++s) {
      for (int tau = 0; tau < tiles; ++tau) {
        const int prefix = static_cast<int>(tile_begin(p0, tau, c.tile));
        const int k = static_cast<int>(tile_budget(sp.rolling(), prefix, p1, sp.rho, sp.k_min, sp.k_multiple));
        const uint64_t pick = rng() % 4;  // 0: empty, 1: full budget, else random
        const int count = pick == 0 ? 0 : pick == 1 ? k : static_cast<int>(rng() % uint64_t(k + 1));
        pool.resize(prefix);
        std::iota(pool.begin(), pool.end(), 0);
        std::shuffle(pool.begin(), pool.end(), rng);
        std::sort(pool.begin(), pool.begin() + count);
        const size_t slot = (b * geometry.num_sets + s) * geometry.max_tiles + tau;
        cnt[slot] = count;
        std::copy_n(pool.begin(), count, idx.begin() + slot * geometry.k_max);
      }
    }
  }
}

class PrefillCase : public TestCase {
 public:
  PrefillCase(Role op, PrefillSpec spec) : op_(op), s_(std::move(spec)) {}
  std::string op() const override { return op_name(op_); }
  std::string vars() const override { return describe(s_); }

  CaseResult run() override {
    std::mt19937_64 rng(s_.seed);
    const SparsityParams sp = sparsity_of(s_);
    PrefillBatchData data;
    data.build(s_, rng);
    const int batch = static_cast<int>(s_.seqs.size());
    const size_t out_elems = size_t(data.q_indptr.back()) * s_.hq * s_.head_dim;
    GuardedBuffer d_out(out_elems * 2);
    const PrefillShape shape = data.shape(s_);
    const PrefillTensors tensors = data.tensors(s_, d_out.get());
    const Selection geometry = prefill_selection(shape, sp);
    GuardedBuffer d_sel(size_t(geometry.indices_count()) * sizeof(int32_t));
    GuardedBuffer d_cnt(size_t(geometry.counts_count()) * sizeof(int32_t));
    const Selection sel = selection_on(geometry, d_sel.get(), d_cnt.get());
    const size_t ws_bytes = prefill_workspace_size(shape, op_, sp);
    DeviceBuffer d_ws(ws_bytes);
    const Workspace ws{d_ws.get(), ws_bytes};

    std::vector<int32_t> reuse_idx, reuse_cnt, head_map(s_.hkv);
    DeviceBuffer d_map(head_map.size() * sizeof(int32_t));
    if (op_ == Role::Reuse) {
      random_selection(s_, sp, geometry, rng, reuse_idx, reuse_cnt);
      for (int g = 0; g < s_.hkv; ++g) head_map[g] = static_cast<int32_t>(rng() % uint64_t(s_.hkv));
      d_map.upload(head_map.data(), head_map.size() * sizeof(int32_t));
    }

    auto launch = [&]() {
      d_out.poison();
      if (op_ == Role::Reuse) {
        KASCADE_CUDA_CHECK(cudaMemcpy(d_sel.get(), reuse_idx.data(), reuse_idx.size() * 4, cudaMemcpyHostToDevice));
        KASCADE_CUDA_CHECK(cudaMemcpy(d_cnt.get(), reuse_cnt.data(), reuse_cnt.size() * 4, cudaMemcpyHostToDevice));
      } else {
        d_sel.poison();
        d_cnt.poison();
      }
      switch (op_) {
        case Role::Dense: prefill_dense(tensors, shape, sp, ws, nullptr); break;
        case Role::Layer0: prefill_layer0(tensors, shape, sp, sel, ws, nullptr); break;
        case Role::Anchor: prefill_anchor(tensors, shape, sp, sel, ws, nullptr); break;
        case Role::Reuse:
          prefill_reuse(tensors, shape, sp, sel, static_cast<const int32_t*>(d_map.get()), ws, nullptr);
          break;
      }
      KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
    };
    struct Outputs {
      std::vector<uint16_t> out;
      std::vector<int32_t> idx, cnt;
    };
    auto collect = [&]() {
      Outputs r;
      r.out.resize(out_elems);
      r.idx.resize(size_t(geometry.indices_count()));
      r.cnt.resize(size_t(geometry.counts_count()));
      d_out.download(r.out.data(), out_elems * 2);
      d_sel.download(r.idx.data(), r.idx.size() * 4);
      d_cnt.download(r.cnt.data(), r.cnt.size() * 4);
      return r;
    };
    launch();
    const Outputs first = collect();
    for (const GuardedBuffer* buf : {&d_out, &d_sel, &d_cnt}) {
      const std::string guard = buf->check_guards(buf == &d_out ? "out" : buf == &d_sel ? "selection" : "counts");
      if (!guard.empty()) return CaseResult::fail(guard);
    }
    launch();
    const Outputs second = collect();
    if (first.out != second.out || first.idx != second.idx || first.cnt != second.cnt)
      return CaseResult::fail("a repeated run is not bitwise identical");
    const std::vector<float> out = widen(s_.dtype, first.out);

    // The oracle, on the same storage values widened exactly.
    const PagedKV host_kv = data.paged(s_, false);
    ref::Call call;
    call.phase = Phase::Prefill;
    call.params = sp;
    const double tolerance = ref::output_tolerance(s_.dtype);
    const float* q_ref = data.q.values.data();
    if (op_ == Role::Reuse) {
      call.role = Role::Reuse;
      call.head_map.assign(head_map.begin(), head_map.end());
      std::vector<ref::Selection> given(batch);
      for (int b = 0; b < batch; ++b) {
        const int tiles = static_cast<int>(num_tiles(s_.seqs[b].p1 - s_.seqs[b].nq, s_.seqs[b].p1, s_.tile));
        slice_selection(reuse_idx, reuse_cnt, geometry, b, tiles, given[b]);
      }
      const ref::BatchResult expected = ref::prefill_batch(call, q_ref, data.q_indptr.data(), s_.hq, host_kv, &given);
      return verdict(ref::check_close("out", expected.out.data(), out.data(), out_elems, tolerance));
    }
    call.role = Role::Layer0;  // dense output and the oracle's selection
    const ref::BatchResult dense = ref::prefill_batch(call, q_ref, data.q_indptr.data(), s_.hq, host_kv);
    if (op_ == Role::Dense || op_ == Role::Layer0) {
      const std::string close = ref::check_close("out", dense.out.data(), out.data(), out_elems, tolerance);
      if (!close.empty() || op_ == Role::Dense) return verdict(close);
    }
    // Selections: equivalent to the oracle's by covered pooled mass, tile by tile.
    std::vector<ref::Selection> actual(batch);
    for (int b = 0; b < batch; ++b) {
      const int nq = s_.seqs[b].nq, n = s_.seqs[b].p1;
      ref::Call seq_call = call;
      seq_call.p0 = n - nq;
      std::vector<float> q_seq(size_t(s_.hq) * nq * s_.head_dim), k_seq, v_seq;
      const size_t row = size_t(s_.hq) * s_.head_dim;
      for (int t = 0; t < nq; ++t)
        for (int h = 0; h < s_.hq; ++h)
          std::memcpy(&q_seq[(size_t(h) * nq + t) * s_.head_dim], q_ref + row * (data.q_indptr[b] + t) + h * s_.head_dim,
                      s_.head_dim * sizeof(float));
      ref::gather_sequence(host_kv, b, k_seq, v_seq);
      const ref::Pooled pooled = ref::pooled_mass(seq_call, q_seq.data(), k_seq.data(), s_.hq, s_.hkv, nq, n, s_.head_dim);
      std::string diff = slice_selection(first.idx, first.cnt, geometry, b, pooled.num_tiles, actual[b]);
      if (diff.empty()) diff = ref::compare_selections(pooled, dense.selections[b], actual[b]);
      if (!diff.empty()) return CaseResult::fail("selection of sequence " + std::to_string(b) + ": " + diff);
    }
    if (op_ == Role::Layer0) return CaseResult::pass();
    // Anchor output, given the selection the GPU made: the oracle's reuse path, identity map.
    call.role = Role::Reuse;
    const ref::BatchResult given = ref::prefill_batch(call, q_ref, data.q_indptr.data(), s_.hq, host_kv, &actual);
    return verdict(ref::check_close("out", given.out.data(), out.data(), out_elems, tolerance));
  }

 private:
  static CaseResult verdict(const std::string& problem) {
    return problem.empty() ? CaseResult::pass() : CaseResult::fail(problem);
  }
  Role op_;
  PrefillSpec s_;
};

// Unsupported shapes and inconsistent arguments are rejected with kascade::Error before any launch.
class PrefillApiErrorsCase : public TestCase {
 public:
  std::string op() const override { return "prefill_api_errors"; }
  std::string vars() const override { return "bf16,D=128,Hq=8,Hkv=2,nq/p1=40/100"; }
  CaseResult run() override {
    PrefillSpec spec;
    spec.seqs = {{40, 100}};
    std::mt19937_64 rng(7);
    PrefillBatchData data;
    data.build(spec, rng);
    DeviceBuffer d_out(size_t(40) * 8 * 128 * 2);
    const PrefillShape good_shape = data.shape(spec);
    const PrefillTensors good = data.tensors(spec, d_out.get());
    const SparsityParams sp = sparsity_of(spec);
    const Selection geometry = prefill_selection(good_shape, sp);
    DeviceBuffer d_sel(size_t(geometry.indices_count()) * 4 + 4), d_cnt(size_t(geometry.counts_count()) * 4);
    const Selection sel = selection_on(geometry, d_sel.get(), d_cnt.get());
    const size_t ws_bytes = prefill_workspace_size(good_shape, Role::Anchor, sp);
    DeviceBuffer d_ws(ws_bytes);

    std::vector<std::string> failures;
    auto expect_error = [&](const char* what, auto&& call) {
      try {
        call();
        failures.push_back(std::string(what) + ": no error");
      } catch (const Error& e) {
        if (std::string(e.what()).empty()) failures.push_back(std::string(what) + ": empty message");
      }
    };
    // Each misuse changes one thing of a call that is otherwise valid.
    expect_error("head dim 96", [&] {
      PrefillShape s = good_shape;
      PrefillTensors t = good;
      s.head_dim = t.kv.head_dim = 96;
      prefill_dense(t, s, sp, {}, nullptr);
    });
    expect_error("f32 storage", [&] {
      PrefillShape s = good_shape;
      PrefillTensors t = good;
      s.dtype = t.kv.dtype = DType::F32;
      prefill_dense(t, s, sp, {}, nullptr);
    });
    expect_error("Hq not a multiple of Hkv", [&] {
      PrefillShape s = good_shape;
      PrefillTensors t = good;
      s.num_q_heads = t.num_q_heads = 7;
      prefill_dense(t, s, sp, {}, nullptr);
    });
    expect_error("tile 48", [&] {
      SparsityParams bad = sp;
      bad.tile = 48;
      prefill_dense(good, good_shape, bad, {}, nullptr);
    });
    expect_error("more queries than keys", [&] {
      const int32_t lens[1] = {30};
      PrefillShape s = good_shape;
      s.seq_lens_host = lens;
      prefill_dense(good, s, sp, {}, nullptr);
    });
    expect_error("small workspace", [&] {
      prefill_anchor(good, good_shape, sp, sel, {d_ws.get(), ws_bytes - 1}, nullptr);
    });
    expect_error("selection shape", [&] {
      Selection wrong = sel;
      wrong.k_max += 1;
      prefill_reuse(good, good_shape, sp, wrong, nullptr, {}, nullptr);
    });
    expect_error("misaligned q", [&] {
      PrefillTensors t = good;
      t.q = static_cast<const char*>(t.q) + 2;
      prefill_dense(t, good_shape, sp, {}, nullptr);
    });
    KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
    if (failures.empty()) return CaseResult::pass();
    std::string all;
    for (const auto& f : failures) all += (all.empty() ? "" : "; ") + f;
    return CaseResult::fail(all);
  }
};

std::vector<PrefillSpec> prefill_specs() {
  std::vector<PrefillSpec> specs;
  PrefillSpec c;
  // GQA 4, D 128, one fresh prompt with a partial last tile; small k_min so that tiles are sparse.
  c = {};
  c.seqs = {{300, 300}}, c.k_min = 16;
  specs.push_back(c);
  // GQA 3 (SmolLM2's shape), D 64, f16, ragged chunked batch with unaligned p0, T 16, fixed budget.
  c = {};
  c.dtype = DType::F16, c.hq = 9, c.hkv = 3, c.head_dim = 64, c.seqs = {{97, 97}, {17, 239}, {113, 1023}};
  c.tile = 16, c.fixed_budget = true, c.k_min = 8;
  specs.push_back(c);
  // GQA 8, T 64, k rounded up to 64, a one-token chunk beside a long one, page size 1.
  c = {};
  c.hq = 8, c.hkv = 1, c.seqs = {{1, 1}, {200, 4224}}, c.tile = 64, c.k_multiple = 64, c.page_size = 1;
  specs.push_back(c);
  // GQA 1 with all-heads pooling, D 64, a contiguous cache (one page per sequence).
  c = {};
  c.hq = 4, c.hkv = 4, c.head_dim = 64, c.seqs = {{1023, 1023}}, c.all_heads = true, c.k_min = 32;
  c.page_size = 1023;
  specs.push_back(c);
  // rho = 1: every selection is the whole prefix, so the anchor equals dense attention.
  c = {};
  c.head_dim = 64, c.seqs = {{150, 400}}, c.rho = 1.0, c.k_min = 1;
  specs.push_back(c);
  // Default budgets (rho 0.1, k_min 128), f16, GQA 4 at 2k beside a chunk.
  c = {};
  c.dtype = DType::F16, c.seqs = {{2048, 2048}, {333, 1500}};
  specs.push_back(c);
  // Longer context: many sparse tiles, several key chunks per tile in the pooled-mass pass.
  c = {};
  c.hq = 4, c.hkv = 1, c.seqs = {{4096, 4096}}, c.k_min = 64;
  specs.push_back(c);
  // Long contexts (the oracle is O(n^2) per head, so one kv head, few query heads, D 64, and the
  // queries as a chunk at the end of the cache): 32k keys, p0 unaligned, partial last tile, many
  // 128-key blocks per CTA and 2 pooled-mass key chunks (kKeysPerMassCta = 16384) per tile.
  c = {};
  c.hq = 4, c.hkv = 1, c.head_dim = 64, c.seqs = {{509, 32001}};
  specs.push_back(c);
  // 16k keys, f16, GQA 2, T 16, fixed budget, beside a short fresh prompt.
  c = {};
  c.dtype = DType::F16, c.hq = 2, c.hkv = 1, c.head_dim = 64, c.seqs = {{1500, 16411}, {700, 700}};
  c.tile = 16, c.fixed_budget = true;
  specs.push_back(c);
  // Tied masses. Most keys score 0 everywhere; the random spikes (one key in p, fewer than k) mostly
  // pool more mass than they do, so the k-th largest mass is the tied one: the top-k takes the
  // spikes above it and the lowest-indexed tied keys. Here about 3,700 keys share the k-th
  // largest's first radix digit (under kCandidateCapacity = 6,144 in prefill_topk.cu): the sure
  // keys and the chosen tied keys are merged in the output row.
  c = {};
  c.hq = 4, c.hkv = 1, c.head_dim = 64, c.seqs = {{100, 4000}}, c.spike_period = 16;
  specs.push_back(c);
  // About 8,000 keys share it (over kCandidateCapacity): the last two digits and the output read
  // the mass row itself.
  c = {};
  c.hq = 4, c.hkv = 1, c.head_dim = 64, c.seqs = {{64, 8300}}, c.spike_period = 32;
  specs.push_back(c);
  for (size_t i = 0; i < specs.size(); ++i) specs[i].seed = 5000 + i;
  return specs;
}

void make_prefill_cases(CaseList& out) {
  for (const PrefillSpec& s : prefill_specs())
    for (Role op : {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse})
      out.push_back(std::make_unique<PrefillCase>(op, s));
  out.push_back(std::make_unique<PrefillApiErrorsCase>());
}

CaseRegistrar prefill_registrar("prefill", make_prefill_cases);

}  // namespace
}  // namespace kascade::gpu_test
