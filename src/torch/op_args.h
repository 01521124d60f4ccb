// src/torch/op_args.h — the PyTorch operators' arguments, free of any torch type.
//
// register.cpp turns each torch tensor into an OpTensor (pointer, element type, sizes, strides,
// device) and calls validate_decode() / validate_prefill(), which check every shape, dtype,
// device and layout rule and return a DecodeCall / PrefillCall holding the library's own structs
// (shape, tensors, Selection, Workspace, SparsityParams: the arguments of kascade/attention.h and
// attention_prefill.h). ops_cpu.cpp runs a validated call through the reference oracle,
// ops_cuda.cpp through the CUDA kernels, so both devices see exactly the same checks.
//
// The KV cache of one layer is two 4-D tensors k_cache, v_cache with dims [pages, page_size, Hkv, D]
// and any strides whose last one is 1 (K and V must share them). Views give the other layouts
// without copies: FlashInfer HND [pages, Hkv, P, D] is `.transpose(1, 2)`; transformers' cache
// [B, Hkv, L, D] is `.transpose(1, 2)` too, with one page of L tokens per sequence.
// Selection buffers are indices int32 [B, S, tiles, k_max] and counts int32 [B, S, tiles]
// (decode: tiles = 1; S = Hkv, or 1 with all-heads pooling).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kascade/attention.h"
#include "kascade/attention_prefill.h"
#include "kascade/kv_cache.h"
#include "kascade/tensor.h"
#include "kascade/types.h"

namespace kascade::torch_ops {

enum class Elem { F32, F16, BF16, I32, I64, U8, Other };
const char* elem_name(Elem e);

enum class DeviceKind { CPU, CUDA, Other };

constexpr int kMaxOpRank = 8;

// One tensor argument as the op received it.
struct OpTensor {
  const char* name = "";  // the schema's argument name, for messages
  void* data = nullptr;
  Elem elem = Elem::Other;
  int dim = 0;
  std::array<int64_t, kMaxOpRank> sizes{};
  std::array<int64_t, kMaxOpRank> strides{};
  DeviceKind device = DeviceKind::Other;
  int device_index = -1;

  int64_t numel() const;
  bool contiguous() const;
  std::string shape_str() const;
  std::string device_str() const;
};

// Sparsity scalars of a call, as the schemas carry them.
struct SparsityArgs {
  double rho = kDefaultRho;
  int64_t k_min = kDefaultKMin;
  int64_t k_multiple = 1;
  int64_t tile = kDefaultTile;
  bool rolling = true;
  bool pool_all = false;
  double scale = 0;  // <= 0 or NaN: 1/sqrt(D)
};
SparsityParams to_params(const char* op, const SparsityArgs& a);

// What every attention op takes: q, the paged cache with its page table, out, and the role's
// optional tensors (selection buffers, reuse head map, workspace).
struct PagedInputs {
  Role role = Role::Dense;
  OpTensor q, k_cache, v_cache, page_indptr, page_indices, seq_lens, out;
  OpTensor sel_indices, sel_counts;  // layer0/anchor write them, reuse reads them; unused by dense
  OpTensor head_map;                 // reuse: [Hkv] int32 or empty (identity)
  OpTensor workspace;                // uint8, the phase's workspace_size bytes (CUDA; CPU needs none)
  SparsityArgs sparsity;
};

// Decode ops: q [B, Hq, D].
struct DecodeInputs : PagedInputs {
  int64_t max_seq_len = 0;
};

// Prefill ops: ragged q [total_q, Hq, D] with q_indptr [B + 1]; host copies of q_indptr and
// seq_lens fix grid and buffer sizes (they must equal the tensors).
struct PrefillInputs : PagedInputs {
  OpTensor q_indptr;
  std::vector<int64_t> q_indptr_host, seq_lens_host;
};

// What a validated call of either phase holds besides its shape and tensors.
struct PagedCall {
  const char* op = "";
  Role role = Role::Dense;
  DeviceKind device = DeviceKind::CPU;
  int device_index = -1;
  SparsityParams params;
  Selection selection;
  const int32_t* head_map = nullptr;  // null: identity
  Workspace workspace;
  int64_t num_pages = 0;  // extent of k_cache's first dim (CPU bounds checks)
};

struct DecodeCall : PagedCall {
  DecodeShape shape;
  DecodeTensors tensors;
};

struct PrefillCall : PagedCall {
  PrefillShape shape;  // its host arrays point into the vectors below
  PrefillTensors tensors;
  std::vector<int32_t> q_indptr_host, seq_lens_host;
};

DecodeCall validate_decode(const char* op, const DecodeInputs& in);
PrefillCall validate_prefill(const char* op, const PrefillInputs& in);

// Selection buffer dims: decode {S, 1, k_max} (per sequence), prefill {B, S, max_tiles, k_max}.
std::array<int64_t, 3> decode_selection_dims(int64_t num_kv_heads, int64_t max_seq_len, const SparsityParams& sp);
std::array<int64_t, 4> prefill_selection_dims(const std::vector<int64_t>& q_indptr_host,
                                              const std::vector<int64_t>& seq_lens_host, int64_t num_kv_heads,
                                              const SparsityParams& sp);

// Device implementations (ops_cpu.cpp, ops_cuda.cpp). `stream` is the caller's current CUDA
// stream (cudaStream_t), unused on the CPU.
void run_decode_cpu(const DecodeCall& call);
void run_prefill_cpu(const PrefillCall& call);
void run_decode_cuda(const DecodeCall& call, void* stream);
void run_prefill_cuda(const PrefillCall& call, void* stream);
bool built_with_cuda();
// Waits for the stream's work (benchmark timing only).
void cuda_synchronize(void* stream);
// Workspace bytes of the CUDA kernels for a shape (0 on a build without CUDA: never called then).
size_t cuda_decode_workspace_size(const DecodeShape& shape, Role role, const SparsityParams& sp);
size_t cuda_prefill_workspace_size(const PrefillShape& shape, Role role, const SparsityParams& sp);

}  // namespace kascade::torch_ops
