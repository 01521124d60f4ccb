// Dequantizers of the GGUF block formats to fp32. Block layouts follow ggml's definitions:
//   Q8_0 (32 values, 34 B):  f16 d, int8 q[32]                         x = d * q
//   Q4_0 (32 values, 18 B):  f16 d, nibbles[16] (low nibbles first)     x = d * (q - 8)
//   Q4_1 (32 values, 20 B):  f16 d, f16 m, nibbles[16]                  x = d * q + m
//   Q4_K (256 values, 144 B): f16 d, f16 dmin, 12 B of 6-bit (scale, min) pairs for 8 sub-blocks
//        of 32, nibbles[128]                                           x = d*sc * q - dmin*mn
//   Q6_K (256 values, 210 B): ql[128] low nibbles, qh[64] high 2 bits, int8 scales[16], f16 d
//                                                                      x = d * sc * (q - 32)
// Every format is little-endian; the f16 scales use the same conversion as the rest of kascade.
#include <cstring>

#include "kascade/engine/gguf.h"
#include "kascade/error.h"
#include "kascade/tensor.h"

namespace kascade::engine {

namespace {

constexpr int64_t kQ8_0Block = 32, kQ8_0Bytes = 34;
constexpr int64_t kQ4_0Block = 32, kQ4_0Bytes = 18;
constexpr int64_t kQ4_1Block = 32, kQ4_1Bytes = 20;
constexpr int64_t kSuperBlock = 256;  // the k-quant super-block
constexpr int64_t kQ4_KBytes = 144, kQ6_KBytes = 210;

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_float(h);
}

void dequantize_q8_0(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += kQ8_0Bytes, dst += kQ8_0Block) {
    const float d = load_f16(src);
    const int8_t* q = reinterpret_cast<const int8_t*>(src + 2);
    for (int j = 0; j < kQ8_0Block; ++j) dst[j] = d * static_cast<float>(q[j]);
  }
}

void dequantize_q4_0(const uint8_t* src, int64_t blocks, float* dst) {
  constexpr int half = kQ4_0Block / 2;
  for (int64_t b = 0; b < blocks; ++b, src += kQ4_0Bytes, dst += kQ4_0Block) {
    const float d = load_f16(src);
    const uint8_t* q = src + 2;
    for (int j = 0; j < half; ++j) {
      dst[j] = d * static_cast<float>((q[j] & 0x0F) - 8);
      dst[j + half] = d * static_cast<float>((q[j] >> 4) - 8);
    }
  }
}

void dequantize_q4_1(const uint8_t* src, int64_t blocks, float* dst) {
  constexpr int half = kQ4_1Block / 2;
  for (int64_t b = 0; b < blocks; ++b, src += kQ4_1Bytes, dst += kQ4_1Block) {
    const float d = load_f16(src);
    const float m = load_f16(src + 2);
    const uint8_t* q = src + 4;
    for (int j = 0; j < half; ++j) {
      dst[j] = d * static_cast<float>(q[j] & 0x0F) + m;
      dst[j + half] = d * static_cast<float>(q[j] >> 4) + m;
    }
  }
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K super-block, packed in 12 bytes.
void q4_k_scale_min(int j, const uint8_t* packed, int& scale, int& min) {
  if (j < 4) {
    scale = packed[j] & 63;
    min = packed[j + 4] & 63;
  } else {
    scale = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
    min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

void dequantize_q4_k(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += kQ4_KBytes) {
    const float d = load_f16(src);
    const float dmin = load_f16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* q = src + 16;
    // Each 32-byte chunk of nibbles holds two sub-blocks: low nibbles, then high nibbles.
    for (int chunk = 0; chunk < 4; ++chunk, q += 32) {
      int sc_lo, mn_lo, sc_hi, mn_hi;
      q4_k_scale_min(2 * chunk, scales, sc_lo, mn_lo);
      q4_k_scale_min(2 * chunk + 1, scales, sc_hi, mn_hi);
      const float d_lo = d * sc_lo, m_lo = dmin * mn_lo;
      const float d_hi = d * sc_hi, m_hi = dmin * mn_hi;
      for (int l = 0; l < 32; ++l) *dst++ = d_lo * static_cast<float>(q[l] & 0x0F) - m_lo;
      for (int l = 0; l < 32; ++l) *dst++ = d_hi * static_cast<float>(q[l] >> 4) - m_hi;
    }
  }
}

void dequantize_q6_k(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += kQ6_KBytes) {
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
    const float d = load_f16(src + 208);
    // Two halves of 128 values; each reads 64 bytes of ql, 32 of qh and 8 scales.
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, dst += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        dst[l] = d * sc[is] * q1;
        dst[l + 32] = d * sc[is + 2] * q2;
        dst[l + 64] = d * sc[is + 4] * q3;
        dst[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

}  // namespace

int64_t ggml_block_elements(GgmlType t) {
  switch (t) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: return 1;
    case GgmlType::Q8_0: return kQ8_0Block;
    case GgmlType::Q4_0: return kQ4_0Block;
    case GgmlType::Q4_1: return kQ4_1Block;
    case GgmlType::Q4_K: case GgmlType::Q6_K: return kSuperBlock;
  }
  KASCADE_FAIL("ggml_block_elements: unknown type " << static_cast<uint32_t>(t));
}

int64_t ggml_block_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 4;
    case GgmlType::F16: case GgmlType::BF16: return 2;
    case GgmlType::Q8_0: return kQ8_0Bytes;
    case GgmlType::Q4_0: return kQ4_0Bytes;
    case GgmlType::Q4_1: return kQ4_1Bytes;
    case GgmlType::Q4_K: return kQ4_KBytes;
    case GgmlType::Q6_K: return kQ6_KBytes;
  }
  KASCADE_FAIL("ggml_block_bytes: unknown type " << static_cast<uint32_t>(t));
}

void dequantize(GgmlType type, const uint8_t* src, int64_t count, float* dst) {
  const int64_t block = ggml_block_elements(type);
  KASCADE_CHECK(count >= 0 && count % block == 0,
                "dequantize: " << count << " elements is not a multiple of the " << to_string(type) << " block of "
                               << block);
  const int64_t blocks = count / block;
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < count; ++i) dst[i] = load_f16(src + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_float(h);
      }
      return;
    case GgmlType::Q8_0: dequantize_q8_0(src, blocks, dst); return;
    case GgmlType::Q4_0: dequantize_q4_0(src, blocks, dst); return;
    case GgmlType::Q4_1: dequantize_q4_1(src, blocks, dst); return;
    case GgmlType::Q4_K: dequantize_q4_k(src, blocks, dst); return;
    case GgmlType::Q6_K: dequantize_q6_k(src, blocks, dst); return;
  }
  KASCADE_FAIL("dequantize: unknown type " << static_cast<uint32_t>(type));
}

}  // namespace kascade::engine
