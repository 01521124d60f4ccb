// `kascade demo --synthetic`: Kascade on a synthetic layer stack, through the CPU oracle (no
// model needed).
//
// A stack of attention layers over one long context whose keys hold a planted set of
// "heavy" positions per kv head (shared across layers, as real models' heavy hitters largely
// are). Layer 0 computes dense attention and selects; the other anchors select afresh; reuse
// layers attend only to their anchor's selection. For every layer the demo prints the role, the
// keys read and the relative L2 error of the output against dense attention, for decode (one
// new token) and for a chunked prefill of the last positions.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "command.h"
#include "demo.h"
#include "kascade/plan.h"
#include "kascade/reference.h"

namespace kascade::cli {
namespace {

struct DemoOptions {
  int layers = 8;
  int context = 4096;
  int prefill_queries = 64;
  int hq = 9, hkv = 3, head_dim = 64;  // SmolLM2-135M's attention shape
  double rho = kDefaultRho;
  unsigned seed = 1;
  std::string plan_path;
};

// One layer's synthetic q/k/v: queries of kv head g point along u[g]; the heavy keys of g
// carry a component along u[g], so attention concentrates on them in every layer.
struct LayerData {
  std::vector<float> q_decode;   // [Hq, 1, D]
  std::vector<float> q_prefill;  // [Hq, nq, D]
  std::vector<float> k, v;       // [Hkv, n, D]
};

LayerData make_layer(const DemoOptions& o, const std::vector<std::vector<char>>& heavy, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  const int n = o.context, d = o.head_dim, group = o.hq / o.hkv;
  const float signal = 3.5f;
  std::vector<float> dir(static_cast<size_t>(o.hkv) * d);
  for (int g = 0; g < o.hkv; ++g) {
    double norm = 0;
    for (int x = 0; x < d; ++x) norm += std::pow(dir[g * d + x] = normal(rng), 2);
    for (int x = 0; x < d; ++x) dir[g * d + x] /= static_cast<float>(std::sqrt(norm));
  }
  LayerData L;
  L.k.resize(static_cast<size_t>(o.hkv) * n * d);
  L.v.resize(L.k.size());
  for (int g = 0; g < o.hkv; ++g)
    for (int i = 0; i < n; ++i)
      for (int x = 0; x < d; ++x) {
        const size_t at = (static_cast<size_t>(g) * n + i) * d + x;
        L.k[at] = normal(rng) + (heavy[g][i] ? signal * std::sqrt(static_cast<float>(d)) * dir[g * d + x] : 0.f);
        L.v[at] = normal(rng);
      }
  auto make_q = [&](int nq) {
    std::vector<float> q(static_cast<size_t>(o.hq) * nq * d);
    for (int h = 0; h < o.hq; ++h)
      for (int t = 0; t < nq; ++t)
        for (int x = 0; x < d; ++x)
          q[(static_cast<size_t>(h) * nq + t) * d + x] = 0.5f * normal(rng) + signal * dir[(h / group) * d + x];
    return q;
  };
  L.q_decode = make_q(1);
  L.q_prefill = make_q(o.prefill_queries);
  return L;
}

// Mean number of keys a prefill query attends to: its tile's selection plus the causal
// diagonal (positions b..t of its own tile), averaged over the chunk's queries.
double mean_keys_per_query(const ref::Selection& sel, int tile, int nq) {
  double total = 0;
  for (int t = 0; t < nq; ++t) total += sel.row_count(0, t / tile) + (t % tile) + 1;
  return total / nq;
}

DemoOptions parse_demo_options(const Args& args) {
  DemoOptions o;
  OptionReader r(args);
  std::string v;
  while (!r.done()) {
    if (r.take_value("--layers", v)) o.layers = parse_int(v, "--layers");
    else if (r.take_value("--context", v)) o.context = parse_int(v, "--context");
    else if (r.take_value("--rho", v)) o.rho = parse_double(v, "--rho");
    else if (r.take_value("--seed", v)) o.seed = static_cast<unsigned>(parse_int(v, "--seed"));
    else if (r.take_value("--plan", v)) o.plan_path = v;
    else KASCADE_FAIL("unknown option '" << r.peek() << "' (demo --synthetic takes --layers, --context, --rho, --seed, --plan)");
  }
  KASCADE_CHECK(o.layers >= 2 && o.layers <= 64, "--layers: expected 2..64, got " << o.layers);
  KASCADE_CHECK(o.context >= 256 && o.context <= (1 << 17), "--context: expected 256..131072, got " << o.context);
  KASCADE_CHECK(o.rho > 0 && o.rho <= 1, "--rho: expected a value in (0, 1], got " << o.rho);
  return o;
}

}  // namespace

int run_synthetic_demo(const Args& args) {
  DemoOptions o = parse_demo_options(args);
  Plan plan;
  if (!o.plan_path.empty()) {
    plan = load_plan(o.plan_path);
    o.layers = plan.layers;
    o.hq = plan.hq;
    o.hkv = plan.hkv;
    o.head_dim = plan.head_dim;
    o.rho = plan.sparsity.rho;
  } else {
    plan = make_uniform_plan("synthetic", o.layers, o.hq, o.hkv, o.head_dim, {0, o.layers / 2});
    plan.sparsity.rho = o.rho;
  }
  std::mt19937 rng(o.seed);
  // Heavy positions of each kv head: ~3% of the context, plus the first tokens (attention sinks).
  std::vector<std::vector<char>> heavy(o.hkv, std::vector<char>(o.context, 0));
  std::bernoulli_distribution pick(0.03);
  for (auto& h : heavy)
    for (int i = 0; i < o.context; ++i) h[i] = (i < 4) || pick(rng);

  std::printf("kascade demo: %d layers, Hq %d, Hkv %d, D %d, context %d, rho %.2f, anchors", o.layers, o.hq, o.hkv,
              o.head_dim, o.context, plan.sparsity.rho);
  for (int a : plan.anchors) std::printf(" %d", a);
  std::printf("\n(synthetic data, CPU reference; errors are relative L2 against dense attention)\n\n");
  std::printf("%5s  %-7s  %17s  %10s  %17s  %10s\n", "layer", "role", "decode keys read", "decode err",
              "prefill keys read", "prefill err");

  const int n = o.context, nq = o.prefill_queries;
  ref::Call decode_call, prefill_call;
  decode_call.phase = Phase::Decode;
  prefill_call.phase = Phase::Prefill;
  prefill_call.p0 = n - nq;
  decode_call.params = prefill_call.params = plan.params();
  std::vector<ref::Selection> decode_sel(plan.anchors.size()), prefill_sel(plan.anchors.size());
  double read_sparse = 0, read_dense = 0, worst_err = 0;
  double ms_dense = 0, ms_sparse = 0;
  using clock = std::chrono::steady_clock;
  for (int l = 0; l < o.layers; ++l) {
    const LayerData data = make_layer(o, heavy, rng);
    ref::Call dense_d = decode_call, dense_p = prefill_call;
    dense_d.role = dense_p.role = Role::Dense;
    auto t0 = clock::now();
    const ref::Result want_d = ref::attend(dense_d, data.q_decode.data(), data.k.data(), data.v.data(), o.hq, o.hkv, 1, n, o.head_dim);
    const ref::Result want_p = ref::attend(dense_p, data.q_prefill.data(), data.k.data(), data.v.data(), o.hq, o.hkv, nq, n, o.head_dim);
    auto t1 = clock::now();
    const Role role = plan.role_of(l);
    const int slot = plan.anchor_slot(l);
    ref::Call call_d = decode_call, call_p = prefill_call;
    call_d.role = call_p.role = role;
    if (role == Role::Reuse) {
      for (int g = 0; g < o.hkv; ++g) call_d.head_map.push_back(plan.source_head(l, g));
      call_p.head_map = call_d.head_map;
    }
    const ref::Selection* reuse_d = role == Role::Reuse ? &decode_sel[slot] : nullptr;
    const ref::Selection* reuse_p = role == Role::Reuse ? &prefill_sel[slot] : nullptr;
    const ref::Result got_d = ref::attend(call_d, data.q_decode.data(), data.k.data(), data.v.data(), o.hq, o.hkv, 1, n, o.head_dim, reuse_d);
    const ref::Result got_p = ref::attend(call_p, data.q_prefill.data(), data.k.data(), data.v.data(), o.hq, o.hkv, nq, n, o.head_dim, reuse_p);
    auto t2 = clock::now();
    ms_dense += std::chrono::duration<double, std::milli>(t1 - t0).count();
    ms_sparse += std::chrono::duration<double, std::milli>(t2 - t1).count();
    if (role != Role::Reuse) {
      decode_sel[slot] = got_d.selection;
      prefill_sel[slot] = got_p.selection;
    }
    // Keys read: dense reads all n; a sparse layer reads its selection (plus the diagonal in prefill).
    const ref::Selection& sd = decode_sel[slot];
    const ref::Selection& sp = prefill_sel[slot];
    const double keys_d = role == Role::Layer0 ? n : sd.row_count(0, 0);
    const double keys_p = role == Role::Layer0 ? n : mean_keys_per_query(sp, plan.sparsity.tile, nq);
    const double err_d = ref::relative_l2_error(want_d.out.data(), got_d.out.data(), got_d.out.size());
    const double err_p = ref::relative_l2_error(want_p.out.data(), got_p.out.data(), got_p.out.size());
    read_sparse += keys_d;
    read_dense += n;
    if (l > 0) worst_err = std::max(worst_err, std::max(err_d, err_p));
    char kd[32], kp[32];
    std::snprintf(kd, sizeof kd, "%.0f (%.1f%%)", keys_d, 100.0 * keys_d / n);
    std::snprintf(kp, sizeof kp, "%.0f (%.1f%%)", keys_p, 100.0 * keys_p / n);
    std::printf("%5d  %-7s  %17s  %10.2e  %17s  %10.2e\n", l, to_string(role), kd,
                err_d, kp, err_p);
  }
  std::printf("\ndecode: Kascade read %.1f%% of the keys dense attention reads; worst output error %.2e\n",
              100.0 * read_sparse / read_dense, worst_err);
  std::printf("CPU reference time: dense %.0f ms, Kascade %.0f ms (the oracle is plain loops: GPU speed is "
              "measured by the benchmarks)\n", ms_dense, ms_sparse);
  return 0;
}

}  // namespace kascade::cli
