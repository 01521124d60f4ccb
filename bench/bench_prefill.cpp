// bench/bench_prefill.cpp — kascade-bench-prefill: time every prefill role and the 32-layer schedule.
//
// For each (model shape, context n): one fresh prompt (batch 1, queries 0..n-1) over a paged bf16
// KV cache (page size 16, pages in random order) filled with random values; per role the median of
// CUDA-event timings with the L2 flushed before every repetition. Reuse reads the selection the
// anchor left in the buffer. The schedule is the paper's 32-layer one (1 layer-0 + 4 anchors + 27
// reuse layers) run back to back over the same tensors and timed as a whole. Baseline records
// (cuDNN SDPA causal and the flash backend, from bench/run_cudnn_prefill.py in the same device run)
// are read from --baseline; every kascade time gets ratio_vs_cudnn = ms / cuDNN ms of the shape.
//
//   kascade-bench-prefill --baseline cudnn_prefill.json --out bench/results/prefill_h100.json
//       [--shapes llama8b:8192,llama8b:32768,llama8b:131072,smollm:8192] [--rho 0.1] [--commit SHA]
//
// tflops counts the FLOPs each role needs (2 per multiply-add):
//   dense   4 D Hq sum_t (t + 1)                       (causal QK^T and PV)
//   layer0  dense + 2 D Hq sum_tiles rows * b          (scores recomputed for the pooled mass)
//   anchor  2 D Hq sum_t (t + 1)                       (LSE pass: QK^T only)
//           + 2 D Hq sum_tiles rows * b                (pooled mass)
//           + 4 D Hq sum_t (k_tau + t - b + 1)          (sparse pass)
//   reuse   4 D Hq sum_t (k_tau + t - b + 1)
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/cuda_check.h"
#include "fill_random.h"
#include "kascade/attention_prefill.h"
#include "kascade/budget.h"

namespace {

using kascade::DType;
using json = nlohmann::json;

struct ModelShape {
  std::string name;
  int hq, hkv, head_dim;
};

const std::map<std::string, ModelShape> kModels = {
    {"llama8b", {"Llama-3.1-8B", 32, 8, 128}},
    {"smollm", {"SmolLM2-135M", 9, 3, 64}},
};

constexpr int kScheduleLayers = 32;
constexpr int kScheduleAnchors = 4;           // besides layer 0 (the paper's 32-layer schedule)
constexpr size_t kL2FlushBytes = 256u << 20;  // > 5x the H100's 50 MB L2
constexpr int kPageSize = 16;

struct Options {
  std::vector<std::pair<std::string, int>> shapes = {
      {"llama8b", 8192}, {"llama8b", 32768}, {"llama8b", 131072}, {"smollm", 8192}};
  double rho = 0.1;
  std::string baseline, out, commit = "unknown", command;
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 0; i < argc; ++i) o.command += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    KASCADE_CHECK(i + 1 < argc, "kascade-bench-prefill: option " << arg << " needs a value");
    const std::string value = argv[++i];
    if (arg == "--shapes") {
      o.shapes.clear();
      std::stringstream ss(value);
      std::string item;
      while (std::getline(ss, item, ',')) {
        const size_t colon = item.find(':');
        KASCADE_CHECK(colon != std::string::npos && kModels.count(item.substr(0, colon)),
                      "--shapes: '" << item << "' is not MODEL:CONTEXT with MODEL llama8b or smollm");
        const int n = std::stoi(item.substr(colon + 1));
        KASCADE_CHECK(n > 0, "--shapes: context must be positive in '" << item << "'");
        o.shapes.emplace_back(item.substr(0, colon), n);
      }
    } else if (arg == "--rho") {
      o.rho = std::stod(value);
      KASCADE_CHECK(o.rho > 0 && o.rho <= 1, "--rho must be in (0, 1]");
    } else if (arg == "--baseline") {
      o.baseline = value;
    } else if (arg == "--out") {
      o.out = value;
    } else if (arg == "--commit") {
      o.commit = value;
    } else {
      KASCADE_FAIL("kascade-bench-prefill: unknown option " << arg);
    }
  }
  KASCADE_CHECK(!o.out.empty(), "kascade-bench-prefill: --out FILE is required");
  return o;
}

struct DeviceMemory {
  void* ptr = nullptr;
  explicit DeviceMemory(size_t bytes) { KASCADE_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(bytes, 256))); }
  ~DeviceMemory() { cudaFree(ptr); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr); }
};

class Timer {
 public:
  Timer() {
    KASCADE_CUDA_CHECK(cudaEventCreate(&start_));
    KASCADE_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  // Median milliseconds of `reps` runs of fn, each after an L2 flush; one untimed warm-up run.
  template <typename Fn>
  double median_ms(int reps, void* flush, Fn&& fn) {
    fn();
    std::vector<float> times;
    for (int i = 0; i < reps; ++i) {
      KASCADE_CUDA_CHECK(cudaMemsetAsync(flush, i & 0xff, kL2FlushBytes, nullptr));
      KASCADE_CUDA_CHECK(cudaEventRecord(start_, nullptr));
      fn();
      KASCADE_CUDA_CHECK(cudaEventRecord(stop_, nullptr));
      KASCADE_CUDA_CHECK(cudaEventSynchronize(stop_));
      float ms = 0.f;
      KASCADE_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
      times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  }

 private:
  cudaEvent_t start_, stop_;
};

struct Baselines {
  json records = json::array();
  double ms(const std::string& impl, int context, const ModelShape& m) const {
    for (const auto& r : records) {
      if (r.value("phase", "") == "prefill" && r.value("impl", "") == impl && r.value("context", 0) == context &&
          r.value("hq", 0) == m.hq && r.value("hkv", 0) == m.hkv && r.value("head_dim", 0) == m.head_dim &&
          r.contains("ms") && r["ms"].is_number()) {
        return r["ms"].get<double>();
      }
    }
    return NAN;
  }
};

// FLOPs each role needs for a fresh prompt of n tokens (see the file comment).
struct RoleFlops {
  double dense = 0, layer0 = 0, anchor = 0, reuse = 0;
};
RoleFlops role_flops(const ModelShape& m, int n, const kascade::SparsityParams& sp) {
  const double per_key = 2.0 * m.head_dim * m.hq;  // one q.k (or p.v) for every query head
  double causal_keys = 0, mass_keys = 0, sparse_keys = 0;
  const int64_t tiles = kascade::num_tiles(0, n, sp.tile);
  for (int64_t tau = 0; tau < tiles; ++tau) {
    const int64_t b = kascade::tile_begin(0, tau, sp.tile), e = kascade::tile_end(0, n, tau, sp.tile);
    const int64_t k = kascade::tile_budget(sp.rolling(), b, n, sp.rho, sp.k_min, sp.k_multiple);
    for (int64_t t = b; t < e; ++t) {
      causal_keys += double(t + 1);
      sparse_keys += double(k + t - b + 1);
    }
    mass_keys += double(e - b) * double(b);
  }
  RoleFlops f;
  f.dense = 2 * per_key * causal_keys;
  f.layer0 = f.dense + per_key * mass_keys;
  f.anchor = per_key * causal_keys + per_key * mass_keys + 2 * per_key * sparse_keys;
  f.reuse = 2 * per_key * sparse_keys;
  return f;
}

json measure_shape(const Options& o, const ModelShape& m, int n, const Baselines& baselines, void* flush,
                   Timer& timer, std::mt19937_64& rng) {
  const int pages = (n + kPageSize - 1) / kPageSize;
  const size_t pool_elems = size_t(pages) * kPageSize * m.hkv * m.head_dim;
  DeviceMemory k_pool(pool_elems * 2), v_pool(pool_elems * 2);
  kascade::bench::fill_uniform(k_pool.ptr, DType::BF16, pool_elems, 1.7f, rng(), nullptr);
  kascade::bench::fill_uniform(v_pool.ptr, DType::BF16, pool_elems, 1.7f, rng(), nullptr);
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
  kascade::bench::fill_uniform(q.ptr, DType::BF16, q_elems, 3.4f, rng(), nullptr);

  kascade::SparsityParams sp;
  sp.rho = o.rho;
  kascade::PrefillArgs a;
  a.q = q.ptr;
  a.q_indptr = d_q_indptr.as<int32_t>();
  a.num_q_heads = m.hq;
  a.kv.k = k_pool.ptr;
  a.kv.v = v_pool.ptr;
  a.kv.dtype = DType::BF16;
  a.kv.batch = 1;
  a.kv.num_kv_heads = m.hkv;
  a.kv.head_dim = m.head_dim;
  a.kv.page_size = kPageSize;
  a.kv.set_packed_strides();
  a.kv.page_indptr = d_page_indptr.as<int32_t>();
  a.kv.page_indices = d_page_indices.as<int32_t>();
  a.kv.seq_lens = d_seq_lens.as<int32_t>();
  a.out = out.ptr;
  a.host = {1, q_indptr.data(), seq_lens.data()};
  const kascade::SelectionShape shape = kascade::prefill_selection_shape(a.host, m.hkv, sp);
  DeviceMemory sel_idx(size_t(shape.indices_count()) * 4), sel_cnt(size_t(shape.counts_count()) * 4);
  const kascade::SelectionBuffer sel{sel_idx.as<int32_t>(), sel_cnt.as<int32_t>(), shape};
  const size_t ws_bytes = kascade::prefill_workspace_size(a, sp, kascade::Role::Anchor);
  DeviceMemory ws(ws_bytes);

  const std::vector<std::string> roles = {"dense", "layer0", "anchor", "reuse"};
  auto run_role = [&](const std::string& role) {
    if (role == "dense") kascade::prefill_dense(a, sp, nullptr);
    if (role == "layer0") kascade::prefill_anchor(a, sp, true, sel, ws.ptr, ws_bytes, nullptr);
    if (role == "anchor") kascade::prefill_anchor(a, sp, false, sel, ws.ptr, ws_bytes, nullptr);
    if (role == "reuse") kascade::prefill_reuse(a, sp, sel, nullptr, nullptr);
  };
  const RoleFlops flops = role_flops(m, n, sp);
  const std::map<std::string, double> role_flop = {
      {"dense", flops.dense}, {"layer0", flops.layer0}, {"anchor", flops.anchor}, {"reuse", flops.reuse}};
  const double cudnn_ms = baselines.ms("cudnn", n, m);
  const int reps = n >= 100000 ? 3 : 10;

  json records = json::array();
  auto record = [&](const std::string& role, double ms, double flop) {
    json r = {{"phase", "prefill"}, {"impl", "kascade"}, {"role", role}, {"model", m.name}, {"batch", 1},
              {"context", n}, {"hq", m.hq}, {"hkv", m.hkv}, {"head_dim", m.head_dim}, {"dtype", "bf16"},
              {"rho", o.rho}, {"page_size", kPageSize}, {"tile", sp.tile}, {"ms", ms}};
    r["ratio_vs_cudnn"] = std::isnan(cudnn_ms) ? json(nullptr) : json(ms / cudnn_ms);
    if (flop > 0) r["tflops"] = flop / (ms * 1e-3) / 1e12;
    records.push_back(r);
    return r;
  };
  std::map<std::string, double> ms;
  for (const auto& role : roles) {
    ms[role] = timer.median_ms(reps, flush, [&] { run_role(role); });
    KASCADE_CUDA_CHECK(cudaGetLastError());
    record(role, ms[role], role_flop.at(role));
  }
  // The 32-layer schedule: layer 0, an anchor every 32/5 layers, reuse layers in between.
  const int stride = kScheduleLayers / (kScheduleAnchors + 1);
  const double schedule_ms = timer.median_ms(n >= 100000 ? 1 : 3, flush, [&] {
    for (int layer = 0; layer < kScheduleLayers; ++layer) {
      const bool anchor = layer % stride == 0 && layer / stride <= kScheduleAnchors;
      run_role(layer == 0 ? "layer0" : anchor ? "anchor" : "reuse");
    }
  });
  json sched = record("schedule", schedule_ms, 0);
  sched["layers"] = kScheduleLayers;
  sched["anchors"] = kScheduleAnchors + 1;
  sched["ms_per_layer"] = schedule_ms / kScheduleLayers;
  sched["ratio_vs_cudnn"] = std::isnan(cudnn_ms) ? json(nullptr) : json(schedule_ms / (kScheduleLayers * cudnn_ms));
  sched["speedup_vs_cudnn"] = std::isnan(cudnn_ms) ? json(nullptr) : json(kScheduleLayers * cudnn_ms / schedule_ms);
  sched["speedup_vs_kascade_dense"] = kScheduleLayers * ms["dense"] / schedule_ms;
  sched["workspace_bytes"] = ws_bytes;
  records.back() = sched;

  std::printf("%-13s n=%-6d cudnn %9.3f | dense %9.3f (%.2fx, %4.0f TF/s) layer0 %9.3f (%.2f) anchor %9.3f (%.2f) "
              "reuse %8.3f (%.3f) | schedule %.2f ms/layer, %.2fx vs cudnn | ws %.0f MiB\n",
              m.name.c_str(), n, cudnn_ms, ms["dense"], ms["dense"] / cudnn_ms, flops.dense / (ms["dense"] * 1e9),
              ms["layer0"], ms["layer0"] / cudnn_ms, ms["anchor"], ms["anchor"] / cudnn_ms, ms["reuse"],
              ms["reuse"] / cudnn_ms, schedule_ms / kScheduleLayers, kScheduleLayers * cudnn_ms / schedule_ms,
              ws_bytes / 1048576.0);
  std::fflush(stdout);
  return records;
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  Baselines baselines;
  json doc;
  if (!o.baseline.empty()) {
    std::ifstream in(o.baseline);
    KASCADE_CHECK(in.good(), "--baseline: cannot open " << o.baseline);
    json base = json::parse(in);
    KASCADE_CHECK(base.contains("records") && base["records"].is_array(), o.baseline << ": no records array");
    baselines.records = base["records"];
    doc["baseline_device"] = base.value("device", "");
    doc["baseline_command"] = base.value("command", "");
    doc["baseline_torch"] = base.value("torch", "");
  }
  cudaDeviceProp prop{};
  KASCADE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  DeviceMemory flush(kL2FlushBytes);
  Timer timer;
  std::mt19937_64 rng(2512);
  json records = baselines.records;
  for (const auto& [model, n] : o.shapes) {
    for (auto& r : measure_shape(o, kModels.at(model), n, baselines, flush.ptr, timer, rng)) records.push_back(r);
  }
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  doc["device"] = prop.name;
  doc["commit"] = o.commit;
  doc["date"] = date;
  doc["command"] = o.command;
  doc["records"] = records;
  std::ofstream out(o.out);
  KASCADE_CHECK(out.good(), "--out: cannot write " << o.out);
  out << doc.dump(1) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kascade-bench-prefill: %s\n", e.what());
    return 1;
  }
}
