// tests/gpu/gpu_test.h — the small framework of test-gpu-ops (after llama.cpp's test-backend-ops).
//
// A test case names its op (the -o filter matches it) and its variables (printed with the seed),
// runs one GPU call and compares it with the CPU oracle (kascade/reference.h) under SPEC 7.
// "Unsupported" is not a failure. Output buffers are GuardedBuffers: sentinel bytes around the
// payload catch out-of-bounds writes, and the payload is poisoned with NaN bytes so that any
// element the kernel forgets to write fails the finiteness check.
//
// A file registers its cases with a static registrar:
//   static kascade::gpu_test::CaseRegistrar reg("decode", [](kascade::gpu_test::CaseList& out) { ... });
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/cuda_check.h"
#include "common/device_buffer.h"
#include "kascade/attention.h"
#include "kascade/tensor.h"

namespace kascade::gpu_test {

enum class Outcome { Pass, Fail, Unsupported };

struct CaseResult {
  Outcome outcome = Outcome::Pass;
  std::string message;  // why it failed or is unsupported
  static CaseResult pass() { return {}; }
  static CaseResult fail(std::string why) { return {Outcome::Fail, std::move(why)}; }
  static CaseResult unsupported(std::string why) { return {Outcome::Unsupported, std::move(why)}; }
};

class TestCase {
 public:
  virtual ~TestCase() = default;
  virtual std::string op() const = 0;    // e.g. "decode_anchor"
  virtual std::string vars() const = 0;  // every parameter, seed included
  virtual CaseResult run() = 0;
};

using CaseList = std::vector<std::unique_ptr<TestCase>>;

struct CaseRegistrar {
  CaseRegistrar(const char* family, std::function<void(CaseList&)> make_cases);
};

// One owning device allocation for the whole program (src/cuda/common/device_buffer.h).
using ::kascade::cuda::DeviceBuffer;

// Device allocation with sentinel guard regions before and after the payload.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t bytes);
  void* get() const { return static_cast<char*>(storage_.get()) + kGuardBytes; }
  size_t bytes() const { return bytes_; }
  void poison();  // payload := 0xff bytes (NaN in f32/f16/bf16, -1 in int32)
  void download(void* host, size_t bytes) const;
  std::string check_guards(const char* what) const;  // "" when both guards are intact
  static constexpr size_t kGuardBytes = 4096;
  static constexpr unsigned char kSentinel = 0xa5;
 private:
  size_t bytes_;
  DeviceBuffer storage_;
};

// Random storage-typed values: bits (as the device holds them) and their exact fp32 widening.
struct StorageArray {
  std::vector<uint16_t> bits;
  std::vector<float> values;
};
StorageArray random_storage(DType dtype, size_t count, float amplitude, std::mt19937_64& rng);

// Widens device-layout 16-bit storage values to fp32.
std::vector<float> widen(DType dtype, const std::vector<uint16_t>& bits);

// A selection of `geometry` (decode_selection / prefill_selection) over device buffers.
inline Selection selection_on(Selection geometry, void* indices, void* counts) {
  geometry.indices = static_cast<int32_t*>(indices);
  geometry.counts = static_cast<int32_t*>(counts);
  return geometry;
}

}  // namespace kascade::gpu_test
