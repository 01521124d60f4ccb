// bench/bench_prefill.cpp — `kascade-bench prefill`: time every prefill role and the 32-layer schedule.
//
// For each (model shape, context n): one fresh prompt (batch 1, queries 0..n-1) over a paged bf16
// KV cache (page size 16, pages in random order) filled with random values; per role the
// harness's cold-L2 median. Reuse reads the selection the anchor left in the buffer. The schedule
// is the paper's 32 layers (1 layer-0 + 4 anchors + 27 reuse layers) run back to back over the same
// tensors and timed as a whole. Baseline records (cuDNN SDPA causal and the flash backend, from
// `bench/run_baseline.py --phase prefill` in the same device run) are read from --baseline; every
// kascade time gets ratio_vs_cudnn = ms / cuDNN ms of the shape. The layer-0 and anchor records
// also carry phases_ms: the median time of each anchor phase (row LSE, pooled mass, top-k, sparse
// pass; cuda/prefill/anchor_phases.h), from CUDA events around each launch in separate cold-L2 runs.
//
// tflops counts the FLOPs each role needs (2 per multiply-add):
//   dense   4 D Hq sum_t (t + 1)                       (causal QK^T and PV)
//   layer0  dense + 2 D Hq sum_tiles rows * b          (scores recomputed for the pooled mass)
//   anchor  2 D Hq sum_t (t + 1)                       (LSE pass: QK^T only)
//           + 2 D Hq sum_tiles rows * b                (pooled mass)
//           + 4 D Hq sum_t (k_tau + t - b + 1)          (sparse pass)
//   reuse   4 D Hq sum_t (k_tau + t - b + 1)
#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "bench_harness.h"
#include "common/cuda_check.h"
#include "prefill/anchor_phases.h"
#include "fill_random.h"
#include "kascade/attention_prefill.h"
#include "kascade/budget.h"

namespace kascade::bench {

namespace {

constexpr int kPageSize = 16;

// FLOPs each role needs for a fresh prompt of n tokens (see the file comment).
std::map<Role, double> role_flops(const ModelShape& m, int n, const SparsityParams& sp) {
  const double per_key = 2.0 * m.head_dim * m.hq;  // one q.k (or p.v) for every query head
  double causal_keys = 0, mass_keys = 0, sparse_keys = 0;
  const int64_t tiles = num_tiles(0, n, sp.tile);
  for (int64_t tau = 0; tau < tiles; ++tau) {
    const int64_t b = tile_begin(0, tau, sp.tile), e = tile_end(0, n, tau, sp.tile);
    const int64_t k = tile_budget(sp.rolling(), b, n, sp.rho, sp.k_min, sp.k_multiple);
    for (int64_t t = b; t < e; ++t) {
      causal_keys += double(t + 1);
      sparse_keys += double(k + t - b + 1);
    }
    mass_keys += double(e - b) * double(b);
  }
  const double dense = 2 * per_key * causal_keys;
  return {{Role::Dense, dense},
          {Role::Layer0, dense + per_key * mass_keys},
          {Role::Anchor, per_key * causal_keys + per_key * mass_keys + 2 * per_key * sparse_keys},
          {Role::Reuse, 2 * per_key * sparse_keys}};
}

using cuda::prefill::AnchorPhase;
using cuda::prefill::kAnchorPhaseCount;

// Records a pair of CUDA events around every launch of an anchor call and, once the runs are
// complete, the time of each phase per run (the sum over its launches).
class PhaseEvents : public cuda::prefill::AnchorPhaseObserver {
 public:
  PhaseEvents() = default;
  PhaseEvents(const PhaseEvents&) = delete;
  PhaseEvents& operator=(const PhaseEvents&) = delete;
  ~PhaseEvents() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  void start_run() { runs_.emplace_back(); }
  void begin(AnchorPhase phase, cudaStream_t stream) override { runs_.back().push_back({phase, record(stream), nullptr}); }
  void end(AnchorPhase, cudaStream_t stream) override { runs_.back().back().stop = record(stream); }
  // Median over the last `reps` runs of each phase's milliseconds (the runs must have completed).
  json median_ms(int reps) const {
    json phases = json::object();
    for (int phase = 0; phase < kAnchorPhaseCount; ++phase) {
      std::vector<float> per_run;
      for (size_t r = runs_.size() - static_cast<size_t>(reps); r < runs_.size(); ++r) {
        float total = 0.f;
        for (const Launch& l : runs_[r]) {
          if (static_cast<int>(l.phase) != phase) continue;
          float ms = 0.f;
          KASCADE_CUDA_CHECK(cudaEventElapsedTime(&ms, l.start, l.stop));
          total += ms;
        }
        per_run.push_back(total);
      }
      std::sort(per_run.begin(), per_run.end());
      phases[cuda::prefill::anchor_phase_name(static_cast<AnchorPhase>(phase))] = per_run[per_run.size() / 2];
    }
    return phases;
  }

 private:
  struct Launch {
    AnchorPhase phase;
    cudaEvent_t start, stop;
  };
  // A fresh event per record: every run's pairs stay readable until median_ms.
  cudaEvent_t record(cudaStream_t stream) {
    cudaEvent_t e;
    KASCADE_CUDA_CHECK(cudaEventCreate(&e));
    events_.push_back(e);
    KASCADE_CUDA_CHECK(cudaEventRecord(e, stream));
    return e;
  }
  std::vector<cudaEvent_t> events_;
  std::vector<std::vector<Launch>> runs_;
};

class PrefillMode : public Mode {
 public:
  const char* name() const override { return "prefill"; }

  const char* usage() const override {
    return "  --shapes llama8b:8192,llama8b:32768,llama8b:131072,smollm:8192\n"
           "                                   MODEL:CONTEXT pairs (batch 1, a fresh prompt)\n";
  }

  bool set_option(const std::string& option, const std::string& value) override {
    if (option != "--shapes") return false;
    shapes_.clear();
    for (const auto& item : split_list(option, value)) {
      const size_t colon = item.find(':');
      KASCADE_CHECK(colon != std::string::npos, "--shapes: '" << item << "' is not MODEL:CONTEXT");
      model_shape(item.substr(0, colon));  // throws for an unknown key
      shapes_.emplace_back(item.substr(0, colon), parse_positive_int("--shapes", item.substr(colon + 1)));
    }
    return true;
  }

  int warmups() const override { return 1; }

  void measure(const CommonOptions& o, const Baselines& baselines, ColdL2Timer& timer, std::mt19937_64& rng,
               json& records) override {
    for (const auto& [model, n] : shapes_) measure_shape(o, model_shape(model), n, baselines, timer, rng, records);
  }

 private:
  void measure_shape(const CommonOptions& o, const ModelShape& m, int n, const Baselines& baselines,
                     ColdL2Timer& timer, std::mt19937_64& rng, json& records) const;

  std::vector<std::pair<std::string, int>> shapes_ = {
      {"llama8b", 8192}, {"llama8b", 32768}, {"llama8b", 131072}, {"smollm", 8192}};
};

void PrefillMode::measure_shape(const CommonOptions& o, const ModelShape& m, int n, const Baselines& baselines,
                                ColdL2Timer& timer, std::mt19937_64& rng, json& records) const {
  const int pages = (n + kPageSize - 1) / kPageSize;
  const size_t pool_elems = size_t(pages) * kPageSize * m.hkv * m.head_dim;
  DeviceMemory k_pool(pool_elems * 2), v_pool(pool_elems * 2);
  fill_uniform(k_pool.ptr, DType::BF16, pool_elems, 1.7f, rng(), nullptr);
  fill_uniform(v_pool.ptr, DType::BF16, pool_elems, 1.7f, rng(), nullptr);
  std::vector<int32_t> page_indptr = {0, pages}, page_indices(pages), seq_lens = {n}, q_indptr = {0, n};
  std::iota(page_indices.begin(), page_indices.end(), 0);
  std::shuffle(page_indices.begin(), page_indices.end(), rng);
  DeviceMemory d_page_indptr(8), d_page_indices(size_t(pages) * 4), d_seq_lens(4), d_q_indptr(8);
  KASCADE_CUDA_CHECK(cudaMemcpy(d_page_indptr.ptr, page_indptr.data(), 8, cudaMemcpyHostToDevice));
  KASCADE_CUDA_CHECK(cudaMemcpy(d_page_indices.ptr, page_indices.data(), size_t(pages) * 4, cudaMemcpyHostToDevice));
  KASCADE_CUDA_CHECK(cudaMemcpy(d_seq_lens.ptr, seq_lens.data(), 4, cudaMemcpyHostToDevice));
  KASCADE_CUDA_CHECK(cudaMemcpy(d_q_indptr.ptr, q_indptr.data(), 8, cudaMemcpyHostToDevice));
  const size_t q_elems = size_t(n) * m.hq * m.head_dim;
  DeviceMemory q(q_elems * 2), out(q_elems * 2);
  fill_uniform(q.ptr, DType::BF16, q_elems, 3.4f, rng(), nullptr);

  SparsityParams sp;
  sp.rho = o.rho;
  PagedKV kv;
  kv.k = k_pool.ptr;
  kv.v = v_pool.ptr;
  kv.dtype = DType::BF16;
  kv.batch = 1;
  kv.num_kv_heads = m.hkv;
  kv.head_dim = m.head_dim;
  kv.page_size = kPageSize;
  kv.set_packed_strides();
  kv.page_indptr = d_page_indptr.as<int32_t>();
  kv.page_indices = d_page_indices.as<int32_t>();
  kv.seq_lens = d_seq_lens.as<int32_t>();
  const PrefillShape shape{1, m.hq, m.hkv, m.head_dim, DType::BF16, q_indptr.data(), seq_lens.data()};
  const PrefillTensors t{q.ptr, out.ptr, kv, m.hq, d_q_indptr.as<int32_t>()};
  Selection sel = prefill_selection(shape, sp);
  DeviceMemory sel_idx(size_t(sel.indices_count()) * 4), sel_cnt(size_t(sel.counts_count()) * 4);
  sel.indices = sel_idx.as<int32_t>();
  sel.counts = sel_cnt.as<int32_t>();
  const size_t ws_bytes = prefill_workspace_size(shape, Role::Anchor, sp);
  DeviceMemory ws(ws_bytes);
  const Workspace workspace{ws.ptr, ws_bytes};

  auto run_role = [&](Role role) {
    switch (role) {
      case Role::Dense: prefill_dense(t, shape, sp, workspace, nullptr); break;
      case Role::Layer0: prefill_layer0(t, shape, sp, sel, workspace, nullptr); break;
      case Role::Anchor: prefill_anchor(t, shape, sp, sel, workspace, nullptr); break;
      case Role::Reuse: prefill_reuse(t, shape, sp, sel, nullptr, workspace, nullptr); break;
    }
  };
  const std::map<Role, double> flops = role_flops(m, n, sp);
  const double cudnn_ms = baselines.dense_ms("cudnn", name(), 1, n, m);
  const int reps = n >= 100000 ? 3 : 10;

  auto record = [&](const std::string& role) {
    json r = shape_record(name(), role, m, 1, n, o.rho, kPageSize);
    r["tile"] = sp.tile;
    return r;
  };
  std::map<Role, double> ms;
  for (Role role : kRoles) {
    ms[role] = timer.median_ms(reps, [&] { run_role(role); });
    KASCADE_CUDA_CHECK(cudaGetLastError());
    json r = record(to_string(role));
    set_time(r, ms[role], cudnn_ms);
    r["tflops"] = flops.at(role) / (ms[role] * 1e-3) / 1e12;
    if (role == Role::Layer0 || role == Role::Anchor) {
      PhaseEvents events;
      timer.median_ms(reps, [&] {
        events.start_run();
        cuda::prefill::prefill_selecting_observed(role, t, shape, sp, sel, workspace, nullptr, &events);
      });
      r["phases_ms"] = events.median_ms(reps);
      std::printf("%-13s n=%-6d %-7s phases (ms): %s\n", m.name.c_str(), n, to_string(role), r["phases_ms"].dump().c_str());
    }
    records.push_back(r);
  }
  const double schedule_ms = timer.median_ms(n >= 100000 ? 1 : 3, [&] {
    for (int layer = 0; layer < kScheduleLayers; ++layer) run_role(schedule_role(layer));
  });
  json sched = record("schedule");
  set_schedule(sched, schedule_ms, cudnn_ms, ms[Role::Dense]);
  sched["workspace_bytes"] = ws_bytes;
  records.push_back(sched);

  std::printf("%-13s n=%-6d cudnn %9.3f | dense %9.3f (%.2fx, %4.0f TF/s) layer0 %9.3f (%.2f) anchor %9.3f (%.2f) "
              "reuse %8.3f (%.3f) | schedule %.2f ms/layer, %.2fx vs cudnn | ws %.0f MiB\n",
              m.name.c_str(), n, cudnn_ms, ms[Role::Dense], ms[Role::Dense] / cudnn_ms,
              flops.at(Role::Dense) / (ms[Role::Dense] * 1e9), ms[Role::Layer0], ms[Role::Layer0] / cudnn_ms,
              ms[Role::Anchor], ms[Role::Anchor] / cudnn_ms, ms[Role::Reuse], ms[Role::Reuse] / cudnn_ms,
              schedule_ms / kScheduleLayers, kScheduleLayers * cudnn_ms / schedule_ms, ws_bytes / 1048576.0);
  std::fflush(stdout);
}

}  // namespace

std::unique_ptr<Mode> make_prefill_mode() { return std::make_unique<PrefillMode>(); }

}  // namespace kascade::bench
