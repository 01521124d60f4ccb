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

namespace {

// One role switch for both phases: the phase's four kernel entry points, called with the call's
// tensors, shape, sparsity, selection, head map and workspace on `stream`.
template <typename PhaseCall, typename DenseFn, typename SelectFn, typename ReuseFn>
void run_role(const PhaseCall& c, void* stream, DenseFn dense, SelectFn layer0, SelectFn anchor, ReuseFn reuse) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (c.role) {
    case Role::Dense: dense(c.tensors, c.shape, c.params, c.workspace, s); break;
    case Role::Layer0: layer0(c.tensors, c.shape, c.params, c.selection, c.workspace, s); break;
    case Role::Anchor: anchor(c.tensors, c.shape, c.params, c.selection, c.workspace, s); break;
    case Role::Reuse: reuse(c.tensors, c.shape, c.params, c.selection, c.head_map, c.workspace, s); break;
  }
}

}  // namespace

void run_decode_cuda(const DecodeCall& c, void* stream) {
  run_role(c, stream, &decode_dense, &decode_layer0, &decode_anchor, &decode_reuse);
}

void run_prefill_cuda(const PrefillCall& c, void* stream) {
  run_role(c, stream, &prefill_dense, &prefill_layer0, &prefill_anchor, &prefill_reuse);
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
