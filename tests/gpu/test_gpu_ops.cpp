// tests/gpu/test_gpu_ops.cpp — driver of test-gpu-ops: collects the registered cases, filters them
// and reports one line per case.
//
//   test-gpu-ops                 run every case
//   test-gpu-ops -o decode_reuse only the cases whose op contains "decode_reuse" (comma-separated list)
//   test-gpu-ops -p 'lens=[1 17'  only the cases whose "op(vars)" contains the pattern
//   test-gpu-ops -x 16411,32001  skip the cases whose "op(vars)" contains any of the patterns
//   test-gpu-ops -l              list the cases without running them
// Exit status: 0 when no case failed (unsupported cases do not fail), 1 otherwise.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <sstream>
#include <string>

#include "gpu_test.h"
#include "kascade/error.h"

namespace kascade::gpu_test {

namespace {
std::map<std::string, std::function<void(CaseList&)>>& registry() {
  static std::map<std::string, std::function<void(CaseList&)>> families;
  return families;
}
}  // namespace

CaseRegistrar::CaseRegistrar(const char* family, std::function<void(CaseList&)> make_cases) {
  registry()[family] = std::move(make_cases);
}

GuardedBuffer::GuardedBuffer(size_t bytes) : bytes_(bytes), storage_(bytes + 2 * kGuardBytes) {
  KASCADE_CUDA_CHECK(cudaMemset(storage_.get(), kSentinel, bytes + 2 * kGuardBytes));
  poison();
}
void GuardedBuffer::poison() {
  if (bytes_ > 0) KASCADE_CUDA_CHECK(cudaMemset(get(), 0xff, bytes_));
}
void GuardedBuffer::download(void* host, size_t bytes) const {
  KASCADE_CHECK(bytes <= bytes_, "GuardedBuffer: download of " << bytes << " bytes from " << bytes_);
  if (bytes > 0) KASCADE_CUDA_CHECK(cudaMemcpy(host, get(), bytes, cudaMemcpyDeviceToHost));
}
std::string GuardedBuffer::check_guards(const char* what) const {
  std::vector<unsigned char> host(bytes_ + 2 * kGuardBytes);
  storage_.download(host.data(), host.size());
  for (size_t i = 0; i < kGuardBytes; ++i) {
    if (host[i] != kSentinel) return std::string(what) + ": write before the buffer (guard byte " + std::to_string(i) + ")";
    if (host[kGuardBytes + bytes_ + i] != kSentinel) {
      return std::string(what) + ": write past the end of the buffer (guard byte " + std::to_string(i) + ")";
    }
  }
  return "";
}

StorageArray random_storage(DType dtype, size_t count, float amplitude, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.f, amplitude);
  StorageArray a;
  a.bits.resize(count);
  a.values.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const float x = normal(rng);
    a.bits[i] = dtype == DType::F16 ? float_to_f16(x) : float_to_bf16(x);
    a.values[i] = dtype == DType::F16 ? f16_to_float(a.bits[i]) : bf16_to_float(a.bits[i]);
  }
  return a;
}

std::vector<float> widen(DType dtype, const std::vector<uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) out[i] = dtype == DType::F16 ? f16_to_float(bits[i]) : bf16_to_float(bits[i]);
  return out;
}

}  // namespace kascade::gpu_test

namespace {

bool matches(const std::string& op, const std::string& filter) {
  if (filter.empty()) return true;
  std::stringstream ss(filter);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty() && op.find(item) != std::string::npos) return true;
  }
  return false;
}

int run_main(int argc, char** argv) {
  using namespace kascade::gpu_test;
  std::string filter;
  std::string pattern;
  std::string exclude;
  bool list_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-o" && i + 1 < argc) {
      filter = argv[++i];
    } else if (arg == "-p" && i + 1 < argc) {
      pattern = argv[++i];
    } else if (arg == "-x" && i + 1 < argc) {
      exclude = argv[++i];
    } else if (arg == "-l") {
      list_only = true;
    } else {
      std::fprintf(stderr, "test-gpu-ops: unknown argument '%s' (usage: test-gpu-ops [-o op[,op...]] [-p pattern] [-x pattern[,pattern...]] [-l])\n",
                   arg.c_str());
      return 2;
    }
  }
  if (!list_only) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      std::fprintf(stderr, "test-gpu-ops: no CUDA device\n");
      return 1;
    }
    cudaDeviceProp prop{};
    KASCADE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (%d SMs)\n", prop.name, prop.multiProcessorCount);
  }
  CaseList cases;
  for (auto& [family, make] : registry()) make(cases);
  int passed = 0, failed = 0, unsupported = 0;
  for (auto& test : cases) {
    if (!matches(test->op(), filter)) continue;
    const std::string name = test->op() + "(" + test->vars() + ")";
    if (!pattern.empty() && name.find(pattern) == std::string::npos) continue;
    if (!exclude.empty() && matches(name, exclude)) continue;
    if (list_only) {
      std::printf("%s(%s)\n", test->op().c_str(), test->vars().c_str());
      continue;
    }
    const auto start = std::chrono::steady_clock::now();
    CaseResult result;
    try {
      result = test->run();
    } catch (const std::exception& e) {
      result = CaseResult::fail(std::string("exception: ") + e.what());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const char* tag = result.outcome == Outcome::Pass ? "OK" : result.outcome == Outcome::Fail ? "FAIL" : "not supported";
    std::printf("  %s(%s): %s (%.1fs)%s%s\n", test->op().c_str(), test->vars().c_str(), tag, seconds,
                result.message.empty() ? "" : ": ", result.message.c_str());
    std::fflush(stdout);
    if (result.outcome == Outcome::Pass) ++passed;
    if (result.outcome == Outcome::Fail) ++failed;
    if (result.outcome == Outcome::Unsupported) ++unsupported;
  }
  if (!list_only) std::printf("%d passed, %d failed, %d not supported\n", passed, failed, unsupported);
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test-gpu-ops: %s\n", e.what());
    return 1;
  }
}
