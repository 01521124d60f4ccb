// libFuzzer target for the GGUF reader: any input must parse or throw kascade::Error, never
// crash, read out of bounds or allocate without bound. When it parses, every tensor is
// dequantized, so the recorded extents are exercised too.
#include <cstddef>
#include <cstdint>

#include "kascade/engine/gguf.h"
#include "kascade/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    kascade::engine::GgufFile f = kascade::engine::GgufFile::parse(data, size, "fuzz.gguf");
    for (const auto& t : f.tensors()) {
      if (t.elements() <= (1 << 20)) (void)f.dequantize(t);
    }
  } catch (const kascade::Error&) {
  }
  return 0;
}
