// GGUF reader: a bounded cursor over the mapped bytes, then tensor-table validation.
#include "kascade/engine/gguf.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "kascade/error.h"
#include "mapped_file.h"

namespace kascade::engine {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747u;  // "GGUF" read as a little-endian uint32
constexpr uint64_t kDefaultAlignment = 32;

// Reads little-endian values from [data, data + size) and refuses to step past the end.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& name) : data_(data), size_(size), name_(name) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what, uint64_t cap) {
    const uint64_t len = read<uint64_t>(what);
    KASCADE_CHECK(len <= cap, name_ << ": " << what << ": string length " << len << " exceeds the cap of " << cap);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }
  void need(uint64_t bytes, const char* what) const {
    KASCADE_CHECK(bytes <= remaining(), name_ << ": " << what << ": needs " << bytes << " bytes at offset " << pos_
                                              << " but only " << remaining() << " remain (truncated file?)");
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& name_;
};

bool is_known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::F64); }

// Smallest encoding of one value of a type: bounds array counts before anything is allocated.
uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    case GgufValueType::STRING: return 8;           // the length prefix
    case GgufValueType::ARRAY: return 4 + 8;        // item type + count
  }
  return 1;
}

GgufValue read_scalar(Cursor& c, GgufValueType t, const std::string& name, const std::string& key) {
  GgufValue v;
  v.type = t;
  const char* what = key.c_str();
  switch (t) {
    case GgufValueType::U8: v.u = c.read<uint8_t>(what); break;
    case GgufValueType::I8: v.i = c.read<int8_t>(what); break;
    case GgufValueType::U16: v.u = c.read<uint16_t>(what); break;
    case GgufValueType::I16: v.i = c.read<int16_t>(what); break;
    case GgufValueType::U32: v.u = c.read<uint32_t>(what); break;
    case GgufValueType::I32: v.i = c.read<int32_t>(what); break;
    case GgufValueType::U64: v.u = c.read<uint64_t>(what); break;
    case GgufValueType::I64: v.i = c.read<int64_t>(what); break;
    case GgufValueType::F32: v.f = c.read<float>(what); break;
    case GgufValueType::F64: v.f = c.read<double>(what); break;
    case GgufValueType::BOOL: {
      const uint8_t b = c.read<uint8_t>(what);
      KASCADE_CHECK(b <= 1, name << ": " << key << ": bool value " << int(b) << " is not 0 or 1");
      v.u = b;
      break;
    }
    case GgufValueType::STRING: v.str = c.read_string(what, kGgufMaxStringBytes); break;
    case GgufValueType::ARRAY: KASCADE_FAIL(name << ": " << key << ": arrays of arrays are not supported");
  }
  return v;
}

GgufValue read_value(Cursor& c, GgufValueType t, const std::string& name, const std::string& key) {
  if (t != GgufValueType::ARRAY) return read_scalar(c, t, name, key);
  GgufValue v;
  v.type = t;
  const uint32_t item_type = c.read<uint32_t>(key.c_str());
  KASCADE_CHECK(is_known_value_type(item_type), name << ": " << key << ": unknown array item type " << item_type);
  v.item_type = static_cast<GgufValueType>(item_type);
  KASCADE_CHECK(v.item_type != GgufValueType::ARRAY, name << ": " << key << ": arrays of arrays are not supported");
  const uint64_t count = c.read<uint64_t>(key.c_str());
  KASCADE_CHECK(count <= kGgufMaxArrayItems,
                name << ": " << key << ": array of " << count << " items exceeds the cap of " << kGgufMaxArrayItems);
  KASCADE_CHECK(count <= c.remaining() / min_value_bytes(v.item_type),
                name << ": " << key << ": array of " << count << " items cannot fit in the " << c.remaining()
                     << " remaining bytes");
  v.items.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) v.items.push_back(read_scalar(c, v.item_type, name, key));
  return v;
}

bool is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16: case GgufValueType::I16:
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::U64: case GgufValueType::I64:
      return true;
    default:
      return false;
  }
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::I8 || t == GgufValueType::I16 || t == GgufValueType::I32 || t == GgufValueType::I64;
}
bool is_supported_ggml_type(uint32_t t) {
  switch (static_cast<GgmlType>(t)) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q8_0:
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q4_K: case GgmlType::Q6_K:
      return true;
  }
  return false;
}

}  // namespace

const char* to_string(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: return "u8";
    case GgufValueType::I8: return "i8";
    case GgufValueType::U16: return "u16";
    case GgufValueType::I16: return "i16";
    case GgufValueType::U32: return "u32";
    case GgufValueType::I32: return "i32";
    case GgufValueType::F32: return "f32";
    case GgufValueType::BOOL: return "bool";
    case GgufValueType::STRING: return "string";
    case GgufValueType::ARRAY: return "array";
    case GgufValueType::U64: return "u64";
    case GgufValueType::I64: return "i64";
    case GgufValueType::F64: return "f64";
  }
  return "?";
}

const char* to_string(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return "F32";
    case GgmlType::F16: return "F16";
    case GgmlType::BF16: return "BF16";
    case GgmlType::Q8_0: return "Q8_0";
    case GgmlType::Q4_0: return "Q4_0";
    case GgmlType::Q4_1: return "Q4_1";
    case GgmlType::Q4_K: return "Q4_K";
    case GgmlType::Q6_K: return "Q6_K";
  }
  return "?";
}

int64_t GgufTensor::elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// ---- the mapping ---------------------------------------------------------------------------
struct GgufFile::Mapping {
  MappedFile file;
};

GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

GgufFile GgufFile::open(const std::string& path) {
  GgufFile f;
  f.name_ = path;
  f.mapping_.reset(new Mapping{MappedFile(path, "empty file")});
  f.parse_all(f.mapping_->file.data(), f.mapping_->file.size());
  return f;
}

void GgufFile::release_tensor_pages(const GgufTensor& t) const {
  if (mapping_) release_mapped_pages(t.data, t.nbytes);
}

GgufFile GgufFile::parse(const uint8_t* data, size_t size, const std::string& name) {
  GgufFile f;
  f.name_ = name;
  f.parse_all(data, size);
  return f;
}

void GgufFile::parse_all(const uint8_t* data, size_t size) {
  Cursor c(data, size, name_);
  const uint32_t magic = c.read<uint32_t>("magic");
  KASCADE_CHECK(magic == kGgufMagic, name_ << ": not a GGUF file (bad magic 0x" << std::hex << magic << ")");
  version_ = c.read<uint32_t>("version");
  KASCADE_CHECK(version_ == 2 || version_ == 3,
                name_ << ": unsupported GGUF version " << version_ << " (supported: 2, 3)");
  const uint64_t tensor_count = c.read<uint64_t>("tensor_count");
  const uint64_t kv_count = c.read<uint64_t>("metadata_kv_count");
  KASCADE_CHECK(tensor_count <= kGgufMaxTensors,
                name_ << ": tensor_count " << tensor_count << " exceeds the cap of " << kGgufMaxTensors);
  // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at
  // least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
  KASCADE_CHECK(kv_count <= c.remaining() / 13,
                name_ << ": metadata_kv_count " << kv_count << " cannot fit in the " << c.remaining() << " bytes");
  KASCADE_CHECK(tensor_count <= c.remaining() / 24,
                name_ << ": tensor_count " << tensor_count << " cannot fit in the " << c.remaining() << " bytes");

  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = c.read_string("metadata key", kGgufMaxKeyBytes);
    KASCADE_CHECK(!key.empty(), name_ << ": metadata key " << i << " is empty");
    KASCADE_CHECK(metadata_.count(key) == 0, name_ << ": duplicate metadata key '" << key << "'");
    const uint32_t type = c.read<uint32_t>(key.c_str());
    KASCADE_CHECK(is_known_value_type(type), name_ << ": " << key << ": unknown value type " << type);
    GgufValue v = read_value(c, static_cast<GgufValueType>(type), name_, key);
    metadata_.emplace(std::move(key), std::move(v));
  }

  if (has("general.alignment")) {
    const GgufValue& a = value("general.alignment");
    KASCADE_CHECK(a.type == GgufValueType::U32,
                  name_ << ": general.alignment must be u32, got " << to_string(a.type));
    KASCADE_CHECK(a.u != 0 && (a.u & (a.u - 1)) == 0,
                  name_ << ": general.alignment " << a.u << " is not a power of two");
    alignment_ = a.u;
  } else {
    alignment_ = kDefaultAlignment;
  }

  tensors_.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensor t;
    t.name = c.read_string("tensor name", kGgufMaxKeyBytes);
    KASCADE_CHECK(!t.name.empty(), name_ << ": tensor " << i << " has an empty name");
    KASCADE_CHECK(tensor_index_.count(t.name) == 0, name_ << ": duplicate tensor name '" << t.name << "'");
    const uint32_t n_dims = c.read<uint32_t>(t.name.c_str());
    KASCADE_CHECK(n_dims >= 1 && n_dims <= kGgufMaxDims,
                  name_ << ": tensor '" << t.name << "': " << n_dims << " dimensions (expected 1.." << kGgufMaxDims << ")");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t extent = c.read<uint64_t>(t.name.c_str());
      KASCADE_CHECK(extent >= 1 && extent <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                    name_ << ": tensor '" << t.name << "': dimension " << d << " has extent " << extent);
      KASCADE_CHECK(elements <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / extent,
                    name_ << ": tensor '" << t.name << "': element count overflows");
      elements *= extent;
      t.dims.push_back(static_cast<int64_t>(extent));
    }
    const uint32_t type = c.read<uint32_t>(t.name.c_str());
    KASCADE_CHECK(is_supported_ggml_type(type), name_ << ": tensor '" << t.name << "': unsupported type " << type
                                                      << " (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)");
    t.type = static_cast<GgmlType>(type);
    const uint64_t block = static_cast<uint64_t>(ggml_block_elements(t.type));
    KASCADE_CHECK(static_cast<uint64_t>(t.dims[0]) % block == 0,
                  name_ << ": tensor '" << t.name << "': row length " << t.dims[0] << " is not a multiple of the "
                        << to_string(t.type) << " block size " << block);
    const uint64_t blocks = elements / block;
    const uint64_t block_bytes = static_cast<uint64_t>(ggml_block_bytes(t.type));
    KASCADE_CHECK(blocks <= std::numeric_limits<uint64_t>::max() / block_bytes,
                  name_ << ": tensor '" << t.name << "': byte size overflows");
    t.nbytes = blocks * block_bytes;
    t.offset = c.read<uint64_t>(t.name.c_str());
    KASCADE_CHECK(t.offset % alignment_ == 0, name_ << ": tensor '" << t.name << "': offset " << t.offset
                                                    << " is not a multiple of the alignment " << alignment_);
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor table.
  const uint64_t table_end = c.pos();
  const uint64_t data_start = (table_end + alignment_ - 1) / alignment_ * alignment_;
  KASCADE_CHECK(tensors_.empty() || data_start <= size,
                name_ << ": data section would start at " << data_start << ", past the end of the file (" << size << ")");
  const uint64_t data_size = data_start <= size ? size - data_start : 0;
  std::vector<const GgufTensor*> by_offset;
  for (GgufTensor& t : tensors_) {
    KASCADE_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset,
                  name_ << ": tensor '" << t.name << "': bytes [" << t.offset << ", " << t.offset + t.nbytes
                        << ") run past the data section of " << data_size << " bytes");
    t.data = data + data_start + t.offset;
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensor& prev = *by_offset[i - 1];
    KASCADE_CHECK(prev.offset + prev.nbytes <= by_offset[i]->offset,
                  name_ << ": tensors '" << prev.name << "' and '" << by_offset[i]->name << "' overlap");
  }
}

// ---- metadata access -------------------------------------------------------------------------
const GgufValue& GgufFile::value(const std::string& key) const {
  auto it = metadata_.find(key);
  KASCADE_CHECK(it != metadata_.end(), name_ << ": missing metadata key '" << key << "'");
  return it->second;
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue& v = value(key);
  KASCADE_CHECK(is_integer(v.type), name_ << ": " << key << ": expected an integer, got " << to_string(v.type));
  if (is_signed(v.type)) {
    KASCADE_CHECK(v.i >= 0, name_ << ": " << key << ": expected a non-negative integer, got " << v.i);
    return static_cast<uint64_t>(v.i);
  }
  return v.u;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = value(key);
  KASCADE_CHECK(is_integer(v.type), name_ << ": " << key << ": expected an integer, got " << to_string(v.type));
  if (is_signed(v.type)) return v.i;
  KASCADE_CHECK(v.u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                name_ << ": " << key << ": " << v.u << " does not fit in int64");
  return static_cast<int64_t>(v.u);
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type == GgufValueType::F32 || v.type == GgufValueType::F64) return v.f;
  KASCADE_CHECK(is_integer(v.type), name_ << ": " << key << ": expected a number, got " << to_string(v.type));
  return is_signed(v.type) ? static_cast<double>(v.i) : static_cast<double>(v.u);
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = value(key);
  KASCADE_CHECK(v.type == GgufValueType::BOOL, name_ << ": " << key << ": expected a bool, got " << to_string(v.type));
  return v.u != 0;
}

const std::string& GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = value(key);
  KASCADE_CHECK(v.type == GgufValueType::STRING,
                name_ << ": " << key << ": expected a string, got " << to_string(v.type));
  return v.str;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = value(key);
  KASCADE_CHECK(v.type == GgufValueType::ARRAY && v.item_type == GgufValueType::STRING,
                name_ << ": " << key << ": expected an array of strings");
  std::vector<std::string> out;
  out.reserve(v.items.size());
  for (const GgufValue& item : v.items) out.push_back(item.str);
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue& v = value(key);
  KASCADE_CHECK(v.type == GgufValueType::ARRAY && is_integer(v.item_type),
                name_ << ": " << key << ": expected an array of integers");
  std::vector<int64_t> out;
  out.reserve(v.items.size());
  for (const GgufValue& item : v.items) {
    if (is_signed(item.type)) {
      out.push_back(item.i);
    } else {
      KASCADE_CHECK(item.u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                    name_ << ": " << key << ": " << item.u << " does not fit in int64");
      out.push_back(static_cast<int64_t>(item.u));
    }
  }
  return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue& v = value(key);
  KASCADE_CHECK(v.type == GgufValueType::ARRAY &&
                    (v.item_type == GgufValueType::F32 || v.item_type == GgufValueType::F64),
                name_ << ": " << key << ": expected an array of floats");
  std::vector<double> out;
  out.reserve(v.items.size());
  for (const GgufValue& item : v.items) out.push_back(item.f);
  return out;
}

const GgufTensor& GgufFile::tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  KASCADE_CHECK(it != tensor_index_.end(), name_ << ": missing tensor '" << name << "'");
  return tensors_[it->second];
}

std::vector<float> GgufFile::dequantize(const GgufTensor& t) const {
  std::vector<float> out(static_cast<size_t>(t.elements()));
  engine::dequantize(t.type, t.data, t.elements(), out.data());
  return out;
}

}  // namespace kascade::engine
