// Helpers shared by the calibration tests: owned tensors behind TensorViews, one prompt's layer
// statistics for a one-kv-head model, and an assertion that a statement throws kascade::Error
// whose message contains a given phrase.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kascade/budget.h"
#include "kascade/calibrate.h"
#include "kascade/error.h"
#include "kascade/tensor.h"

namespace kascade::testing {

// A contiguous f32 tensor that owns its data.
struct OwnedTensor {
  std::vector<float> data;
  TensorView view;

  OwnedTensor(std::initializer_list<int64_t> dims, float fill = 0.0f) {
    int64_t count = 1;
    for (int64_t d : dims) count *= d;
    data.assign(static_cast<size_t>(count), fill);
    view = TensorView::contiguous(data.data(), DType::F32, dims);
  }
  OwnedTensor(const OwnedTensor&) = delete;
  OwnedTensor& operator=(const OwnedTensor&) = delete;

  float& at(int64_t a, int64_t b) { return data[static_cast<size_t>(a * view.stride[0] + b * view.stride[1])]; }
  float& at(int64_t a, int64_t b, int64_t c) {
    return data[static_cast<size_t>(a * view.stride[0] + b * view.stride[1] + c * view.stride[2])];
  }
};

// Layer input of one prompt for a one-kv-head model: pooled rows per tile (only i < b matter)
// and the diagonal mass per tile.
inline void add_single_head_layer(CalibrationStats& stats, int layer, int64_t n, int tile,
                                  const std::vector<std::vector<float>>& rows, const std::vector<float>& diagonal) {
  const int64_t tiles = num_tiles(0, n, tile);
  OwnedTensor pooled({1, tiles, n});
  OwnedTensor diag({1, tiles});
  for (int64_t tau = 0; tau < tiles; ++tau) {
    for (size_t i = 0; i < rows[static_cast<size_t>(tau)].size(); ++i)
      pooled.at(0, tau, static_cast<int64_t>(i)) = rows[static_cast<size_t>(tau)][i];
    diag.at(0, tau) = diagonal[static_cast<size_t>(tau)];
  }
  stats.add_layer(layer, pooled.view, diag.view);
}

}  // namespace kascade::testing

// Fails unless `statement` throws kascade::Error with `phrase` in its message.
#define EXPECT_KASCADE_ERROR(statement, phrase)                                                        \
  do {                                                                                                 \
    try {                                                                                              \
      statement;                                                                                       \
      ADD_FAILURE() << "expected kascade::Error containing \"" << (phrase) << "\" from " #statement;   \
    } catch (const ::kascade::Error& error_) {                                                         \
      EXPECT_NE(std::string(error_.what()).find(phrase), std::string::npos)                           \
          << "message \"" << error_.what() << "\" lacks \"" << (phrase) << "\"";                       \
    }                                                                                                  \
  } while (0)
