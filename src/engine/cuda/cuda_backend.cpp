// The CUDA backends (cuda_backend.h): thin wrappers over CudaCore (cuda_core.h), the one forward
// pass. The single-sequence Backend is a batch of one: it runs a long input in chunks of
// prefill_chunk tokens, each chunk one step; the BatchBackend takes the next chunk of every
// sequence that still has tokens per step (a sequence with no new tokens sits out).
#include "kascade/engine/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "../batch_schedule.h"
#include "cuda_core.h"
#include "device_weights.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"

namespace kascade::engine {

namespace {

void check_device() {
  int devices = 0;
  const cudaError_t probe = cudaGetDeviceCount(&devices);
  KASCADE_CHECK(probe == cudaSuccess && devices > 0,
                "backend 'cuda': no CUDA device is available (" << cudaGetErrorString(probe) << ")");
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(std::shared_ptr<const CudaWeights> weights, const Plan* plan, const BackendOptions& options,
              const CudaOptions& cuda_options)
      : core_(std::move(weights), plan, options, cuda_options, 1) {}

  const char* name() const override { return "cuda"; }
  void reset() override { core_.reset(seq_); }
  int position() const override { return seq_.n; }
  AttentionStats stats() const override { return seq_.stats; }
  void set_attention_hook(AttentionHook hook) override { core_.set_attention_hook(std::move(hook)); }
  void set_query_key_hook(QueryKeyHook hook) override { core_.set_query_key_hook(std::move(hook)); }
  void set_attention_override(AttentionOverride attention) override {
    core_.set_attention_override(std::move(attention));
  }
  void truncate(int position) override { core_.truncate(seq_, position); }

  std::vector<float> forward(const std::vector<int32_t>& tokens, bool all_logits) override {
    KASCADE_CHECK(!tokens.empty(), "forward: no tokens");
    core_.check_tokens(tokens);
    const int total = static_cast<int>(tokens.size());
    const int vocab = core_.config().vocab;
    std::vector<float> logits(static_cast<size_t>(all_logits ? total : 1) * vocab);
    for (int done = 0; done < total;) {
      const int count = std::min(core_.chunk(), total - done);
      const bool last = done + count == total;
      float* out = all_logits ? logits.data() + static_cast<size_t>(done) * vocab : (last ? logits.data() : nullptr);
      std::vector<CudaSegment> segments{{&seq_, tokens.data() + done, count, out, all_logits}};
      core_.step(segments);
      done += count;
      if (core_.options().on_prefill_progress && total > 1) core_.options().on_prefill_progress(done, total);
    }
    return logits;
  }

 private:
  CudaCore core_;
  CudaSequence seq_;
};

class CudaBatch final : public CudaBatchBackend {
 public:
  CudaBatch(std::shared_ptr<const CudaWeights> weights, const Plan* plan, int batch,
                   const BackendOptions& options, const CudaOptions& cuda_options)
      : core_(std::move(weights), plan, options, cuda_options, batch), seqs_(static_cast<size_t>(batch)) {}

  void set_decode_graphs(bool on) override { core_.set_decode_graphs(on); }
  int graphs_captured() const override { return core_.graphs_captured(); }
  int graph_replays() const override { return core_.graph_replays(); }
  int batch_size() const override { return static_cast<int>(seqs_.size()); }
  void reset() override {
    for (CudaSequence& s : seqs_) core_.reset(s);
  }
  int position(int seq) const override { return at(seq).n; }
  AttentionStats stats(int seq) const override { return at(seq).stats; }

  std::vector<std::vector<float>> forward(const std::vector<std::vector<int32_t>>& tokens) override {
    KASCADE_CHECK(tokens.size() == seqs_.size(), "batch forward: " << tokens.size() << " token lists for a batch of "
                                                                    << seqs_.size());
    for (const std::vector<int32_t>& t : tokens) core_.check_tokens(t);
    return run_batch_in_chunks<CudaSegment>(
        tokens, core_.chunk(), static_cast<size_t>(core_.config().vocab),
        [&](size_t b, const int32_t* first, int count, float* logits) {
          return CudaSegment{&seqs_[b], first, count, logits, false};
        },
        [&](std::vector<CudaSegment>& segments) { core_.step(segments); });
  }

 private:
  const CudaSequence& at(int seq) const {
    KASCADE_CHECK(seq >= 0 && seq < batch_size(),
                  "batch backend: sequence " << seq << " is outside [0, " << batch_size() << ")");
    return seqs_[static_cast<size_t>(seq)];
  }
  CudaCore core_;
  std::vector<CudaSequence> seqs_;
};

}  // namespace

std::shared_ptr<const CudaWeights> upload_cuda_weights(const Model& model) {
  check_device();
  return upload_weights(model);
}

std::shared_ptr<const CudaWeights> random_cuda_weights(const ModelConfig& config, uint64_t seed) {
  check_device();
  return random_weights(config, seed);
}

size_t cuda_weight_bytes(const CudaWeights& weights) { return weights.bytes(); }

std::unique_ptr<Backend> make_cuda_backend(const Model& model, const Plan* plan, const BackendOptions& options,
                                           const CudaOptions& cuda_options) {
  return make_cuda_backend(upload_cuda_weights(model), plan, options, cuda_options);
}

std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const CudaWeights> weights, const Plan* plan,
                                           const BackendOptions& options, const CudaOptions& cuda_options) {
  check_device();
  return std::make_unique<CudaBackend>(std::move(weights), plan, options, cuda_options);
}

std::unique_ptr<CudaBatchBackend> make_cuda_batch_backend(const Model& model, const Plan* plan, int batch,
                                                          const BackendOptions& options,
                                                          const CudaOptions& cuda_options) {
  return make_cuda_batch_backend(upload_cuda_weights(model), plan, batch, options, cuda_options);
}

std::unique_ptr<CudaBatchBackend> make_cuda_batch_backend(std::shared_ptr<const CudaWeights> weights,
                                                          const Plan* plan, int batch, const BackendOptions& options,
                                                          const CudaOptions& cuda_options) {
  check_device();
  return std::make_unique<CudaBatch>(std::move(weights), plan, batch, options, cuda_options);
}

}  // namespace kascade::engine
