// kascade/engine/gguf.h — a strict, bounds-checked reader of GGUF model files (v2 and v3).
//
// The file is memory-mapped; parsing validates every count against the bytes that remain (and
// against SIZE_MAX), caps string and array sizes, rejects duplicate keys and tensor names, and
// checks each tensor's type, shape, offset, alignment and extent before any tensor is read.
// Tensors of types F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K are dequantized to fp32
// on request. Every problem is a kascade::Error naming the file, the field and the value.
//
//   kascade::engine::GgufFile f = kascade::engine::GgufFile::open("model.gguf");
//   uint32_t layers = f.get_uint("llama.block_count");
//   const kascade::engine::GgufTensor& t = f.tensor("blk.0.attn_q.weight");   // dims[0] innermost
//   std::vector<float> w = f.dequantize(t);                                 // row-major, dims reversed
//
// GgufFile::parse() reads a buffer the caller keeps alive (tests, the fuzz target).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kascade::engine {

// Metadata value types, numbered as in the GGUF specification.
enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* to_string(GgufValueType t);

// Tensor storage types that this reader supports, numbered as ggml numbers them.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, Q4_K = 12, Q6_K = 14, BF16 = 30,
};
const char* to_string(GgmlType t);
// Elements per block and bytes per block of a storage type (F32: 1 and 4, Q4_K: 256 and 144).
int64_t ggml_block_elements(GgmlType t);
int64_t ggml_block_bytes(GgmlType t);

// Dequantizes `count` elements (a multiple of the type's block size) stored at `src` into `dst`.
void dequantize(GgmlType type, const uint8_t* src, int64_t count, float* dst);

// One metadata value. Scalars use the member of their kind; arrays hold `items` of one type
// (arrays of arrays are rejected by the reader: no model metadata uses them).
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  GgufValueType item_type = GgufValueType::U8;  // arrays only
  uint64_t u = 0;       // U8..U64 and BOOL
  int64_t i = 0;        // I8..I64
  double f = 0;         // F32, F64
  std::string str;      // STRING
  std::vector<GgufValue> items;  // ARRAY
};

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> dims;   // dims[0] is the innermost (contiguous) extent, as in ggml
  uint64_t offset = 0;         // from the start of the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapped file
  int64_t elements() const;
};

// Caps on sizes found in a file: far above any real model, low enough to stop absurd allocations.
constexpr uint64_t kGgufMaxStringBytes = 64ull << 20;  // one string (chat templates are a few KiB)
constexpr uint64_t kGgufMaxKeyBytes = 65535;
constexpr uint64_t kGgufMaxArrayItems = 1ull << 24;
constexpr uint64_t kGgufMaxTensors = 1ull << 20;
constexpr uint32_t kGgufMaxDims = 4;

class GgufFile {
 public:
  // Maps and parses a file. Throws kascade::Error naming the path and the problem.
  static GgufFile open(const std::string& path);
  // Parses a buffer that outlives the returned object; `name` prefixes errors.
  static GgufFile parse(const uint8_t* data, size_t size, const std::string& name);

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  // Metadata access. The typed getters throw when the key is missing or has another type;
  // integer getters accept any integer type whose value fits.
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  const GgufValue& value(const std::string& key) const;
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  uint64_t get_uint(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;  // F32/F64 (or an integer)
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;

  // Tensors, in file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  bool has_tensor(const std::string& name) const { return tensor_index_.count(name) != 0; }
  const GgufTensor& tensor(const std::string& name) const;
  // The tensor's values as fp32, row-major over the reversed dims (dims[0] fastest).
  std::vector<float> dequantize(const GgufTensor& t) const;
  // For a file from open(): drops the tensor's pages from the process's resident set once the
  // caller has copied it (they are read again from the file if touched), so that a loaded model
  // is not resident twice. A no-op for a buffer given to parse(), which the caller owns.
  void release_tensor_pages(const GgufTensor& t) const;

 private:
  GgufFile() = default;
  struct Mapping;
  void parse_all(const uint8_t* data, size_t size);

  std::string name_;
  std::unique_ptr<Mapping> mapping_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace kascade::engine
