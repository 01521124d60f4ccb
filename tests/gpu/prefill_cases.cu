// tests/gpu/prefill_cases.cu — prefill kernels (attention_prefill.h) against the CPU oracle.
//
// Every case builds a random ragged batch (chunked prefill: p0 = p1 - nq, often unaligned), a
// paged K/V cache with shuffled pages, runs the four roles on the GPU and compares with
// kascade::ref under SPEC 7:
//   dense   output vs ref dense;
//   layer0  output vs ref dense, selections equivalent by covered pooled mass;
//   anchor  selections as layer0, output vs ref attention over the GPU's own selection;
//   reuse   the oracle's anchor selection fed to the GPU through a non-trivial head map,
//           output vs ref reuse.
// Outputs are poisoned with NaN bytes before each call (an unwritten row cannot pass), and the
// anchor is run twice to check that results are bitwise repeatable.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../../src/cuda/common/cuda_check.h"
#include "kascade/attention_prefill.h"
#include "kascade/reference.h"
#include "prefill_cases.h"

namespace kascade::gpu_test {
namespace {

template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t count = 0;
  explicit DeviceArray(size_t n) : count(n) {
    if (n > 0) KASCADE_CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T)));
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr); }
  void upload(const std::vector<T>& host) {
    if (count > 0) KASCADE_CUDA_CHECK(cudaMemcpy(ptr, host.data(), count * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count);
    if (count > 0) KASCADE_CUDA_CHECK(cudaMemcpy(host.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  void poison() {
    if (count > 0) KASCADE_CUDA_CHECK(cudaMemset(ptr, 0xff, count * sizeof(T)));
  }
};

float to_float(DType t, uint16_t bits) { return t == DType::F16 ? f16_to_float(bits) : bf16_to_float(bits); }
uint16_t from_float(DType t, float x) { return t == DType::F16 ? float_to_f16(x) : float_to_bf16(x); }

std::vector<float> widen(DType t, const std::vector<uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) out[i] = to_float(t, bits[i]);
  return out;
}

// One layer's inputs: q [total_q, Hq, D] and a paged cache [pages, P, Hkv, D] x 2 (split layout).
struct LayerData {
  std::vector<uint16_t> q, k, v;
};

struct Batch {
  std::vector<int32_t> q_indptr, seq_lens, page_indptr, page_indices;
  int num_pages = 0;
};

Batch make_batch(const PrefillCase& c, std::mt19937& rng) {
  Batch b;
  b.q_indptr.push_back(0);
  for (const SeqSpec& s : c.seqs) {
    b.q_indptr.push_back(b.q_indptr.back() + s.nq);
    b.seq_lens.push_back(s.p1);
  }
  b.page_indptr.push_back(0);
  for (const SeqSpec& s : c.seqs) b.page_indptr.push_back(b.page_indptr.back() + (s.p1 + c.page_size - 1) / c.page_size);
  b.num_pages = b.page_indptr.back();
  b.page_indices.resize(b.num_pages);
  std::iota(b.page_indices.begin(), b.page_indices.end(), 0);
  std::shuffle(b.page_indices.begin(), b.page_indices.end(), rng);
  return b;
}

LayerData make_layer(const PrefillCase& c, const Batch& batch, std::mt19937& rng) {
  // Queries scaled up so that attention is peaked and the top-k is meaningful.
  std::normal_distribution<float> normal(0.f, 1.f);
  LayerData d;
  const size_t q_elems = size_t(batch.q_indptr.back()) * c.hq * c.head_dim;
  const size_t kv_elems = size_t(batch.num_pages) * c.page_size * c.hkv * c.head_dim;
  d.q.resize(q_elems);
  d.k.resize(kv_elems);
  d.v.resize(kv_elems);
  for (auto& x : d.q) x = from_float(c.dtype, c.q_scale * normal(rng));
  for (auto& x : d.k) x = from_float(c.dtype, normal(rng));
  for (auto& x : d.v) x = from_float(c.dtype, normal(rng));
  return d;
}

SparsityParams sparsity_of(const PrefillCase& c) {
  SparsityParams sp;
  sp.rho = c.rho;
  sp.k_min = c.k_min;
  sp.k_multiple = c.k_multiple;
  sp.tile = c.tile;
  sp.budget = c.fixed_budget ? BudgetMode::Fixed : BudgetMode::Rolling;
  sp.pooling = c.all_heads ? Pooling::All : Pooling::Group;
  return sp;
}

PagedKV make_paged(const PrefillCase& c, const Batch& b, const void* k, const void* v, const int32_t* page_indptr,
                   const int32_t* page_indices, const int32_t* seq_lens) {
  PagedKV kv;
  kv.k = k;
  kv.v = v;
  kv.dtype = c.dtype;
  kv.batch = static_cast<int>(c.seqs.size());
  kv.num_kv_heads = c.hkv;
  kv.head_dim = c.head_dim;
  kv.page_size = c.page_size;
  kv.set_packed_strides();
  kv.page_indptr = page_indptr;
  kv.page_indices = page_indices;
  kv.seq_lens = seq_lens;
  (void)b;
  return kv;
}

// Slice of sequence b out of the GPU selection buffer, as a ref::Selection of the oracle's
// tile count. Rows past the sequence's tiles must be empty, padding must be -1.
std::string slice_selection(const std::vector<int32_t>& idx, const std::vector<int32_t>& cnt,
                            const SelectionShape& shape, int b, int tiles, ref::Selection& out) {
  out = ref::Selection::empty(shape.num_selections, tiles, shape.k_max);
  for (int s = 0; s < shape.num_selections; ++s) {
    for (int tau = 0; tau < shape.max_tiles; ++tau) {
      const size_t slot = (size_t(b) * shape.num_selections + s) * shape.max_tiles + tau;
      if (tau >= tiles) {
        if (cnt[slot] != 0) return "count of tile " + std::to_string(tau) + " past the sequence's tiles is not 0";
        continue;
      }
      out.count[size_t(s) * tiles + tau] = cnt[slot];
      std::copy_n(idx.begin() + slot * shape.k_max, shape.k_max, out.row(s, tau));
    }
  }
  return "";
}

// q of sequence b as [Hq, nq, D] and its K as [Hkv, n, D] (the oracle's single-call layout).
void sequence_qk(const PrefillCase& c, const std::vector<float>& q, const std::vector<int32_t>& q_indptr,
                 const PagedKV& host_kv, int b, std::vector<float>& q_seq, std::vector<float>& k_seq) {
  const int nq = q_indptr[b + 1] - q_indptr[b];
  const size_t row = size_t(c.hq) * c.head_dim;
  q_seq.resize(row * nq);
  for (int t = 0; t < nq; ++t)
    for (int h = 0; h < c.hq; ++h)
      std::memcpy(&q_seq[(size_t(h) * nq + t) * c.head_dim], &q[row * (q_indptr[b] + t) + size_t(h) * c.head_dim],
                  c.head_dim * sizeof(float));
  std::vector<float> v_unused;
  ref::gather_sequence(host_kv, b, k_seq, v_unused);
}

}  // namespace

std::string PrefillCase::vars() const {
  std::ostringstream os;
  os << "prefill " << dtype_name(dtype) << " D=" << head_dim << " Hq=" << hq << " Hkv=" << hkv << " seqs=";
  for (size_t i = 0; i < seqs.size(); ++i) os << (i ? "," : "") << seqs[i].nq << "/" << seqs[i].p1;
  os << " page=" << page_size << " T=" << tile << " rho=" << rho << " k_min=" << k_min << " k_mult=" << k_multiple
     << (fixed_budget ? " fixed" : " rolling") << (all_heads ? " pool=all" : " pool=group") << " seed=" << seed;
  return os.str();
}

std::string run_prefill_case(const PrefillCase& c) {
  std::mt19937 rng(c.seed);
  const Batch batch = make_batch(c, rng);
  const LayerData layer = make_layer(c, batch, rng);
  const SparsityParams sp = sparsity_of(c);
  const int num_seqs = static_cast<int>(c.seqs.size());
  const size_t out_elems = size_t(batch.q_indptr.back()) * c.hq * c.head_dim;

  DeviceArray<uint16_t> q(layer.q.size()), k(layer.k.size()), v(layer.v.size()), out(out_elems);
  DeviceArray<int32_t> q_indptr(batch.q_indptr.size()), seq_lens(batch.seq_lens.size()),
      page_indptr(batch.page_indptr.size()), page_indices(batch.page_indices.size());
  q.upload(layer.q);
  k.upload(layer.k);
  v.upload(layer.v);
  q_indptr.upload(batch.q_indptr);
  seq_lens.upload(batch.seq_lens);
  page_indptr.upload(batch.page_indptr);
  page_indices.upload(batch.page_indices);

  PrefillArgs args;
  args.q = q.ptr;
  args.q_indptr = q_indptr.ptr;
  args.num_q_heads = c.hq;
  args.kv = make_paged(c, batch, k.ptr, v.ptr, page_indptr.ptr, page_indices.ptr, seq_lens.ptr);
  args.out = out.ptr;
  args.host = {num_seqs, batch.q_indptr.data(), batch.seq_lens.data()};

  const SelectionShape shape = prefill_selection_shape(args.host, c.hkv, sp);
  DeviceArray<int32_t> sel_idx(size_t(shape.indices_count())), sel_cnt(size_t(shape.counts_count()));
  const SelectionBuffer sel{sel_idx.ptr, sel_cnt.ptr, shape};
  const size_t ws_bytes = prefill_workspace_size(args, sp, Role::Anchor);
  DeviceArray<unsigned char> ws(ws_bytes);

  // Oracle inputs: the same storage values, widened exactly.
  const std::vector<float> q_host = widen(c.dtype, layer.q);
  const PagedKV host_kv = make_paged(c, batch, layer.k.data(), layer.v.data(), batch.page_indptr.data(),
                                     batch.page_indices.data(), batch.seq_lens.data());
  ref::Call call;
  call.phase = Phase::Prefill;
  call.params = sp;
  const double tol = ref::output_tolerance(c.dtype);
  auto gpu_out = [&]() { return widen(c.dtype, out.download()); };

  // Dense.
  call.role = Role::Dense;
  const ref::BatchResult dense_ref = ref::prefill_batch(call, q_host.data(), batch.q_indptr.data(), c.hq, host_kv);
  out.poison();
  prefill_dense(args, sp, nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  std::string problem = ref::check_close("dense output", dense_ref.out.data(), gpu_out().data(), out_elems, tol);
  if (!problem.empty()) return problem;

  // Per-sequence pooled masses for selection comparisons.
  std::vector<ref::Pooled> pooled(num_seqs);
  {
    std::vector<float> q_seq, k_seq;
    for (int b = 0; b < num_seqs; ++b) {
      sequence_qk(c, q_host, batch.q_indptr, host_kv, b, q_seq, k_seq);
      ref::Call seq_call = call;
      seq_call.p0 = c.seqs[b].p1 - c.seqs[b].nq;
      pooled[b] = ref::pooled_mass(seq_call, q_seq.data(), k_seq.data(), c.hq, c.hkv, c.seqs[b].nq, c.seqs[b].p1,
                                   c.head_dim);
    }
  }
  auto check_selections = [&](const char* role, std::vector<ref::Selection>& gpu_sel) -> std::string {
    const std::vector<int32_t> idx = sel_idx.download(), cnt = sel_cnt.download();
    gpu_sel.resize(num_seqs);
    for (int b = 0; b < num_seqs; ++b) {
      std::string p = slice_selection(idx, cnt, shape, b, pooled[b].num_tiles, gpu_sel[b]);
      if (p.empty()) p = ref::compare_selections(pooled[b], dense_ref.selections[b], gpu_sel[b]);
      if (!p.empty()) return std::string(role) + " selection of sequence " + std::to_string(b) + ": " + p;
    }
    return "";
  };

  // Layer 0: dense output plus selections.
  std::vector<ref::Selection> gpu_sel;
  out.poison();
  sel_idx.poison();
  sel_cnt.poison();
  prefill_anchor(args, sp, /*dense_output=*/true, sel, ws.ptr, ws_bytes, nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  problem = ref::check_close("layer0 output", dense_ref.out.data(), gpu_out().data(), out_elems, tol);
  if (problem.empty()) problem = check_selections("layer0", gpu_sel);
  if (!problem.empty()) return problem;

  // Anchor: selections, then the output against the oracle given the GPU's own selection.
  out.poison();
  sel_idx.poison();
  sel_cnt.poison();
  prefill_anchor(args, sp, /*dense_output=*/false, sel, ws.ptr, ws_bytes, nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  problem = check_selections("anchor", gpu_sel);
  if (!problem.empty()) return problem;
  const std::vector<uint16_t> anchor_bits = out.download();
  const std::vector<int32_t> anchor_idx = sel_idx.download(), anchor_cnt = sel_cnt.download();
  {
    ref::Call given = call;
    given.role = Role::Reuse;
    const ref::BatchResult r = ref::prefill_batch(given, q_host.data(), batch.q_indptr.data(), c.hq, host_kv, &gpu_sel);
    problem = ref::check_close("anchor output", r.out.data(), widen(c.dtype, anchor_bits).data(), out_elems, tol);
    if (!problem.empty()) return problem;
  }
  // Repeatability: a second anchor call gives identical bits.
  out.poison();
  prefill_anchor(args, sp, /*dense_output=*/false, sel, ws.ptr, ws_bytes, nullptr);
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  if (out.download() != anchor_bits || sel_idx.download() != anchor_idx || sel_cnt.download() != anchor_cnt)
    return "anchor: a repeated call is not bitwise identical";

  // Reuse: the oracle's anchor selection through a rotated head map (identity with one kv head).
  std::vector<int32_t> head_map(c.hkv);
  for (int g = 0; g < c.hkv; ++g) head_map[g] = (g + 1) % c.hkv;
  {
    std::vector<int32_t> idx(size_t(shape.indices_count()), -1), cnt(size_t(shape.counts_count()), 0);
    for (int b = 0; b < num_seqs; ++b) {
      const ref::Selection& rs = dense_ref.selections[b];
      for (int s = 0; s < rs.num_sets; ++s)
        for (int tau = 0; tau < rs.num_tiles; ++tau) {
          const size_t slot = (size_t(b) * shape.num_selections + s) * shape.max_tiles + tau;
          cnt[slot] = rs.row_count(s, tau);
          std::copy_n(rs.row(s, tau), std::min(rs.k_max, shape.k_max), idx.begin() + slot * shape.k_max);
        }
    }
    sel_idx.upload(idx);
    sel_cnt.upload(cnt);
    DeviceArray<int32_t> map_dev(head_map.size());
    map_dev.upload(head_map);
    out.poison();
    prefill_reuse(args, sp, sel, map_dev.ptr, nullptr);
    KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
    ref::Call reuse_call = call;
    reuse_call.role = Role::Reuse;
    reuse_call.head_map.assign(head_map.begin(), head_map.end());
    const ref::BatchResult r =
        ref::prefill_batch(reuse_call, q_host.data(), batch.q_indptr.data(), c.hq, host_kv, &dense_ref.selections);
    problem = ref::check_close("reuse output", r.out.data(), gpu_out().data(), out_elems, tol);
    if (!problem.empty()) return problem;
  }
  return "";
}

std::vector<PrefillCase> prefill_cases() {
  std::vector<PrefillCase> cases;
  auto add = [&](PrefillCase c) {
    c.seed = 1000 + static_cast<uint32_t>(cases.size());
    cases.push_back(c);
  };
  PrefillCase c;
  // GQA 4, D 128, one fresh prompt with a partial last tile; small k_min so tiles are sparse.
  c = {};
  c.hq = 8, c.hkv = 2, c.head_dim = 128, c.seqs = {{300, 300}}, c.k_min = 16;
  add(c);
  // GQA 3 (SmolLM2 shape), D 64, f16, ragged chunked batch with unaligned p0, T 16, fixed budget.
  c = {};
  c.dtype = DType::F16, c.hq = 9, c.hkv = 3, c.head_dim = 64, c.seqs = {{97, 97}, {17, 239}, {113, 1023}};
  c.tile = 16, c.fixed_budget = true, c.k_min = 8;
  add(c);
  // GQA 8, T 64, k rounded to 64, a one-token chunk and a long chunk, page size 1.
  c = {};
  c.hq = 8, c.hkv = 1, c.head_dim = 128, c.seqs = {{1, 1}, {200, 4224}}, c.tile = 64, c.k_multiple = 64;
  c.page_size = 1;
  add(c);
  // GQA 1, all-heads pooling, D 64, contiguous cache (page = length).
  c = {};
  c.hq = 4, c.hkv = 4, c.head_dim = 64, c.seqs = {{1023, 1023}}, c.all_heads = true, c.k_min = 32, c.page_size = 1023;
  add(c);
  // rho = 1: every selection is the whole prefix, anchor equals dense.
  c = {};
  c.hq = 8, c.hkv = 2, c.head_dim = 64, c.seqs = {{150, 400}}, c.rho = 1.0, c.k_min = 1;
  add(c);
  // Default budgets (rho 0.1, k_min 128), f16, GQA 4 at 2k with a chunk.
  c = {};
  c.dtype = DType::F16, c.hq = 8, c.hkv = 2, c.head_dim = 128, c.seqs = {{2048, 2048}, {333, 1500}};
  add(c);
  // Longer context, GQA 4, D 128: many sparse tiles and several key chunks per tile.
  c = {};
  c.hq = 4, c.hkv = 1, c.head_dim = 128, c.seqs = {{4096, 4096}}, c.k_min = 64;
  add(c);
  return cases;
}

}  // namespace kascade::gpu_test
