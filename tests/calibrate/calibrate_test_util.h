// Helpers shared by the calibration tests: owned tensors behind TensorViews, and an assertion
// that a statement throws kascade::Error whose message contains a given phrase.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

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
