// Products against weights kept in their GGUF block type (src/engine/cpu/quantized.h): every
// type against dequantize-then-fp32 on random blocks and odd sizes, the AVX2 and portable
// dequantizers against each other, and the default model loaded quantized against the golden
// logits of transformers and against the same model loaded as fp32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "../../src/engine/cpu/quantized.h"
#include "engine_test_model.h"
#include "kascade/engine/backend.h"
#include "kascade/engine/gguf.h"
#include "kascade/engine/model_path.h"
#include "kascade/error.h"
#include "kascade/tensor.h"

namespace cpu = kascade::engine::cpu;
using kascade::engine::GgmlType;
using kascade::engine::QuantizedMatrix;

namespace {

void put_f16(uint8_t* p, float x) {
  const uint16_t h = kascade::float_to_f16(x);
  std::memcpy(p, &h, 2);
}

// A [rows][cols] matrix of random blocks of `type`; the scale fields hold finite f16 values.
QuantizedMatrix random_matrix(GgmlType type, int64_t rows, int64_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f), value(-2.f, 2.f);
  QuantizedMatrix m;
  m.type = type;
  m.rows = rows;
  m.cols = cols;
  m.data.resize(static_cast<size_t>(rows * m.row_bytes()));
  for (uint8_t& b : m.data) b = static_cast<uint8_t>(byte(rng));
  const int64_t block_bytes = kascade::engine::ggml_block_bytes(type);
  for (size_t off = 0; off < m.data.size(); off += static_cast<size_t>(block_bytes)) {
    uint8_t* blk = m.data.data() + off;
    switch (type) {
      case GgmlType::Q8_0: case GgmlType::Q4_0: put_f16(blk, scale(rng)); break;
      case GgmlType::Q4_1: put_f16(blk, scale(rng)); put_f16(blk + 2, -scale(rng) * 8); break;
      case GgmlType::Q4_K: put_f16(blk, scale(rng)); put_f16(blk + 2, scale(rng)); break;
      case GgmlType::Q6_K: put_f16(blk + 208, scale(rng)); break;
      case GgmlType::F16: put_f16(blk, value(rng)); break;
      case GgmlType::BF16: {
        const uint16_t h = kascade::float_to_bf16(value(rng));
        std::memcpy(blk, &h, 2);
        break;
      }
      case GgmlType::F32: break;
    }
  }
  return m;
}

std::vector<float> random_activations(size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(count);
  for (float& f : x) f = normal(rng);
  return x;
}

const GgmlType kTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K,
                           GgmlType::Q6_K, GgmlType::F16,  GgmlType::BF16};

// Relative error of y (the product with bias) against an fp64 product of x and `dense`.
double relative_error(const std::vector<float>& x, const std::vector<float>& dense, const std::vector<float>& bias,
                      const std::vector<float>& y, int tokens, int rows, int cols) {
  double err = 0, norm = 0;
  for (int t = 0; t < tokens; ++t) {
    for (int r = 0; r < rows; ++r) {
      double expected = bias[static_cast<size_t>(r)];
      for (int i = 0; i < cols; ++i) {
        expected += static_cast<double>(x[static_cast<size_t>(t) * cols + i]) * dense[static_cast<size_t>(r) * cols + i];
      }
      const double got = y[static_cast<size_t>(t) * rows + r];
      if (!std::isfinite(got)) return INFINITY;
      err += (got - expected) * (got - expected);
      norm += expected * expected;
    }
  }
  return std::sqrt(err / norm);
}

const cpu::SimdPath kPaths[] = {cpu::SimdPath::Auto, cpu::SimdPath::Portable};

TEST(QuantizedMatmul, EveryTypeMatchesDequantizeThenFp32) {
  cpu::ThreadPool pool(3);
  unsigned seed = 11;
  for (cpu::SimdPath path : kPaths) {
    for (GgmlType type : kTypes) {
      const int64_t block = kascade::engine::ggml_block_elements(type);
      // Odd row counts (not a multiple of the 4-row microkernel nor the 16-row panel), several
      // blocks; token counts of decode (1, 2: fused or row kernel) and of prefill (5, 13: panels of
      // 6-token register tiles and their remainders).
      for (int rows : {1, 13, 37}) {
        for (int tokens : {1, 2, 5, 13}) {
          SCOPED_TRACE(std::string(kascade::engine::to_string(type)) + " rows=" + std::to_string(rows) +
                       " tokens=" + std::to_string(tokens) + (path == cpu::SimdPath::Auto ? " auto" : " portable"));
          const int cols = static_cast<int>(block == 1 ? 72 : 3 * block);
          const QuantizedMatrix m = random_matrix(type, rows, cols, seed++);
          std::vector<float> dense(static_cast<size_t>(rows) * cols);
          kascade::engine::dequantize(type, m.data.data(), static_cast<int64_t>(dense.size()), dense.data());
          const std::vector<float> x = random_activations(static_cast<size_t>(tokens) * cols, seed++);
          std::vector<float> bias = random_activations(static_cast<size_t>(rows), seed++);
          std::vector<float> y(static_cast<size_t>(tokens) * rows, NAN);
          cpu::WeightRef w;
          w.quantized = &m;
          cpu::matmul(pool, x.data(), tokens, cols, w, rows, y.data(), bias.data(), path);
          EXPECT_LE(relative_error(x, dense, bias, y, tokens, rows, cols), 1e-5);
        }
      }
    }
  }
}

TEST(QuantizedMatmul, Fp32WeightsMatchFp64OnBothPaths) {
  // fp32 weights go through the same panels in prefill (tokens > 4) and the row kernel in decode.
  cpu::ThreadPool pool(2);
  unsigned seed = 101;
  for (cpu::SimdPath path : kPaths) {
    for (int rows : {3, 16, 45}) {
      for (int tokens : {1, 4, 6, 17}) {
        SCOPED_TRACE("rows=" + std::to_string(rows) + " tokens=" + std::to_string(tokens) +
                     (path == cpu::SimdPath::Auto ? " auto" : " portable"));
        const int cols = 67;  // not a multiple of 8
        const std::vector<float> dense = random_activations(static_cast<size_t>(rows) * cols, seed++);
        const std::vector<float> x = random_activations(static_cast<size_t>(tokens) * cols, seed++);
        const std::vector<float> bias = random_activations(static_cast<size_t>(rows), seed++);
        std::vector<float> y(static_cast<size_t>(tokens) * rows, NAN);
        cpu::WeightRef w;
        w.fp32 = dense.data();
        cpu::matmul(pool, x.data(), tokens, cols, w, rows, y.data(), bias.data(), path);
        EXPECT_LE(relative_error(x, dense, bias, y, tokens, rows, cols), 1e-5);
      }
    }
  }
}

TEST(QuantizedMatmul, PanelProductsOfBothPathsAgree) {
  // The AVX2 register tiles against the portable ones on every token remainder (1..6) and a
  // partial panel; y's columns past the panel's rows stay untouched.
  const int in = 29;
  for (int rows : {cpu::kPanelRows, 5}) {
    for (int tokens = 1; tokens <= 13; ++tokens) {
      SCOPED_TRACE("rows=" + std::to_string(rows) + " tokens=" + std::to_string(tokens));
      const std::vector<float> w = random_activations(static_cast<size_t>(rows) * in, 7 + tokens);
      const std::vector<float> x = random_activations(static_cast<size_t>(tokens) * in, 70 + tokens);
      std::vector<float> panel(static_cast<size_t>(cpu::kPanelRows) * in);
      cpu::pack_panel(w.data(), rows, in, panel.data());
      const int64_t stride = cpu::kPanelRows + 3;
      std::vector<float> simd(static_cast<size_t>(tokens * stride), -7.f), portable(simd.size(), -7.f);
      cpu::panel_product(x.data(), tokens, in, panel.data(), rows, simd.data(), stride, cpu::SimdPath::Auto);
      cpu::panel_product(x.data(), tokens, in, panel.data(), rows, portable.data(), stride, cpu::SimdPath::Portable);
      for (int t = 0; t < tokens; ++t) {
        for (int r = 0; r < stride; ++r) {
          const size_t i = static_cast<size_t>(t * stride + r);
          if (r >= rows) {
            ASSERT_EQ(simd[i], -7.f) << "t=" << t << " r=" << r;
            ASSERT_EQ(portable[i], -7.f) << "t=" << t << " r=" << r;
            continue;
          }
          double expected = 0;
          for (int k = 0; k < in; ++k) expected += static_cast<double>(x[static_cast<size_t>(t * in + k)]) * w[static_cast<size_t>(r * in + k)];
          ASSERT_NEAR(portable[i], expected, 1e-4) << "t=" << t << " r=" << r;
          ASSERT_NEAR(simd[i], portable[i], 1e-4) << "t=" << t << " r=" << r;
        }
      }
    }
  }
  if (!cpu::cpu_has_avx2_fma()) GTEST_SKIP() << "no AVX2+FMA on this CPU: the SIMD path was the portable one";
}

TEST(QuantizedMatmul, SimdAndPortableDequantizersAgree) {
  for (GgmlType type : kTypes) {
    SCOPED_TRACE(kascade::engine::to_string(type));
    const int64_t block = kascade::engine::ggml_block_elements(type);
    const int rows = 7, cols = static_cast<int>(block == 1 ? 40 : 2 * block);
    const QuantizedMatrix m = random_matrix(type, rows, cols, 5);
    std::vector<float> scalar(static_cast<size_t>(rows) * cols), portable(scalar.size()), simd(scalar.size());
    kascade::engine::dequantize(type, m.data.data(), static_cast<int64_t>(scalar.size()), scalar.data());
    // Rows 2..6 only: the row offset must be honoured.
    cpu::dequantize_rows(m, 2, rows - 2, portable.data(), cpu::SimdPath::Portable);
    cpu::dequantize_rows(m, 2, rows - 2, simd.data(), cpu::SimdPath::Auto);
    for (size_t i = 0; i < static_cast<size_t>(rows - 2) * cols; ++i) {
      const float expected = scalar[2 * static_cast<size_t>(cols) + i];
      // The portable build has no FMA: the same products and sums as dequantize().
      ASSERT_EQ(portable[i], expected) << "element " << i;
      // AVX2 may fuse d * q + m: one rounding less.
      ASSERT_NEAR(simd[i], expected, 1e-6 * std::fabs(expected) + 1e-7) << "element " << i;
    }
  }
  if (!cpu::cpu_has_avx2_fma()) GTEST_SKIP() << "no AVX2+FMA on this CPU: the SIMD path was the portable one";
}

TEST(QuantizedModel, DefaultModelKeepsItsBlockTypesAndMatchesFp32) {
  const auto& gguf = kascade::engine::test::default_gguf();
  const kascade::engine::Model quantized =
      kascade::engine::load_model(gguf, kascade::engine::WeightStorage::Quantized);
  const kascade::engine::Model& fp32 = kascade::engine::test::default_model();
  ASSERT_TRUE(quantized.has_quantized_weights());
  EXPECT_FALSE(fp32.has_quantized_weights());
  EXPECT_TRUE(quantized.layers[0].wq.empty());
  EXPECT_EQ(quantized.layers[0].quantized.wq.type, gguf.tensor("blk.0.attn_q.weight").type);
  EXPECT_EQ(quantized.token_embd_quantized.type, gguf.tensor("token_embd.weight").type);
  // The model in memory is its file's size, not four bytes a weight.
  EXPECT_LT(quantized.weight_bytes() * 3, fp32.weight_bytes());

  const std::vector<int32_t> ids = kascade::engine::test::default_tokenizer().encode("The quick brown fox jumps over");
  auto a = kascade::engine::make_backend("cpu", quantized, nullptr, {});
  auto b = kascade::engine::make_backend("cpu", fp32, nullptr, {});
  const std::vector<float> la = a->forward(ids, true), lb = b->forward(ids, true);
  ASSERT_EQ(la.size(), lb.size());
  double worst = 0;
  for (size_t i = 0; i < la.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(la[i] - lb[i])));
  EXPECT_LT(worst, 1e-3);
  // Decode steps read the same weights.
  EXPECT_LT(std::fabs(a->forward({ids[0]}, false)[0] - b->forward({ids[0]}, false)[0]), 1e-3);
  EXPECT_THROW(kascade::engine::make_backend("cuda", quantized, nullptr, {}), kascade::Error);
}

TEST(QuantizedModel, GoldenLogitsOfTransformers) {
  // test_golden.cpp's check on the model loaded with its Q4_1 / Q8_0 blocks kept as they are.
  const kascade::engine::Model model =
      kascade::engine::load_model(kascade::engine::test::default_gguf(), kascade::engine::WeightStorage::Quantized);
  std::ifstream f(std::string(KASCADE_TEST_DATA) + "/engine/golden_logits.json");
  const nlohmann::json doc = nlohmann::json::parse(f);
  int positions = 0, top1 = 0, top1_checked = 0;
  for (const auto& p : doc["prompts"]) {
    const std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
    kascade::engine::BackendOptions opt;
    opt.prefill_chunk = 128;
    opt.cpu_kv_cache = kascade::DType::F32;  // as test_golden.cpp's 5e-4 check
    auto backend = kascade::engine::make_backend("cpu", model, nullptr, opt);
    const std::vector<float> logits = backend->forward(ids, true);
    const int vocab = model.config.vocab;
    for (size_t t = 0; t < ids.size(); ++t) {
      const float* row = logits.data() + t * vocab;
      const std::vector<int> top_ids = p["top_ids"][t].get<std::vector<int>>();
      const std::vector<double> top_values = p["top_values"][t].get<std::vector<double>>();
      for (size_t k = 0; k < top_ids.size(); ++k) {
        ASSERT_LE(std::fabs(row[top_ids[k]] - top_values[k]), 5e-4) << "position " << t << ", token " << top_ids[k];
      }
      if (top_values[0] - top_values[1] > 1e-2) {
        ++top1_checked;
        top1 += static_cast<int>(std::max_element(row, row + vocab) - row) == top_ids[0];
      }
      ++positions;
    }
  }
  EXPECT_EQ(top1, top1_checked);
  EXPECT_GT(top1_checked, positions * 9 / 10);
}

}  // namespace

namespace {
// This process's resident set in KiB (/proc/self/status VmRSS), or -1 where it cannot be read.
long resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}
}  // namespace

TEST(QuantizedModel, LoadingReleasesTheFilePagesItCopied) {
  // A model loaded from a mapped GGUF is resident once (its own copy), not twice: the mapping's
  // pages are dropped after each tensor is copied, and reading them again gives the same bytes.
  const kascade::engine::GgufFile gguf =
      kascade::engine::GgufFile::open(kascade::engine::resolve_model_path("default"));
  if (resident_kib() < 0) GTEST_SKIP() << "no /proc/self/status here";
  uint64_t tensor_bytes = 0, checksum = 0;
  const long before = resident_kib();
  for (const auto& t : gguf.tensors()) {
    tensor_bytes += t.nbytes;
    for (uint64_t i = 0; i < t.nbytes; i += 512) checksum += t.data[i];  // faults every page in
  }
  const long touched = resident_kib();
  ASSERT_GT(touched - before, static_cast<long>(tensor_bytes / 1024 / 2)) << "the mapping was not resident";
  for (const auto& t : gguf.tensors()) gguf.release_tensor_pages(t);
  const long released = resident_kib();
  EXPECT_LT(released - before, static_cast<long>(tensor_bytes / 1024 / 10));
  uint64_t again = 0;
  for (const auto& t : gguf.tensors()) {
    for (uint64_t i = 0; i < t.nbytes; i += 512) again += t.data[i];
  }
  EXPECT_EQ(again, checksum);
  for (const auto& t : gguf.tensors()) gguf.release_tensor_pages(t);

  // A buffer given to parse() belongs to the caller: releasing must leave it as it is (an
  // anonymous page dropped by madvise would read back as zeros).
  std::ifstream file(kascade::engine::resolve_model_path("default"), std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const kascade::engine::GgufFile parsed = kascade::engine::GgufFile::parse(bytes.data(), bytes.size(), "buffer");
  const auto& embd = parsed.tensor("token_embd.weight");
  const std::vector<uint8_t> copy(embd.data, embd.data + embd.nbytes);
  parsed.release_tensor_pages(embd);
  EXPECT_TRUE(std::equal(copy.begin(), copy.end(), embd.data));
}
