// GGUF reader: metadata and dequantizers against fixtures written by the `gguf` Python package
// (tools/make_engine_fixtures.py), and malformed files built byte by byte.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gguf_builder.h"
#include "kascade/engine/gguf.h"
#include "kascade/error.h"

using kascade::Error;
using kascade::engine::GgmlType;
using kascade::engine::GgufFile;

namespace {

const std::string kQuantFixture = std::string(KASCADE_TEST_DATA) + "/engine/quant.gguf";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

using Builder = kascade::engine::test::GgufBuilder;

std::string parse_error(const std::vector<uint8_t>& b) {
  try {
    GgufFile::parse(b.data(), b.size(), "test.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Gguf, ReadsEveryMetadataTypeWrittenByGguf) {
  GgufFile f = GgufFile::open(kQuantFixture);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "fixture");
  EXPECT_EQ(f.get_uint("fixture.u8"), 200u);
  EXPECT_EQ(f.get_int("fixture.i8"), -100);
  EXPECT_EQ(f.get_uint("fixture.u16"), 60000u);
  EXPECT_EQ(f.get_int("fixture.i16"), -30000);
  EXPECT_EQ(f.get_uint("fixture.u32"), 4000000000u);
  EXPECT_EQ(f.get_int("fixture.i32"), -2000000000);
  EXPECT_EQ(f.get_uint("fixture.u64"), (1ull << 40) + 3);
  EXPECT_EQ(f.get_int("fixture.i64"), -(1ll << 40) - 5);
  EXPECT_EQ(f.get_float("fixture.f32"), 0.25);
  EXPECT_EQ(f.get_float("fixture.f64"), -1.5e300);
  EXPECT_TRUE(f.get_bool("fixture.bool"));
  EXPECT_EQ(f.get_string("fixture.string"), "h\xc3\xa9llo\nworld");
  EXPECT_EQ(f.get_int_array("fixture.ints"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.get_string_array("fixture.strings"), (std::vector<std::string>{"a", "", "\xc3\xbcn\xc3\xaf"}));
  EXPECT_EQ(f.get_float_array("fixture.floats"), (std::vector<double>{0.5, -2.0}));
}

TEST(Gguf, TypedGettersRejectTheWrongType) {
  GgufFile f = GgufFile::open(kQuantFixture);
  EXPECT_THROW(f.get_uint("fixture.i8"), Error);  // negative
  EXPECT_THROW(f.get_string("fixture.u8"), Error);
  EXPECT_THROW(f.get_bool("fixture.string"), Error);
  EXPECT_THROW(f.get_string_array("fixture.ints"), Error);
  EXPECT_THROW(f.get_float("fixture.string"), Error);
  EXPECT_THROW(f.value("fixture.missing"), Error);
  EXPECT_THROW(f.tensor("missing"), Error);
}

TEST(Gguf, DequantizersMatchTheGgufPackage) {
  GgufFile f = GgufFile::open(kQuantFixture);
  int checked = 0;
  for (const char* name : {"Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "F16", "BF16", "F32"}) {
    SCOPED_TRACE(name);
    const auto& t = f.tensor(name);
    EXPECT_STREQ(kascade::engine::to_string(t.type), name);
    const auto& e = f.tensor(std::string(name) + ".expected");
    ASSERT_EQ(t.dims, e.dims);
    const std::vector<float> got = f.dequantize(t);
    const std::vector<float> want = f.dequantize(e);
    ASSERT_EQ(got.size(), want.size());
    double max_abs = 0;
    for (float w : want) max_abs = std::max(max_abs, std::fabs(static_cast<double>(w)));
    ASSERT_GT(max_abs, 0.0) << "fixture values are all zero";
    for (size_t i = 0; i < got.size(); ++i) {
      // The Python dequantizers compute in fp32 with a different operation order.
      ASSERT_NEAR(got[i], want[i], 1e-6 * max_abs + 1e-7) << "element " << i;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 8);
}

TEST(Gguf, EveryTruncationIsAnError) {
  const std::vector<uint8_t> whole = read_bytes(kQuantFixture);
  ASSERT_GT(whole.size(), 1000u);
  EXPECT_NO_THROW(GgufFile::parse(whole.data(), whole.size(), "whole"));
  for (size_t n = 0; n < whole.size(); n += (n < 2048 ? 1 : 97)) {
    std::vector<uint8_t> cut(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_NE(parse_error(cut), "") << "a prefix of " << n << " bytes parsed";
  }
}

TEST(Gguf, MinimalFileParses) {
  Builder b;
  b.header(1, 1).kv_u32("general.alignment", 32).tensor_f32("w", 4, 0).pad_to(32).floats(4, 1.5f);
  GgufFile f = GgufFile::parse(b.bytes.data(), b.bytes.size(), "min");
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.dequantize(f.tensor("w")), (std::vector<float>{1.5f, 1.5f, 1.5f, 1.5f}));
}

TEST(Gguf, MalformedHeadersAreRejected) {
  {
    Builder b;
    b.put<uint32_t>(0x12345678u).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(0);
    EXPECT_NE(parse_error(b.bytes).find("bad magic"), std::string::npos);
  }
  for (uint32_t version : {1u, 4u, 0xffffffffu}) {
    Builder b;
    b.header(0, 0, version);
    EXPECT_NE(parse_error(b.bytes).find("unsupported GGUF version"), std::string::npos) << version;
  }
  {
    Builder b;
    b.header(0, ~0ull);
    EXPECT_NE(parse_error(b.bytes).find("metadata_kv_count"), std::string::npos);
  }
  {
    Builder b;
    b.header(~0ull, 0);
    EXPECT_NE(parse_error(b.bytes).find("tensor_count"), std::string::npos);
  }
  {
    Builder b;
    b.header(1000, 0).floats(100, 0.f);  // 400 bytes cannot hold 1000 tensor infos
    EXPECT_NE(parse_error(b.bytes).find("cannot fit"), std::string::npos);
  }
}

TEST(Gguf, MalformedMetadataIsRejected) {
  {  // a string length near SIZE_MAX
    Builder b;
    b.header(0, 1).put<uint64_t>(~0ull - 3).floats(8, 0.f);
    EXPECT_NE(parse_error(b.bytes).find("string length"), std::string::npos);
  }
  {  // an array count that cannot fit
    Builder b;
    b.header(0, 1).str("a").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1ull << 23);
    EXPECT_NE(parse_error(b.bytes).find("cannot fit"), std::string::npos);
  }
  {  // an array count above the cap
    Builder b;
    b.header(0, 1).str("a").put<uint32_t>(9).put<uint32_t>(0).put<uint64_t>(1ull << 40);
    EXPECT_NE(parse_error(b.bytes).find("exceeds the cap"), std::string::npos);
  }
  {  // arrays of arrays
    Builder b;
    b.header(0, 1).str("a").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(1);
    EXPECT_NE(parse_error(b.bytes).find("arrays of arrays"), std::string::npos);
  }
  {  // unknown value type
    Builder b;
    b.header(0, 1).str("a").put<uint32_t>(13).put<uint32_t>(0);
    EXPECT_NE(parse_error(b.bytes).find("unknown value type 13"), std::string::npos);
  }
  {  // duplicate key
    Builder b;
    b.header(0, 2).kv_u32("a", 1).kv_u32("a", 2);
    EXPECT_NE(parse_error(b.bytes).find("duplicate metadata key 'a'"), std::string::npos);
  }
  {  // bool that is not 0/1
    Builder b;
    b.header(0, 1).str("a").put<uint32_t>(7).put<uint8_t>(2);
    EXPECT_NE(parse_error(b.bytes).find("bool"), std::string::npos);
  }
  {  // alignment not a power of two
    Builder b;
    b.header(0, 1).kv_u32("general.alignment", 24);
    EXPECT_NE(parse_error(b.bytes).find("power of two"), std::string::npos);
  }
}

TEST(Gguf, MalformedTensorTablesAreRejected) {
  auto file_with = [](auto&& add_tensors, uint64_t count, int data_floats) {
    Builder b;
    b.header(count, 0);
    add_tensors(b);
    b.pad_to(32).floats(data_floats, 0.f);
    return b.bytes;
  };
  // Offset past the end of the data.
  EXPECT_NE(parse_error(file_with([](Builder& b) { b.tensor_f32("w", 4, 64); }, 1, 4)).find("run past"),
            std::string::npos);
  // Size past the end of the data.
  EXPECT_NE(parse_error(file_with([](Builder& b) { b.tensor_f32("w", 100, 0); }, 1, 4)).find("run past"),
            std::string::npos);
  // Misaligned offset.
  EXPECT_NE(parse_error(file_with([](Builder& b) { b.tensor_f32("w", 1, 4); }, 1, 16)).find("alignment"),
            std::string::npos);
  // Overlapping tensors.
  EXPECT_NE(parse_error(file_with([](Builder& b) { b.tensor_f32("a", 16, 0).tensor_f32("b", 8, 32); }, 2, 64))
                .find("overlap"),
            std::string::npos);
  // Duplicate names.
  EXPECT_NE(parse_error(file_with([](Builder& b) { b.tensor_f32("a", 8, 0).tensor_f32("a", 8, 32); }, 2, 64))
                .find("duplicate tensor name"),
            std::string::npos);
  // Zero, too many and overflowing dimensions.
  EXPECT_NE(parse_error(file_with([](Builder& b) { b.tensor_f32("w", 0, 0); }, 1, 4)).find("extent 0"),
            std::string::npos);
  EXPECT_NE(parse_error(file_with(
                            [](Builder& b) {
                              b.str("w").put<uint32_t>(5);
                              for (int i = 0; i < 5; ++i) b.put<uint64_t>(1);
                              b.put<uint32_t>(0).put<uint64_t>(0);
                            },
                            1, 4))
                .find("5 dimensions"),
            std::string::npos);
  EXPECT_NE(parse_error(file_with(
                            [](Builder& b) {
                              b.str("w").put<uint32_t>(2).put<uint64_t>(1ull << 40).put<uint64_t>(1ull << 40);
                              b.put<uint32_t>(0).put<uint64_t>(0);
                            },
                            1, 4))
                .find("overflows"),
            std::string::npos);
  // Unsupported type (Q5_0 = 6) and a row that is not a whole number of blocks (Q8_0, 31 values).
  EXPECT_NE(parse_error(file_with(
                            [](Builder& b) { b.str("w").put<uint32_t>(1).put<uint64_t>(32).put<uint32_t>(6).put<uint64_t>(0); },
                            1, 16))
                .find("unsupported type 6"),
            std::string::npos);
  EXPECT_NE(parse_error(file_with(
                            [](Builder& b) { b.str("w").put<uint32_t>(1).put<uint64_t>(31).put<uint32_t>(8).put<uint64_t>(0); },
                            1, 16))
                .find("block size"),
            std::string::npos);
}

TEST(Gguf, OpenReportsMissingAndEmptyFiles) {
  try {
    GgufFile::open("/nonexistent/model.gguf");
    FAIL() << "opened a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf"), std::string::npos);
  }
  EXPECT_THROW(GgufFile::open("/dev/null"), Error);
}
