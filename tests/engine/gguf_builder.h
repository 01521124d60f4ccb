// Shared by the engine tests: writes GGUF bytes field by field, so a test can break exactly one
// thing (a count, an offset, a metadata value).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kascade::engine::test {

struct GgufBuilder {
  std::vector<uint8_t> bytes;
  template <typename T>
  GgufBuilder& put(T v) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
    return *this;
  }
  GgufBuilder& str(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  GgufBuilder& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    return put<uint32_t>(0x46554747u).put<uint32_t>(version).put<uint64_t>(tensors).put<uint64_t>(kvs);
  }
  GgufBuilder& kv_u32(const std::string& key, uint32_t v) { return str(key).put<uint32_t>(4).put<uint32_t>(v); }
  GgufBuilder& kv_f32(const std::string& key, float v) { return str(key).put<uint32_t>(6).put<float>(v); }
  GgufBuilder& kv_str(const std::string& key, const std::string& v) { return str(key).put<uint32_t>(8).str(v); }
  // An F32 tensor info with ggml dims (innermost first) at `offset`.
  GgufBuilder& tensor_f32(const std::string& name, const std::vector<uint64_t>& dims, uint64_t offset) {
    str(name).put<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) put<uint64_t>(d);
    return put<uint32_t>(0).put<uint64_t>(offset);
  }
  GgufBuilder& tensor_f32(const std::string& name, uint64_t n, uint64_t offset) {
    return tensor_f32(name, std::vector<uint64_t>{n}, offset);
  }
  GgufBuilder& pad_to(size_t alignment) {
    while (bytes.size() % alignment) bytes.push_back(0);
    return *this;
  }
  GgufBuilder& floats(int n, float v) {
    for (int i = 0; i < n; ++i) put<float>(v);
    return *this;
  }
};

}  // namespace kascade::engine::test
