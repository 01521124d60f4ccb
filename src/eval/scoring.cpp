// Decode rows of a policy over the engine, per-row metrics against dense, bootstrap intervals
// (kascade/eval/scoring.h).
#include "kascade/eval/scoring.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "kascade/budget.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"
#include "kascade/eval/harness.h"
#include "kascade/eval/tasks.h"
#include "../reference/parallel.h"

namespace kascade::eval {

namespace {

// Decode-only selector schedules (OmniKV, TidalDecode): each selector layer attends densely and
// writes one all-heads-pooled selection into its own slot; every later layer reads the latest
// selector's; layers before the first selector are dense.
engine::AttentionSchedule selector_schedule(int layers, const std::vector<int>& selectors) {
  engine::AttentionSchedule s;
  s.slots = static_cast<int>(selectors.size());
  s.prefill_dense = true;
  int slot = -1;
  for (int l = 0; l < layers; ++l) {
    engine::LayerSchedule ls;
    ls.pooling = Pooling::All;
    if (std::find(selectors.begin(), selectors.end(), l) != selectors.end()) {
      ls.rule = engine::LayerRule::DenseSelect;
      ls.slot = ++slot;
    } else if (slot >= 0) {
      ls.rule = engine::LayerRule::Reuse;
      ls.slot = slot;
    }
    s.layers.push_back(ls);
  }
  return s;
}

}  // namespace

engine::AttentionSchedule make_attention_schedule(const PolicySpec& spec, int layers) {
  using engine::LayerRule;
  using engine::LayerSchedule;
  KASCADE_CHECK(layers >= 1, "policy '" << spec.name << "': the model must have at least one layer");
  engine::AttentionSchedule s;
  if (spec.name == "dense") return engine::dense_schedule(layers);
  const bool needs_plan =
      spec.name == "kascade" || spec.name == "kascade-pooled" || spec.name == "omnikv" || spec.name == "tidal";
  KASCADE_CHECK(!needs_plan || spec.plan != nullptr, "policy '" << spec.name << "' needs a plan (--plan)");
  if (needs_plan) {
    KASCADE_CHECK(spec.plan->layers == layers,
                  "plan has " << spec.plan->layers << " layers but the model has " << layers);
  }
  if (spec.name == "kascade" || spec.name == "kascade-pooled") {
    s = engine::schedule_from_plan(*spec.plan);
    const Pooling pooling = spec.name == "kascade" ? spec.plan->sparsity.pooling : Pooling::All;
    for (LayerSchedule& ls : s.layers) ls.pooling = pooling;
  } else if (spec.name == "oracle") {
    // Layer 0 dense; every other layer selects its own group-pooled top-k.
    s.slots = layers;
    for (int l = 0; l < layers; ++l) {
      LayerSchedule ls;
      if (l > 0) {
        ls.rule = LayerRule::Select;
        ls.slot = l;
      }
      s.layers.push_back(ls);
    }
  } else if (spec.name == "streaming" || spec.name == "quest") {
    s.slots = 1;
    s.prefill_dense = spec.name == "quest";  // decode only (policy.h)
    for (int l = 0; l < layers; ++l) {
      LayerSchedule ls;
      if (l > 0) {
        ls.rule = spec.name == "streaming" ? LayerRule::Streaming : LayerRule::Quest;
        ls.slot = 0;
      }
      s.layers.push_back(ls);
    }
  } else if (spec.name == "omnikv") {
    // Filter layers (layer 0 among them) attend densely and select one all-heads-pooled top-k;
    // the layers up to the next filter layer read it. Decode only.
    s = selector_schedule(layers, evenly_spaced_layers(layers, static_cast<int>(spec.plan->anchors.size())));
  } else if (spec.name == "tidal") {
    // Layers 0 and 1 dense; selection layers attend densely and select one all-heads-pooled top-k;
    // the other layers read the latest selection layer's. Decode only.
    s = selector_schedule(layers,
                          tidal_selection_layers(layers, std::max(1, static_cast<int>(spec.plan->anchors.size()) - 1)));
  } else {
    KASCADE_FAIL("policy '" << spec.name << "' has no layer schedule (it runs only with host attention)");
  }
  s.name = spec.name;
  s.sparsity = spec.params;
  s.sparsity.pooling = Pooling::Group;  // per layer in the schedule
  return s;
}

double schedule_keys_attended(const engine::AttentionSchedule& schedule, int first, int rows, int hq) {
  const SparsityParams& sp = schedule.sparsity;
  double keys = 0;
  for (int t = 0; t < rows; ++t) {
    const int64_t n = static_cast<int64_t>(first) + t + 1;  // the decode row's keys
    const double selected = static_cast<double>(std::min<int64_t>(n, budget_k(n, sp.rho, sp.k_min, sp.k_multiple)));
    for (size_t l = 0; l < schedule.layers.size(); ++l) {
      keys += schedule.attends_selection(static_cast<int>(l)) ? selected : static_cast<double>(n);
    }
  }
  return keys * hq;
}

namespace {

RowLogits rows_on_host(engine::Backend& backend, const PolicySpec& spec, const std::vector<int32_t>& rows,
                       const engine::ModelConfig& config, int threads) {
  const PolicyContext ctx{spec.params, config.layers, spec.plan};
  std::unique_ptr<SelectionPolicy> policy = make_policy(spec.name, ctx);
  const int first = backend.position();
  RowLogits out;
  const SparsityParams params = spec.params;
  backend.set_attention_override([&](const engine::LayerAttentionCall& c) {
    const double keys = attend_rows_as_decode(*policy, params, c.layer, c.first, c.tokens, c.hq, c.hkv, c.head_dim,
                                              c.q, c.k, c.v, c.out, threads);
    out.keys += keys;
    return keys;
  });
  try {
    out.logits = backend.forward(rows, /*all_logits=*/true);
  } catch (...) {
    backend.set_attention_override(nullptr);
    backend.truncate(std::min(first, backend.position()));
    throw;
  }
  backend.set_attention_override(nullptr);
  backend.truncate(first);
  return out;
}

RowLogits rows_native(engine::Backend& backend, const PolicySpec& spec, const std::vector<int32_t>& rows,
                      const engine::ModelConfig& config) {
  const engine::AttentionSchedule schedule = make_attention_schedule(spec, config.layers);
  const int first = backend.position();
  RowLogits out;
  out.keys = schedule_keys_attended(schedule, first, static_cast<int>(rows.size()), config.hq);
  backend.set_attention_schedule(&schedule);
  try {
    out.logits = backend.forward_decode_rows(rows);
  } catch (...) {
    backend.set_attention_schedule(nullptr);
    backend.truncate(std::min(first, backend.position()));
    throw;
  }
  backend.set_attention_schedule(nullptr);
  backend.truncate(first);
  return out;
}

}  // namespace

RowLogits score_rows_as_decode(engine::Backend& backend, const PolicySpec& spec, const std::vector<int32_t>& rows,
                               const engine::ModelConfig& config, int threads) {
  KASCADE_CHECK(!rows.empty(), "score_rows_as_decode: no rows to score");
  const int first = backend.position();
  RowLogits out = backend.supports_schedules() && !spec.host_attention ? rows_native(backend, spec, rows, config)
                                                                       : rows_on_host(backend, spec, rows, config, threads);
  for (size_t t = 0; t < rows.size(); ++t) out.dense_keys += static_cast<double>(first + t + 1);
  out.dense_keys *= static_cast<double>(config.hq) * config.layers;
  return out;
}

RowLogits prefill_through_policy(engine::Backend& backend, const PolicySpec& spec, const std::vector<int32_t>& tokens,
                                 int scored, const engine::ModelConfig& config) {
  KASCADE_CHECK(scored >= 1 && scored <= static_cast<int>(tokens.size()),
                "prefill_through_policy: " << scored << " scored rows of " << tokens.size() << " tokens");
  const PolicyContext ctx{spec.params, config.layers, spec.plan};
  std::unique_ptr<SelectionPolicy> policy = make_policy(spec.name, ctx);
  const SparsityParams params = spec.params;
  RowLogits out;
  backend.reset();
  backend.set_attention_override([&](const engine::LayerAttentionCall& c) {
    const LayerInputs in{c.layer, c.tokens == 1 ? Phase::Decode : Phase::Prefill, c.hq, c.hkv, c.tokens,
                         c.first + c.tokens, c.head_dim, c.q, c.k, c.v};
    const double attended = attend_layer(*policy, params, in, c.out);
    out.keys += attended;
    return attended;
  });
  try {
    if (scored == 1) {
      out.logits = backend.forward(tokens, /*all_logits=*/false);
    } else {
      const auto split = tokens.end() - scored;
      if (split != tokens.begin()) backend.forward(std::vector<int32_t>(tokens.begin(), split), /*all_logits=*/false);
      out.logits = backend.forward(std::vector<int32_t>(split, tokens.end()), /*all_logits=*/true);
    }
  } catch (...) {
    backend.set_attention_override(nullptr);
    throw;
  }
  backend.set_attention_override(nullptr);
  for (int t = 0; t < backend.position(); ++t) out.dense_keys += static_cast<double>(t + 1);
  out.dense_keys *= static_cast<double>(config.hq) * config.layers;
  return out;
}

namespace {

// max and log-sum-exp of one row (double), checking every logit is finite.
void row_stats(const float* row, int vocab, int r, double& max, double& lse, int& argmax) {
  argmax = 0;
  for (int i = 0; i < vocab; ++i) {
    KASCADE_CHECK(std::isfinite(row[i]), "logit " << i << " of row " << r << " is " << row[i]);
    if (row[i] > row[argmax]) argmax = i;
  }
  max = row[argmax];
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(row[i]) - max);
  lse = max + std::log(sum);
}

}  // namespace

double row_logprob(const float* row, int vocab, int32_t target) {
  KASCADE_CHECK(target >= 0 && target < vocab, "row_logprob: token " << target << " is outside the vocabulary");
  double max = 0, lse = 0;
  int argmax = 0;
  row_stats(row, vocab, 0, max, lse, argmax);
  return static_cast<double>(row[target]) - lse;
}

RowMetrics compare_rows(const float* dense, const float* logits, int rows, int vocab,
                        const std::vector<int32_t>& targets) {
  KASCADE_CHECK(rows >= 0 && vocab >= 1, "compare_rows: bad shape " << rows << " x " << vocab);
  KASCADE_CHECK(static_cast<int>(targets.size()) == rows,
                "compare_rows: " << targets.size() << " targets for " << rows << " rows");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  RowMetrics m;
  m.kl.assign(static_cast<size_t>(rows), 0.0);
  m.top1.assign(static_cast<size_t>(rows), 0.0);
  m.logprob.assign(static_cast<size_t>(rows), nan);
  m.dense_logprob.assign(static_cast<size_t>(rows), nan);
  auto one_row = [&](int r) {
    const float* d = dense + static_cast<size_t>(r) * vocab;
    const float* p = logits + static_cast<size_t>(r) * vocab;
    double dmax = 0, dlse = 0, pmax = 0, plse = 0;
    int darg = 0, parg = 0;
    row_stats(d, vocab, r, dmax, dlse, darg);
    row_stats(p, vocab, r, pmax, plse, parg);
    double kl = 0;
    for (int i = 0; i < vocab; ++i) {
      const double ld = static_cast<double>(d[i]) - dlse, lp = static_cast<double>(p[i]) - plse;
      kl += std::exp(ld) * (ld - lp);
    }
    const size_t i = static_cast<size_t>(r);
    m.kl[i] = std::max(0.0, kl);
    m.top1[i] = darg == parg ? 1.0 : 0.0;
    const int32_t t = targets[i];
    KASCADE_CHECK(t < vocab, "compare_rows: target " << t << " of row " << r << " is outside the vocabulary");
    if (t >= 0) {
      m.logprob[i] = static_cast<double>(p[t]) - plse;
      m.dense_logprob[i] = static_cast<double>(d[t]) - dlse;
    }
  };
  // Rows are independent: spread them over the hardware threads (a row of a 49k vocabulary is
  // ~100k exponentials; the GPU eval compares thousands of rows per minute).
  ref::detail::parallel_for(rows, one_row);
  return m;
}

namespace {

// The 2.5th and 97.5th percentiles of `stats` (sorted in place), by linear interpolation.
void percentile_interval(std::vector<double>& stats, Interval& out) {
  std::sort(stats.begin(), stats.end());
  auto at = [&stats](double q) {
    const double pos = q * static_cast<double>(stats.size() - 1);
    const size_t i = static_cast<size_t>(pos);
    const double f = pos - static_cast<double>(i);
    return i + 1 < stats.size() ? stats[i] * (1 - f) + stats[i + 1] * f : stats[i];
  };
  out.lo = at(0.025);
  out.hi = at(0.975);
}

}  // namespace

Interval bootstrap_cluster_interval(const std::vector<std::vector<double>>& clusters, uint64_t seed, int resamples) {
  KASCADE_CHECK(resamples >= 1, "bootstrap: resamples must be >= 1, got " << resamples);
  Interval out;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> sums, counts;
  double total = 0, count = 0;
  for (const std::vector<double>& c : clusters) {
    double s = 0;
    for (double v : c) {
      KASCADE_CHECK(std::isfinite(v), "bootstrap: a value is " << v);
      s += v;
    }
    if (c.empty()) continue;
    sums.push_back(s);
    counts.push_back(static_cast<double>(c.size()));
    total += s;
    count += static_cast<double>(c.size());
    out.n += static_cast<int>(c.size());
  }
  if (sums.empty()) {
    out.mean = out.lo = out.hi = nan;
    return out;
  }
  out.mean = total / count;
  Rng rng(seed);
  std::vector<double> stats(static_cast<size_t>(resamples));
  const uint64_t m = sums.size();
  for (int b = 0; b < resamples; ++b) {
    double s = 0, c = 0;
    for (uint64_t i = 0; i < m; ++i) {
      const uint64_t j = rng.below(m);
      s += sums[j];
      c += counts[j];
    }
    stats[static_cast<size_t>(b)] = s / c;
  }
  percentile_interval(stats, out);
  return out;
}

Interval bootstrap_mean_interval(const std::vector<double>& values, uint64_t seed, int resamples) {
  std::vector<std::vector<double>> clusters;
  clusters.reserve(values.size());
  for (double v : values) clusters.push_back({v});
  return bootstrap_cluster_interval(clusters, seed, resamples);
}

}  // namespace kascade::eval
