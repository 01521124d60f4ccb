// kascade/engine/safetensors.h — a strict reader of safetensors files and of Hugging Face's
// sharded form (model.safetensors.index.json naming the file of every tensor).
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}})
// and the data section. The reader memory-maps the file and checks, before any tensor is read:
// the header length against the file, the JSON (no duplicate names, no unknown fields), each
// dtype (F32, F16, BF16 are read; other known dtypes are "not supported"), the shape (rank,
// element count without overflow), that the byte range holds exactly shape x dtype bytes, and
// that the ranges tile the data section (no gap, no overlap, nothing past the end), as the
// reference implementation requires. Every problem is one kascade::Error naming the file.
//
//   auto f = kascade::engine::SafetensorsFile::open("model.safetensors");
//   const kascade::engine::SafetensorsTensor& t = f.tensor("model.embed_tokens.weight");
//   std::vector<float> w = kascade::engine::to_float(t);        // row-major, shape t.shape
//   auto set = kascade::engine::SafetensorsSet::open_directory("model_dir");  // one file or shards
//   std::vector<float> q = set.to_float("model.layers.0.self_attn.q_proj.weight");
//
// SafetensorsFile::parse() reads a buffer the caller keeps alive (tests, the fuzz target).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kascade::engine {

enum class SafetensorsDtype { F32, F16, BF16 };
const char* to_string(SafetensorsDtype t);
size_t dtype_bytes(SafetensorsDtype t);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::F32;
  std::vector<int64_t> shape;    // outermost first (row-major), as PyTorch writes it
  uint64_t begin = 0, end = 0;   // byte range in the data section
  const uint8_t* data = nullptr; // into the mapped file (may be unaligned)
  int64_t elements() const;
  uint64_t nbytes() const { return end - begin; }
};

// The tensor's values as fp32 (F16 and BF16 widened exactly).
std::vector<float> to_float(const SafetensorsTensor& t);

// Caps: far above any real checkpoint, low enough to stop absurd allocations. The header cap
// is the reference implementation's (100 MB).
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;
constexpr size_t kSafetensorsMaxTensors = size_t{1} << 20;
constexpr size_t kSafetensorsMaxRank = 8;

class SafetensorsFile {
 public:
  // Maps and parses a file. Throws kascade::Error naming the path and the problem.
  static SafetensorsFile open(const std::string& path);
  // Parses a buffer that outlives the returned object; `name` prefixes errors.
  static SafetensorsFile parse(const uint8_t* data, size_t size, const std::string& name);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& name() const { return name_; }
  // Tensors in data order (ascending offsets).
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  bool has_tensor(const std::string& name) const { return index_.count(name) != 0; }
  const SafetensorsTensor& tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  struct Mapping;
  void parse_all(const uint8_t* data, size_t size);

  std::string name_;
  std::unique_ptr<Mapping> mapping_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// The weights of one checkpoint: a single file, or shards listed by an index whose weight_map
// names, for every tensor, a file in the index's directory. Every file the index names must
// exist and hold exactly the tensors the index gives it.
class SafetensorsSet {
 public:
  // `dir`/model.safetensors.index.json when it exists, else `dir`/model.safetensors.
  static SafetensorsSet open_directory(const std::string& dir);
  static SafetensorsSet open_index(const std::string& index_path);
  static SafetensorsSet open_file(const std::string& path);

  bool has_tensor(const std::string& name) const { return where_.count(name) != 0; }
  const SafetensorsTensor& tensor(const std::string& name) const;
  std::vector<float> to_float(const std::string& name) const { return engine::to_float(tensor(name)); }
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  size_t file_count() const { return files_.size(); }
  // Where the weights came from (the index or the file): for error messages.
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

}  // namespace kascade::engine
