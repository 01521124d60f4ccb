// libFuzzer target for the safetensors reader: any input must parse or throw kascade::Error,
// never crash, read out of bounds or allocate without bound. When it parses, every tensor is
// converted to fp32, so the recorded byte ranges are exercised too.
#include <cstddef>
#include <cstdint>

#include "kascade/engine/safetensors.h"
#include "kascade/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kascade::engine::SafetensorsFile f = kascade::engine::SafetensorsFile::parse(data, size, "fuzz.safetensors");
    for (const auto& t : f.tensors()) {
      if (t.elements() <= (1 << 20)) (void)kascade::engine::to_float(t);
    }
  } catch (const kascade::Error&) {
  }
  return 0;
}
