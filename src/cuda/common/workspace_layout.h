// src/cuda/common/workspace_layout.h — named, aligned slices of one caller-owned buffer.
//
// A launch lays out its scratch from sizes alone, the same way for the size query and the call,
// so that both agree; each slice keeps its offset and element count under a name of its own:
//   WorkspaceLayout layout;                                // 256-byte aligned slices
//   const WorkspaceSlice<float> lse = layout.slice<float>(rows);
//   const WorkspaceSlice<float> mass = layout.slice<float>(chunk_elems);
//   size_t bytes = layout.total_bytes();                   // what the caller allocates
//   float* p = lse.in(ws.data);
// Host code only; it reads no device memory.
#pragma once

#include <cstddef>

namespace kascade::cuda {

// Scratch slices start on this boundary (cudaMalloc's alignment; room for vector loads).
constexpr size_t kWorkspaceAlignment = 256;

template <typename T>
struct WorkspaceSlice {
  size_t offset = 0;  // bytes from the start of the buffer
  size_t count = 0;   // elements of T

  T* in(void* base) const { return reinterpret_cast<T*>(static_cast<char*>(base) + offset); }
  const T* in(const void* base) const { return reinterpret_cast<const T*>(static_cast<const char*>(base) + offset); }
};

class WorkspaceLayout {
 public:
  explicit WorkspaceLayout(size_t alignment = kWorkspaceAlignment) : alignment_(alignment) {}

  // The next slice of `count` elements, at the current (aligned) end.
  template <typename T>
  WorkspaceSlice<T> slice(size_t count) {
    const WorkspaceSlice<T> s{total_, count};
    total_ = aligned(total_ + count * sizeof(T));
    return s;
  }

  // Bytes of all slices so far, each rounded up to the alignment.
  size_t total_bytes() const { return total_; }

 private:
  size_t aligned(size_t bytes) const { return (bytes + alignment_ - 1) / alignment_ * alignment_; }

  size_t alignment_;
  size_t total_ = 0;
};

}  // namespace kascade::cuda
