// bench/bench_harness.cpp — options, cold-L2 timing, baselines and the result document of
// kascade-bench (see bench_harness.h).
#include "bench_harness.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "common/cuda_check.h"
#include "kascade/error.h"

namespace kascade::bench {

namespace {

const std::map<std::string, ModelShape>& models() {
  static const std::map<std::string, ModelShape> table = {
      {"llama8b", {"Llama-3.1-8B", 32, 8, 128}},
      {"smollm", {"SmolLM2-135M", 9, 3, 64}},
  };
  return table;
}

std::string model_keys() {
  std::string keys;
  for (const auto& [key, shape] : models()) keys += (keys.empty() ? "" : ", ") + key;
  return keys;
}

}  // namespace

const ModelShape& model_shape(const std::string& key) {
  const auto it = models().find(key);
  KASCADE_CHECK(it != models().end(), "unknown model '" << key << "' (known: " << model_keys() << ")");
  return it->second;
}

Role schedule_role(int layer) {
  const int stride = kScheduleLayers / (kScheduleAnchors + 1);
  if (layer == 0) return Role::Layer0;
  const bool anchor = layer % stride == 0 && layer / stride <= kScheduleAnchors;
  return anchor ? Role::Anchor : Role::Reuse;
}

int parse_positive_int(const std::string& option, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  KASCADE_CHECK(!text.empty() && end == text.c_str() + text.size() && errno == 0 && value > 0 &&
                    value <= std::numeric_limits<int>::max(),
                option << ": expected a positive integer, got '" << text << "'");
  return static_cast<int>(value);
}

double parse_double(const std::string& option, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  KASCADE_CHECK(!text.empty() && end == text.c_str() + text.size() && errno == 0 && std::isfinite(value),
                option << ": expected a number, got '" << text << "'");
  return value;
}

std::vector<std::string> split_list(const std::string& option, const std::string& text) {
  std::vector<std::string> items;
  size_t begin = 0;
  while (true) {
    const size_t comma = text.find(',', begin);
    const std::string item = text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    KASCADE_CHECK(!item.empty(), option << ": empty item in '" << text << "'");
    items.push_back(item);
    if (comma == std::string::npos) return items;
    begin = comma + 1;
  }
}

DeviceMemory::DeviceMemory(size_t bytes) {
  KASCADE_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(bytes, 256)));
}

DeviceMemory::~DeviceMemory() { cudaFree(ptr); }

ColdL2Timer::ColdL2Timer(int warmups) : warmups_(warmups), flush_(kL2FlushBytes) {
  KASCADE_CUDA_CHECK(cudaEventCreate(&start_));
  KASCADE_CUDA_CHECK(cudaEventCreate(&stop_));
}

ColdL2Timer::~ColdL2Timer() {
  cudaEventDestroy(start_);
  cudaEventDestroy(stop_);
}

void ColdL2Timer::flush_l2(int rep) {
  KASCADE_CUDA_CHECK(cudaMemsetAsync(flush_.ptr, rep & 0xff, kL2FlushBytes, nullptr));
}

void ColdL2Timer::record_start() { KASCADE_CUDA_CHECK(cudaEventRecord(start_, nullptr)); }

float ColdL2Timer::record_stop_ms() {
  KASCADE_CUDA_CHECK(cudaEventRecord(stop_, nullptr));
  KASCADE_CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0.f;
  KASCADE_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
  return ms;
}

double ColdL2Timer::median(std::vector<float>& times) {
  KASCADE_CHECK(!times.empty(), "ColdL2Timer: no repetitions to take the median of");
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double Baselines::dense_ms(const std::string& impl, const std::string& phase, int batch, int context,
                           const ModelShape& m) const {
  for (const auto& r : records) {
    if (r.value("phase", "") == phase && r.value("impl", "") == impl && r.value("role", "") == "dense" &&
        r.value("batch", 0) == batch && r.value("context", 0) == context && r.value("hq", 0) == m.hq &&
        r.value("hkv", 0) == m.hkv && r.value("head_dim", 0) == m.head_dim && r.contains("ms") &&
        r["ms"].is_number()) {
      return r["ms"].get<double>();
    }
  }
  return NAN;
}

json shape_record(const std::string& phase, const std::string& role, const ModelShape& m, int batch, int context,
                  double rho, int page_size) {
  return {{"phase", phase},     {"impl", "kascade"}, {"role", role},   {"model", m.name},
          {"batch", batch},     {"context", context}, {"hq", m.hq},    {"hkv", m.hkv},
          {"head_dim", m.head_dim}, {"dtype", "bf16"}, {"rho", rho},   {"page_size", page_size}};
}

void set_time(json& record, double ms, double cudnn_ms) {
  record["ms"] = ms;
  record["ratio_vs_cudnn"] = std::isnan(cudnn_ms) ? json(nullptr) : json(ms / cudnn_ms);
}

void set_schedule(json& record, double schedule_ms, double cudnn_ms, double kascade_dense_ms) {
  const bool have_cudnn = !std::isnan(cudnn_ms);
  record["ms"] = schedule_ms;
  record["layers"] = kScheduleLayers;
  record["anchors"] = kScheduleAnchors + 1;
  record["ms_per_layer"] = schedule_ms / kScheduleLayers;
  record["ratio_vs_cudnn"] = have_cudnn ? json(schedule_ms / (kScheduleLayers * cudnn_ms)) : json(nullptr);
  record["speedup_vs_cudnn"] = have_cudnn ? json(kScheduleLayers * cudnn_ms / schedule_ms) : json(nullptr);
  record["speedup_vs_kascade_dense"] = kScheduleLayers * kascade_dense_ms / schedule_ms;
}

namespace {

// Common options first, then the mode's; every option takes a value.
CommonOptions parse_options(Mode& mode, int argc, char** argv) {
  CommonOptions o;
  for (int i = 0; i < argc; ++i) o.command += (i ? " " : "") + std::string(argv[i]);
  for (int i = 2; i < argc; ++i) {
    const std::string option = argv[i];
    KASCADE_CHECK(i + 1 < argc, mode.name() << ": option " << option << " needs a value");
    const std::string value = argv[++i];
    if (option == "--rho") {
      o.rho = parse_double(option, value);
      KASCADE_CHECK(o.rho > 0 && o.rho <= 1, "--rho must be in (0, 1], got " << value);
    } else if (option == "--baseline") {
      o.baseline = value;
    } else if (option == "--out") {
      o.out = value;
    } else if (option == "--commit") {
      o.commit = value;
    } else if (!mode.set_option(option, value)) {
      KASCADE_FAIL(mode.name() << ": unknown option " << option << " (see kascade-bench --help)");
    }
  }
  KASCADE_CHECK(!o.out.empty(), mode.name() << ": --out FILE is required");
  // Checked now rather than after minutes of measuring.
  const std::filesystem::path parent = std::filesystem::path(o.out).parent_path();
  KASCADE_CHECK(parent.empty() || std::filesystem::is_directory(parent),
                "--out: directory " << parent.string() << " does not exist");
  return o;
}

}  // namespace

void run_mode(Mode& mode, int argc, char** argv) {
  const CommonOptions o = parse_options(mode, argc, argv);
  Baselines baselines;
  json doc;
  if (!o.baseline.empty()) {
    std::ifstream in(o.baseline);
    KASCADE_CHECK(in.good(), "--baseline: cannot open " << o.baseline);
    json base;
    try {
      base = json::parse(in);
    } catch (const json::exception& e) {
      KASCADE_FAIL("--baseline: " << o.baseline << " is not JSON: " << e.what());
    }
    KASCADE_CHECK(base.is_object() && base.contains("records") && base["records"].is_array(),
                  o.baseline << ": no records array");
    baselines.records = base["records"];
    // Provenance of the baseline run; a dry run has none (null), recorded as "".
    auto text = [&](const char* key) { return base.contains(key) && base[key].is_string() ? base[key] : json(""); };
    doc["baseline_device"] = text("device");
    doc["baseline_command"] = text("command");
    doc["baseline_torch"] = text("torch");
  }
  cudaDeviceProp prop{};
  KASCADE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  ColdL2Timer timer(mode.warmups());
  std::mt19937_64 rng(2512);
  json records = baselines.records;
  mode.measure(o, baselines, timer, rng, records);

  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  doc["device"] = prop.name;
  doc["commit"] = o.commit;
  doc["date"] = date;
  doc["command"] = o.command;
  doc["records"] = records;
  std::ofstream out(o.out);
  KASCADE_CHECK(out.good(), "--out: cannot write " << o.out);
  out << doc.dump(1) << "\n";
  out.flush();
  KASCADE_CHECK(out.good(), "--out: writing " << o.out << " failed");
}

}  // namespace kascade::bench
