// policy-gpu-check — every selection policy of the accuracy study run natively on the GPU (its
// layer schedule on the CUDA backend's kernels, kascade/eval/scoring.h) against the same policy
// on the host (its SelectionPolicy through the CPU oracle, via the attention override) on the
// same backend, the same bf16 cache and the same rows.
//
// Per example (a synthetic task at a given length, its context prefilled densely once) and per
// policy: the question and answer rows are scored both ways; the check compares the two sets of
// next-token distributions (KL of host || native, top-1 agreement) and the keys attended (the
// same budget arithmetic: equal). Differences come from the kernels' arithmetic (fp32 sums over
// bf16 in another order than the oracle's fp64) and from selections at near-tied keys.
// Also times both paths.
//
//   policy-gpu-check --model MODEL.gguf --plan PLAN.json [--lengths 2048,4096] [--rho 0.1]
//                    [--k-min 16] [--out FILE.json]
// Exit status 0 when every policy passes, 1 when one fails, 2 on bad usage or an error.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kascade/engine/backend.h"
#include "kascade/engine/model.h"
#include "kascade/engine/model_path.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"
#include "kascade/eval/policy.h"
#include "kascade/eval/scoring.h"
#include "kascade/eval/tasks.h"
#include "kascade/plan.h"

namespace {

using namespace kascade;
using Json = nlohmann::json;

// Gates: mean KL(host || native) over the rows, and top-1 agreement.
constexpr double kMaxMeanKl = 0.02;
constexpr double kMinTop1 = 0.9;

std::vector<int> parse_ints(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(std::stoi(item));
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(int argc, char** argv) {
  std::string model_path = "default", plan_path, out_path;
  std::vector<int> lengths = {2048, 4096};
  std::vector<std::string> tasks = {"niah-single", "kv-uuid"};
  double rho = 0.1;
  int k_min = 16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      KASCADE_CHECK(i + 1 < argc, a << " needs a value");
      return argv[++i];
    };
    if (a == "--model") model_path = value();
    else if (a == "--plan") plan_path = value();
    else if (a == "--out") out_path = value();
    else if (a == "--lengths") lengths = parse_ints(value());
    else if (a == "--rho") rho = std::stod(value());
    else if (a == "--k-min") k_min = std::stoi(value());
    else KASCADE_FAIL("unknown option " << a);
  }
  KASCADE_CHECK(!plan_path.empty(), "--plan is required");
  const engine::ModelSource source = engine::ModelSource::open(model_path);
  const engine::Tokenizer tok = source.tokenizer();
  const engine::Model model = source.load();
  const engine::ModelConfig& mc = model.config;
  const Plan plan = load_plan(plan_path);
  check_plan_matches(plan, mc.layers, mc.hq, mc.hkv, mc.head_dim);
  auto backend = engine::make_backend("cuda", model, nullptr, {});
  const eval::TaskTokenizer tt{[&tok](const std::string& s) { return tok.encode_continuation(s); },
                               tok.add_bos() ? tok.bos_id() : -1};
  Json results = Json::array();
  bool ok = true;
  for (int length : lengths) {
    for (const std::string& task : tasks) {
      const eval::Example ex = eval::make_example(task, length, 0, 7, tt);
      backend->reset();
      backend->forward(ex.context, false);
      std::vector<int32_t> rows = ex.query;
      rows.insert(rows.end(), ex.answer.begin(), ex.answer.end() - 1);
      std::vector<int32_t> targets(rows.begin() + 1, rows.end());
      targets.push_back(ex.answer.back());
      for (const std::string& name : eval::policy_names()) {
        eval::PolicySpec spec{name, {}, &plan};
        spec.params.rho = rho;
        spec.params.k_min = k_min;
        auto t0 = std::chrono::steady_clock::now();
        const eval::RowLogits native = eval::score_rows_as_decode(*backend, spec, rows, mc);
        const double native_s = seconds_since(t0);
        spec.host_attention = true;
        t0 = std::chrono::steady_clock::now();
        const eval::RowLogits host = eval::score_rows_as_decode(*backend, spec, rows, mc);
        const double host_s = seconds_since(t0);
        const int n_rows = static_cast<int>(rows.size());
        const eval::RowMetrics m = eval::compare_rows(host.logits.data(), native.logits.data(), n_rows, mc.vocab, targets);
        double kl = 0, kl_max = 0, top1 = 0, dlp = 0;
        for (int r = 0; r < n_rows; ++r) {
          kl += m.kl[static_cast<size_t>(r)];
          kl_max = std::max(kl_max, m.kl[static_cast<size_t>(r)]);
          top1 += m.top1[static_cast<size_t>(r)];
          dlp += m.logprob[static_cast<size_t>(r)] - m.dense_logprob[static_cast<size_t>(r)];
        }
        kl /= n_rows;
        top1 /= n_rows;
        dlp /= n_rows;
        const bool keys_equal = std::fabs(native.keys - host.keys) <= 1e-9 * std::max(1.0, host.keys);
        const bool pass = keys_equal && kl <= kMaxMeanKl && top1 >= kMinTop1;
        ok = ok && pass;
        std::printf("%-5s %-14s %5d %-15s rows %3d  KL mean %.5f max %.5f  top1 %.3f  dlogp %+.4f  keys %.4f/%.4f  "
                    "native %.3f s host %.3f s\n",
                    pass ? "PASS" : "FAIL", task.c_str(), length, name.c_str(), n_rows, kl, kl_max, top1, dlp,
                    native.keys_fraction(), host.keys_fraction(), native_s, host_s);
        results.push_back({{"task", task}, {"length", length}, {"policy", name}, {"rho", rho}, {"rows", n_rows},
                           {"kl_mean", kl}, {"kl_max", kl_max}, {"top1", top1}, {"delta_logprob", dlp},
                           {"keys_native", native.keys_fraction()}, {"keys_host", host.keys_fraction()},
                           {"native_seconds", native_s}, {"host_seconds", host_s}, {"pass", pass}});
        std::fflush(stdout);
      }
    }
  }
  if (!out_path.empty()) {
    Json doc{{"check", "policy-gpu-check"}, {"model", mc.name}, {"plan", plan_path}, {"k_min", k_min},
             {"gates", {{"max_mean_kl", kMaxMeanKl}, {"min_top1", kMinTop1}}}, {"results", results}};
    std::ofstream(out_path) << doc.dump(2) << "\n";
  }
  std::printf("%s\n", ok ? "policy-gpu-check: all policies passed" : "policy-gpu-check: FAILED");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "policy-gpu-check: %s\n", e.what());
    return 2;
  }
}
