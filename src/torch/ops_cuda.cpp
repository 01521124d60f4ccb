// src/torch/ops_cuda.cpp — the operators' CUDA path: the kernels of kascade/attention.h and
// kascade/attention_prefill.h on the caller's current stream, with the caller's buffers (no
// allocation, no host synchronisation: the calls can be captured in CUDA graphs).
// A build without the CUDA toolkit compiles the stubs at the end, which say so.
#include "kascade/error.h"
#if defined(KASCADE_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif
#include "op_args.h"

namespace kascade::torch_ops {

#if defined(KASCADE_HAVE_CUDA)

bool built_with_cuda() { return true; }

void cuda_synchronize(void* stream) {
  const cudaError_t err = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  KASCADE_CHECK(err == cudaSuccess, "kascade: cudaStreamSynchronize failed: " << cudaGetErrorString(err));
}

size_t cuda_decode_workspace_size(const DecodeShape& shape, Role role, const SparsityParams& sp) {
  return decode_workspace_size(shape, role, sp);
}

size_t cuda_prefill_workspace_size(const PrefillShape& shape, Role role, const SparsityParams& sp) {
  return prefill_workspace_size(shape, role, sp);
}

void run_decode_cuda(const DecodeCall& c, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (c.role) {
    case Role::Dense: decode_dense(c.tensors, c.shape, c.params, c.workspace, s); break;
    case Role::Layer0: decode_layer0(c.tensors, c.shape, c.params, c.selection, c.workspace, s); break;
    case Role::Anchor: decode_anchor(c.tensors, c.shape, c.params, c.selection, c.workspace, s); break;
    case Role::Reuse:
      decode_reuse(c.tensors, c.shape, c.params, c.selection, c.head_map, c.workspace, s);
      break;
  }
}

void run_prefill_cuda(const PrefillCall& c, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (c.role) {
    case Role::Dense: prefill_dense(c.tensors, c.shape, c.params, c.workspace, s); break;
    case Role::Layer0: prefill_layer0(c.tensors, c.shape, c.params, c.selection, c.workspace, s); break;
    case Role::Anchor: prefill_anchor(c.tensors, c.shape, c.params, c.selection, c.workspace, s); break;
    case Role::Reuse:
      prefill_reuse(c.tensors, c.shape, c.params, c.selection, c.head_map, c.workspace, s);
      break;
  }
}

#else

namespace {
[[noreturn]] void no_cuda() {
  KASCADE_FAIL("kascade: this build does not include the CUDA kernels (it was built without nvcc)");
}
}  // namespace

bool built_with_cuda() { return false; }
void cuda_synchronize(void*) { no_cuda(); }
size_t cuda_decode_workspace_size(const DecodeShape&, Role, const SparsityParams&) { no_cuda(); }
size_t cuda_prefill_workspace_size(const PrefillShape&, Role, const SparsityParams&) { no_cuda(); }
void run_decode_cuda(const DecodeCall&, void*) { no_cuda(); }
void run_prefill_cuda(const PrefillCall&, void*) { no_cuda(); }

#endif

}  // namespace kascade::torch_ops
