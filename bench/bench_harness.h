// bench/bench_harness.h — the measuring harness shared by the modes of kascade-bench.
//
// Everything a benchmark must do the same way lives here, once (STYLE 13):
//   options   `--name value` pairs, parsed strictly: an unknown option, a missing value, a number
//             with trailing text or out of range, or an empty list item is a kascade::Error that
//             names the option and the value;
//   timing    CUDA events around one call, the L2 flushed by a 256 MiB memset before every
//             repetition, untimed warm-ups, the median;
//   baselines dense times read from bench/run_baseline.py's JSON and looked up by shape;
//   records   the DESIGN.md result format: one record per measured configuration, written with the
//             device, commit, date and command to the file named by --out.
//
// A mode (bench_decode.cpp, bench_prefill.cpp) subclasses `Mode`: it takes its own options, then
// measures its shapes with the timer and appends records. kascade_bench.cpp picks the mode from
// the first argument and calls `run_mode`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "kascade/types.h"

namespace kascade::bench {

using json = nlohmann::json;

// The attention shapes of the benchmarked models, by the key used on the command line.
struct ModelShape {
  std::string name;  // as recorded ("Llama-3.1-8B")
  int hq, hkv, head_dim;
};
// Throws naming the key and the known ones when `key` is not a model.
const ModelShape& model_shape(const std::string& key);

// The roles every mode times, in the order they are timed (reuse last: it reads the selection the
// anchor runs before it left in the buffer).
constexpr Role kRoles[] = {Role::Dense, Role::Layer0, Role::Anchor, Role::Reuse};

// The paper's 32-layer schedule: layer 0, then an anchor every 32 / 5 = 6 layers (4 besides layer
// 0), reuse layers in between.
constexpr int kScheduleLayers = 32;
constexpr int kScheduleAnchors = 4;  // besides layer 0
Role schedule_role(int layer);

// Strict option values; `option` names the option in the error.
int parse_positive_int(const std::string& option, const std::string& text);
double parse_double(const std::string& option, const std::string& text);
// Comma-separated items; an empty item ("a,,b", a trailing comma) is an error.
std::vector<std::string> split_list(const std::string& option, const std::string& text);

// Options every mode takes.
struct CommonOptions {
  double rho = 0.1;
  std::string baseline;  // bench/run_baseline.py output; empty: no ratios
  std::string out;       // required
  std::string commit = "unknown";
  std::string command;  // the whole command line, recorded in the result
};

// cudaMalloc'd bytes freed on scope exit.
struct DeviceMemory {
  void* ptr = nullptr;
  explicit DeviceMemory(size_t bytes);
  ~DeviceMemory();
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

// Median CUDA-event time of a call with a cold L2. The flush buffer is larger than five H100 L2s
// (50 MB), so no line the previous repetition touched survives the memset.
class ColdL2Timer {
 public:
  static constexpr size_t kL2FlushBytes = size_t(256) << 20;

  explicit ColdL2Timer(int warmups);
  ~ColdL2Timer();
  ColdL2Timer(const ColdL2Timer&) = delete;
  ColdL2Timer& operator=(const ColdL2Timer&) = delete;

  // Median milliseconds of `reps` runs of fn on the default stream, each after an L2 flush, after
  // the warm-up runs.
  template <typename Fn>
  double median_ms(int reps, Fn&& fn) {
    for (int i = 0; i < warmups_; ++i) fn();
    std::vector<float> times;
    for (int i = 0; i < reps; ++i) {
      flush_l2(i);
      record_start();
      fn();
      times.push_back(record_stop_ms());
    }
    return median(times);
  }

 private:
  void flush_l2(int rep);
  void record_start();
  float record_stop_ms();  // waits for the stop event
  static double median(std::vector<float>& times);

  int warmups_;
  DeviceMemory flush_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Baseline records (cuDNN SDPA, PyTorch flash) from bench/run_baseline.py, by shape.
struct Baselines {
  json records = json::array();
  // The `impl` dense time of this phase and shape; NaN when the file has no such record or the
  // backend rejected the shape ("ms": null).
  double dense_ms(const std::string& impl, const std::string& phase, int batch, int context,
                  const ModelShape& m) const;
};

// A kascade record's shape fields (DESIGN.md); the mode adds its own (layout, tile) and the time.
json shape_record(const std::string& phase, const std::string& role, const ModelShape& m, int batch, int context,
                  double rho, int page_size);
// "ms" and "ratio_vs_cudnn" (null when the baseline lacks the shape).
void set_time(json& record, double ms, double cudnn_ms);
// The schedule record's fields: ms for all layers, per layer, its ratio per layer to cuDNN dense
// and its speed-ups against 32 cuDNN and 32 kascade dense layers.
void set_schedule(json& record, double schedule_ms, double cudnn_ms, double kascade_dense_ms);

// One benchmark mode of kascade-bench.
class Mode {
 public:
  virtual ~Mode() = default;
  virtual const char* name() const = 0;  // "decode", "prefill": the phase of its records
  virtual const char* usage() const = 0;  // the mode's own option lines
  // Takes one mode-specific option; false when `option` is not one of this mode's.
  virtual bool set_option(const std::string& option, const std::string& value) = 0;
  virtual int warmups() const = 0;  // untimed runs before every timing
  // Times every configured shape (random inputs from `rng`), appending records.
  virtual void measure(const CommonOptions& options, const Baselines& baselines, ColdL2Timer& timer,
                       std::mt19937_64& rng, json& records) = 0;
};

std::unique_ptr<Mode> make_decode_mode();
std::unique_ptr<Mode> make_prefill_mode();
std::unique_ptr<Mode> make_engine_mode();  // bench_engine.cpp

// Parses argv[2..] (common options, then the mode's), reads the baseline, measures and writes the
// result document to --out; throws kascade::Error on any bad input before measuring anything.
void run_mode(Mode& mode, int argc, char** argv);

}  // namespace kascade::bench
