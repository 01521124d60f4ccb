// kascade/eval/scoring.h — the one primitive every accuracy tool is built on (eval, perplexity,
// calibration): append tokens after a backend's cache as *decode rows* of a selection policy
// (row t is the decode step at position first + t, exactly what token-by-token decoding under
// the policy computes), return their logits, and cut the cache back; plus the per-row metrics
// that compare a policy's logits with dense logits of the same rows, and paired bootstrap
// intervals for their means.
//
//   kascade::eval::PolicySpec spec{"kascade", params_with_rho, &plan};
//   RowLogits dense = score_rows_as_decode(backend, {"dense"}, rows, model.config);
//   RowLogits kas = score_rows_as_decode(backend, spec, rows, model.config);
//   RowMetrics m = compare_rows(dense.logits.data(), kas.logits.data(), n_rows, vocab, targets);
//   Interval ci = bootstrap_mean_interval(m.kl, /*seed=*/1);
//
// The backend's cache is left exactly as it was (truncate back to its position on entry). On a
// backend with native schedules (supports_schedules(): the CUDA backend), the policy runs as a
// layer schedule on the GPU's kernels and the rows go through forward_decode_rows; elsewhere
// (or with PolicySpec::host_attention) the policy's SelectionPolicy runs on the host through the
// attention override.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kascade/engine/attention_schedule.h"
#include "kascade/eval/policy.h"

namespace kascade::engine {
class Backend;
struct ModelConfig;
}  // namespace kascade::engine

namespace kascade::eval {

// A selection policy by name (policy_names()) with its budget (params.rho etc.) and, for the
// policies that need one, the plan. "dense" ignores params.
struct PolicySpec {
  std::string name = "dense";
  SparsityParams params;
  const Plan* plan = nullptr;
  // Run the policy's selection and attention on the host (the CPU oracle through the backend's
  // attention override) even where the backend runs schedules natively (GPU): for comparisons.
  bool host_attention = false;
};

// The policy as a layer schedule (kascade/engine/attention_schedule.h) that a backend with
// native schedules (the CUDA backend) runs on its own kernels: the same rule, layer by layer, as
// the policy's SelectionPolicy (policy.h). Throws for a policy without one.
engine::AttentionSchedule make_attention_schedule(const PolicySpec& spec, int layers);
// A schedule executed on the host with the policies' selection functions (the meaning of each
// LayerRule): for every policy, it selects exactly what make_policy does (tested), which ties the
// GPU's schedules to the CPU policies.
std::unique_ptr<SelectionPolicy> make_schedule_policy(const engine::AttentionSchedule& schedule);
// Keys attended by `rows` decode rows after `first` cached tokens under `schedule`, summed over
// layers, heads and rows, counted as the policies count them (attend_layer): a layer attending
// to a selection counts its k(n) keys, any other layer every key (anchors and filter layers that
// rank every key count their selection / all keys as they attend).
double schedule_keys_attended(const engine::AttentionSchedule& schedule, int first, int rows, int hq);

struct RowLogits {
  std::vector<float> logits;  // [rows][vocab]: row t predicts the token after rows[t]
  double keys = 0;            // keys attended over the rows, summed over layers, heads and rows
  double dense_keys = 0;      // keys a dense model attends over the same rows
  double keys_fraction() const { return dense_keys > 0 ? keys / dense_keys : 1.0; }
};

// Runs `rows` (non-empty) after the backend's current position as decode rows of `spec`, with
// every layer's attention chosen by the policy; returns all rows' logits and truncates the cache
// back. `threads` bounds the host threads of the policies' attention (0: all). Throws
// kascade::Error for an unknown policy or a missing plan.
RowLogits score_rows_as_decode(engine::Backend& backend, const PolicySpec& spec, const std::vector<int32_t>& rows,
                               const engine::ModelConfig& config, int threads = 0);

// Resets the backend and prefills `tokens` through the policy's prefill rule (SPEC 5 tiles;
// decode-only policies attend densely in prefill), with the policy's SelectionPolicy on the host
// (the attention override) on every backend. Returns the logits of the last `scored` tokens
// (1 <= scored <= tokens): with scored = 1 the whole input is one forward call; otherwise the
// first part and the scored part are two calls (chunked prefill: the second's tiles start at
// its first token). Keys are counted over every token. The cache holds `tokens` afterwards.
RowLogits prefill_through_policy(engine::Backend& backend, const PolicySpec& spec, const std::vector<int32_t>& tokens,
                                 int scored, const engine::ModelConfig& config);

// ---- per-row metrics -------------------------------------------------------------------------
// For each row r (logits [rows][vocab], fp32, all finite or kascade::Error):
//   logprob[r]      log p(target[r]) under `logits` (nats; NaN where target[r] < 0: unscored)
//   dense_logprob[r] the same under `dense`
//   kl[r]           KL(p_dense || p) of the next-token distributions (nats)
//   top1[r]         1 when both argmaxes agree (ties: lowest id), else 0
struct RowMetrics {
  std::vector<double> logprob, dense_logprob, kl, top1;
};
RowMetrics compare_rows(const float* dense, const float* logits, int rows, int vocab,
                        const std::vector<int32_t>& targets);
// log p(target) of one row of logits (nats).
double row_logprob(const float* row, int vocab, int32_t target);

// ---- intervals -------------------------------------------------------------------------------
struct Interval {
  double mean = 0, lo = 0, hi = 0;
  int n = 0;
};
// Mean of `values` with a 95% percentile bootstrap interval (resamples values, `resamples`
// draws, deterministic for a seed). An empty input gives n = 0 and NaNs.
Interval bootstrap_mean_interval(const std::vector<double>& values, uint64_t seed = 1, int resamples = 2000);
// The same where the unit of resampling is a cluster (e.g. an example or a document): values in
// clusters[c] are resampled together, the statistic is the mean over all values drawn.
Interval bootstrap_cluster_interval(const std::vector<std::vector<double>>& clusters, uint64_t seed = 1,
                                    int resamples = 2000);

}  // namespace kascade::eval
