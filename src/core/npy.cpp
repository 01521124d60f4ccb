// Strict .npy reader and writer (see kascade/npy.h for what is accepted).
//
// The header is a Python dict literal. Instead of a general literal parser, a small cursor
// reads exactly the grammar numpy writes (and a little whitespace/ordering freedom around it):
//   '{' key ':' value (',' key ':' value)* ','? '}'  then spaces, then '\n'
// where keys are quoted strings and values a quoted string, True/False, or a tuple of
// non-negative decimal integers. Anything else is an error naming the byte offset.
#include "kascade/npy.h"

#include "file_io.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>

namespace kascade {

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "npy.cpp reads and writes little-endian data by memcpy: a big-endian host needs byte swaps");
#endif

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// Dimensions numpy itself supports (NPY_MAXDIMS in numpy 2).
constexpr size_t kMaxDims = 64;
// numpy's own reader refuses headers above 10000 bytes by default; a generous cap keeps a
// corrupted length from making us scan megabytes of data as a header.
constexpr size_t kMaxHeaderBytes = 1 << 16;
// Version 1 headers store their length in 16 bits.
constexpr size_t kMaxV1HeaderBytes = 0xffff;
// Writers align the data start: numpy >= 1.? uses 64 bytes, older ones 16; we accept 16.
constexpr size_t kReadAlignment = 16;
constexpr size_t kWriteAlignment = 64;

// The descr strings we accept and the DType each maps to.
struct DescrEntry {
  const char* descr;
  DType dtype;
};
constexpr DescrEntry kDescrs[] = {
    {"<f4", DType::F32},
    {"<f2", DType::F16},
    {"<i4", DType::I32},
    {"<i8", DType::I64},
};

const char* descr_of(DType dtype) {
  for (const auto& e : kDescrs)
    if (e.dtype == dtype) return e.descr;
  return nullptr;
}

DType dtype_of_descr(const std::string& descr, const std::string& name) {
  for (const auto& e : kDescrs)
    if (descr == e.descr) return e.dtype;
  KASCADE_CHECK(descr.empty() || descr[0] != '>',
                name << ": big-endian dtype '" << descr << "' is not supported (expected little-endian '<f4', "
                     << "'<f2', '<i4' or '<i8')");
  KASCADE_FAIL(name << ": unsupported dtype '" << descr << "' (expected '<f4', '<f2', '<i4' or '<i8')");
}

// Reads the header dictionary. `text` excludes the magic, version and length fields.
class HeaderCursor {
 public:
  HeaderCursor(const char* text, size_t size, const std::string& name) : text_(text), size_(size), name_(name) {}

  [[noreturn]] void fail(const std::string& what) const {
    KASCADE_FAIL(name_ << ": bad header at byte " << pos_ << ": " << what);
  }
  void skip_spaces() {
    while (pos_ < size_ && text_[pos_] == ' ') ++pos_;
  }
  bool at_end() const { return pos_ >= size_; }
  char peek() const { return pos_ < size_ ? text_[pos_] : '\0'; }
  size_t pos() const { return pos_; }

  void expect(char c, const char* what) {
    skip_spaces();
    if (peek() != c) fail(std::string("expected ") + what);
    ++pos_;
  }
  bool accept(char c) {
    skip_spaces();
    if (peek() != c) return false;
    ++pos_;
    return true;
  }

  // A Python string literal in single or double quotes, without escapes.
  std::string read_string() {
    skip_spaces();
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    ++pos_;
    const size_t begin = pos_;
    while (pos_ < size_ && text_[pos_] != quote) {
      const char c = text_[pos_];
      if (c == '\\' || c == '\n' || static_cast<unsigned char>(c) < 0x20) fail("unsupported character in string");
      ++pos_;
    }
    if (pos_ >= size_) fail("unterminated string");
    std::string s(text_ + begin, pos_ - begin);
    ++pos_;
    return s;
  }

  bool read_bool() {
    skip_spaces();
    if (matches("True")) return true;
    if (matches("False")) return false;
    fail("expected True or False");
  }

  // A Python tuple of non-negative decimal integers: (), (n,), (n, m), (n, m,) ...
  std::vector<int64_t> read_shape() {
    expect('(', "'(' starting the shape tuple");
    std::vector<int64_t> dims;
    if (accept(')')) return dims;
    bool saw_comma_after_last = false;
    while (true) {
      if (dims.size() >= kMaxDims) fail("shape has more than " + std::to_string(kMaxDims) + " dimensions");
      dims.push_back(read_dim());
      saw_comma_after_last = accept(',');
      if (accept(')')) break;
      if (!saw_comma_after_last) fail("expected ',' or ')' in the shape tuple");
    }
    // "(5)" is the integer 5 in Python, not a tuple.
    if (dims.size() == 1 && !saw_comma_after_last) fail("a one-dimensional shape needs a trailing comma: (n,)");
    return dims;
  }

 private:
  bool matches(const char* word) {
    const size_t n = std::strlen(word);
    if (size_ - pos_ < n || std::memcmp(text_ + pos_, word, n) != 0) return false;
    // The word must not continue as an identifier ("Truex").
    if (pos_ + n < size_) {
      const char c = text_[pos_ + n];
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_') return false;
    }
    pos_ += n;
    return true;
  }

  int64_t read_dim() {
    skip_spaces();
    if (peek() == '-') fail("negative dimension in shape");
    if (peek() < '0' || peek() > '9') fail("expected a non-negative integer in the shape tuple");
    const size_t begin = pos_;
    int64_t value = 0;
    while (pos_ < size_ && text_[pos_] >= '0' && text_[pos_] <= '9') {
      const int digit = text_[pos_] - '0';
      if (value > (std::numeric_limits<int64_t>::max() - digit) / 10) fail("dimension does not fit in 64 bits");
      value = value * 10 + digit;
      ++pos_;
    }
    // Python 3 rejects leading zeros ("05"); so do we, as a sign of a corrupted header.
    if (pos_ - begin > 1 && text_[begin] == '0') fail("dimension with a leading zero");
    return value;
  }

  const char* text_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& name_;
};

struct Header {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};

Header parse_header_dict(const char* text, size_t size, const std::string& name) {
  HeaderCursor cur(text, size, name);
  bool have_descr = false, have_order = false, have_shape = false;
  Header header;
  cur.expect('{', "'{' starting the header dictionary");
  while (!cur.accept('}')) {
    const std::string key = cur.read_string();
    cur.expect(':', "':' after a key");
    if (key == "descr") {
      if (have_descr) cur.fail("duplicate key 'descr'");
      have_descr = true;
      cur.skip_spaces();
      // Structured dtypes are written as a list of fields.
      if (cur.peek() == '[') cur.fail("structured dtypes are not supported");
      header.dtype = dtype_of_descr(cur.read_string(), name);
    } else if (key == "fortran_order") {
      if (have_order) cur.fail("duplicate key 'fortran_order'");
      have_order = true;
      KASCADE_CHECK(!cur.read_bool(), name << ": Fortran-order arrays are not supported (expected C order)");
    } else if (key == "shape") {
      if (have_shape) cur.fail("duplicate key 'shape'");
      have_shape = true;
      header.shape = cur.read_shape();
    } else {
      cur.fail("unknown key '" + key + "' in the header dictionary");
    }
    if (!cur.accept(',')) {
      cur.expect('}', "',' or '}' in the header dictionary");
      break;
    }
  }
  KASCADE_CHECK(have_descr, name << ": header has no 'descr'");
  KASCADE_CHECK(have_order, name << ": header has no 'fortran_order'");
  KASCADE_CHECK(have_shape, name << ": header has no 'shape'");
  // After the dictionary: space padding, then exactly one final newline.
  cur.skip_spaces();
  if (cur.peek() != '\n' || cur.pos() + 1 != size) cur.fail("header must end with space padding and one '\\n'");
  return header;
}

std::string python_shape(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '(';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) os << ',';
  os << ')';
  return os.str();
}

// Element count and byte size of a shape, checked against int64 and SIZE_MAX.
size_t checked_byte_size(const std::vector<int64_t>& shape, DType dtype, const std::string& name) {
  const uint64_t limit = std::min<uint64_t>(static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                                            static_cast<uint64_t>(SIZE_MAX));
  uint64_t count = 1;
  for (int64_t d : shape) {
    KASCADE_CHECK(d >= 0, name << ": negative dimension " << d);
    if (d == 0) return 0;  // an empty array; later dimensions cannot overflow anything
  }
  for (int64_t d : shape) {
    KASCADE_CHECK(count <= limit / static_cast<uint64_t>(d),
                  name << ": shape " << python_shape(shape) << " has too many elements");
    count *= static_cast<uint64_t>(d);
  }
  const uint64_t elem = dtype_size(dtype);
  KASCADE_CHECK(count <= limit / elem, name << ": array of " << count << " elements is too large");
  return static_cast<size_t>(count * elem);
}

uint32_t read_le(const uint8_t* p, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}


}  // namespace

void NpyArray::check_element_type(size_t element_size, bool is_floating_point) const {
  // F16 is exposed as raw uint16_t bits (there is no standard half type in C++17).
  const bool want_floating = dtype == DType::F32;
  KASCADE_CHECK(element_size == dtype_size(dtype) && is_floating_point == want_floating,
                "NpyArray::data: element type of " << element_size << " bytes"
                                                   << (is_floating_point ? " (floating point)" : " (integer)")
                                                   << " does not match the array's dtype " << dtype_name(dtype));
}

NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& name) {
  KASCADE_CHECK(data != nullptr || size == 0, name << ": null buffer");
  KASCADE_CHECK(size >= kMagicSize + 2 && std::memcmp(data, kMagic, kMagicSize) == 0,
                name << ": not a .npy file (bad magic)");
  const uint8_t major = data[kMagicSize];
  const uint8_t minor = data[kMagicSize + 1];
  KASCADE_CHECK(major >= 1 && major <= 3 && minor == 0,
                name << ": unsupported .npy format version " << int(major) << "." << int(minor)
                     << " (expected 1.0, 2.0 or 3.0)");
  // Version 1 stores the header length in 2 bytes, versions 2 and 3 in 4.
  const size_t length_bytes = major == 1 ? 2 : 4;
  const size_t prefix = kMagicSize + 2 + length_bytes;
  KASCADE_CHECK(size >= prefix, name << ": truncated header (file has " << size << " bytes)");
  const size_t header_len = read_le(data + kMagicSize + 2, length_bytes);
  KASCADE_CHECK(header_len > 0 && header_len <= kMaxHeaderBytes,
                name << ": header length " << header_len << " is out of range (1.." << kMaxHeaderBytes << ")");
  KASCADE_CHECK(header_len <= size - prefix,
                name << ": truncated header (" << header_len << " bytes declared, " << (size - prefix)
                     << " present)");
  KASCADE_CHECK((prefix + header_len) % kReadAlignment == 0,
                name << ": header is not padded to a multiple of " << kReadAlignment << " bytes (data starts at byte "
                     << prefix + header_len << ")");
  const char* header_text = reinterpret_cast<const char*>(data + prefix);
  // Versions 1 and 2 are latin-1, version 3 utf-8; the keys and values we accept are ASCII.
  for (size_t i = 0; i < header_len; ++i)
    KASCADE_CHECK(static_cast<unsigned char>(header_text[i]) < 0x80,
                  name << ": bad header at byte " << i << ": non-ASCII character");
  Header header = parse_header_dict(header_text, header_len, name);

  const size_t data_offset = prefix + header_len;
  const size_t payload = size - data_offset;
  const size_t expected = checked_byte_size(header.shape, header.dtype, name);
  KASCADE_CHECK(payload >= expected, name << ": truncated data (" << expected << " bytes expected for shape "
                                          << python_shape(header.shape) << ", " << payload << " present)");
  KASCADE_CHECK(payload == expected, name << ": " << (payload - expected) << " trailing bytes after the data of shape "
                                          << python_shape(header.shape));
  NpyArray array;
  array.dtype = header.dtype;
  array.shape = std::move(header.shape);
  array.bytes.assign(data + data_offset, data + size);
  return array;
}

NpyArray read_npy(const std::string& path) {
  const std::vector<uint8_t> bytes = detail::read_file(path, SIZE_MAX - 1);
  return parse_npy(bytes.data(), bytes.size(), path);
}

std::vector<uint8_t> encode_npy(DType dtype, const std::vector<int64_t>& shape, const void* data) {
  const char* descr = descr_of(dtype);
  KASCADE_CHECK(descr != nullptr, "encode_npy: dtype " << dtype_name(dtype) << " has no .npy representation");
  KASCADE_CHECK(shape.size() <= kMaxDims, "encode_npy: " << shape.size() << " dimensions exceed " << kMaxDims);
  const size_t data_bytes = checked_byte_size(shape, dtype, "encode_npy");
  KASCADE_CHECK(data != nullptr || data_bytes == 0, "encode_npy: null data for " << data_bytes << " bytes");

  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " +
                     python_shape(shape) + ", }";
  // The dictionary, space padding and '\n' fill the header up to a multiple of kWriteAlignment.
  auto padded_header_len = [&](size_t prefix_bytes) {
    const size_t total = (prefix_bytes + dict.size() + 1 + kWriteAlignment - 1) / kWriteAlignment * kWriteAlignment;
    return total - prefix_bytes;
  };
  // Version 1 unless the header cannot fit its 16-bit length (kMaxDims keeps it far below).
  const bool v1 = padded_header_len(kMagicSize + 4) <= kMaxV1HeaderBytes;
  const size_t prefix = kMagicSize + 2 + (v1 ? 2 : 4);
  const size_t header_len = padded_header_len(prefix);
  const size_t total_header = prefix + header_len;
  dict.append(header_len - dict.size() - 1, ' ');
  dict.push_back('\n');

  std::vector<uint8_t> out(total_header + data_bytes);
  uint8_t* p = out.data();
  std::memcpy(p, kMagic, kMagicSize);
  p[kMagicSize] = v1 ? 1 : 2;
  p[kMagicSize + 1] = 0;
  for (size_t i = 0; i < prefix - kMagicSize - 2; ++i) p[kMagicSize + 2 + i] = static_cast<uint8_t>(header_len >> (8 * i));
  std::memcpy(p + prefix, dict.data(), dict.size());
  if (data_bytes) std::memcpy(p + total_header, data, data_bytes);
  return out;
}

void write_npy(const std::string& path, DType dtype, const std::vector<int64_t>& shape, const void* data) {
  std::vector<uint8_t> encoded;
  try {
    encoded = encode_npy(dtype, shape, data);
  } catch (const Error& e) {
    KASCADE_FAIL(path << ": " << e.what());
  }
  detail::write_file_atomically(path, encoded.data(), encoded.size());
}

}  // namespace kascade
