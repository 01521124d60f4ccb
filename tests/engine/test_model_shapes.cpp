// Known model shapes (random-weight benchmarks) and the RoPE tables both backends share.
#include <gtest/gtest.h>

#include <cmath>

#include "kascade/engine/model.h"
#include "kascade/error.h"

using kascade::engine::known_model_shape;
using kascade::engine::rope_inverse_frequencies;

TEST(ModelShapes, Llama31Has8BShapeAndLlama3Rope) {
  const auto c = known_model_shape("llama-3.1-8b");
  EXPECT_EQ(c.layers, 32);
  EXPECT_EQ(c.dim, 4096);
  EXPECT_EQ(c.ffn, 14336);
  EXPECT_EQ(c.hq, 32);
  EXPECT_EQ(c.hkv, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab, 128256);
  ASSERT_EQ(c.rope_freq_factors.size(), 64u);
  // High frequencies are kept, the lowest are slowed by the factor 8.
  EXPECT_FLOAT_EQ(c.rope_freq_factors.front(), 1.f);
  EXPECT_FLOAT_EQ(c.rope_freq_factors.back(), 8.f);
  const std::vector<float> inv = rope_inverse_frequencies(c);
  ASSERT_EQ(inv.size(), 64u);
  EXPECT_FLOAT_EQ(inv[0], 1.f);
  EXPECT_FLOAT_EQ(inv[63], static_cast<float>(1.0 / std::pow(500000.0, 126.0 / 128) / 8));
}

TEST(ModelShapes, SmolLM2HasTiedEmbeddingsAndPlainRope) {
  const auto c = known_model_shape("smollm2-135m");
  EXPECT_EQ(c.layers, 30);
  EXPECT_EQ(c.hq, 9);
  EXPECT_EQ(c.hkv, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_TRUE(c.rope_freq_factors.empty());
  EXPECT_FLOAT_EQ(rope_inverse_frequencies(c)[1], static_cast<float>(1.0 / std::pow(100000.0, 2.0 / 64)));
}

TEST(ModelShapes, UnknownNameIsAnErrorNamingTheKnownOnes) {
  try {
    known_model_shape("llama-70b");
    FAIL() << "no error";
  } catch (const kascade::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model shape 'llama-70b' (known: llama-3.1-8b, smollm2-135m)"),
              std::string::npos)
        << e.what();
  }
}
