// bench/bench_decode.cpp — kascade-bench-decode: time every decode role and the 32-layer schedule.
//
// For each (model shape, context n, batch B): a paged bf16 KV cache (page size 16, pages in random
// order) filled with random values, then per role the median of CUDA-event timings with the L2
// flushed before every repetition. The schedule is the paper's (1 layer-0 + 4 anchors + 27 reuse
// layers) captured once in a CUDA graph and timed as a whole. Baseline records (cuDNN SDPA and the
// flash backend, from bench/run_cudnn.py run in the same device session) are read from --baseline and
// every kascade time gets ratio_vs_cudnn = ms / cuDNN dense ms of the same shape.
//
//   kascade-bench-decode --baseline cudnn.json --out bench/results/decode_h100.json
//       [--models llama8b,smollm] [--contexts 8192,32768,131072] [--batches 1,8,64] [--commit SHA]
//       [--layout nhd|hnd]   page layout [P, Hkv, D] (default) or [Hkv, P, D]
//
// gbps counts the KV bytes the role must read (dense, layer0: all K and V; anchor: all K plus the
// selected K and V rows; reuse: the selected rows) over the measured time.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
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
#include "kascade/attention.h"
#include "kascade/budget.h"

namespace {

using kascade::DecodeRole;
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
constexpr int kScheduleAnchors = 4;       // besides layer 0 (the paper's 32-layer schedule)
constexpr size_t kL2FlushBytes = 256u << 20;  // > 5x the H100's 50 MB L2

struct Options {
  std::vector<std::string> models = {"llama8b", "smollm"};
  std::vector<int> contexts = {8192, 32768, 131072};
  std::vector<int> batches = {1, 8, 64};
  int page_size = 16;
  bool heads_major = false;  // --layout hnd: pages [P, Hkv, D] -> [Hkv, P, D]
  double rho = 0.1;
  std::string baseline;
  std::string out;
  std::string commit = "unknown";
  std::string command;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 0; i < argc; ++i) o.command += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    KASCADE_CHECK(i + 1 < argc, "kascade-bench-decode: option " << arg << " needs a value");
    const std::string value = argv[++i];
    if (arg == "--models") {
      o.models = split_list(value);
      for (const auto& m : o.models) KASCADE_CHECK(kModels.count(m), "--models: unknown model '" << m << "' (llama8b, smollm)");
    } else if (arg == "--contexts" || arg == "--batches") {
      std::vector<int>& dst = arg == "--contexts" ? o.contexts : o.batches;
      dst.clear();
      for (const auto& v : split_list(value)) {
        const int x = std::stoi(v);
        KASCADE_CHECK(x > 0, arg << ": values must be positive, got " << v);
        dst.push_back(x);
      }
    } else if (arg == "--page-size") {
      o.page_size = std::stoi(value);
      KASCADE_CHECK(o.page_size > 0, "--page-size must be positive");
    } else if (arg == "--layout") {
      KASCADE_CHECK(value == "nhd" || value == "hnd", "--layout must be nhd or hnd, got " << value);
      o.heads_major = value == "hnd";
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
      KASCADE_FAIL("kascade-bench-decode: unknown option " << arg);
    }
  }
  KASCADE_CHECK(!o.out.empty(), "kascade-bench-decode: --out FILE is required");
  return o;
}

struct DeviceMemory {
  void* ptr = nullptr;
  explicit DeviceMemory(size_t bytes) { KASCADE_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(bytes, 16))); }
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
  // Median milliseconds of `reps` runs of fn, each after an L2 flush; two untimed warm-up runs.
  template <typename Fn>
  double median_ms(int reps, void* flush, Fn&& fn) {
    for (int i = 0; i < 2; ++i) fn();
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

// cuDNN (and other baseline) dense times by shape, read from run_cudnn.py's output.
struct Baselines {
  json records = json::array();
  double ms(const std::string& impl, int batch, int context, const ModelShape& m) const {
    for (const auto& r : records) {
      if (r.value("impl", "") == impl && r.value("batch", 0) == batch && r.value("context", 0) == context &&
          r.value("hq", 0) == m.hq && r.value("hkv", 0) == m.hkv && r.value("head_dim", 0) == m.head_dim &&
          r.contains("ms") && r["ms"].is_number()) {
        return r["ms"].get<double>();
      }
    }
    return NAN;
  }
};

json measure_shape(const Options& o, const ModelShape& m, int batch, int context, const Baselines& baselines,
                   void* flush, Timer& timer, std::mt19937_64& rng) {
  const int p = o.page_size;
  const int pages_per_seq = (context + p - 1) / p;
  const int64_t num_pages = static_cast<int64_t>(batch) * pages_per_seq;
  const size_t page_elems = static_cast<size_t>(p) * m.hkv * m.head_dim;
  const size_t pool_elems = static_cast<size_t>(num_pages) * page_elems;
  DeviceMemory k_pool(pool_elems * 2), v_pool(pool_elems * 2);
  kascade::bench::fill_uniform(k_pool.ptr, DType::BF16, pool_elems, 1.7f, rng(), nullptr);
  kascade::bench::fill_uniform(v_pool.ptr, DType::BF16, pool_elems, 1.7f, rng(), nullptr);
  std::vector<int32_t> indptr(batch + 1), indices(num_pages), lens(batch, context);
  for (int b = 0; b <= batch; ++b) indptr[b] = b * pages_per_seq;
  std::iota(indices.begin(), indices.end(), 0);
  std::shuffle(indices.begin(), indices.end(), rng);
  DeviceMemory d_indptr(indptr.size() * 4), d_indices(indices.size() * 4), d_lens(lens.size() * 4);
  KASCADE_CUDA_CHECK(cudaMemcpy(d_indptr.ptr, indptr.data(), indptr.size() * 4, cudaMemcpyHostToDevice));
  KASCADE_CUDA_CHECK(cudaMemcpy(d_indices.ptr, indices.data(), indices.size() * 4, cudaMemcpyHostToDevice));
  KASCADE_CUDA_CHECK(cudaMemcpy(d_lens.ptr, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
  const size_t q_elems = static_cast<size_t>(batch) * m.hq * m.head_dim;
  DeviceMemory q(q_elems * 2), out(q_elems * 2);
  kascade::bench::fill_uniform(q.ptr, DType::BF16, q_elems, 4.3f, rng(), nullptr);

  kascade::DecodeShape shape{batch, m.hq, m.hkv, m.head_dim, DType::BF16, context};
  kascade::SparsityParams sp;
  sp.rho = o.rho;
  kascade::DecodeTensors t;
  t.q = q.ptr;
  t.out = out.ptr;
  t.num_q_heads = m.hq;
  t.kv.k = k_pool.ptr;
  t.kv.v = v_pool.ptr;
  t.kv.dtype = DType::BF16;
  t.kv.batch = batch;
  t.kv.num_kv_heads = m.hkv;
  t.kv.head_dim = m.head_dim;
  t.kv.page_size = p;
  t.kv.set_packed_strides();
  if (o.heads_major) {  // each (page, kv head) is P contiguous rows
    t.kv.token_stride = m.head_dim;
    t.kv.head_stride = static_cast<int64_t>(p) * m.head_dim;
  }
  t.kv.page_indptr = d_indptr.as<int32_t>();
  t.kv.page_indices = d_indices.as<int32_t>();
  t.kv.seq_lens = d_lens.as<int32_t>();
  size_t ws_bytes = 0;
  for (DecodeRole role : {DecodeRole::Dense, DecodeRole::Layer0, DecodeRole::Anchor, DecodeRole::Reuse}) {
    ws_bytes = std::max(ws_bytes, kascade::decode_workspace_size(shape, role, sp));
  }
  DeviceMemory ws(ws_bytes);
  const int sets = kascade::decode_selection_sets(shape, sp);
  const int64_t k_max = kascade::decode_selection_kmax(shape, sp);
  DeviceMemory sel_indices(static_cast<size_t>(batch) * sets * k_max * 4), sel_counts(static_cast<size_t>(batch) * sets * 4);
  const kascade::DecodeSelection sel{sel_indices.as<int32_t>(), sel_counts.as<int32_t>(), sets, k_max};
  const kascade::Workspace workspace{ws.ptr, ws_bytes};

  auto run_role = [&](DecodeRole role, cudaStream_t stream) {
    switch (role) {
      case DecodeRole::Dense: kascade::decode_dense(t, shape, sp, workspace, stream); break;
      case DecodeRole::Layer0: kascade::decode_layer0(t, shape, sp, sel, workspace, stream); break;
      case DecodeRole::Anchor: kascade::decode_anchor(t, shape, sp, sel, workspace, stream); break;
      case DecodeRole::Reuse: kascade::decode_reuse(t, shape, sp, sel, nullptr, workspace, stream); break;
    }
  };
  const double kv_row_bytes = static_cast<double>(m.head_dim) * 2;  // one head of one token, K or V
  const double all_rows = static_cast<double>(batch) * context * m.hkv;
  const double k = static_cast<double>(kascade::budget_k(context, sp.rho, sp.k_min, sp.k_multiple));
  const double selected_rows = static_cast<double>(batch) * m.hkv * k;
  const double cudnn_ms = baselines.ms("cudnn", batch, context, m);
  const int reps = static_cast<double>(batch) * context >= 4.0e6 ? 10 : 30;

  json records = json::array();
  auto record = [&](const std::string& role, double ms, double bytes) {
    json r = {{"phase", "decode"}, {"impl", "kascade"}, {"role", role}, {"model", m.name}, {"batch", batch},
              {"context", context}, {"hq", m.hq}, {"hkv", m.hkv}, {"head_dim", m.head_dim}, {"dtype", "bf16"},
              {"rho", o.rho}, {"page_size", p}, {"layout", o.heads_major ? "hnd" : "nhd"}, {"ms", ms}};
    r["ratio_vs_cudnn"] = std::isnan(cudnn_ms) ? json(nullptr) : json(ms / cudnn_ms);
    if (bytes > 0) r["gbps"] = bytes / (ms * 1e-3) / 1e9;
    records.push_back(r);
    return r;
  };
  std::map<DecodeRole, double> role_ms;
  for (DecodeRole role : {DecodeRole::Dense, DecodeRole::Layer0, DecodeRole::Anchor, DecodeRole::Reuse}) {
    // Reuse (timed last) reads the selection the anchor runs before it left in the buffer.
    role_ms[role] = timer.median_ms(reps, flush, [&] { run_role(role, nullptr); });
    KASCADE_CUDA_CHECK(cudaGetLastError());
  }
  record("dense", role_ms[DecodeRole::Dense], 2 * all_rows * kv_row_bytes);
  record("layer0", role_ms[DecodeRole::Layer0], 2 * all_rows * kv_row_bytes);
  record("anchor", role_ms[DecodeRole::Anchor], (all_rows + 2 * selected_rows) * kv_row_bytes);
  record("reuse", role_ms[DecodeRole::Reuse], 2 * selected_rows * kv_row_bytes);

  // The 32-layer schedule: layer 0, then an anchor every 32/5 layers, reuse layers in between,
  // all over the same cache (its size far exceeds L2, so each layer reads from HBM as it would).
  cudaStream_t stream;
  KASCADE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  KASCADE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const int stride = kScheduleLayers / (kScheduleAnchors + 1);
  for (int layer = 0; layer < kScheduleLayers; ++layer) {
    const bool anchor = layer % stride == 0 && layer / stride <= kScheduleAnchors;
    run_role(layer == 0 ? DecodeRole::Layer0 : anchor ? DecodeRole::Anchor : DecodeRole::Reuse, stream);
  }
  KASCADE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  KASCADE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const double schedule_ms = timer.median_ms(std::max(3, reps / 3), flush, [&] {
    KASCADE_CUDA_CHECK(cudaGraphLaunch(exec, nullptr));
  });
  KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  json sched = record("schedule", schedule_ms, 0);
  sched["layers"] = kScheduleLayers;
  sched["anchors"] = kScheduleAnchors + 1;
  sched["ms_per_layer"] = schedule_ms / kScheduleLayers;
  sched["ratio_vs_cudnn"] = std::isnan(cudnn_ms) ? json(nullptr) : json(schedule_ms / (kScheduleLayers * cudnn_ms));
  sched["speedup_vs_cudnn"] = std::isnan(cudnn_ms) ? json(nullptr) : json(kScheduleLayers * cudnn_ms / schedule_ms);
  sched["speedup_vs_kascade_dense"] = kScheduleLayers * role_ms[DecodeRole::Dense] / schedule_ms;
  records.back() = sched;

  std::printf("%s %-13s B=%-3d n=%-6d cudnn %8.3f | dense %8.3f (%.2fx, %4.0f GB/s) layer0 %8.3f (%.2f) anchor %8.3f (%.2f) "
              "reuse %7.3f (%.3f) | schedule %.2f ms/layer, %.2fx vs cudnn\n",
              o.heads_major ? "hnd" : "nhd", m.name.c_str(), batch, context, cudnn_ms, role_ms[DecodeRole::Dense],
              cudnn_ms / role_ms[DecodeRole::Dense], records[0]["gbps"].get<double>(), role_ms[DecodeRole::Layer0],
              role_ms[DecodeRole::Layer0] / cudnn_ms, role_ms[DecodeRole::Anchor], role_ms[DecodeRole::Anchor] / cudnn_ms,
              role_ms[DecodeRole::Reuse], role_ms[DecodeRole::Reuse] / cudnn_ms, schedule_ms / kScheduleLayers,
              kScheduleLayers * cudnn_ms / schedule_ms);
  std::fflush(stdout);
  return records;
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  Baselines baselines;
  std::string device_name;
  {
    cudaDeviceProp prop{};
    KASCADE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    device_name = prop.name;
  }
  json doc;
  if (!o.baseline.empty()) {
    std::ifstream in(o.baseline);
    KASCADE_CHECK(in.good(), "--baseline: cannot open " << o.baseline);
    json base = json::parse(in);
    KASCADE_CHECK(base.contains("records") && base["records"].is_array(), o.baseline << ": no records array");
    baselines.records = base["records"];
    doc["baseline_device"] = base.value("device", "");
    doc["baseline_command"] = base.value("command", "");
  }
  DeviceMemory flush(kL2FlushBytes);
  Timer timer;
  std::mt19937_64 rng(2512);
  json records = baselines.records;
  for (const auto& model : o.models) {
    for (int batch : o.batches) {
      for (int context : o.contexts) {
        for (auto& r : measure_shape(o, kModels.at(model), batch, context, baselines, flush.ptr, timer, rng)) {
          records.push_back(r);
        }
      }
    }
  }
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  doc["device"] = device_name;
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
    std::fprintf(stderr, "kascade-bench-decode: %s\n", e.what());
    return 1;
  }
}
