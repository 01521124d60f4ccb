// safetensors reader: well-formed buffers (values of every dtype), every malformed-header case
// it must reject with one message naming the file, and the sharded index of the HF fixtures
// (tests/data/hf, written by transformers' save_pretrained).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../temp_dir.h"
#include "kascade/engine/safetensors.h"
#include "kascade/error.h"

using kascade::Error;
using kascade::engine::SafetensorsDtype;
using kascade::engine::SafetensorsFile;
using kascade::engine::SafetensorsSet;

namespace {

const std::string kHfData = std::string(KASCADE_TEST_DATA) + "/hf/";

// 8-byte little-endian header length, the header text, the payload.
std::vector<uint8_t> build(const std::string& header, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> b(8 + header.size() + payload.size());
  const uint64_t n = header.size();
  for (size_t i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(n >> (8 * i));
  std::copy(header.begin(), header.end(), b.begin() + 8);
  std::copy(payload.begin(), payload.end(), b.begin() + 8 + static_cast<std::ptrdiff_t>(header.size()));
  return b;
}

std::string parse_error(const std::vector<uint8_t>& b) {
  try {
    SafetensorsFile::parse(b.data(), b.size(), "test.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The message names the file and contains `phrase`.
void expect_rejected(const std::vector<uint8_t>& b, const std::string& phrase) {
  const std::string msg = parse_error(b);
  EXPECT_NE(msg.find("test.safetensors"), std::string::npos) << "message: " << msg;
  EXPECT_NE(msg.find(phrase), std::string::npos) << "expected '" << phrase << "' in: " << msg;
}

std::vector<uint8_t> zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

// One F32 tensor "a" of shape [2] over 8 bytes, with `extra` spliced into its entry.
std::string one_tensor(const std::string& entry) { return "{\"a\":{" + entry + "}}"; }
const std::string kGoodEntry = "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]";

}  // namespace

TEST(Safetensors, ReadsEveryDtypeAndMetadata) {
  // a: F32 [2] = {1.5, -2}; b: F16 [3] = {1, -0.5, 65504}; c: BF16 [1,2] = {3, -1/256}; z: F32 [0].
  std::vector<uint8_t> payload(18);
  const float f32[2] = {1.5f, -2.0f};
  std::memcpy(payload.data(), f32, sizeof(f32));  // little-endian, like the format
  const uint16_t halves[5] = {0x3C00, 0xB800, 0x7BFF, 0x4040, 0xBB80};  // 3 F16 then 2 BF16
  std::memcpy(payload.data() + 8, halves, sizeof(halves));
  // Entries out of data order, header padded with spaces as the reference writer pads it.
  const std::string header =
      "{\"c\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[14,18]},"
      "\"__metadata__\":{\"format\":\"pt\"},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[18,18]},"
      "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[8,14]}}   ";
  const std::vector<uint8_t> buf = build(header, payload);
  const SafetensorsFile f = SafetensorsFile::parse(buf.data(), buf.size(), "ok.safetensors");
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.tensors()[0].name, "a");  // data order
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(to_float(f.tensor("a")), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(to_float(f.tensor("b")), (std::vector<float>{1.0f, -0.5f, 65504.0f}));
  EXPECT_EQ(f.tensor("c").shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(f.tensor("c").dtype, SafetensorsDtype::BF16);
  EXPECT_EQ(to_float(f.tensor("c")), (std::vector<float>{3.0f, -1.0f / 256}));
  EXPECT_TRUE(to_float(f.tensor("z")).empty());
  EXPECT_THROW(f.tensor("missing"), Error);
}

TEST(Safetensors, RejectsTruncatedFilesAndBadHeaderLengths) {
  expect_rejected({1, 2, 3}, "truncated");
  expect_rejected({}, "truncated");
  std::vector<uint8_t> past_end = build(one_tensor(kGoodEntry), zeros(8));
  past_end[0] = 0xFF;  // header length 255+: past the end
  expect_rejected(past_end, "runs past the end");
  std::vector<uint8_t> huge = build(one_tensor(kGoodEntry), zeros(8));
  huge[7] = 0x80;  // 2^63
  expect_rejected(huge, "exceeds the cap");
  expect_rejected(build("[1,2]", {}), "must start with '{'");
  expect_rejected(build("{\"a\":", {}), "invalid JSON");
  expect_rejected(build(one_tensor(kGoodEntry), zeros(4)), "run past the data section");
}

TEST(Safetensors, RejectsBadEntries) {
  expect_rejected(build("{\"a\":{" + kGoodEntry + "},\"a\":{" + kGoodEntry + "}}", zeros(8)), "duplicate key 'a'");
  expect_rejected(build(one_tensor("\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]"), zeros(8)),
                  "dtype 'F33' is unknown");
  expect_rejected(build(one_tensor("\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]"), zeros(8)),
                  "dtype 'I64' is not supported");
  expect_rejected(build(one_tensor("\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]"), zeros(8)),
                  "not a non-negative integer");
  expect_rejected(build(one_tensor("\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]"), zeros(8)),
                  "not a non-negative integer");
  expect_rejected(build(one_tensor("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]"),
                        zeros(8)),
                  "too many elements");
  expect_rejected(build(one_tensor("\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]"), zeros(4)),
                  "at most 8 dimensions");
  expect_rejected(build(one_tensor("\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]"), zeros(8)),
                  "needs 12 bytes, data_offsets give 8");
  expect_rejected(build(one_tensor("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]"), zeros(8)),
                  "end before they begin");
  expect_rejected(build(one_tensor("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]"), zeros(8)),
                  "data_offsets must be [begin, end]");
  expect_rejected(build(one_tensor("\"dtype\":\"F32\",\"shape\":[2]"), zeros(8)), "needs dtype, shape and data_offsets");
  expect_rejected(build(one_tensor(kGoodEntry + ",\"scale\":1"), zeros(8)), "unknown field 'scale'");
  expect_rejected(build("{\"a\":[1]}", zeros(8)), "entry is not an object");
  expect_rejected(build("{\"__metadata__\":{\"k\":1}," + one_tensor(kGoodEntry).substr(1), zeros(8)),
                  "__metadata__ 'k' is not a string");
}

TEST(Safetensors, RejectsRangesThatDoNotTileTheData) {
  const std::string b_at = ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":";
  // b overlaps a.
  expect_rejected(build("{\"a\":{" + kGoodEntry + "}" + b_at + "[4,12]}}", zeros(12)), "overlaps tensor 'a'");
  // A gap of 4 bytes between a and b.
  expect_rejected(build("{\"a\":{" + kGoodEntry + "}" + b_at + "[12,20]}}", zeros(20)), "belong to no tensor");
  // Bytes after the last tensor.
  expect_rejected(build(one_tensor(kGoodEntry), zeros(12)), "after the last tensor");
  // Two names for one range.
  expect_rejected(build("{\"a\":{" + kGoodEntry + "}" + b_at + "[0,8]}}", zeros(8)), "overlaps");
}

TEST(Safetensors, OpensTheShardedFixtureThroughItsIndex) {
  const SafetensorsSet set = SafetensorsSet::open_directory(kHfData + "llama");
  EXPECT_GT(set.file_count(), 1u);
  EXPECT_TRUE(set.has_tensor("model.layers.2.mlp.down_proj.weight"));
  const auto& t = set.tensor("model.embed_tokens.weight");
  EXPECT_EQ(t.dtype, SafetensorsDtype::BF16);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{512, 64}));
  const SafetensorsSet single = SafetensorsSet::open_directory(kHfData + "mistral");
  EXPECT_EQ(single.file_count(), 1u);
  EXPECT_EQ(single.tensor("lm_head.weight").dtype, SafetensorsDtype::F16);
  EXPECT_THROW(SafetensorsSet::open_directory(kHfData), Error);  // no weights there
}

TEST(Safetensors, RejectsInconsistentIndexes) {
  namespace fs = std::filesystem;
  kascade::testing::TempDir dir("safetensors");
  for (const auto& e : fs::directory_iterator(kHfData + "llama")) {
    if (e.path().extension() == ".safetensors") fs::copy_file(e.path(), dir.path() / e.path().filename());
  }
  const std::string original = [] {
    std::ifstream f(kHfData + "llama/model.safetensors.index.json");
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }();
  auto open_with = [&](const std::string& text) -> std::string {
    std::ofstream(dir.file("model.safetensors.index.json")) << text;
    try {
      SafetensorsSet::open_directory(dir.path().string());
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = original;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  EXPECT_EQ(open_with(original), "");
  // A tensor sent to a shard that does not hold it.
  const std::string embd = "\"model.embed_tokens.weight\": \"model-00001-of-00006.safetensors\"";
  EXPECT_NE(open_with(replaced(embd, "\"model.embed_tokens.weight\": \"model-00002-of-00006.safetensors\""))
                .find("is not in its shard"), std::string::npos);
  EXPECT_NE(open_with(replaced(embd, "\"model.embed_tokens.weight\": \"missing.safetensors\"")).find("does not exist"),
            std::string::npos);
  EXPECT_NE(open_with(replaced(embd, "\"model.embed_tokens.weight\": \"../llama/model-00001-of-00006.safetensors\""))
                .find("not a file in the index's directory"), std::string::npos);
  // A shard tensor the index leaves out (its shard holds others that it lists).
  const std::string up = "\"model.layers.0.mlp.up_proj.weight\": \"model-00002-of-00006.safetensors\",";
  EXPECT_NE(open_with(replaced(up, "")).find("which the weight_map does not give it"), std::string::npos);
  EXPECT_NE(open_with(replaced(embd, embd + ", " + embd)).find("duplicate key"), std::string::npos);
  EXPECT_NE(open_with("{\"metadata\": {}}").find("needs a weight_map"), std::string::npos);
}
