// libFuzzer target for config.json of a Hugging Face model directory: any input must give a
// ModelConfig or throw kascade::Error, never crash or read out of bounds.
#include <cstddef>
#include <cstdint>

#include "hf_dir.h"
#include "kascade/engine/model.h"
#include "kascade/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)kascade::engine::read_hf_config(kascade::fuzz::write_hf_file("config.json", data, size));
  } catch (const kascade::Error&) {
  }
  return 0;
}
