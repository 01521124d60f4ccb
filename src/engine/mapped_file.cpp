// Read-only whole-file mappings (see mapped_file.h).
#include "mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kascade/error.h"

namespace kascade::engine {

MappedFile::MappedFile(const std::string& path, const std::string& empty_message) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KASCADE_CHECK(fd >= 0, path << ": cannot open: " << std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    KASCADE_FAIL(path << ": not a regular file");
  }
  if (st.st_size == 0) {
    ::close(fd);
    KASCADE_FAIL(path << ": " << empty_message);
  }
  void* addr = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  KASCADE_CHECK(addr != MAP_FAILED, path << ": mmap failed: " << std::strerror(map_errno));
  addr_ = addr;
  size_ = static_cast<size_t>(st.st_size);
}

MappedFile::~MappedFile() { munmap(addr_, size_); }

void release_mapped_pages(const void* p, size_t n) {
  const long page_size = sysconf(_SC_PAGESIZE);
  if (page_size <= 0 || n == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(page_size);
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  // Only pages wholly inside the range: a neighbouring tensor's bytes stay resident. Failure
  // costs memory, never correctness, so it is ignored.
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace kascade::engine
