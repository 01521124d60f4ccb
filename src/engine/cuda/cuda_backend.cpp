// The CUDA backends (cuda_backend.h): the shared front ends (../backend_front.h) over CudaCore
// (cuda_core.h), the one forward pass. The single-sequence Backend is a core of one sequence.
#include "kascade/engine/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "../backend_front.h"
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

class CudaBackend final : public SequenceFront<CudaCore> {
 public:
  CudaBackend(std::shared_ptr<const CudaWeights> weights, const Plan* plan, const BackendOptions& options,
              const CudaOptions& cuda_options)
      : SequenceFront(std::move(weights), plan, options, cuda_options, 1) {}
  const char* name() const override { return "cuda"; }

  bool supports_schedules() const override { return true; }
  void set_attention_schedule(const AttentionSchedule* schedule) override { core_.set_attention_schedule(schedule); }
  std::vector<float> forward_decode_rows(const std::vector<int32_t>& tokens) override {
    KASCADE_CHECK(!tokens.empty(), "forward_decode_rows: no tokens");
    core_.check_tokens(tokens);
    const size_t vocab = static_cast<size_t>(core_.vocab());
    std::vector<float> logits(tokens.size() * vocab);
    const int total = static_cast<int>(tokens.size());
    for (int done = 0; done < total;) {
      const int count = std::min(core_.chunk(), total - done);
      CudaSegment segment = CudaCore::segment(&seq_, tokens.data() + done, count,
                                              logits.data() + static_cast<size_t>(done) * vocab, true);
      segment.decode_rows = true;
      std::vector<CudaSegment> segments{segment};
      core_.step(segments);
      done += count;
    }
    return logits;
  }
};

class CudaBatch final : public BatchFront<CudaCore, CudaBatchBackend> {
 public:
  CudaBatch(std::shared_ptr<const CudaWeights> weights, const Plan* plan, int batch, const BackendOptions& options,
            const CudaOptions& cuda_options)
      : BatchFront(batch, std::move(weights), plan, options, cuda_options, batch) {}

  void set_decode_graphs(bool on) override { core_.set_decode_graphs(on); }
  int graphs_captured() const override { return core_.graphs_captured(); }
  int graph_replays() const override { return core_.graph_replays(); }
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
