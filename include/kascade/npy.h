// kascade/npy.h — strict reader and writer of NumPy .npy files (format versions 1, 2 and 3).
//
// The CPU oracle's case files, the test fixtures and the calibration outputs are .npy arrays.
// The reader accepts exactly what the project needs and rejects everything else with a
// kascade::Error that names the file (or buffer) and the problem:
//   - little-endian '<f4', '<f2', '<i4', '<i8' ('|' byte order is not accepted for these);
//   - C order only ('fortran_order': True is an error);
//   - a header dictionary with exactly the keys 'descr', 'fortran_order' and 'shape';
//   - a shape tuple of non-negative integers whose element count and byte size fit in size_t;
//   - data whose size equals the remaining bytes exactly (truncated or trailing bytes are errors).
// Dtypes map to kascade::DType: f4 -> F32, f2 -> F16, i4 -> I32, i8 -> I64.
//
//   kascade::NpyArray q = kascade::read_npy(case_dir + "/q.npy");   // errors: "…/q.npy: …"
//   KASCADE_CHECK(q.dtype == kascade::DType::F32 && q.shape.size() == 3, …);
//   const float* qf = q.data<float>();
//   kascade::write_npy(out_dir + "/out.npy", kascade::DType::F32, {hq, nq, d}, out.data());
//
// write_npy writes a version 1 header padded so that the data starts at a multiple of 64 bytes,
// into `path.tmp` first and renames it over `path`, so an error never leaves a partial file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "kascade/error.h"
#include "kascade/tensor.h"

namespace kascade {

struct NpyArray {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;   // empty for a 0-d array (one element)
  std::vector<uint8_t> bytes;   // numel() * dtype_size(dtype) bytes, C order, little-endian

  int64_t numel() const {
    // A zero extent anywhere makes the array empty; checking it first keeps the product of the
    // other extents (which the reader allows to be huge then) from overflowing.
    for (int64_t d : shape)
      if (d == 0) return 0;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  // Typed access; the element type must match the dtype (float for F32, int32_t for I32, ...).
  // F16 data is read as uint16_t bit patterns (see f16_to_float in tensor.h).
  // Throws kascade::Error when T does not match.
  template <class T>
  const T* data() const {
    static_assert(std::is_arithmetic<T>::value, "NpyArray::data<T>: T must be an arithmetic type");
    check_element_type(sizeof(T), std::is_floating_point<T>::value);
    return reinterpret_cast<const T*>(bytes.data());
  }
  template <class T>
  T* data() {
    static_assert(std::is_arithmetic<T>::value, "NpyArray::data<T>: T must be an arithmetic type");
    check_element_type(sizeof(T), std::is_floating_point<T>::value);
    return reinterpret_cast<T*>(bytes.data());
  }

 private:
  void check_element_type(size_t element_size, bool is_floating_point) const;
};

// Parses the bytes of a whole .npy file; `name` (usually the path) prefixes every error.
NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& name);

// Reads and parses a .npy file; errors name the path ("q.npy: ...").
NpyArray read_npy(const std::string& path);

// The bytes write_npy writes: a version 1 header padded to a 64-byte boundary, then the data
// (numel(shape) * dtype_size(dtype) bytes read from `data`; may be null when that is 0).
// BF16 has no .npy spelling and is rejected.
std::vector<uint8_t> encode_npy(DType dtype, const std::vector<int64_t>& shape, const void* data);

// Writes encode_npy(...) to `path` via `path.tmp` and a rename.
void write_npy(const std::string& path, DType dtype, const std::vector<int64_t>& shape, const void* data);

}  // namespace kascade
