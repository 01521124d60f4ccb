// tests/gpu/engine_case_util.h — helpers shared by the engine-kernel case files of test-gpu-ops
// (engine_layer_cases.cpp, engine_selection_cases.cpp).
//
// The engine's kernels (src/engine/cuda) are checked against host references written in the case
// files themselves, in fp64 on the same storage-rounded inputs. These helpers keep those files to
// the reference and the checks:
//   cases.push_back(std::make_unique<FnCase>("engine_swiglu", vars, [=] { return run(spec); }));
//   upload_to(guarded, host_vector);             // fill a GuardedBuffer (an in-place operand)
//   std::string e = compare_within(what, gpu, ref, tolerance);  // "" when every element is close
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gpu_test.h"

namespace kascade::gpu_test::engine_cases {

// A case whose run is a closure over its spec.
class FnCase : public TestCase {
 public:
  FnCase(std::string op, std::string vars, std::function<CaseResult()> body)
      : op_(std::move(op)), vars_(std::move(vars)), body_(std::move(body)) {}
  std::string op() const override { return op_; }
  std::string vars() const override { return vars_; }
  CaseResult run() override { return body_(); }

 private:
  std::string op_, vars_;
  std::function<CaseResult()> body_;
};

template <typename T>
DeviceBuffer device_copy(const std::vector<T>& host) {
  DeviceBuffer d(host.empty() ? 1 : host.size() * sizeof(T));
  d.upload(host.data(), host.size() * sizeof(T));
  return d;
}

template <typename T>
void upload_to(GuardedBuffer& buffer, const std::vector<T>& host) {
  KASCADE_CHECK(host.size() * sizeof(T) <= buffer.bytes(), "upload_to: " << host.size() * sizeof(T)
                                                                         << " bytes into a buffer of " << buffer.bytes());
  if (!host.empty()) KASCADE_CUDA_CHECK(cudaMemcpy(buffer.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <typename T>
std::vector<T> download_all(const GuardedBuffer& buffer, size_t count) {
  std::vector<T> host(count);
  buffer.download(host.data(), count * sizeof(T));
  return host;
}

// fp32 values drawn from N(mean, stddev) (not storage-rounded: the engine's fp32 operands).
inline std::vector<float> normal_floats(size_t count, float mean, float stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(mean, stddev);
  std::vector<float> out(count);
  for (float& x : out) x = normal(rng);
  return out;
}

// bf16 values drawn from N(0, amplitude): the device bits and their exact fp32 widening.
inline StorageArray normal_bf16(size_t count, float amplitude, std::mt19937_64& rng) {
  return random_storage(DType::BF16, count, amplitude, rng);
}

// "" when |gpu[i] - ref[i]| <= tolerance(i) for every i (a NaN, e.g. an unwritten poisoned element,
// fails); otherwise the number of misses, the first one and the largest error.
inline std::string compare_within(const char* what, const std::vector<float>& gpu, const std::vector<double>& ref,
                                  const std::function<double(size_t)>& tolerance) {
  if (gpu.size() != ref.size()) {
    return std::string(what) + ": " + std::to_string(gpu.size()) + " values, expected " + std::to_string(ref.size());
  }
  size_t misses = 0, first = 0;
  double worst = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double err = std::fabs(static_cast<double>(gpu[i]) - ref[i]);
    if (!(err <= tolerance(i))) {
      if (misses == 0) first = i;
      ++misses;
      if (!(err <= worst)) worst = err;  // NaN sticks
    }
  }
  if (misses == 0) return "";
  std::ostringstream os;
  os << what << ": " << misses << " of " << gpu.size() << " outside tolerance; first at " << first << " (gpu "
     << gpu[first] << ", reference " << ref[first] << ", tolerance " << tolerance(first) << "), largest error " << worst;
  return os.str();
}

// The first guard violation among the named buffers, or "".
inline std::string check_all_guards(std::initializer_list<std::pair<const GuardedBuffer*, const char*>> buffers) {
  for (const auto& [buffer, name] : buffers) {
    std::string guard = buffer->check_guards(name);
    if (!guard.empty()) return guard;
  }
  return "";
}

// Relative half-unit of a bf16 rounding: for f in [2^e, 2^(e+1)) the spacing is 2^(e-7), so
// round-to-nearest moves f by at most 2^(e-8) <= 2^-8 |f|.
constexpr double kBf16HalfUlp = 1.0 / 256.0;
// fp32's unit roundoff 2^-24.
constexpr double kF32Unit = 1.0 / 16777216.0;

}  // namespace kascade::gpu_test::engine_cases
