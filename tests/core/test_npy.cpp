// Tests of the strict .npy reader/writer: fixtures written by numpy (tools/make_npy_fixtures.py),
// byte-exact agreement with numpy's writer, round trips, and one malformed input per rule.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../temp_dir.h"
#include "kascade/npy.h"

using namespace kascade;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) { return std::string(KASCADE_TEST_DATA) + "/npy/" + name; }

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.is_open()) << path;
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A .npy file with the given header dictionary text, padded the way numpy pads it (spaces and
// '\n' up to a 64-byte boundary) unless `pad` is false, followed by `payload`.
std::vector<uint8_t> npy_with_header(const std::string& dict, size_t payload_bytes, int major = 1, bool pad = true) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  if (pad) {
    const size_t total = (prefix + header.size() + 1 + 63) / 64 * 64;
    header.append(total - prefix - header.size() - 1, ' ');
  }
  header.push_back('\n');
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<uint8_t>(major), 0};
  for (size_t i = 0; i < prefix - 8; ++i) out.push_back(static_cast<uint8_t>(header.size() >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + payload_bytes, 0x5a);
  return out;
}

std::string dict_for(const std::string& descr, const std::string& shape, const std::string& order = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }";
}

// Runs parse_npy and returns the error message ("" if it did not throw).
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    parse_npy(bytes.data(), bytes.size(), "x.npy");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_NPY_ERROR(bytes, fragment)                                      \
  do {                                                                         \
    const std::string msg_ = parse_error(bytes);                               \
    EXPECT_NE(msg_.find(fragment), std::string::npos)                          \
        << "expected an error containing '" << (fragment) << "', got '" << msg_ << "'"; \
    EXPECT_EQ(msg_.rfind("x.npy: ", 0), 0u) << msg_;                          \
  } while (0)

// A scratch directory named after this file's tests.
struct TempDir : kascade::testing::TempDir {
  TempDir() : kascade::testing::TempDir("npy") {}
};

}  // namespace

// ---- fixtures written by numpy -------------------------------------------------------------------

TEST(NpyRead, Float32FromNumpy) {
  NpyArray a = read_npy(fixture("f4_2x3.npy"));
  EXPECT_EQ(a.dtype, DType::F32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(a.numel(), 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a.data<float>()[i], 0.5f * i);
}

TEST(NpyRead, Float16FromNumpy) {
  NpyArray a = read_npy(fixture("f2_5.npy"));
  EXPECT_EQ(a.dtype, DType::F16);
  ASSERT_EQ(a.shape, (std::vector<int64_t>{5}));
  const float expected[] = {0.5f, -1.0f, 65504.0f, 5.9604644775390625e-8f, f16_to_float(float_to_f16(1.0f / 3.0f))};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f16_to_float(a.data<uint16_t>()[i]), expected[i]) << i;
}

TEST(NpyRead, Int32AndInt64FromNumpy) {
  NpyArray a = read_npy(fixture("i4_4.npy"));
  EXPECT_EQ(a.dtype, DType::I32);
  const int32_t e32[] = {0, -1, 2147483647, INT32_MIN};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.data<int32_t>()[i], e32[i]);
  NpyArray b = read_npy(fixture("i8_2x2.npy"));
  EXPECT_EQ(b.dtype, DType::I64);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2, 2}));
  const int64_t e64[] = {0, -1, int64_t{1} << 62, INT64_MIN};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(b.data<int64_t>()[i], e64[i]);
}

TEST(NpyRead, ZeroDimensionalArrayHasOneElement) {
  NpyArray a = read_npy(fixture("f4_scalar.npy"));
  EXPECT_TRUE(a.shape.empty());
  ASSERT_EQ(a.numel(), 1);
  EXPECT_EQ(a.data<float>()[0], 3.25f);
}

TEST(NpyRead, ZeroLengthShapes) {
  NpyArray a = read_npy(fixture("f4_0x3.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(a.numel(), 0);
  EXPECT_TRUE(a.bytes.empty());
  NpyArray b = read_npy(fixture("i4_2x0x4.npy"));
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2, 0, 4}));
  EXPECT_TRUE(b.bytes.empty());
}

TEST(NpyRead, Version2And3Headers) {
  NpyArray a = read_npy(fixture("f4_v2_2x2x2.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 2, 2}));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(a.data<float>()[i], float(i));
  NpyArray b = read_npy(fixture("i8_v3_3.npy"));
  EXPECT_EQ(b.dtype, DType::I64);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b.data<int64_t>()[i], i);
}

TEST(NpyRead, RejectedNumpyFilesNameTheProblem) {
  const struct {
    const char* file;
    const char* fragment;
  } cases[] = {
      {"bad_fortran_2x3.npy", "Fortran-order arrays are not supported"},
      {"bad_big_endian.npy", "big-endian dtype '>f4'"},
      {"bad_f8.npy", "unsupported dtype '<f8'"},
      {"bad_u1.npy", "unsupported dtype '|u1'"},
      {"bad_bool.npy", "unsupported dtype '|b1'"},
  };
  for (const auto& c : cases) {
    const std::string path = fixture(c.file);
    try {
      read_npy(path);
      ADD_FAILURE() << c.file << " was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(c.fragment), std::string::npos) << msg;
    }
  }
}

TEST(NpyRead, MissingFileNamesThePath) {
  try {
    read_npy("/nonexistent/q.npy");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("/nonexistent/q.npy: cannot open", 0), 0u) << e.what();
  }
}

TEST(NpyRead, DirectoryIsNotAFile) {
  try {
    read_npy(std::string(KASCADE_TEST_DATA) + "/npy");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/npy: is a directory"), std::string::npos) << e.what();
  }
}

TEST(NpyRead, NullBufferIsAnError) { EXPECT_THROW(parse_npy(nullptr, 16, "x.npy"), Error); }

TEST(NpyRead, TypedAccessChecksTheElementType) {
  NpyArray a = read_npy(fixture("f4_2x3.npy"));
  EXPECT_THROW(a.data<int32_t>(), Error);
  EXPECT_THROW(a.data<double>(), Error);
  NpyArray h = read_npy(fixture("f2_5.npy"));
  EXPECT_THROW(h.data<float>(), Error);
  EXPECT_NO_THROW(h.data<uint16_t>());
}

// ---- writer ----------------------------------------------------------------------------------------

TEST(NpyWrite, EncodingIsByteIdenticalToNumpy) {
  for (const char* name : {"f4_2x3.npy", "f2_5.npy", "i4_4.npy", "i8_2x2.npy", "f4_scalar.npy", "f4_0x3.npy",
                           "i4_2x0x4.npy"}) {
    const std::vector<uint8_t> numpy_bytes = file_bytes(fixture(name));
    const NpyArray a = parse_npy(numpy_bytes.data(), numpy_bytes.size(), name);
    EXPECT_EQ(encode_npy(a.dtype, a.shape, a.bytes.data()), numpy_bytes) << name;
  }
}

TEST(NpyWrite, HeaderIsAlignedTo64Bytes) {
  const std::vector<int64_t> shape(20, 1);  // a long shape tuple pushes the header past 64 bytes
  const float x = 1.0f;
  const std::vector<uint8_t> bytes = encode_npy(DType::F32, shape, &x);
  const size_t header_len = bytes[8] | (bytes[9] << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(bytes.size(), 10 + header_len + 4);
}

TEST(NpyWrite, RoundTripAndAtomicReplace) {
  TempDir dir;
  const std::string path = dir.file("out.npy");
  const std::vector<int32_t> values = {7, -3, 0, 42, 1 << 30, -1};
  write_npy(path, DType::I32, {3, 2}, values.data());
  write_npy(path, DType::I32, {2, 3}, values.data());  // replaces the first file
  NpyArray a = read_npy(path);
  EXPECT_EQ(a.dtype, DType::I32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::vector<int32_t>(a.data<int32_t>(), a.data<int32_t>() + 6), values);
  EXPECT_EQ(dir.entries(), 1u);  // no out.npy.tmp left behind
}

TEST(NpyWrite, ErrorsLeaveNoFile) {
  TempDir dir;
  const float x = 0;
  EXPECT_THROW(write_npy(dir.file("bf16.npy"), DType::BF16, {1}, &x), Error);  // no npy spelling for bf16
  EXPECT_THROW(write_npy(dir.file("neg.npy"), DType::F32, {-1}, &x), Error);
  EXPECT_THROW(write_npy(dir.file("null.npy"), DType::F32, {4}, nullptr), Error);
  EXPECT_EQ(dir.entries(), 0u);
  EXPECT_THROW(write_npy(dir.file("missing_dir/out.npy"), DType::F32, {1}, &x), Error);
  EXPECT_EQ(dir.entries(), 0u);
  // The final rename fails when the path is a directory: the temporary must not stay behind.
  fs::create_directories(dir.file("taken/inner"));
  try {
    write_npy(dir.file("taken"), DType::F32, {1}, &x);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot rename"), std::string::npos) << e.what();
  }
  EXPECT_EQ(dir.entries(), 1u);
}

// ---- malformed input, one rule at a time ---------------------------------------------------------------

TEST(NpyMalformed, Magic) {
  std::vector<uint8_t> good = npy_with_header(dict_for("<f4", "(2,)"), 8);
  ASSERT_EQ(parse_error(good), "");
  std::vector<uint8_t> bad = good;
  bad[1] = 'X';
  EXPECT_NPY_ERROR(bad, "bad magic");
  EXPECT_NPY_ERROR(std::vector<uint8_t>(good.begin(), good.begin() + 5), "bad magic");
  EXPECT_NPY_ERROR(std::vector<uint8_t>(), "bad magic");
}

TEST(NpyMalformed, Version) {
  std::vector<uint8_t> bad = npy_with_header(dict_for("<f4", "(2,)"), 8);
  bad[6] = 4;
  EXPECT_NPY_ERROR(bad, "unsupported .npy format version 4.0");
  bad[6] = 1;
  bad[7] = 1;
  EXPECT_NPY_ERROR(bad, "unsupported .npy format version 1.1");
  bad[6] = 0;
  bad[7] = 0;
  EXPECT_NPY_ERROR(bad, "version 0.0");
}

TEST(NpyMalformed, TruncatedHeader) {
  const std::vector<uint8_t> good = npy_with_header(dict_for("<f4", "(2,)"), 8);
  EXPECT_NPY_ERROR(std::vector<uint8_t>(good.begin(), good.begin() + 9), "truncated header");
  EXPECT_NPY_ERROR(std::vector<uint8_t>(good.begin(), good.begin() + 40), "truncated header");
  const std::vector<uint8_t> v2 = npy_with_header(dict_for("<f4", "(2,)"), 8, 2);
  ASSERT_EQ(parse_error(v2), "");
  EXPECT_NPY_ERROR(std::vector<uint8_t>(v2.begin(), v2.begin() + 11), "truncated header");
}

TEST(NpyMalformed, HeaderLengthAndPadding) {
  std::vector<uint8_t> zero = npy_with_header(dict_for("<f4", "(2,)"), 8);
  zero[8] = zero[9] = 0;
  EXPECT_NPY_ERROR(zero, "header length 0 is out of range");
  std::vector<uint8_t> huge = npy_with_header(dict_for("<f4", "(2,)"), 8, 2);
  huge[10] = 0xff;  // 4-byte length of ~16 MB: beyond the header cap
  huge[11] = 0x7f;
  EXPECT_NPY_ERROR(huge, "is out of range");
  // Data must start at a multiple of 16 bytes.
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(2,)") + "  ", 8, 1, /*pad=*/false), "not padded");
  // The padding is spaces and one final newline; the newline must be last.
  std::vector<uint8_t> tab = npy_with_header(dict_for("<f4", "(2,)"), 8);
  tab[10 + dict_for("<f4", "(2,)").size() + 1] = '\t';
  EXPECT_NPY_ERROR(tab, "space padding");
  std::vector<uint8_t> early_newline = npy_with_header(dict_for("<f4", "(2,)"), 8);
  early_newline[10 + dict_for("<f4", "(2,)").size()] = '\n';
  EXPECT_NPY_ERROR(early_newline, "space padding");
  std::vector<uint8_t> non_ascii = npy_with_header(dict_for("<f4", "(2,)"), 8);
  non_ascii[10 + dict_for("<f4", "(2,)").size() + 2] = 0xe9;
  EXPECT_NPY_ERROR(non_ascii, "non-ASCII");
}

TEST(NpyMalformed, HeaderDictionary) {
  EXPECT_NPY_ERROR(npy_with_header("'descr': '<f4'", 0), "expected '{'");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': '<f4', 'shape': (2,), }", 8), "no 'fortran_order'");
  EXPECT_NPY_ERROR(npy_with_header("{'fortran_order': False, 'shape': (2,), }", 8), "no 'descr'");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': '<f4', 'fortran_order': False, }", 8), "no 'shape'");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8),
                   "unknown key 'x'");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8),
                   "duplicate key 'descr'");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ", 8),
                   "expected ',' or '}'");
  EXPECT_NPY_ERROR(npy_with_header("{descr: '<f4', 'fortran_order': False, 'shape': (2,)}", 8), "quoted string");
  EXPECT_NPY_ERROR(npy_with_header("{'descr: '<f4'}", 8), "expected ':'");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", 8),
                   "unsupported dtype '<f4, '");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,)}", 8),
                   "expected True or False");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': '<\\f4', 'fortran_order': False, 'shape': (2,)}", 8),
                   "unsupported character");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", 8),
                   "structured dtypes");
  EXPECT_NPY_ERROR(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk", 8),
                   "space padding");
  // Double quotes and no trailing comma are valid Python and accepted.
  EXPECT_EQ(parse_error(npy_with_header("{\"shape\": (2,), \"fortran_order\": False, \"descr\": \"<f4\"}", 8)), "");
}

TEST(NpyMalformed, FortranOrderAndDtypes) {
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(2, 2)", "True"), 16), "Fortran-order");
  EXPECT_NPY_ERROR(npy_with_header(dict_for(">i4", "(2,)"), 8), "big-endian dtype '>i4'");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("|u1", "(2,)"), 2), "unsupported dtype '|u1'");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f8", "(2,)"), 16), "unsupported dtype '<f8'");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("|f4", "(2,)"), 8), "unsupported dtype '|f4'");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("", "(2,)"), 8), "unsupported dtype ''");
}

TEST(NpyMalformed, ShapeTuple) {
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(-1,)"), 0), "negative dimension");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(2, -3)"), 0), "negative dimension");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(2)"), 8), "trailing comma");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(2, x)"), 8), "non-negative integer");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(2,,)"), 8), "non-negative integer");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(2 3)"), 8), "expected ',' or ')'");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "[2, 3]"), 8), "'(' starting the shape");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(02,)"), 8), "leading zero");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(2.0,)"), 8), "expected ',' or ')'");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(99999999999999999999,)"), 8), "does not fit in 64 bits");
  std::string many = "(";
  for (int i = 0; i < 65; ++i) many += "1, ";
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", many + ")"), 4), "more than 64 dimensions");
  // Products that overflow the element count, and counts whose byte size overflows.
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(4294967296, 4294967296, 16)"), 0), "too many elements");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<i8", "(9223372036854775807,)"), 0), "too large");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(3037000500, 3037000500)"), 0), "too many elements");
  // A zero extent makes the array empty whatever the other extents are.
  EXPECT_EQ(parse_error(npy_with_header(dict_for("<f4", "(0, 9223372036854775807)"), 0)), "");
}

TEST(NpyMalformed, DataSize) {
  const std::vector<uint8_t> good = npy_with_header(dict_for("<f4", "(2, 3)"), 24);
  ASSERT_EQ(parse_error(good), "");
  EXPECT_NPY_ERROR(std::vector<uint8_t>(good.begin(), good.end() - 1), "truncated data (24 bytes expected");
  std::vector<uint8_t> trailing = good;
  trailing.push_back(0);
  EXPECT_NPY_ERROR(trailing, "1 trailing bytes");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "()"), 0), "truncated data (4 bytes expected");
  EXPECT_NPY_ERROR(npy_with_header(dict_for("<f4", "(0,)"), 4), "4 trailing bytes");
}
