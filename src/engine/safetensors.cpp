// Strict safetensors reader (see safetensors.h): header length, JSON header, per-tensor
// validation, the tiling of the data section; the sharded index.
#include "kascade/engine/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "kascade/error.h"
#include "mapped_file.h"
#include "kascade/tensor.h"
#include "kascade/json.h"

namespace kascade::engine {

namespace {

using Json = nlohmann::json;

constexpr size_t kHeaderLengthBytes = 8;
// Dtypes of the safetensors format that this reader knows but does not read.
constexpr const char* kKnownUnsupportedDtypes[] = {"BOOL", "U8",  "I8",  "I16",     "U16",     "I32",    "U32",
                                                   "I64",  "U64", "F64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "C64",
                                                   "F4",   "F6_E2M3", "F6_E3M2"};

bool parse_dtype(const std::string& s, SafetensorsDtype& out) {
  if (s == "F32") out = SafetensorsDtype::F32;
  else if (s == "F16") out = SafetensorsDtype::F16;
  else if (s == "BF16") out = SafetensorsDtype::BF16;
  else return false;
  return true;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool is_regular_file(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

const char* to_string(SafetensorsDtype t) {
  switch (t) {
    case SafetensorsDtype::F32: return "F32";
    case SafetensorsDtype::F16: return "F16";
    case SafetensorsDtype::BF16: return "BF16";
  }
  return "?";
}

size_t dtype_bytes(SafetensorsDtype t) { return t == SafetensorsDtype::F32 ? 4 : 2; }

int64_t SafetensorsTensor::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // checked against overflow when the header was parsed
  return n;
}

std::vector<float> to_float(const SafetensorsTensor& t) {
  const size_t n = static_cast<size_t>(t.elements());
  std::vector<float> out(n);
  switch (t.dtype) {
    case SafetensorsDtype::F32:
      if (n) std::memcpy(out.data(), t.data, n * sizeof(float));  // memcpy: the data may be unaligned
      break;
    case SafetensorsDtype::F16:
    case SafetensorsDtype::BF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = static_cast<uint16_t>(t.data[2 * i] | (t.data[2 * i + 1] << 8));
        out[i] = t.dtype == SafetensorsDtype::F16 ? f16_to_float(h) : bf16_to_float(h);
      }
      break;
  }
  return out;
}

// ---- one file -------------------------------------------------------------------------------
struct SafetensorsFile::Mapping {
  MappedFile file;
};

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.name_ = path;
  f.mapping_.reset(new Mapping{MappedFile(path, "empty file (a safetensors file starts with an 8-byte header length)")});
  f.parse_all(f.mapping_->file.data(), f.mapping_->file.size());
  return f;
}

SafetensorsFile SafetensorsFile::parse(const uint8_t* data, size_t size, const std::string& name) {
  SafetensorsFile f;
  f.name_ = name;
  f.parse_all(data, size);
  return f;
}

const SafetensorsTensor& SafetensorsFile::tensor(const std::string& name) const {
  auto it = index_.find(name);
  KASCADE_CHECK(it != index_.end(), name_ << ": no tensor '" << name << "'");
  return tensors_[it->second];
}

void SafetensorsFile::parse_all(const uint8_t* data, size_t size) {
  const std::string& file = name_;
  KASCADE_CHECK(size >= kHeaderLengthBytes, file << ": truncated: " << size
                                                 << " bytes, fewer than the 8-byte header length");
  const uint64_t header_bytes = read_u64_le(data);
  KASCADE_CHECK(header_bytes <= kSafetensorsMaxHeaderBytes,
                file << ": header length " << header_bytes << " exceeds the cap of " << kSafetensorsMaxHeaderBytes);
  KASCADE_CHECK(header_bytes <= size - kHeaderLengthBytes, file << ": header length " << header_bytes << " runs past the end of the file ("
                                                                << size - kHeaderLengthBytes << " bytes follow it)");
  KASCADE_CHECK(header_bytes >= 2 && data[kHeaderLengthBytes] == '{',
                file << ": the header is not a JSON object (it must start with '{')");
  const uint8_t* payload = data + kHeaderLengthBytes + header_bytes;
  const uint64_t payload_bytes = size - kHeaderLengthBytes - header_bytes;

  const Json header = parse_json_strict(reinterpret_cast<const char*>(data + kHeaderLengthBytes),
                                        static_cast<size_t>(header_bytes), file + " header");
  KASCADE_CHECK(header.is_object(), file << ": the header is not a JSON object");
  KASCADE_CHECK(header.size() <= kSafetensorsMaxTensors + 1,
                file << ": " << header.size() << " header entries exceed the cap of " << kSafetensorsMaxTensors);
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      KASCADE_CHECK(value.is_object(), file << ": __metadata__ must be an object of strings");
      for (const auto& [mkey, mvalue] : value.items()) {
        KASCADE_CHECK(mvalue.is_string(), file << ": __metadata__ '" << mkey << "' is not a string");
        metadata_[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    const std::string where = file + ": tensor '" + key + "'";
    KASCADE_CHECK(value.is_object(), where << ": entry is not an object");
    for (const auto& [field, unused] : value.items()) {
      (void)unused;
      KASCADE_CHECK(field == "dtype" || field == "shape" || field == "data_offsets",
                    where << ": unknown field '" << field << "' (expected dtype, shape, data_offsets)");
    }
    KASCADE_CHECK(value.contains("dtype") && value.contains("shape") && value.contains("data_offsets"),
                  where << ": needs dtype, shape and data_offsets");
    SafetensorsTensor t;
    t.name = key;
    const Json& dtype = value["dtype"];
    KASCADE_CHECK(dtype.is_string(), where << ": dtype is not a string");
    const std::string dtype_name = dtype.get<std::string>();
    if (!parse_dtype(dtype_name, t.dtype)) {
      const bool known = std::any_of(std::begin(kKnownUnsupportedDtypes), std::end(kKnownUnsupportedDtypes),
                                     [&](const char* d) { return dtype_name == d; });
      KASCADE_FAIL(where << ": dtype '" << dtype_name << "' is " << (known ? "not supported" : "unknown")
                         << " (supported: F32, F16, BF16)");
    }
    const Json& shape = value["shape"];
    KASCADE_CHECK(shape.is_array() && shape.size() <= kSafetensorsMaxRank,
                  where << ": shape must be an array of at most " << kSafetensorsMaxRank << " dimensions");
    // Element counts stay below 2^62 / 4 so that the byte count of any dtype fits in int64.
    constexpr uint64_t kMaxElements = (uint64_t{1} << 62) / 4;
    uint64_t elements = 1;
    for (const Json& d : shape) {
      KASCADE_CHECK(d.is_number_unsigned(), where << ": shape entry " << d.dump() << " is not a non-negative integer");
      const uint64_t dim = d.get<uint64_t>();
      KASCADE_CHECK(dim <= kMaxElements && (dim == 0 || elements <= kMaxElements / dim),
                    where << ": shape " << shape.dump() << " has too many elements");
      elements *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const Json& offsets = value["data_offsets"];
    KASCADE_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                      offsets[1].is_number_unsigned(),
                  where << ": data_offsets must be [begin, end] (non-negative integers)");
    t.begin = offsets[0].get<uint64_t>();
    t.end = offsets[1].get<uint64_t>();
    KASCADE_CHECK(t.begin <= t.end, where << ": data_offsets [" << t.begin << ", " << t.end << "] end before they begin");
    KASCADE_CHECK(t.end <= payload_bytes, where << ": data_offsets [" << t.begin << ", " << t.end
                                                << "] run past the data section (" << payload_bytes << " bytes)");
    const uint64_t expected = elements * dtype_bytes(t.dtype);
    KASCADE_CHECK(t.nbytes() == expected, where << ": shape " << shape.dump() << " of " << dtype_name << " needs "
                                                << expected << " bytes, data_offsets give " << t.nbytes());
    t.data = payload + t.begin;
    tensors_.push_back(std::move(t));
  }
  // The reference implementation requires the ranges to tile the data section exactly: in
  // offset order each tensor starts where the previous one ended, and the last ends the file.
  std::sort(tensors_.begin(), tensors_.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const SafetensorsTensor& t = tensors_[i];
    KASCADE_CHECK(t.begin >= cursor, file << ": tensor '" << t.name << "' [" << t.begin << ", " << t.end
                                          << ") overlaps tensor '" << tensors_[i - 1].name << "' (which ends at " << cursor << ")");
    KASCADE_CHECK(t.begin == cursor, file << ": " << t.begin - cursor << " bytes before tensor '" << t.name
                                          << "' belong to no tensor (offset " << cursor << ")");
    cursor = t.end;
    index_.emplace(t.name, i);
  }
  KASCADE_CHECK(cursor == payload_bytes, file << ": " << payload_bytes - cursor << " bytes after the last tensor belong to no tensor");
}

// ---- a checkpoint of one or several files ----------------------------------------------------
namespace {
constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kSingleFile = "model.safetensors";
}  // namespace

SafetensorsSet SafetensorsSet::open_file(const std::string& path) {
  SafetensorsSet s;
  s.source_ = path;
  s.files_.push_back(SafetensorsFile::open(path));
  for (const SafetensorsTensor& t : s.files_[0].tensors()) s.where_.emplace(t.name, 0);
  return s;
}

SafetensorsSet SafetensorsSet::open_index(const std::string& index_path) {
  SafetensorsSet s;
  s.source_ = index_path;
  const std::string dir = index_path.find('/') == std::string::npos ? "." : index_path.substr(0, index_path.rfind('/'));
  const Json index = parse_json_strict(read_text_file(index_path, kSafetensorsMaxHeaderBytes), index_path);
  KASCADE_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
                index_path << ": needs a weight_map object (tensor name -> file)");
  const Json& map = index["weight_map"];
  KASCADE_CHECK(!map.empty(), index_path << ": weight_map is empty");
  std::map<std::string, size_t> file_slot;
  std::vector<std::string> file_names;
  for (const auto& [tensor, file] : map.items()) {
    KASCADE_CHECK(file.is_string(), index_path << ": weight_map entry '" << tensor << "' is not a file name");
    const std::string f = file.get<std::string>();
    // Shards live beside the index: a path that leaves the directory is not a shard.
    KASCADE_CHECK(!f.empty() && f.find('/') == std::string::npos && f != "." && f != "..",
                  index_path << ": weight_map entry '" << tensor << "' names '" << f << "', not a file in the index's directory");
    auto [it, added] = file_slot.emplace(f, file_names.size());
    if (added) file_names.push_back(f);
    s.where_.emplace(tensor, it->second);
  }
  for (const std::string& f : file_names) {
    const std::string path = dir + "/" + f;
    KASCADE_CHECK(is_regular_file(path), index_path << ": shard '" << f << "' does not exist");
    s.files_.push_back(SafetensorsFile::open(path));
  }
  // Each shard holds exactly the tensors the index gives it.
  for (const auto& [tensor, slot] : s.where_) {
    KASCADE_CHECK(s.files_[slot].has_tensor(tensor), index_path << ": tensor '" << tensor << "' is not in its shard '"
                                                                << file_names[slot] << "'");
  }
  for (size_t slot = 0; slot < s.files_.size(); ++slot) {
    for (const SafetensorsTensor& t : s.files_[slot].tensors()) {
      auto it = s.where_.find(t.name);
      KASCADE_CHECK(it != s.where_.end() && it->second == slot, index_path << ": shard '" << file_names[slot]
                                                                          << "' holds tensor '" << t.name
                                                                          << "', which the weight_map does not give it");
    }
  }
  return s;
}

SafetensorsSet SafetensorsSet::open_directory(const std::string& dir) {
  const std::string index = dir + "/" + kIndexFile;
  if (is_regular_file(index)) return open_index(index);
  const std::string single = dir + "/" + kSingleFile;
  KASCADE_CHECK(is_regular_file(single), dir << ": no " << kIndexFile << " and no " << kSingleFile
                                             << " (a Hugging Face model directory holds one of them)");
  return open_file(single);
}

const SafetensorsTensor& SafetensorsSet::tensor(const std::string& name) const {
  auto it = where_.find(name);
  KASCADE_CHECK(it != where_.end(), source_ << ": no tensor '" << name << "'");
  return files_[it->second].tensor(name);
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& entry : where_) out.push_back(entry.first);
  return out;
}

}  // namespace kascade::engine
