// Fuzz target for the .npy reader (kascade/npy.h). Malformed input must end in kascade::Error
// and nothing else; accepted input must survive encode -> parse unchanged.
#include <cstdint>
#include <cstddef>

#include "kascade/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kascade::NpyArray array;
  try {
    array = kascade::parse_npy(data, size, "fuzz.npy");
  } catch (const kascade::Error&) {
    return 0;  // rejected with a message: the expected outcome for almost every input
  }
  // Accepted: the sizes must agree, and the writer's bytes must read back as the same array.
  if (static_cast<size_t>(array.numel()) * kascade::dtype_size(array.dtype) != array.bytes.size()) __builtin_trap();
  const std::vector<uint8_t> encoded = kascade::encode_npy(array.dtype, array.shape, array.bytes.data());
  const kascade::NpyArray again = kascade::parse_npy(encoded.data(), encoded.size(), "re-encoded.npy");
  if (again.dtype != array.dtype || again.shape != array.shape || again.bytes != array.bytes) __builtin_trap();
  return 0;
}
