// tests/gpu/engine_selection_cases.cpp — the CUDA engine's selection kernels of the comparison
// policies (src/engine/cuda/policy_selection.h) against host implementations of the rules that
// header documents:
//   engine_streaming_select  sinks 0..min(4, k)-1, then the last k - sinks keys; every set alike
//   engine_quest_select      pages of 16 keys ranked by their bound (max over the group's query
//                            heads of sum_d max(q_d min_d, q_d max_d)), ties to the lower page;
//                            whole pages in rank order, the last one cut from its lowest position
//   engine_selection_errors  a group above 8 or a set count other than Hkv throws kascade::Error
// Rows have ragged lengths (1, page-sized and odd ones, one long enough that Quest's page table
// needs more than 48 KB of shared memory) over a paged K cache with shuffled pages. Quest's inputs
// are small integers in bf16, so every bound is exact in fp32 whatever the summation order: the
// GPU must match the host's selection exactly, and exact ties (duplicated pages, all-zero keys)
// test the tie rule. Selections are compared element by element against the -1 padding up to
// k_max; the buffers are guarded and poisoned with a value that is neither a position nor -1.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine_case_util.h"
#include "gpu_test.h"
#include "kascade/budget.h"
#include "kascade/error.h"
#include "policy_selection.h"

namespace kascade::gpu_test {
namespace {

using namespace engine_cases;
namespace ps = ::kascade::engine::cuda::policy_select;

enum class Rule { Streaming, Quest };
enum class Ties { None, DuplicatePages, ZeroKeys };

struct SelectSpec {
  Rule rule = Rule::Quest;
  std::vector<int> lens = {1, 15, 16, 17, 100, 1000, 2049};
  int hq = 9, hkv = 3, head_dim = 64;
  int page_size = 16;  // of the KV cache (Quest's pages are always 16 keys)
  double rho = 0.1;
  int k_min = 32;
  int k_multiple = 1;
  int sets = 3;            // streaming: Hkv or 1; Quest: Hkv
  int max_len_extra = 0;   // max_seq_len = longest row + this (k_max may exceed every row's k)
  Ties ties = Ties::None;
  int stride_pad = 0;      // extra elements after each head, token and page of the pool
  uint64_t seed = 1;
};

std::string describe(const SelectSpec& s) {
  std::ostringstream os;
  os << "Hq=" << s.hq << ",Hkv=" << s.hkv << ",D=" << s.head_dim << ",lens=";
  for (size_t i = 0; i < s.lens.size(); ++i) os << (i ? ";" : "") << s.lens[i];
  os << ",page=" << s.page_size << ",rho=" << s.rho << ",k_min=" << s.k_min << ",k_mult=" << s.k_multiple
     << ",sets=" << s.sets << ",max_len=+" << s.max_len_extra;
  if (s.ties == Ties::DuplicatePages) os << ",ties=duplicate_pages";
  if (s.ties == Ties::ZeroKeys) os << ",ties=zero_keys";
  if (s.stride_pad) os << ",pad=" << s.stride_pad;
  os << ",seed=" << s.seed;
  return os.str();
}

// A batch of decode rows over a paged K pool; host values are the exact widening of the bf16 bits.
struct SelectionInputs {
  int batch = 0;
  int64_t head_stride = 0, token_stride = 0, page_stride = 0;
  std::vector<int32_t> page_indptr, page_indices;
  std::vector<uint16_t> q_bits, k_bits;
  std::vector<float> q, k;

  size_t key_offset(int b, int64_t pos, int g, int page_size) const {
    const int64_t page = page_indices[static_cast<size_t>(page_indptr[static_cast<size_t>(b)] + pos / page_size)];
    return static_cast<size_t>(page * page_stride + pos % page_size * token_stride + g * head_stride);
  }
};

SelectionInputs build_inputs(const SelectSpec& s, std::mt19937_64& rng) {
  SelectionInputs in;
  in.batch = static_cast<int>(s.lens.size());
  const int d = s.head_dim;
  in.head_stride = d + s.stride_pad;
  in.token_stride = s.hkv * in.head_stride + s.stride_pad;
  in.page_stride = s.page_size * in.token_stride + s.stride_pad;
  in.page_indptr = {0};
  for (int n : s.lens) in.page_indptr.push_back(in.page_indptr.back() + (n + s.page_size - 1) / s.page_size);
  const int pages = in.page_indptr.back();
  in.page_indices.resize(static_cast<size_t>(pages));
  std::iota(in.page_indices.begin(), in.page_indices.end(), 0);
  std::shuffle(in.page_indices.begin(), in.page_indices.end(), rng);

  auto small_int = [&rng](int limit) { return static_cast<float>(static_cast<int>(rng() % (2 * limit + 1)) - limit); };
  const size_t q_elems = static_cast<size_t>(in.batch) * s.hq * d;
  in.q.resize(q_elems);
  for (float& x : in.q) x = small_int(3);
  // Padding and unused slots hold 64, far outside the keys' range: a read of one moves a bound.
  in.k.assign(static_cast<size_t>(pages) * in.page_stride, 64.f);
  for (int b = 0; b < in.batch; ++b) {
    const int n = s.lens[static_cast<size_t>(b)];
    for (int pos = 0; pos < n; ++pos) {
      for (int g = 0; g < s.hkv; ++g) {
        float* key = in.k.data() + in.key_offset(b, pos, g, s.page_size);
        const int quest_page = pos / ps::kQuestPage;
        // Duplicated pages: about half of the full Quest pages after the first copy an earlier one
        // key for key (same bound exactly); the copy's source is drawn once per page.
        if (s.ties == Ties::DuplicatePages && quest_page > 0 && (quest_page + 1) * ps::kQuestPage <= n) {
          std::mt19937_64 page_rng(s.seed * 7919 + static_cast<uint64_t>(b) * 104729 + static_cast<uint64_t>(quest_page));
          if (page_rng() % 2 == 0) {
            const int source = static_cast<int>(page_rng() % static_cast<uint64_t>(quest_page));
            const int from = source * ps::kQuestPage + pos % ps::kQuestPage;
            std::copy_n(in.k.data() + in.key_offset(b, from, g, s.page_size), d, key);
            continue;
          }
        }
        for (int c = 0; c < d; ++c) key[c] = s.ties == Ties::ZeroKeys ? 0.f : small_int(4);
      }
    }
  }
  auto to_bits = [](const std::vector<float>& v) {
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); ++i) bits[i] = float_to_bf16(v[i]);  // exact: small integers
    return bits;
  };
  in.q_bits = to_bits(in.q);
  in.k_bits = to_bits(in.k);
  return in;
}

// The streaming rule for one row: its keys ascending.
std::vector<int32_t> host_streaming(int64_t n, int64_t k) {
  const int64_t sinks = std::min<int64_t>(ps::kSinkTokens, k);
  std::vector<int32_t> keys;
  for (int64_t i = 0; i < sinks; ++i) keys.push_back(static_cast<int32_t>(i));
  for (int64_t i = n - (k - sinks); i < n; ++i) keys.push_back(static_cast<int32_t>(i));
  return keys;
}

// The Quest rule for row b and kv head g: its keys ascending.
std::vector<int32_t> host_quest(const SelectSpec& s, const SelectionInputs& in, int b, int g, int64_t k) {
  const int n = s.lens[static_cast<size_t>(b)], d = s.head_dim, group = s.hq / s.hkv;
  const int pages = (n + ps::kQuestPage - 1) / ps::kQuestPage;
  std::vector<double> bound(static_cast<size_t>(pages));
  for (int p = 0; p < pages; ++p) {
    const int first = p * ps::kQuestPage, last = std::min(n, first + ps::kQuestPage);
    double best = 0;
    for (int h = g * group; h < (g + 1) * group; ++h) {
      const float* q = in.q.data() + (static_cast<size_t>(b) * s.hq + h) * d;
      double sum = 0;
      for (int c = 0; c < d; ++c) {
        double lo = in.k[in.key_offset(b, first, g, s.page_size) + c], hi = lo;
        for (int i = first + 1; i < last; ++i) {
          const double x = in.k[in.key_offset(b, i, g, s.page_size) + c];
          lo = std::min(lo, x);
          hi = std::max(hi, x);
        }
        sum += std::max(q[c] * lo, q[c] * hi);
      }
      best = h == g * group ? sum : std::max(best, sum);
    }
    bound[static_cast<size_t>(p)] = best;
  }
  std::vector<int> order(static_cast<size_t>(pages));
  std::iota(order.begin(), order.end(), 0);
  // Bound descending; a stable sort of ascending page ids keeps ties in page order.
  std::stable_sort(order.begin(), order.end(),
                   [&](int x, int y) { return bound[static_cast<size_t>(x)] > bound[static_cast<size_t>(y)]; });
  std::vector<int> taken(static_cast<size_t>(pages), 0);
  int64_t left = k;
  for (int p : order) {
    const int size = std::min(n, (p + 1) * ps::kQuestPage) - p * ps::kQuestPage;
    taken[static_cast<size_t>(p)] = static_cast<int>(std::min<int64_t>(size, left));
    left -= taken[static_cast<size_t>(p)];
  }
  std::vector<int32_t> keys;
  for (int p = 0; p < pages; ++p) {
    for (int i = 0; i < taken[static_cast<size_t>(p)]; ++i) keys.push_back(p * ps::kQuestPage + i);
  }
  return keys;
}

// Device copies of the inputs and the Args that point at them.
struct DeviceInputs {
  DeviceBuffer q, k, page_indptr, page_indices, seq_lens;
  ps::Args args;
};

void make_device_inputs(const SelectSpec& s, const SelectionInputs& in, int64_t max_seq_len, DeviceInputs& dev) {
  dev.q = device_copy(in.q_bits);
  dev.k = device_copy(in.k_bits);
  dev.page_indptr = device_copy(in.page_indptr);
  dev.page_indices = device_copy(in.page_indices);
  dev.seq_lens = device_copy(s.lens);
  ps::Args& a = dev.args;
  a.q = dev.q.get();
  a.kv.k = a.kv.v = dev.k.get();  // the rules read keys only
  a.kv.dtype = DType::BF16;
  a.kv.batch = in.batch;
  a.kv.num_kv_heads = s.hkv;
  a.kv.head_dim = s.head_dim;
  a.kv.page_size = s.page_size;
  a.kv.head_stride = in.head_stride;
  a.kv.token_stride = in.token_stride;
  a.kv.page_stride = in.page_stride;
  a.kv.page_indptr = static_cast<const int32_t*>(dev.page_indptr.get());
  a.kv.page_indices = static_cast<const int32_t*>(dev.page_indices.get());
  a.kv.seq_lens = static_cast<const int32_t*>(dev.seq_lens.get());
  a.num_q_heads = s.hq;
  a.max_seq_len = max_seq_len;
  a.sparsity.rho = s.rho;
  a.sparsity.k_min = s.k_min;
  a.sparsity.k_multiple = s.k_multiple;
  a.sparsity.pooling = Pooling::Group;
}

// A decode selection buffer (one tile) of `sets` x `k_max` per row over device buffers.
Selection decode_rows_selection(int batch, int sets, int64_t k_max, void* indices, void* counts) {
  Selection sel;
  sel.batch = batch;
  sel.num_sets = sets;
  sel.max_tiles = 1;
  sel.k_max = k_max;
  return selection_on(sel, indices, counts);
}

CaseResult run_select(const SelectSpec& s) {
  std::mt19937_64 rng(s.seed);
  const SelectionInputs in = build_inputs(s, rng);
  const int64_t max_seq_len = *std::max_element(s.lens.begin(), s.lens.end()) + s.max_len_extra;
  const int64_t k_max = budget_k(max_seq_len, s.rho, s.k_min, s.k_multiple);
  DeviceInputs dev;
  make_device_inputs(s, in, max_seq_len, dev);
  const size_t rows = static_cast<size_t>(in.batch) * s.sets;
  GuardedBuffer d_indices(rows * static_cast<size_t>(k_max) * sizeof(int32_t)), d_counts(rows * sizeof(int32_t));
  // 0x7f7f7f7f: neither a key position nor the -1 padding, so every unwritten element shows.
  KASCADE_CUDA_CHECK(cudaMemset(d_indices.get(), 0x7f, d_indices.bytes()));
  KASCADE_CUDA_CHECK(cudaMemset(d_counts.get(), 0x7f, d_counts.bytes()));
  dev.args.selection = decode_rows_selection(in.batch, s.sets, k_max, d_indices.get(), d_counts.get());
  if (s.rule == Rule::Streaming) {
    ps::streaming(dev.args, nullptr);
  } else {
    ps::quest(dev.args, nullptr);
  }
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  if (std::string g = check_all_guards({{&d_indices, "indices"}, {&d_counts, "counts"}}); !g.empty()) {
    return CaseResult::fail(g);
  }
  const std::vector<int32_t> indices = download_all<int32_t>(d_indices, rows * static_cast<size_t>(k_max));
  const std::vector<int32_t> counts = download_all<int32_t>(d_counts, rows);
  for (int b = 0; b < in.batch; ++b) {
    const int64_t n = s.lens[static_cast<size_t>(b)];
    const int64_t k = budget_k(n, s.rho, s.k_min, s.k_multiple);
    for (int set = 0; set < s.sets; ++set) {
      std::vector<int32_t> expected = s.rule == Rule::Streaming ? host_streaming(n, k) : host_quest(s, in, b, set, k);
      const size_t row = static_cast<size_t>(b) * s.sets + set;
      std::ostringstream where;
      where << "row " << b << " (n=" << n << ", k=" << k << ") set " << set << ": ";
      if (static_cast<int64_t>(expected.size()) != k) {
        return CaseResult::fail(where.str() + "the host rule selected " + std::to_string(expected.size()) + " keys");
      }
      if (counts[row] != k) return CaseResult::fail(where.str() + "count " + std::to_string(counts[row]));
      expected.resize(static_cast<size_t>(k_max), -1);
      for (int64_t j = 0; j < k_max; ++j) {
        const int32_t got = indices[row * static_cast<size_t>(k_max) + static_cast<size_t>(j)];
        if (got != expected[static_cast<size_t>(j)]) {
          return CaseResult::fail(where.str() + "entry " + std::to_string(j) + " is " + std::to_string(got) +
                                  ", expected " + std::to_string(expected[static_cast<size_t>(j)]));
        }
      }
    }
  }
  return CaseResult::pass();
}

// "" when `call` throws kascade::Error, else why not.
template <typename Call>
std::string expect_error(const char* what, Call call) {
  try {
    call();
  } catch (const kascade::Error&) {
    return "";
  }
  return std::string(what) + " was accepted";
}

CaseResult run_selection_errors() {
  // Valid buffers for one row of 16 keys, so that a call whose check were missing would not fault.
  SelectSpec s;
  s.lens = {16};
  s.hq = 9;
  s.hkv = 1;
  s.sets = 1;
  std::mt19937_64 rng(1);
  const SelectionInputs in = build_inputs(s, rng);
  DeviceInputs dev;
  make_device_inputs(s, in, 16, dev);
  GuardedBuffer d_indices(16 * 3 * sizeof(int32_t)), d_counts(3 * sizeof(int32_t));
  dev.args.selection = decode_rows_selection(1, 1, 16, d_indices.get(), d_counts.get());
  std::string e = expect_error("quest with 9 query heads per kv head", [&] { ps::quest(dev.args, nullptr); });
  if (e.empty()) {
    ps::Args a = dev.args;
    a.num_q_heads = 3;  // group 3 over one kv head, but three sets
    a.selection.num_sets = 3;
    e = expect_error("quest with 3 selection sets for 1 kv head", [&] { ps::quest(a, nullptr); });
  }
  KASCADE_CUDA_CHECK(cudaDeviceSynchronize());
  return e.empty() ? CaseResult::pass() : CaseResult::fail(e);
}

void add_cases(CaseList& out, const std::vector<SelectSpec>& specs) {
  for (const SelectSpec& s : specs) {
    const char* op = s.rule == Rule::Streaming ? "engine_streaming_select" : "engine_quest_select";
    out.push_back(std::make_unique<FnCase>(op, describe(s), [s] { return run_select(s); }));
  }
}

void make_streaming_cases(CaseList& out) {
  std::vector<SelectSpec> specs;
  uint64_t seed = 400;
  for (int sets : {3, 1}) {
    for (int k_multiple : {1, 16}) {
      SelectSpec s;
      s.rule = Rule::Streaming;
      s.sets = sets;
      s.k_multiple = k_multiple;
      s.max_len_extra = sets == 1 ? 37 : 0;
      s.seed = seed++;
      specs.push_back(s);
    }
  }
  SelectSpec s;  // budgets below the 4 sinks (k = 2 for n >= 2) and one row without recent keys
  s.rule = Rule::Streaming;
  s.lens = {1, 2, 3, 4, 5, 9};
  s.k_min = 2;
  s.rho = 0.05;
  s.seed = seed++;
  specs.push_back(s);
  s = SelectSpec{};  // k = n: every key
  s.rule = Rule::Streaming;
  s.k_min = 4096;
  s.seed = seed++;
  specs.push_back(s);
  add_cases(out, specs);
}

void make_quest_cases(CaseList& out) {
  std::vector<SelectSpec> specs;
  uint64_t seed = 500;
  auto add = [&](auto&& edit) {
    SelectSpec s;
    s.rule = Rule::Quest;
    edit(s);
    s.sets = s.hkv;
    s.seed = seed++;
    specs.push_back(s);
  };
  add([](SelectSpec&) {});
  add([](SelectSpec& s) { s.k_multiple = 16; s.max_len_extra = 37; });
  add([](SelectSpec& s) { s.k_multiple = 7; });  // budgets that cut a page
  add([](SelectSpec& s) { s.hq = 8; s.hkv = 1; s.head_dim = 128; });    // group 8
  add([](SelectSpec& s) { s.hq = 4; s.hkv = 4; });                      // group 1
  add([](SelectSpec& s) { s.hq = 14; s.hkv = 2; s.head_dim = 128; s.page_size = 32; });  // group 7, cache pages of 32
  add([](SelectSpec& s) { s.page_size = 8; });
  add([](SelectSpec& s) { s.stride_pad = 8; });
  add([](SelectSpec& s) { s.ties = Ties::DuplicatePages; });
  add([](SelectSpec& s) { s.ties = Ties::DuplicatePages; s.hq = 8; s.hkv = 1; s.k_multiple = 5; });
  add([](SelectSpec& s) { s.ties = Ties::ZeroKeys; });  // every bound 0: the first k keys
  add([](SelectSpec& s) { s.k_min = 4096; });          // k = n: every key
  // 70000 keys: a page table of 4375 pages needs 52.5 KB of shared memory (> 48 KB default).
  add([](SelectSpec& s) { s.lens = {70000, 300}; s.hq = 4; s.hkv = 2; s.k_min = 128; });
  add_cases(out, specs);
}

CaseRegistrar streaming_registrar("engine_streaming_select", make_streaming_cases);
CaseRegistrar quest_registrar("engine_quest_select", make_quest_cases);
CaseRegistrar selection_errors_registrar("engine_selection_errors", [](CaseList& out) {
  out.push_back(std::make_unique<FnCase>("engine_selection_errors", "quest_group=9,quest_sets=3/Hkv=1",
                                         [] { return run_selection_errors(); }));
});

}  // namespace
}  // namespace kascade::gpu_test
