// src/engine/mapped_file.h — a whole regular file mapped read-only, for the weight readers (GGUF,
// safetensors) that parse and validate bytes in place. Internal to the engine library.
//
//   MappedFile file(path, "empty file");   // throws naming the path
//   parse(file.data(), file.size());
//   release_mapped_pages(tensor_bytes, n);  // after copying them out: drop them from RSS
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kascade::engine {

class MappedFile {
 public:
  // Throws kascade::Error "<path>: ..." when the file cannot be opened, is not a regular file or
  // cannot be mapped, and "<path>: <empty_message>" when it is empty.
  MappedFile(const std::string& path, const std::string& empty_message);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return static_cast<const uint8_t*>(addr_); }
  size_t size() const { return size_; }

 private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

// Drops the whole pages inside [p, p + n) of a read-only file mapping from this process's
// resident set (madvise MADV_DONTNEED): a later read faults them in again from the file, so the
// bytes are unchanged. Weight loaders call it once a tensor is copied into its own buffer, so
// that the model is not resident twice (mapping + copy). A no-op where madvise is unavailable.
void release_mapped_pages(const void* p, size_t n);

}  // namespace kascade::engine
