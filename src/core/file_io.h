// src/core/file_io.h — whole-file reads and atomic writes shared by the core's parsers and
// writers (npy, plan). Internal to src/core: not part of the public headers.
//
//   std::vector<uint8_t> bytes = kascade::detail::read_file(path, kMaxPlanBytes);
//   kascade::detail::write_file_atomically(path, text.data(), text.size());
//
// Errors are kascade::Error naming the path: "q.npy: cannot open (No such file or directory)".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kascade::detail {

// Reads all of `path`. Throws if it cannot be opened, is a directory, fails to read, or holds
// more than `max_bytes` bytes.
std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes);

// Writes `size` bytes to `path.tmp`, then renames it over `path`: readers see the old file or the
// complete new one, and a failure leaves no partial output (the temporary is removed).
void write_file_atomically(const std::string& path, const void* data, size_t size);

}  // namespace kascade::detail
