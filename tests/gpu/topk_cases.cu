// tests/gpu/topk_cases.cu — the two top-k kernels (their select is src/cuda/topk/radix_select.cuh)
// on inputs whose order is known exactly, against the oracle's rule (SPEC 4/5): the k largest
// values, ties toward the lower index, ascending; count k; -1 after them up to k_max.
//   topk_decode   launch_pooled_topk with the pooled-mass pass fused (mass_chunks 1) and split
//                 over chunk blocks (mass_chunks > 1); the expected selection is computed from
//                 the pooled values the kernel stored (its own input to the select), and those
//                 must match the host's sums (integer log2 logits, (M, L) = (0, 1): every pooled
//                 value is a sum of a few powers of two, exact in fp32 in any order, so keys with
//                 equal logits tie exactly).
//   topk_prefill  prefill::launch_topk on mass rows given directly, every tile of a batch.
// Value patterns: spread (few ties), near-equal (one first radix digit, ties in the later ones),
// all equal, and structured rows (sure keys above, a set number sharing the k-th largest's first
// digit, the rest below) that put exactly kCandidateCapacity (6,144) and one more keys in
// prefill's candidate bin. Budgets cover k = 1, k = n - 1, k = n, k > n and multi-tile rows.
// Selections land in guarded buffers filled with a value that is neither a position nor -1.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "decode/decode_params.h"
#include "gpu_test.h"
#include "kascade/budget.h"
#include "prefill/prefill_params.h"

namespace kascade::gpu_test {
namespace {

enum class Pattern { Spread, NearEqual, AllEqual, Structured };

const char* pattern_name(Pattern p) {
  switch (p) {
    case Pattern::Spread: return "spread";
    case Pattern::NearEqual: return "near-equal";
    case Pattern::AllEqual: return "all-equal";
    case Pattern::Structured: return "structured";
  }
  return "?";
}

struct ValueSpec {
  Pattern pattern = Pattern::Spread;
  int heads = 1;             // log2 logits summed per value (decode: heads per set)
  int sure = 0;              // Structured: keys above the candidates' first digit
  int candidates = 0;        // Structured: keys sharing one first digit (the rest lie below it)
};

std::string describe(const ValueSpec& v) {
  std::ostringstream os;
  os << pattern_name(v.pattern) << ",G=" << v.heads;
  if (v.pattern == Pattern::Structured) os << ",sure=" << v.sure << ",cand=" << v.candidates;
  return os.str();
}

// SPEC 3's budget knobs and the seed of a case.
struct BudgetSpec {
  double rho = 0.1;
  int k_min = 128;
  int k_multiple = 1;
  uint64_t seed = 1;
};

std::string describe(const BudgetSpec& b) {
  std::ostringstream os;
  os << ",rho=" << b.rho << ",k_min=" << b.k_min << ",k_mult=" << b.k_multiple << ",seed=" << b.seed;
  return os.str();
}

// Integer log2 logits [heads, n] of one row. A value is sum_h 2^logit; head 0 sets its first
// radix digit (level 2, 0 or -1), the others add at most 3 * 2^-18, which stays in the same
// digit and is exact in fp32 beside it.
std::vector<int> row_logits(const ValueSpec& s, int n, std::mt19937_64& rng) {
  std::vector<int> logits(static_cast<size_t>(s.heads) * n);
  std::uniform_int_distribution<int> spread(-20, 0), tiny(-20, -18);
  std::vector<int> level(n, 0);
  if (s.pattern == Pattern::Structured) {
    const int sure = std::min(s.sure, n), candidates = std::min(s.candidates, n - sure);
    for (int i = 0; i < n; ++i) level[i] = i < sure ? 2 : i < sure + candidates ? 0 : -1;
    std::shuffle(level.begin(), level.end(), rng);
  }
  for (int h = 0; h < s.heads; ++h) {
    for (int i = 0; i < n; ++i) {
      int& logit = logits[static_cast<size_t>(h) * n + i];
      switch (s.pattern) {
        case Pattern::Spread: logit = spread(rng); break;
        case Pattern::AllEqual: logit = 0; break;
        case Pattern::NearEqual: logit = h == 0 ? 0 : tiny(rng); break;
        case Pattern::Structured: logit = h == 0 ? level[i] : tiny(rng); break;
      }
    }
  }
  return logits;
}

float pooled_value(const std::vector<int>& logits, int heads, int n, int i) {
  double sum = 0.0;
  for (int h = 0; h < heads; ++h) sum += std::ldexp(1.0, logits[static_cast<size_t>(h) * n + i]);
  return static_cast<float>(sum);
}

// The oracle's selection of k among values[0 .. n): the k largest, ties toward the lower index,
// ascending (all of 0 .. n-1 when k >= n).
std::vector<int32_t> top_k_by_rule(const float* values, int n, int k) {
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (k >= n) return order;
  std::stable_sort(order.begin(), order.end(), [values](int32_t a, int32_t b) { return values[a] > values[b]; });
  order.resize(std::max(k, 0));
  std::sort(order.begin(), order.end());
  return order;
}

// "" when row[0 .. k_max) is `expected` then -1 padding and count == expected.size().
std::string check_row(const std::vector<int32_t>& expected, const int32_t* row, int k_max, int32_t count,
                      const float* values) {
  std::ostringstream os;
  if (count != static_cast<int32_t>(expected.size())) {
    os << "count " << count << ", expected " << expected.size();
    return os.str();
  }
  for (int i = 0; i < k_max; ++i) {
    const int32_t want = i < static_cast<int>(expected.size()) ? expected[i] : -1;
    if (row[i] == want) continue;
    os << "entry " << i << " is " << row[i] << ", expected " << want;
    if (values != nullptr && want >= 0) os << " (value " << values[want] << ")";
    return os.str();
  }
  return "";
}

constexpr unsigned char kSelectionFill = 0x5a;  // 0x5a5a5a5a: neither a position nor -1

void fill_selection(GuardedBuffer& buffer) {
  KASCADE_CUDA_CHECK(cudaMemset(buffer.get(), kSelectionFill, buffer.bytes()));
}

template <typename T>
void upload(DeviceBuffer& buffer, const std::vector<T>& host) {
  buffer.upload(host.data(), host.size() * sizeof(T));
}

std::string guards(const GuardedBuffer& indices, const GuardedBuffer& counts) {
  const std::string a = indices.check_guards("selection");
  return a.empty() ? counts.check_guards("counts") : a;
}

struct DecodeTopkSpec {
  ValueSpec values;
  int num_sets = 2;
  std::vector<int> lens;
  int mass_chunks = 1;
  BudgetSpec budget;
};

class DecodeTopkCase : public TestCase {
 public:
  explicit DecodeTopkCase(DecodeTopkSpec spec) : s_(std::move(spec)) {}
  std::string op() const override { return "topk_decode"; }
  std::string vars() const override {
    std::ostringstream os;
    os << describe(s_.values) << ",S=" << s_.num_sets << ",chunks=" << s_.mass_chunks << ",lens=";
    for (size_t i = 0; i < s_.lens.size(); ++i) os << (i ? ";" : "") << s_.lens[i];
    return os.str() + describe(s_.budget);
  }

  CaseResult run() override {
    std::mt19937_64 rng(s_.budget.seed);
    const int batch = static_cast<int>(s_.lens.size());
    const int heads = s_.values.heads, sets = s_.num_sets, hq = heads * sets;
    const int max_len = *std::max_element(s_.lens.begin(), s_.lens.end());
    const int64_t stride = (max_len + 3) / 4 * 4;
    const int k_max = static_cast<int>(budget_k(max_len, s_.budget.rho, s_.budget.k_min, s_.budget.k_multiple));
    std::vector<float> scores(static_cast<size_t>(batch) * hq * stride, -1000.f);
    std::vector<float> host_pooled(static_cast<size_t>(batch) * sets * stride, 0.f);
    for (int b = 0; b < batch; ++b) {
      const int n = s_.lens[b];
      for (int set = 0; set < sets; ++set) {
        const std::vector<int> logits = row_logits(s_.values, n, rng);
        for (int h = 0; h < heads; ++h)
          for (int i = 0; i < n; ++i)
            scores[(static_cast<size_t>(b) * hq + set * heads + h) * stride + i] =
                static_cast<float>(logits[static_cast<size_t>(h) * n + i]);
        for (int i = 0; i < n; ++i)
          host_pooled[(static_cast<size_t>(b) * sets + set) * stride + i] = pooled_value(logits, heads, n, i);
      }
    }
    std::vector<float> unit_ml(static_cast<size_t>(batch) * hq * 2, 0.f);
    for (size_t i = 1; i < unit_ml.size(); i += 2) unit_ml[i] = 1.f;  // (M, L) = (0, 1)

    DeviceBuffer d_scores, d_ml, d_lens;
    upload(d_scores, scores);
    upload(d_ml, unit_ml);
    upload(d_lens, s_.lens);
    DeviceBuffer d_pooled(host_pooled.size() * 4), d_candidates(host_pooled.size() * 4);
    DeviceBuffer d_histogram(static_cast<size_t>(batch) * sets * cuda::kTopkDigitBins * 4);
    GuardedBuffer d_sel(static_cast<size_t>(batch) * sets * k_max * 4), d_counts(static_cast<size_t>(batch) * sets * 4);
    fill_selection(d_sel);
    fill_selection(d_counts);

    cuda::PooledTopkParams p{};
    p.scores = d_scores.as<float>();
    p.score_stride = stride;
    p.head_ml = d_ml.as<float2>();
    p.pooled = d_pooled.as<float>();
    p.candidates = d_candidates.as<int32_t>();
    p.digit_histogram = d_histogram.as<int>();
    p.mass_chunks = s_.mass_chunks;
    p.sel_indices = static_cast<int32_t*>(d_sel.get());
    p.sel_counts = static_cast<int32_t*>(d_counts.get());
    p.seq_lens = d_lens.as<int32_t>();
    p.max_seq_len = max_len;
    p.num_q_heads = hq;
    p.heads_per_set = heads;
    p.num_sets = sets;
    p.sel_kmax = k_max;
    p.rho = s_.budget.rho;
    p.k_min = s_.budget.k_min;
    p.k_multiple = s_.budget.k_multiple;
    cuda::launch_pooled_topk(p, batch, nullptr);
    KASCADE_CUDA_CHECK(cudaDeviceSynchronize());

    std::vector<float> pooled(host_pooled.size());
    std::vector<int32_t> sel(static_cast<size_t>(batch) * sets * k_max), counts(static_cast<size_t>(batch) * sets);
    d_pooled.download(pooled.data(), pooled.size() * 4);
    d_sel.download(sel.data(), sel.size() * 4);
    d_counts.download(counts.data(), counts.size() * 4);
    const std::string guard = guards(d_sel, d_counts);
    if (!guard.empty()) return CaseResult::fail(guard);
    for (int b = 0; b < batch; ++b) {
      const int n = s_.lens[b];
      const int k = static_cast<int>(std::min<int64_t>(budget_k(n, s_.budget.rho, s_.budget.k_min, s_.budget.k_multiple), k_max));
      for (int set = 0; set < sets; ++set) {
        const size_t row = static_cast<size_t>(b) * sets + set;
        const float* values = pooled.data() + row * stride;
        if (k < n) {  // the kernel computes the masses only when it has to select
          for (int i = 0; i < n; ++i) {
            const float want = host_pooled[row * stride + i];
            if (!(std::fabs(values[i] - want) <= 1e-6f * want)) {
              std::ostringstream os;
              os << "sequence " << b << " set " << set << ": pooled value " << i << " is " << values[i] << ", expected "
                 << want;
              return CaseResult::fail(os.str());
            }
          }
        }
        const std::string diff =
            check_row(top_k_by_rule(values, n, k), sel.data() + row * k_max, k_max, counts[row], values);
        if (!diff.empty())
          return CaseResult::fail("sequence " + std::to_string(b) + " set " + std::to_string(set) + ": " + diff);
      }
    }
    return CaseResult::pass();
  }

 private:
  DecodeTopkSpec s_;
};

struct PrefillTopkSpec {
  ValueSpec values;
  int num_selections = 2;
  std::vector<std::pair<int, int>> seqs;  // (queries, keys p1) per sequence
  int tile = 32;
  bool rolling = true;
  BudgetSpec budget;
};

class PrefillTopkCase : public TestCase {
 public:
  explicit PrefillTopkCase(PrefillTopkSpec spec) : s_(std::move(spec)) {}
  std::string op() const override { return "topk_prefill"; }
  std::string vars() const override {
    std::ostringstream os;
    os << describe(s_.values) << ",S=" << s_.num_selections << ",T=" << s_.tile << (s_.rolling ? ",rolling" : ",fixed")
       << ",nq/p1=";
    for (size_t i = 0; i < s_.seqs.size(); ++i) os << (i ? ";" : "") << s_.seqs[i].first << "/" << s_.seqs[i].second;
    return os.str() + describe(s_.budget);
  }

  CaseResult run() override {
    std::mt19937_64 rng(s_.budget.seed);
    const int batch = static_cast<int>(s_.seqs.size()), sel_sets = s_.num_selections;
    std::vector<int32_t> q_indptr(1, 0), seq_lens;
    int max_tiles = 0, k_max = 0, max_p1 = 0;
    for (const auto& [nq, p1] : s_.seqs) {
      q_indptr.push_back(q_indptr.back() + nq);
      seq_lens.push_back(p1);
      const int p0 = p1 - nq;
      max_tiles = std::max(max_tiles, static_cast<int>(num_tiles(p0, p1, s_.tile)));
      k_max = std::max(k_max, static_cast<int>(max_tile_budget(s_.rolling, p0, p1, s_.tile, s_.budget.rho, s_.budget.k_min,
                                                                s_.budget.k_multiple)));
      max_p1 = std::max(max_p1, p1);
    }
    const int64_t stride = max_p1;
    std::vector<float> mass(static_cast<size_t>(batch) * max_tiles * sel_sets * stride, -1.f);
    auto row_of = [&](int b, int tau, int sel) {
      return mass.data() + ((static_cast<size_t>(b) * max_tiles + tau) * sel_sets + sel) * stride;
    };
    for (int b = 0; b < batch; ++b) {
      const int p0 = s_.seqs[b].second - s_.seqs[b].first;
      for (int tau = 0; tau < num_tiles(p0, s_.seqs[b].second, s_.tile); ++tau) {
        const int n = static_cast<int>(tile_begin(p0, tau, s_.tile));
        for (int sel = 0; sel < sel_sets; ++sel) {
          const std::vector<int> logits = row_logits(s_.values, n, rng);
          for (int i = 0; i < n; ++i) row_of(b, tau, sel)[i] = pooled_value(logits, s_.values.heads, n, i);
        }
      }
    }
    DeviceBuffer d_indptr, d_lens, d_mass;
    upload(d_indptr, q_indptr);
    upload(d_lens, seq_lens);
    upload(d_mass, mass);
    const size_t slots = static_cast<size_t>(batch) * sel_sets * max_tiles;
    GuardedBuffer d_sel(std::max<size_t>(slots * k_max * 4, 4)), d_counts(slots * 4);
    fill_selection(d_sel);
    fill_selection(d_counts);

    cuda::prefill::TopkParams p{};
    p.q_indptr = d_indptr.as<int32_t>();
    p.seq_lens = d_lens.as<int32_t>();
    p.mass = d_mass.as<float>();
    p.mass_stride = stride;
    p.sel_indices = static_cast<int32_t*>(d_sel.get());
    p.sel_counts = static_cast<int32_t*>(d_counts.get());
    p.tile0 = 0;
    p.chunk_tiles = max_tiles;
    p.num_selections = sel_sets;
    p.max_tiles = max_tiles;
    p.k_max = k_max;
    p.tile = s_.tile;
    p.rolling = s_.rolling;
    p.rho = s_.budget.rho;
    p.k_min = s_.budget.k_min;
    p.k_multiple = s_.budget.k_multiple;
    cuda::prefill::launch_topk(p, dim3(max_tiles, batch * sel_sets), nullptr);
    KASCADE_CUDA_CHECK(cudaDeviceSynchronize());

    std::vector<int32_t> sel(slots * k_max), counts(slots);
    d_sel.download(sel.data(), sel.size() * 4);
    d_counts.download(counts.data(), counts.size() * 4);
    const std::string guard = guards(d_sel, d_counts);
    if (!guard.empty()) return CaseResult::fail(guard);
    for (int b = 0; b < batch; ++b) {
      const int p1 = s_.seqs[b].second, p0 = p1 - s_.seqs[b].first;
      const int tiles = static_cast<int>(num_tiles(p0, p1, s_.tile));
      for (int sel_set = 0; sel_set < sel_sets; ++sel_set) {
        for (int tau = 0; tau < max_tiles; ++tau) {
          const int n = tau < tiles ? static_cast<int>(tile_begin(p0, tau, s_.tile)) : 0;
          const int k = tau < tiles ? static_cast<int>(tile_budget(s_.rolling, n, p1, s_.budget.rho, s_.budget.k_min, s_.budget.k_multiple)) : 0;
          const size_t slot = (static_cast<size_t>(b) * sel_sets + sel_set) * max_tiles + tau;
          const float* values = tau < tiles ? row_of(b, tau, sel_set) : nullptr;
          const std::vector<int32_t> expected = values ? top_k_by_rule(values, n, k) : std::vector<int32_t>{};
          const std::string diff = check_row(expected, sel.data() + slot * k_max, k_max, counts[slot], values);
          if (!diff.empty()) {
            std::ostringstream os;
            os << "sequence " << b << " selection " << sel_set << " tile " << tau << " (n " << n << ", k " << k
               << "): " << diff;
            return CaseResult::fail(os.str());
          }
        }
      }
    }
    return CaseResult::pass();
  }

 private:
  PrefillTopkSpec s_;
};

constexpr int kPrefillCandidateCapacity = 6144;  // kCandidateCapacity of src/cuda/prefill/prefill_topk.cu

void make_topk_cases(CaseList& cases) {
  uint64_t seed = 9000;
  // Decode: every pattern, fused and chunked pass 1. Lengths: k = n - 1 (1001), k = n (1000), k > n
  // (999, 2), rows over one compaction tile of 4,096 keys (4097, 9000, 20000), lengths not a
  // multiple of 4.
  const std::vector<ValueSpec> decode_values = {
      {Pattern::Spread, 4, 0, 0},    {Pattern::Spread, 1, 0, 0}, {Pattern::NearEqual, 4, 0, 0},
      {Pattern::NearEqual, 1, 0, 0}, {Pattern::AllEqual, 2, 0, 0}, {Pattern::Structured, 3, 300, 7000},
  };
  for (const ValueSpec& values : decode_values) {
    for (int chunks : {1, 5}) {
      DecodeTopkSpec s;
      s.values = values;
      s.mass_chunks = chunks;
      s.lens = {5000, 301, 4097, 2, 20000};
      s.budget.seed = seed++;
      cases.push_back(std::make_unique<DecodeTopkCase>(s));
      s.budget.rho = 0.0, s.budget.k_min = 1000, s.lens = {1001, 1000, 999, 9000, 4099};
      s.budget.seed = seed++;
      cases.push_back(std::make_unique<DecodeTopkCase>(s));
    }
  }
  {  // k = 1, one set, k rounded up to a multiple of 64
    DecodeTopkSpec s;
    s.values = {Pattern::NearEqual, 2, 0, 0};
    s.num_sets = 1, s.budget.rho = 0.0, s.budget.k_min = 1, s.lens = {1, 2, 4096, 5003};
    s.budget.seed = seed++;
    cases.push_back(std::make_unique<DecodeTopkCase>(s));
    s.budget.k_min = 100, s.budget.k_multiple = 64, s.mass_chunks = 3;
    s.budget.seed = seed++;
    cases.push_back(std::make_unique<DecodeTopkCase>(s));
  }
  // Prefill: tiles of ~9,000 keys with k = 3,000 (k_min, rho 0): 1,500 sure keys and exactly the
  // candidate capacity, one more (the row is read again for the last digits), or far more keys in
  // the k-th largest's first-digit bin; every other pattern too.
  for (int candidates : {kPrefillCandidateCapacity, kPrefillCandidateCapacity + 1, 7500}) {
    for (int heads : {1, 3}) {
      PrefillTopkSpec s;
      s.values = {Pattern::Structured, heads, 1500, candidates};
      s.seqs = {{40, 9040}, {20, 8000}};
      s.tile = 16, s.budget.rho = 0.0, s.budget.k_min = 3000;
      s.budget.seed = seed++;
      cases.push_back(std::make_unique<PrefillTopkCase>(s));
    }
  }
  const std::vector<ValueSpec> prefill_values = {
      {Pattern::Spread, 3, 0, 0}, {Pattern::NearEqual, 1, 0, 0}, {Pattern::NearEqual, 3, 0, 0},
      {Pattern::AllEqual, 1, 0, 0}, {Pattern::Structured, 2, 50, 400}};
  for (const ValueSpec& values : prefill_values) {
    PrefillTopkSpec s;
    s.values = values;
    // Fresh prompts and chunks: empty first tiles (k >= n), k = n - 1 (129 keys, k_min 128),
    // unaligned p0, rows from 0 to ~9,000 keys (over a 2,048-key ordered pass).
    s.seqs = {{300, 300}, {64, 193}, {96, 9100}};
    s.budget.seed = seed++;
    cases.push_back(std::make_unique<PrefillTopkCase>(s));
    s.rolling = false, s.budget.k_multiple = 64;
    s.budget.seed = seed++;
    cases.push_back(std::make_unique<PrefillTopkCase>(s));
  }
  {  // k = 1 at every tile, and k = 0 (k_min 0, rho 0): nothing selected
    PrefillTopkSpec s;
    s.values = {Pattern::NearEqual, 2, 0, 0};
    s.seqs = {{64, 5000}, {33, 33}};
    s.budget.rho = 0.0, s.budget.k_min = 1;
    s.budget.seed = seed++;
    cases.push_back(std::make_unique<PrefillTopkCase>(s));
    s.budget.k_min = 0;
    s.budget.seed = seed++;
    cases.push_back(std::make_unique<PrefillTopkCase>(s));
  }
}

CaseRegistrar topk_registrar("topk", make_topk_cases);

}  // namespace
}  // namespace kascade::gpu_test
