// src/cuda/common/device_buffer.h — an owning, grow-only device allocation, for the host code that
// drives the kernels (the CUDA engine backend, the GPU test and benchmark programs).
//
//   DeviceBuffer b(bytes);              // or default-construct, then b.reserve(bytes)
//   b.upload(host, n);  b.download(host, n);  float* p = b.as<float>();
//
// Growing frees the old block (cudaFree waits for the device) and, when asked, keeps its leading
// bytes; buffers only move, never copy.
//
// device_buffer_totals() counts what every DeviceBuffer of the program holds right now, so that a
// long-running check can tell its own device memory apart from what the CUDA runtime, the driver
// and cuBLAS keep, which cudaMemGetInfo sees as well.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <utility>

#include "cuda_check.h"
#include "kascade/error.h"

namespace kascade::cuda {

struct DeviceBufferTotals {
  long long bytes = 0;   // bytes held by live DeviceBuffers
  long long blocks = 0;  // their cudaMalloc blocks
  bool operator==(const DeviceBufferTotals& o) const { return bytes == o.bytes && blocks == o.blocks; }
  bool operator!=(const DeviceBufferTotals& o) const { return !(*this == o); }
};

namespace detail {
inline std::atomic<long long> g_buffer_bytes{0};
inline std::atomic<long long> g_buffer_blocks{0};
inline void count_block(size_t bytes, int sign) {
  g_buffer_bytes += sign * static_cast<long long>(bytes);
  g_buffer_blocks += sign;
}
}  // namespace detail

inline DeviceBufferTotals device_buffer_totals() {
  return DeviceBufferTotals{detail::g_buffer_bytes.load(), detail::g_buffer_blocks.load()};
}

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { reserve(bytes); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept { swap(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    swap(other);
    return *this;
  }
  ~DeviceBuffer() {
    if (!data_) return;
    cudaFree(data_);  // no throw from a destructor; a failure here has no remedy
    detail::count_block(bytes_, -1);
  }

  // Makes the buffer at least `bytes` long; with keep_bytes > 0 the first keep_bytes survive.
  void reserve(size_t bytes, size_t keep_bytes = 0) {
    if (bytes <= bytes_) return;
    void* grown = nullptr;
    KASCADE_CUDA_CHECK(cudaMalloc(&grown, bytes));
    detail::count_block(bytes, +1);
    if (keep_bytes > 0 && data_) {
      const cudaError_t status = cudaMemcpy(grown, data_, keep_bytes < bytes_ ? keep_bytes : bytes_,
                                            cudaMemcpyDeviceToDevice);
      if (status != cudaSuccess) {
        cudaFree(grown);
        detail::count_block(bytes, -1);
        throw_cuda_error("cudaMemcpy (growing a device buffer)", status);
      }
    }
    if (data_) {
      KASCADE_CUDA_CHECK(cudaFree(data_));
      detail::count_block(bytes_, -1);
    }
    data_ = grown;
    bytes_ = bytes;
  }

  // Copies `bytes` from the host into the start of the buffer, growing it first if needed.
  void upload(const void* host, size_t bytes) {
    reserve(bytes);
    if (bytes > 0) KASCADE_CUDA_CHECK(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice));
  }
  // Copies the first `bytes` of the buffer to the host.
  void download(void* host, size_t bytes) const {
    KASCADE_CHECK(bytes <= bytes_, "DeviceBuffer: download of " << bytes << " bytes from " << bytes_);
    if (bytes > 0) KASCADE_CUDA_CHECK(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost));
  }

  void* get() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }
  bool empty() const { return data_ == nullptr; }

 private:
  void swap(DeviceBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
  }
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace kascade::cuda
