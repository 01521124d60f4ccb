// bench/kascade_bench.cpp — kascade-bench: the one benchmark binary (decode, prefill and engine modes).
//
//   kascade-bench decode  --out FILE [--baseline BASELINE.json] [--rho 0.1] [--commit SHA] [decode options]
//   kascade-bench prefill --out FILE [--baseline BASELINE.json] [--rho 0.1] [--commit SHA] [prefill options]
//   kascade-bench engine  --out FILE [--rho 0.1] [--commit SHA] [engine options]
//
// The harness (options, cold-L2 event timing, baseline lookup, result JSON) is bench_harness.h;
// each mode is one file (bench_decode.cpp, bench_prefill.cpp). Bad input is one error line and
// exit status 1, before anything is measured or written.
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "bench_harness.h"

namespace {

using kascade::bench::Mode;

std::vector<std::unique_ptr<Mode>> all_modes() {
  std::vector<std::unique_ptr<Mode>> modes;
  modes.push_back(kascade::bench::make_decode_mode());
  modes.push_back(kascade::bench::make_prefill_mode());
  modes.push_back(kascade::bench::make_engine_mode());
  return modes;
}

void print_usage(const std::vector<std::unique_ptr<Mode>>& modes) {
  std::printf(
      "usage: kascade-bench MODE --out FILE [options]\n"
      "Times the kascade attention roles and the 32-layer schedule (CUDA events, L2 flushed before\n"
      "every repetition, median) and writes the records as JSON (docs/benchmarks.md).\n\n"
      "options of every mode:\n"
      "  --out FILE                       result JSON (required)\n"
      "  --baseline FILE                  bench/run_baseline.py output of the same phase: adds ratio_vs_cudnn\n"
      "  --rho 0.1                        budget fraction, in (0, 1]\n"
      "  --commit SHA                     recorded as the result's commit (default unknown)\n");
  for (const auto& mode : modes) std::printf("\n%s options:\n%s", mode->name(), mode->usage());
}

int run(int argc, char** argv) {
  const auto modes = all_modes();
  const std::string first = argc > 1 ? argv[1] : "";
  if (first == "--help" || first == "-h") {
    print_usage(modes);
    return 0;
  }
  for (const auto& mode : modes) {
    if (first == mode->name()) {
      kascade::bench::run_mode(*mode, argc, argv);
      return 0;
    }
  }
  std::fprintf(stderr, "kascade-bench: %s (modes: decode, prefill, engine; kascade-bench --help)\n",
               first.empty() ? "missing MODE" : ("unknown mode '" + first + "'").c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kascade-bench: %s\n", e.what());
    return 1;
  }
}
