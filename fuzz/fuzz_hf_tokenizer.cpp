// libFuzzer target for tokenizer.json of a Hugging Face model directory: any input must give a
// tokenizer or throw kascade::Error, never crash or read out of bounds. A tokenizer that loads
// encodes and decodes a short text, so that the vocabulary and merges it built are exercised.
#include <cstddef>
#include <cstdint>

#include "hf_dir.h"
#include "kascade/engine/tokenizer.h"
#include "kascade/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kascade::engine::Tokenizer tok =
        kascade::engine::Tokenizer::from_hf_directory(kascade::fuzz::write_hf_file("tokenizer.json", data, size));
    (void)tok.decode(tok.encode("Hello world, 12345 caf\xc3\xa9!", false));
  } catch (const kascade::Error&) {
  }
  return 0;
}
