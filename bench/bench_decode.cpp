// bench/bench_decode.cpp — `kascade-bench decode`: time every decode role and the 32-layer schedule.
//
// For each (model shape, batch B, context n): a paged bf16 KV cache (pages in random order)
// filled with random values, then per role the harness's cold-L2 median. The schedule is the
// paper's (1 layer-0 + 4 anchors + 27 reuse layers) captured once in a CUDA graph and timed as a
// whole. Baseline records (cuDNN SDPA and the flash backend, from
// `bench/run_baseline.py --phase decode` run in the same device session) are read from --baseline,
// and every kascade time gets ratio_vs_cudnn = ms / cuDNN dense ms of the same shape.
//
// gbps counts the KV bytes the role must read (dense, layer0: all K and V; anchor: all K plus the
// selected K and V rows; reuse: the selected rows) over the measured time.
#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "bench_harness.h"
#include "common/cuda_check.h"
#include "fill_random.h"
#include "kascade/attention.h"
#include "kascade/budget.h"

namespace kascade::bench {

namespace {

class DecodeMode : public Mode {
 public:
  const char* name() const override { return "decode"; }

  const char* usage() const override {
    return "  --models llama8b,smollm          model shapes (default both)\n"
           "  --contexts 8192,32768,131072     context lengths\n"
           "  --batches 1,8,64                 batch sizes\n"
           "  --page-size 16                   KV page size in tokens\n"
           "  --layout nhd|hnd                 page layout [P, Hkv, D] (default) or [Hkv, P, D]\n";
  }

  bool set_option(const std::string& option, const std::string& value) override {
    if (option == "--models") {
      models_ = split_list(option, value);
      for (const auto& m : models_) model_shape(m);  // throws for an unknown key
    } else if (option == "--contexts" || option == "--batches") {
      std::vector<int>& dst = option == "--contexts" ? contexts_ : batches_;
      dst.clear();
      for (const auto& item : split_list(option, value)) dst.push_back(parse_positive_int(option, item));
    } else if (option == "--page-size") {
      page_size_ = parse_positive_int(option, value);
    } else if (option == "--layout") {
      KASCADE_CHECK(value == "nhd" || value == "hnd", "--layout must be nhd or hnd, got " << value);
      heads_major_ = value == "hnd";
    } else {
      return false;
    }
    return true;
  }

  int warmups() const override { return 2; }

  void measure(const CommonOptions& o, const Baselines& baselines, ColdL2Timer& timer, std::mt19937_64& rng,
               json& records) override {
    for (const auto& model : models_) {
      for (int batch : batches_) {
        for (int context : contexts_) {
          measure_shape(o, model_shape(model), batch, context, baselines, timer, rng, records);
        }
      }
    }
  }

 private:
  void measure_shape(const CommonOptions& o, const ModelShape& m, int batch, int context, const Baselines& baselines,
                     ColdL2Timer& timer, std::mt19937_64& rng, json& records) const;

  std::vector<std::string> models_ = {"llama8b", "smollm"};
  std::vector<int> contexts_ = {8192, 32768, 131072};
  std::vector<int> batches_ = {1, 8, 64};
  int page_size_ = 16;
  bool heads_major_ = false;  // --layout hnd: pages [P, Hkv, D] -> [Hkv, P, D]
};

void DecodeMode::measure_shape(const CommonOptions& o, const ModelShape& m, int batch, int context,
                               const Baselines& baselines, ColdL2Timer& timer, std::mt19937_64& rng,
                               json& records) const {
  const int p = page_size_;
  const int pages_per_seq = (context + p - 1) / p;
  const int64_t num_pages = static_cast<int64_t>(batch) * pages_per_seq;
  const size_t page_elems = static_cast<size_t>(p) * m.hkv * m.head_dim;
  const size_t pool_elems = static_cast<size_t>(num_pages) * page_elems;
  DeviceMemory k_pool(pool_elems * 2), v_pool(pool_elems * 2);
  fill_uniform(k_pool.ptr, DType::BF16, pool_elems, 1.7f, rng(), nullptr);
  fill_uniform(v_pool.ptr, DType::BF16, pool_elems, 1.7f, rng(), nullptr);
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
  fill_uniform(q.ptr, DType::BF16, q_elems, 4.3f, rng(), nullptr);

  DecodeShape shape{batch, m.hq, m.hkv, m.head_dim, DType::BF16, context};
  SparsityParams sp;
  sp.rho = o.rho;
  DecodeTensors t;
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
  if (heads_major_) {  // each (page, kv head) is P contiguous rows
    t.kv.token_stride = m.head_dim;
    t.kv.head_stride = static_cast<int64_t>(p) * m.head_dim;
  }
  t.kv.page_indptr = d_indptr.as<int32_t>();
  t.kv.page_indices = d_indices.as<int32_t>();
  t.kv.seq_lens = d_lens.as<int32_t>();
  size_t ws_bytes = 0;
  for (Role role : kRoles) {
    ws_bytes = std::max(ws_bytes, decode_workspace_size(shape, role, sp));
  }
  DeviceMemory ws(ws_bytes);
  Selection sel = decode_selection(shape, sp);
  DeviceMemory sel_indices(static_cast<size_t>(sel.indices_count()) * 4),
      sel_counts(static_cast<size_t>(sel.counts_count()) * 4);
  sel.indices = sel_indices.as<int32_t>();
  sel.counts = sel_counts.as<int32_t>();
  const Workspace workspace{ws.ptr, ws_bytes};

  auto run_role = [&](Role role, cudaStream_t stream) {
    switch (role) {
      case Role::Dense: decode_dense(t, shape, sp, workspace, stream); break;
      case Role::Layer0: decode_layer0(t, shape, sp, sel, workspace, stream); break;
      case Role::Anchor: decode_anchor(t, shape, sp, sel, workspace, stream); break;
      case Role::Reuse: decode_reuse(t, shape, sp, sel, nullptr, workspace, stream); break;
    }
  };
  const double kv_row_bytes = static_cast<double>(m.head_dim) * 2;  // one head of one token, K or V
  const double all_rows = static_cast<double>(batch) * context * m.hkv;
  const double k = static_cast<double>(budget_k(context, sp.rho, sp.k_min, sp.k_multiple));
  const double selected_rows = static_cast<double>(batch) * m.hkv * k;
  const std::map<Role, double> role_bytes = {{Role::Dense, 2 * all_rows * kv_row_bytes},
                                             {Role::Layer0, 2 * all_rows * kv_row_bytes},
                                             {Role::Anchor, (all_rows + 2 * selected_rows) * kv_row_bytes},
                                             {Role::Reuse, 2 * selected_rows * kv_row_bytes}};
  const double cudnn_ms = baselines.dense_ms("cudnn", name(), batch, context, m);
  const int reps = static_cast<double>(batch) * context >= 4.0e6 ? 10 : 30;
  const char* layout = heads_major_ ? "hnd" : "nhd";

  auto record = [&](Role role) {
    json r = shape_record(name(), to_string(role), m, batch, context, o.rho, p);
    r["layout"] = layout;
    return r;
  };
  std::map<Role, double> ms;
  for (Role role : kRoles) {
    ms[role] = timer.median_ms(reps, [&] { run_role(role, nullptr); });
    KASCADE_CUDA_CHECK(cudaGetLastError());
  }
  for (Role role : kRoles) {
    json r = record(role);
    set_time(r, ms[role], cudnn_ms);
    r["gbps"] = role_bytes.at(role) / (ms[role] * 1e-3) / 1e9;
    records.push_back(r);
  }

  // The schedule over one cache: its size far exceeds L2, so each layer reads from HBM as it would.
  cudaStream_t stream;
  KASCADE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  KASCADE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  for (int layer = 0; layer < kScheduleLayers; ++layer) run_role(schedule_role(layer), stream);
  KASCADE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  KASCADE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const double schedule_ms =
      timer.median_ms(std::max(3, reps / 3), [&] { KASCADE_CUDA_CHECK(cudaGraphLaunch(exec, nullptr)); });
  KASCADE_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  json sched = shape_record(name(), "schedule", m, batch, context, o.rho, p);
  sched["layout"] = layout;
  set_schedule(sched, schedule_ms, cudnn_ms, ms[Role::Dense]);
  records.push_back(sched);

  std::printf("%s %-13s B=%-3d n=%-6d cudnn %8.3f | dense %8.3f (%.2fx, %4.0f GB/s) layer0 %8.3f (%.2f) anchor %8.3f (%.2f) "
              "reuse %7.3f (%.3f) | schedule %.2f ms/layer, %.2fx vs cudnn\n",
              layout, m.name.c_str(), batch, context, cudnn_ms, ms[Role::Dense], cudnn_ms / ms[Role::Dense],
              role_bytes.at(Role::Dense) / (ms[Role::Dense] * 1e-3) / 1e9, ms[Role::Layer0], ms[Role::Layer0] / cudnn_ms,
              ms[Role::Anchor], ms[Role::Anchor] / cudnn_ms, ms[Role::Reuse], ms[Role::Reuse] / cudnn_ms,
              schedule_ms / kScheduleLayers, kScheduleLayers * cudnn_ms / schedule_ms);
  std::fflush(stdout);
}

}  // namespace

std::unique_ptr<Mode> make_decode_mode() { return std::make_unique<DecodeMode>(); }

}  // namespace kascade::bench
