// fuzz/hf_dir.h — the Hugging Face loaders read whole directories: a fuzz input becomes one file
// of a private temporary directory (created once per process), which the target then loads.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace kascade::fuzz {

// Writes data[0..size) to <dir>/<name> and returns dir.
inline std::string write_hf_file(const char* name, const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string d = std::string(tmp && *tmp ? tmp : "/tmp") + "/kascade-fuzz-hf-" + std::to_string(getpid());
    std::string cmd = "mkdir -p '" + d + "'";
    if (std::system(cmd.c_str()) != 0) std::abort();
    return d;
  }();
  const std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return dir;
}

}  // namespace kascade::fuzz
