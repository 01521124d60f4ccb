// The fused element-wise kernels of the CUDA forward pass (see layer_kernels.h).
//
// They move a few MB per layer against the GEMMs' and attention's tens, so they favour one simple
// shape: one block per token row, fp32 arithmetic, 16-bit storage only where a GEMM or attention
// reads the result. Reductions (RMSNorm) are warp shuffles then one shared-memory pass.
#include "layer_kernels.h"

#include <cmath>

#include "common/cuda_check.h"
#include "kascade/error.h"

namespace kascade::engine::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kRowThreads = 256;   // threads per row block (8 warps)
constexpr int kEpilogueWarps = 4;  // warps per token in qkv_epilogue, one head each at a time
constexpr int kMaxHeadDim = 128;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (kRowThreads threads); every thread gets the total.
__device__ float block_sum(float v) {
  __shared__ float partial[kRowThreads / kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = 0;
#pragma unroll
  for (int w = 0; w < kRowThreads / kWarp; ++w) total += partial[w];
  __syncthreads();  // partial may be reused by the next call
  return total;
}

__global__ void embed_rows_kernel(const int32_t* ids, const bf16* table, int dim, float* x) {
  const int t = blockIdx.x;
  const bf16* row = table + static_cast<int64_t>(ids[t]) * dim;
  float* out = x + static_cast<int64_t>(t) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = __bfloat162float(row[i]);
}

__global__ void add_rms_norm_kernel(float* x, const float* delta, const float* weight, const int32_t* row_ids,
                                    int width, float eps, bf16* out) {
  const int64_t row = row_ids ? row_ids[blockIdx.x] : blockIdx.x;
  float* xr = x + row * width;
  const float* dr = delta ? delta + row * width : nullptr;
  float squares = 0;
  for (int i = threadIdx.x; i < width; i += kRowThreads) {
    float v = xr[i];
    if (dr) {
      v += dr[i];
      xr[i] = v;
    }
    squares += v * v;
  }
  const float inv = rsqrtf(block_sum(squares) / static_cast<float>(width) + eps);
  bf16* orow = out + static_cast<int64_t>(blockIdx.x) * width;
  for (int i = threadIdx.x; i < width; i += kRowThreads) orow[i] = __float2bfloat16_rn(xr[i] * inv * weight[i]);
}

// One block per token, kEpilogueWarps warps; warp w handles heads w, w + kEpilogueWarps, ... of the
// q, k and v heads in turn. A head is staged in the warp's shared slot so that RoPE can read the
// partner of each pair whatever the pairing.
__global__ void qkv_epilogue_kernel(const __grid_constant__ QkvEpilogueParams p) {
  __shared__ float cos_table[kMaxHeadDim / 2], sin_table[kMaxHeadDim / 2];
  __shared__ float head_buf[kEpilogueWarps][kMaxHeadDim];
  const int t = blockIdx.x;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int d = p.head_dim, half = d / 2;
  const int pos = p.positions[t];
  // Angles in fp64 as the CPU backend computes them: positions reach 1e5+ and fp32 angles would
  // lose the low frequencies' precision.
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const double angle = static_cast<double>(pos) / p.position_scale * static_cast<double>(p.inv_freq[i]);
    double s, c;
    sincos(angle, &s, &c);
    cos_table[i] = static_cast<float>(c);
    sin_table[i] = static_cast<float>(s);
  }
  __syncthreads();

  const int heads = p.hq + 2 * p.hkv;
  const int row_width = heads * d;
  const float* row = p.qkv + static_cast<int64_t>(t) * row_width;
  const int64_t slot = p.slots[t];
  const int64_t cache_row = slot / p.page_size * p.page_stride + slot % p.page_size * p.token_stride;
  float* buf = head_buf[warp];
  for (int head = warp; head < heads; head += kEpilogueWarps) {
    const bool is_q = head < p.hq, is_k = !is_q && head < p.hq + p.hkv;
    float squares = 0;
    for (int i = lane; i < d; i += kWarp) {
      float v = row[head * d + i];
      if (p.bias) v += p.bias[head * d + i];
      buf[i] = v;
      squares += v * v;
    }
    const float* norm = is_q ? p.q_norm : is_k ? p.k_norm : nullptr;
    if (norm) {
      const float inv = rsqrtf(warp_sum(squares) / static_cast<float>(d) + p.eps);
      __syncwarp();
      for (int i = lane; i < d; i += kWarp) buf[i] = buf[i] * inv * norm[i];
    }
    __syncwarp();
    if (is_q || is_k) {
      for (int i = lane; i < half; i += kWarp) {
        const int a = p.pairs == RopePairs::Adjacent ? 2 * i : i;
        const int b = p.pairs == RopePairs::Adjacent ? 2 * i + 1 : i + half;
        const float x0 = buf[a], x1 = buf[b];
        buf[a] = x0 * cos_table[i] - x1 * sin_table[i];
        buf[b] = x0 * sin_table[i] + x1 * cos_table[i];
      }
      __syncwarp();
    }
    bf16* dst;
    if (is_q) {
      dst = p.q_out + (static_cast<int64_t>(t) * p.hq + head) * d;
    } else if (is_k) {
      dst = p.k_pool + cache_row + static_cast<int64_t>(head - p.hq) * d;
    } else {
      dst = p.v_pool + cache_row + static_cast<int64_t>(head - p.hq - p.hkv) * d;
    }
    for (int i = lane; i < d; i += kWarp) dst[i] = __float2bfloat16_rn(buf[i]);
    __syncwarp();  // buf is rewritten by the warp's next head
  }
}

__global__ void swiglu_kernel(const float* gate_up, int ffn, bf16* out) {
  const int64_t t = blockIdx.x;
  const float* gate = gate_up + t * 2 * ffn;
  const float* up = gate + ffn;
  bf16* o = out + t * ffn;
  for (int i = threadIdx.x; i < ffn; i += blockDim.x) {
    const float g = gate[i];
    o[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * up[i]);
  }
}

// One warp per output o: lane l reads weight elements o*in + 8l + 256j (16 bytes) and the same
// slice of x, so each weight byte is read once and x comes from L1/L2.
constexpr int kGemvWarps = 8;         // outputs per block
constexpr int kGemvElemsPerLoad = 8;  // bf16 per 16-byte load
constexpr int kGemvUnroll = 4;        // loads in flight per lane

__global__ void gemv_kernel(const bf16* __restrict__ x, int in, const bf16* __restrict__ w, int out,
                            float* __restrict__ y) {
  const int lane = threadIdx.x % kWarp;
  const int o = blockIdx.x * kGemvWarps + threadIdx.x / kWarp;
  if (o >= out) return;
  const bf16* wrow = w + static_cast<int64_t>(o) * in;
  float acc = 0.f;
  constexpr int kStride = kWarp * kGemvElemsPerLoad;
#pragma unroll kGemvUnroll
  for (int k = lane * kGemvElemsPerLoad; k < in; k += kStride) {
    const uint4 wv = __ldg(reinterpret_cast<const uint4*>(wrow + k));
    const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + k));
    const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&wv);
    const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
    for (int i = 0; i < kGemvElemsPerLoad / 2; ++i) {
      const float2 wf = __bfloat1622float2(wp[i]), xf = __bfloat1622float2(xp[i]);
      acc = fmaf(xf.x, wf.x, acc);
      acc = fmaf(xf.y, wf.y, acc);
    }
  }
  acc = warp_sum(acc);
  if (lane == 0) y[o] = acc;
}

}  // namespace

void embed_rows(const int32_t* ids, int tokens, const bf16* table, int dim, float* x, cudaStream_t stream) {
  if (tokens == 0) return;
  embed_rows_kernel<<<tokens, kRowThreads, 0, stream>>>(ids, table, dim, x);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

void add_rms_norm(float* x, const float* delta, const float* weight, const int32_t* row_ids, int rows, int width,
                  float eps, bf16* out, cudaStream_t stream) {
  if (rows == 0) return;
  add_rms_norm_kernel<<<rows, kRowThreads, 0, stream>>>(x, delta, weight, row_ids, width, eps, out);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

void qkv_epilogue(const QkvEpilogueParams& p, cudaStream_t stream) {
  KASCADE_CHECK(p.head_dim > 0 && p.head_dim <= kMaxHeadDim && p.head_dim % 2 == 0,
                "qkv_epilogue: head dim " << p.head_dim << " is not supported (even, at most " << kMaxHeadDim << ")");
  KASCADE_CHECK(p.page_size > 0, "qkv_epilogue: page size must be positive, got " << p.page_size);
  if (p.tokens == 0) return;
  qkv_epilogue_kernel<<<p.tokens, kEpilogueWarps * kWarp, 0, stream>>>(p);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

void swiglu(const float* gate_up, int tokens, int ffn, bf16* out, cudaStream_t stream) {
  if (tokens == 0) return;
  swiglu_kernel<<<tokens, kRowThreads, 0, stream>>>(gate_up, ffn, out);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

void gemv(const bf16* x, int in, const bf16* w, int out, float* y, cudaStream_t stream) {
  KASCADE_CHECK(in % kGemvElemsPerLoad == 0,
                "gemv: input width " << in << " is not a multiple of " << kGemvElemsPerLoad);
  if (out == 0) return;
  gemv_kernel<<<(out + kGemvWarps - 1) / kGemvWarps, kGemvWarps * kWarp, 0, stream>>>(x, in, w, out, y);
  KASCADE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kascade::engine::cuda

