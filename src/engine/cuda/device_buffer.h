// src/engine/cuda/device_buffer.h — an owning, grow-only device allocation.
//
// The backend sizes its scratch and cache buffers by the largest call seen so far; growing
// frees the old block (after the device is idle) and, when asked, keeps its leading bytes.
//
//   DeviceBuffer b;  b.reserve(bytes);  float* p = b.as<float>();
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "common/cuda_check.h"

namespace kascade::engine::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept { swap(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    swap(other);
    return *this;
  }
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);  // no throw from a destructor; a failure here has no remedy
  }

  // Makes the buffer at least `bytes` long; with keep_bytes > 0 the first keep_bytes survive.
  void reserve(size_t bytes, size_t keep_bytes = 0) {
    if (bytes <= bytes_) return;
    void* grown = nullptr;
    KASCADE_CUDA_CHECK(cudaMalloc(&grown, bytes));
    if (keep_bytes > 0 && data_) {
      const cudaError_t status = cudaMemcpy(grown, data_, keep_bytes < bytes_ ? keep_bytes : bytes_,
                                            cudaMemcpyDeviceToDevice);
      if (status != cudaSuccess) {
        cudaFree(grown);
        ::kascade::cuda::throw_cuda_error("cudaMemcpy (growing a device buffer)", status);
      }
    }
    if (data_) KASCADE_CUDA_CHECK(cudaFree(data_));
    data_ = grown;
    bytes_ = bytes;
  }

  // Allocates exactly `bytes` and copies `host` into it.
  void upload(const void* host, size_t bytes) {
    reserve(bytes);
    KASCADE_CUDA_CHECK(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice));
  }

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

}  // namespace kascade::engine::cuda
