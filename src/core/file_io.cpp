// Whole-file reads and atomic writes (see file_io.h).
#include "file_io.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "kascade/error.h"

namespace kascade::detail {

std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  // fopen succeeds on a directory and the read then fails obscurely: say what it is up front.
  KASCADE_CHECK(!std::filesystem::is_directory(path, ec), path << ": is a directory, not a file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  KASCADE_CHECK(f != nullptr, path << ": cannot open (" << std::strerror(errno) << ")");
  std::vector<uint8_t> bytes;
  const auto file_size = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(static_cast<size_t>(std::min<uintmax_t>(file_size, max_bytes)) + 1);
  // Pipes and other streams have no size: read in chunks whatever the file is.
  constexpr size_t kChunk = 1 << 20;
  size_t used = 0;
  bool too_large = false;
  while (true) {
    const size_t want = std::min(kChunk, max_bytes - used + 1);  // one byte more detects "too large"
    bytes.resize(used + want);
    const size_t got = std::fread(bytes.data() + used, 1, want, f);
    used += got;
    if (used > max_bytes) {
      too_large = true;
      break;
    }
    if (got < want) break;
  }
  const bool failed = std::ferror(f) != 0;
  const int read_errno = errno;
  std::fclose(f);
  KASCADE_CHECK(!failed, path << ": read error (" << std::strerror(read_errno) << ")");
  KASCADE_CHECK(!too_large, path << ": larger than " << max_bytes << " bytes");
  bytes.resize(used);
  return bytes;
}

void write_file_atomically(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  KASCADE_CHECK(f != nullptr, tmp << ": cannot create (" << std::strerror(errno) << ")");
  const bool written = size == 0 || std::fwrite(data, 1, size, f) == size;
  const int write_errno = errno;
  const bool closed = std::fclose(f) == 0;
  const int close_errno = errno;
  if (!written || !closed) {
    std::remove(tmp.c_str());
    KASCADE_FAIL(tmp << ": write failed (" << std::strerror(written ? close_errno : write_errno) << ")");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(tmp.c_str());
    KASCADE_FAIL(path << ": cannot rename " << tmp << " into place (" << std::strerror(rename_errno) << ")");
  }
}

}  // namespace kascade::detail
