// src/torch/register.cpp — registers the torch.ops.kascade operators through PyTorch's stable
// ABI (STABLE_TORCH_LIBRARY, built with TORCH_TARGET_VERSION 2.10), so that one build serves every
// torch >= 2.10. This file is the only one that sees torch types: it turns tensors into OpTensor
// (op_args.h), validates, and runs the call on the tensors' device (CPU: the reference oracle;
// CUDA: the kernels on the current stream).
//
// Attention ops return nothing: they write caller-owned outputs, which their schemas mark as
// mutated (Tensor(a!)). Fake (meta) implementations live in python/kascade/ops.py. Host-only ops
// (buffer sizes, plan parsing) take no tensors and are registered as CompositeExplicitAutograd.
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/device.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <chrono>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "kascade/error.h"
#include "kascade/plan.h"
#include "op_args.h"

namespace kascade::torch_ops {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

Elem elem_of(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return Elem::F32;
    case ScalarType::Half: return Elem::F16;
    case ScalarType::BFloat16: return Elem::BF16;
    case ScalarType::Int: return Elem::I32;
    case ScalarType::Long: return Elem::I64;
    case ScalarType::Byte: return Elem::U8;
    default: break;
  }
  return Elem::Other;
}

OpTensor view(const Tensor& t, const char* name) {
  OpTensor o;
  o.name = name;
  o.dim = static_cast<int>(t.dim());
  KASCADE_CHECK(o.dim <= kMaxOpRank, "kascade: " << name << " has " << o.dim << " dims (at most " << kMaxOpRank << ")");
  for (int i = 0; i < o.dim; ++i) {
    o.sizes[i] = t.size(i);
    o.strides[i] = t.stride(i);
  }
  o.elem = elem_of(t.scalar_type());
  o.device = t.is_cpu() ? DeviceKind::CPU : t.is_cuda() ? DeviceKind::CUDA : DeviceKind::Other;
  o.device_index = o.device == DeviceKind::CUDA ? t.get_device_index() : -1;
  o.data = o.numel() > 0 ? t.data_ptr() : nullptr;
  return o;
}

// The current CUDA stream of a device (the one torch.cuda.stream() / graph capture set).
void* current_cuda_stream(int device_index) {
#if defined(KASCADE_HAVE_CUDA)
  void* stream = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device_index, &stream));
  return stream;
#else
  (void)device_index;
  return nullptr;
#endif
}

// Runs a validated call of either phase on its tensors' device.
template <typename PhaseCall>
void run_on_device(const PhaseCall& call, void (*run_cpu)(const PhaseCall&),
                   void (*run_cuda)(const PhaseCall&, void*)) {
  if (call.device == DeviceKind::CPU) {
    run_cpu(call);
    return;
  }
  torch::stable::accelerator::DeviceGuard guard(call.device_index);
  run_cuda(call, current_cuda_stream(call.device_index));
}

void dispatch_decode(const DecodeInputs& in, const char* op) {
  run_on_device(validate_decode(op, in), &run_decode_cpu, &run_decode_cuda);
}

void dispatch_prefill(const PrefillInputs& in, const char* op) {
  run_on_device(validate_prefill(op, in), &run_prefill_cpu, &run_prefill_cuda);
}

SparsityArgs sparsity(double rho, int64_t k_min, int64_t k_multiple, int64_t tile, bool rolling, bool pool_all,
                      double scale) {
  return SparsityArgs{rho, k_min, k_multiple, tile, rolling, pool_all, scale};
}

// The tensors every attention op takes, named as its schema names them.
void view_paged(PagedInputs& in, Role role, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                const Tensor& page_indptr, const Tensor& page_indices, const Tensor& seq_lens, const Tensor& out) {
  in.role = role;
  in.q = view(q, "q");
  in.k_cache = view(k_cache, "k_cache");
  in.v_cache = view(v_cache, "v_cache");
  in.page_indptr = view(page_indptr, "page_indptr");
  in.page_indices = view(page_indices, "page_indices");
  in.seq_lens = view(seq_lens, "seq_lens");
  in.out = view(out, "out");
}

// The selection buffers of a layer0/anchor/reuse op; a reuse op passes its head map too.
void view_selection(PagedInputs& in, const Tensor& sel_indices, const Tensor& sel_counts,
                    const Tensor* head_map = nullptr) {
  in.sel_indices = view(sel_indices, "sel_indices");
  in.sel_counts = view(sel_counts, "sel_counts");
  if (head_map != nullptr) in.head_map = view(*head_map, "head_map");
}

DecodeInputs decode_inputs(Role role, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const Tensor& page_indptr, const Tensor& page_indices, const Tensor& seq_lens,
                           const Tensor& out, const Tensor& workspace, int64_t max_seq_len) {
  DecodeInputs in;
  view_paged(in, role, q, k_cache, v_cache, page_indptr, page_indices, seq_lens, out);
  in.workspace = view(workspace, "workspace");
  in.max_seq_len = max_seq_len;
  return in;
}

// ---- decode ----------------------------------------------------------------------------------

void decode_dense(Tensor q, Tensor k_cache, Tensor v_cache, Tensor page_indptr, Tensor page_indices, Tensor seq_lens,
                  Tensor out, Tensor workspace, double scale, int64_t max_seq_len) {
  DecodeInputs in = decode_inputs(Role::Dense, q, k_cache, v_cache, page_indptr, page_indices, seq_lens, out,
                                  workspace, max_seq_len);
  in.sparsity.scale = scale;
  dispatch_decode(in, "kascade.decode_dense");
}

// decode_layer0 and decode_anchor: one signature, the role a template argument.
template <Role kRole>
void decode_selecting(Tensor q, Tensor k_cache, Tensor v_cache, Tensor page_indptr, Tensor page_indices,
                      Tensor seq_lens, Tensor out, Tensor sel_indices, Tensor sel_counts, Tensor workspace,
                      double rho, int64_t k_min, int64_t k_multiple, bool pool_all, double scale, int64_t max_seq_len) {
  static_assert(kRole == Role::Layer0 || kRole == Role::Anchor, "the selecting roles");
  DecodeInputs in = decode_inputs(kRole, q, k_cache, v_cache, page_indptr, page_indices, seq_lens, out, workspace,
                                  max_seq_len);
  view_selection(in, sel_indices, sel_counts);
  in.sparsity = sparsity(rho, k_min, k_multiple, kDefaultTile, true, pool_all, scale);
  dispatch_decode(in, kRole == Role::Layer0 ? "kascade.decode_layer0" : "kascade.decode_anchor");
}

void decode_reuse(Tensor q, Tensor k_cache, Tensor v_cache, Tensor page_indptr, Tensor page_indices, Tensor seq_lens,
                  Tensor out, Tensor sel_indices, Tensor sel_counts, Tensor head_map, Tensor workspace, double rho,
                  int64_t k_min, int64_t k_multiple, bool pool_all, double scale, int64_t max_seq_len) {
  DecodeInputs in = decode_inputs(Role::Reuse, q, k_cache, v_cache, page_indptr, page_indices, seq_lens, out,
                                  workspace, max_seq_len);
  view_selection(in, sel_indices, sel_counts, &head_map);
  in.sparsity = sparsity(rho, k_min, k_multiple, kDefaultTile, true, pool_all, scale);
  dispatch_decode(in, "kascade.decode_reuse");
}

// ---- prefill ---------------------------------------------------------------------------------

PrefillInputs prefill_inputs(Role role, const Tensor& q, const Tensor& q_indptr, const Tensor& k_cache,
                             const Tensor& v_cache, const Tensor& page_indptr, const Tensor& page_indices,
                             const Tensor& seq_lens, const Tensor& out, std::vector<int64_t> q_indptr_host,
                             std::vector<int64_t> seq_lens_host) {
  PrefillInputs in;
  view_paged(in, role, q, k_cache, v_cache, page_indptr, page_indices, seq_lens, out);
  in.q_indptr = view(q_indptr, "q_indptr");
  in.q_indptr_host = std::move(q_indptr_host);
  in.seq_lens_host = std::move(seq_lens_host);
  return in;
}

void prefill_dense(Tensor q, Tensor q_indptr, Tensor k_cache, Tensor v_cache, Tensor page_indptr, Tensor page_indices,
                   Tensor seq_lens, Tensor out, std::vector<int64_t> q_indptr_host, std::vector<int64_t> seq_lens_host,
                   double scale) {
  PrefillInputs in = prefill_inputs(Role::Dense, q, q_indptr, k_cache, v_cache, page_indptr, page_indices, seq_lens,
                                    out, std::move(q_indptr_host), std::move(seq_lens_host));
  in.sparsity.scale = scale;
  dispatch_prefill(in, "kascade.prefill_dense");
}

// prefill_layer0 and prefill_anchor: one signature, the role a template argument.
template <Role kRole>
void prefill_selecting(Tensor q, Tensor q_indptr, Tensor k_cache, Tensor v_cache, Tensor page_indptr,
                       Tensor page_indices, Tensor seq_lens, Tensor out, Tensor sel_indices, Tensor sel_counts,
                       Tensor workspace, std::vector<int64_t> q_indptr_host, std::vector<int64_t> seq_lens_host,
                       double rho, int64_t k_min, int64_t k_multiple, int64_t tile, bool rolling, bool pool_all,
                       double scale) {
  static_assert(kRole == Role::Layer0 || kRole == Role::Anchor, "the selecting roles");
  PrefillInputs in = prefill_inputs(kRole, q, q_indptr, k_cache, v_cache, page_indptr, page_indices, seq_lens, out,
                                    std::move(q_indptr_host), std::move(seq_lens_host));
  view_selection(in, sel_indices, sel_counts);
  in.workspace = view(workspace, "workspace");
  in.sparsity = sparsity(rho, k_min, k_multiple, tile, rolling, pool_all, scale);
  dispatch_prefill(in, kRole == Role::Layer0 ? "kascade.prefill_layer0" : "kascade.prefill_anchor");
}

void prefill_reuse(Tensor q, Tensor q_indptr, Tensor k_cache, Tensor v_cache, Tensor page_indptr, Tensor page_indices,
                   Tensor seq_lens, Tensor out, Tensor sel_indices, Tensor sel_counts, Tensor head_map,
                   std::vector<int64_t> q_indptr_host, std::vector<int64_t> seq_lens_host, double rho, int64_t k_min,
                   int64_t k_multiple, int64_t tile, bool rolling, bool pool_all, double scale) {
  PrefillInputs in = prefill_inputs(Role::Reuse, q, q_indptr, k_cache, v_cache, page_indptr, page_indices, seq_lens,
                                    out, std::move(q_indptr_host), std::move(seq_lens_host));
  view_selection(in, sel_indices, sel_counts, &head_map);
  in.sparsity = sparsity(rho, k_min, k_multiple, tile, rolling, pool_all, scale);
  dispatch_prefill(in, "kascade.prefill_reuse");
}

// ---- host-only queries -----------------------------------------------------------------------

bool on_cuda(const torch::stable::Device& device) { return device.type() == torch::headeronly::DeviceType::CUDA; }

DType float_dtype(const char* op, ScalarType t) {
  switch (elem_of(t)) {
    case Elem::F32: return DType::F32;
    case Elem::F16: return DType::F16;
    case Elem::BF16: return DType::BF16;
    default: break;
  }
  KASCADE_FAIL(op << ": dtype must be float32, float16 or bfloat16");
}

std::vector<int64_t> decode_selection_shape(int64_t batch, int64_t num_kv_heads, int64_t max_seq_len, double rho,
                                            int64_t k_min, int64_t k_multiple, bool pool_all) {
  const char* op = "kascade.decode_selection_shape";
  KASCADE_CHECK(batch >= 1 && num_kv_heads >= 1 && max_seq_len >= 1,
                op << ": batch (" << batch << "), num_kv_heads (" << num_kv_heads << ") and max_seq_len ("
                   << max_seq_len << ") must be positive");
  const auto d = decode_selection_dims(num_kv_heads, max_seq_len,
                                       to_params(op, sparsity(rho, k_min, k_multiple, kDefaultTile, true, pool_all, 0)));
  return {batch, d[0], d[1], d[2]};
}

std::vector<int64_t> prefill_selection_shape(std::vector<int64_t> q_indptr_host, std::vector<int64_t> seq_lens_host,
                                             int64_t num_kv_heads, double rho, int64_t k_min, int64_t k_multiple,
                                             int64_t tile, bool rolling, bool pool_all) {
  const char* op = "kascade.prefill_selection_shape";
  KASCADE_CHECK(num_kv_heads >= 1, op << ": num_kv_heads must be positive, got " << num_kv_heads);
  const auto d = prefill_selection_dims(q_indptr_host, seq_lens_host, num_kv_heads,
                                        to_params(op, sparsity(rho, k_min, k_multiple, tile, rolling, pool_all, 0)));
  return {d[0], d[1], d[2], d[3]};
}

int64_t decode_workspace_size(int64_t batch, int64_t num_q_heads, int64_t num_kv_heads, int64_t head_dim,
                              ScalarType dtype, int64_t max_seq_len, std::string role, double rho, int64_t k_min,
                              int64_t k_multiple, bool pool_all, torch::stable::Device device) {
  const char* op = "kascade.decode_workspace_size";
  const Role r = parse_role(role);
  const SparsityParams sp = to_params(op, sparsity(rho, k_min, k_multiple, kDefaultTile, true, pool_all, 0));
  if (!on_cuda(device)) return 0;  // the oracle needs no scratch memory
  KASCADE_CHECK(built_with_cuda(), op << ": this build does not include the CUDA kernels (it was built without nvcc)");
  const DecodeShape shape{static_cast<int>(batch), static_cast<int>(num_q_heads), static_cast<int>(num_kv_heads),
                          static_cast<int>(head_dim), float_dtype(op, dtype), max_seq_len};
  torch::stable::accelerator::DeviceGuard guard(device.has_index() ? device.index() : 0);
  return static_cast<int64_t>(cuda_decode_workspace_size(shape, r, sp));
}

int64_t prefill_workspace_size(std::vector<int64_t> q_indptr_host, std::vector<int64_t> seq_lens_host,
                               int64_t num_q_heads, int64_t num_kv_heads, int64_t head_dim, ScalarType dtype,
                               std::string role, double rho, int64_t k_min, int64_t k_multiple, int64_t tile,
                               bool rolling, bool pool_all, torch::stable::Device device) {
  const char* op = "kascade.prefill_workspace_size";
  const Role r = parse_role(role);
  const SparsityParams sp = to_params(op, sparsity(rho, k_min, k_multiple, tile, rolling, pool_all, 0));
  prefill_selection_dims(q_indptr_host, seq_lens_host, num_kv_heads, sp);  // validates the batch
  if (!on_cuda(device) || !role_selects(r)) return 0;
  KASCADE_CHECK(built_with_cuda(), op << ": this build does not include the CUDA kernels (it was built without nvcc)");
  std::vector<int32_t> qi(q_indptr_host.begin(), q_indptr_host.end()), sl(seq_lens_host.begin(), seq_lens_host.end());
  const PrefillShape shape{static_cast<int>(sl.size()), static_cast<int>(num_q_heads), static_cast<int>(num_kv_heads),
                           static_cast<int>(head_dim), float_dtype(op, dtype), qi.data(), sl.data()};
  torch::stable::accelerator::DeviceGuard guard(device.has_index() ? device.index() : 0);
  return static_cast<int64_t>(cuda_prefill_workspace_size(shape, r, sp));
}

std::string parse_plan(std::string text, std::string name) { return to_json(kascade::parse_plan(text, name)); }

void check_plan(std::string text, std::string name, int64_t layers, int64_t num_q_heads, int64_t num_kv_heads,
                int64_t head_dim) {
  const Plan plan = kascade::parse_plan(text, name);
  check_plan_matches(plan, static_cast<int>(layers), static_cast<int>(num_q_heads), static_cast<int>(num_kv_heads),
                     static_cast<int>(head_dim));
}

bool has_cuda() { return built_with_cuda(); }

// Benchmark helper: validates one decode call, then makes it `iters` times straight through the
// library's entry point (no dispatcher, no Python) and returns the mean wall time per call in
// seconds, the stream drained at both ends. Against the same loop over the op from Python it
// gives the op's per-call overhead.
double bench_decode_direct(std::string role, Tensor q, Tensor k_cache, Tensor v_cache, Tensor page_indptr,
                           Tensor page_indices, Tensor seq_lens, Tensor out, Tensor sel_indices, Tensor sel_counts,
                           Tensor head_map, Tensor workspace, double rho, int64_t k_min, int64_t k_multiple,
                           bool pool_all, double scale, int64_t max_seq_len, int64_t iters) {
  const char* op = "kascade._bench_decode_direct";
  DecodeInputs in = decode_inputs(parse_role(role), q, k_cache, v_cache, page_indptr, page_indices, seq_lens,
                                  out, workspace, max_seq_len);
  view_selection(in, sel_indices, sel_counts, &head_map);
  in.sparsity = sparsity(rho, k_min, k_multiple, kDefaultTile, true, pool_all, scale);
  KASCADE_CHECK(iters >= 1, op << ": iters must be positive, got " << iters);
  const DecodeCall call = validate_decode(op, in);
  const bool cuda = call.device == DeviceKind::CUDA;
  if (!cuda) {
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) run_decode_cpu(call);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
  }
  torch::stable::accelerator::DeviceGuard guard(call.device_index);
  void* stream = current_cuda_stream(call.device_index);
  cuda_synchronize(stream);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) run_decode_cuda(call, stream);
  cuda_synchronize(stream);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
}

}  // namespace
}  // namespace kascade::torch_ops

namespace ops = kascade::torch_ops;

#define KASCADE_DECODE_ARGS \
  "Tensor q, Tensor k_cache, Tensor v_cache, Tensor page_indptr, Tensor page_indices, Tensor seq_lens, "
#define KASCADE_PREFILL_ARGS \
  "Tensor q, Tensor q_indptr, Tensor k_cache, Tensor v_cache, Tensor page_indptr, Tensor page_indices, " \
  "Tensor seq_lens, "
#define KASCADE_PREFILL_SPARSITY \
  "int[] q_indptr_host, int[] seq_lens_host, float rho, int k_min, int k_multiple, int tile, bool rolling, " \
  "bool pool_all, float scale"

STABLE_TORCH_LIBRARY(kascade, m) {
  m.def("decode_dense(" KASCADE_DECODE_ARGS "Tensor(a!) out, Tensor(b!) workspace, float scale, int max_seq_len) -> ()");
  m.def("decode_layer0(" KASCADE_DECODE_ARGS
        "Tensor(a!) out, Tensor(b!) sel_indices, Tensor(c!) sel_counts, Tensor(d!) workspace, float rho, int k_min, "
        "int k_multiple, bool pool_all, float scale, int max_seq_len) -> ()");
  m.def("decode_anchor(" KASCADE_DECODE_ARGS
        "Tensor(a!) out, Tensor(b!) sel_indices, Tensor(c!) sel_counts, Tensor(d!) workspace, float rho, int k_min, "
        "int k_multiple, bool pool_all, float scale, int max_seq_len) -> ()");
  m.def("decode_reuse(" KASCADE_DECODE_ARGS
        "Tensor(a!) out, Tensor sel_indices, Tensor sel_counts, Tensor head_map, Tensor(b!) workspace, float rho, "
        "int k_min, int k_multiple, bool pool_all, float scale, int max_seq_len) -> ()");
  m.def("prefill_dense(" KASCADE_PREFILL_ARGS
        "Tensor(a!) out, int[] q_indptr_host, int[] seq_lens_host, float scale) -> ()");
  m.def("prefill_layer0(" KASCADE_PREFILL_ARGS
        "Tensor(a!) out, Tensor(b!) sel_indices, Tensor(c!) sel_counts, Tensor(d!) workspace, " KASCADE_PREFILL_SPARSITY
        ") -> ()");
  m.def("prefill_anchor(" KASCADE_PREFILL_ARGS
        "Tensor(a!) out, Tensor(b!) sel_indices, Tensor(c!) sel_counts, Tensor(d!) workspace, " KASCADE_PREFILL_SPARSITY
        ") -> ()");
  m.def("prefill_reuse(" KASCADE_PREFILL_ARGS
        "Tensor(a!) out, Tensor sel_indices, Tensor sel_counts, Tensor head_map, " KASCADE_PREFILL_SPARSITY ") -> ()");
  m.def("decode_selection_shape(int batch, int num_kv_heads, int max_seq_len, float rho, int k_min, int k_multiple, "
        "bool pool_all) -> int[]");
  m.def("prefill_selection_shape(int[] q_indptr_host, int[] seq_lens_host, int num_kv_heads, float rho, int k_min, "
        "int k_multiple, int tile, bool rolling, bool pool_all) -> int[]");
  m.def("decode_workspace_size(int batch, int num_q_heads, int num_kv_heads, int head_dim, ScalarType dtype, "
        "int max_seq_len, str role, float rho, int k_min, int k_multiple, bool pool_all, Device device) -> int");
  m.def("prefill_workspace_size(int[] q_indptr_host, int[] seq_lens_host, int num_q_heads, int num_kv_heads, "
        "int head_dim, ScalarType dtype, str role, float rho, int k_min, int k_multiple, int tile, bool rolling, "
        "bool pool_all, Device device) -> int");
  m.def("parse_plan(str text, str name) -> str");
  m.def("check_plan(str text, str name, int layers, int num_q_heads, int num_kv_heads, int head_dim) -> ()");
  m.def("has_cuda() -> bool");
  m.def("_bench_decode_direct(str role, " KASCADE_DECODE_ARGS
        "Tensor(a!) out, Tensor(b!) sel_indices, Tensor(c!) sel_counts, Tensor head_map, Tensor(d!) workspace, "
        "float rho, int k_min, int k_multiple, bool pool_all, float scale, int max_seq_len, int iters) -> float");
}

// One implementation per op for both devices: it reads the tensors' device and runs the oracle
// or the kernels (a CPU-only build registers CUDA too, so that CUDA tensors get "this build does
// not include the CUDA kernels" rather than a missing-kernel error).
#define KASCADE_IMPL_ATTENTION_OPS(m)                                                  \
  m.impl("decode_dense", TORCH_BOX(&ops::decode_dense));                               \
  m.impl("decode_layer0", TORCH_BOX(&ops::decode_selecting<kascade::Role::Layer0>));   \
  m.impl("decode_anchor", TORCH_BOX(&ops::decode_selecting<kascade::Role::Anchor>));   \
  m.impl("decode_reuse", TORCH_BOX(&ops::decode_reuse));                               \
  m.impl("prefill_dense", TORCH_BOX(&ops::prefill_dense));                             \
  m.impl("prefill_layer0", TORCH_BOX(&ops::prefill_selecting<kascade::Role::Layer0>)); \
  m.impl("prefill_anchor", TORCH_BOX(&ops::prefill_selecting<kascade::Role::Anchor>)); \
  m.impl("prefill_reuse", TORCH_BOX(&ops::prefill_reuse))

STABLE_TORCH_LIBRARY_IMPL(kascade, CPU, m) {
  KASCADE_IMPL_ATTENTION_OPS(m);
  m.impl("_bench_decode_direct", TORCH_BOX(&ops::bench_decode_direct));
}

STABLE_TORCH_LIBRARY_IMPL(kascade, CUDA, m) {
  KASCADE_IMPL_ATTENTION_OPS(m);
  m.impl("_bench_decode_direct", TORCH_BOX(&ops::bench_decode_direct));
}

STABLE_TORCH_LIBRARY_IMPL(kascade, CompositeExplicitAutograd, m) {
  m.impl("decode_selection_shape", TORCH_BOX(&ops::decode_selection_shape));
  m.impl("prefill_selection_shape", TORCH_BOX(&ops::prefill_selection_shape));
  m.impl("decode_workspace_size", TORCH_BOX(&ops::decode_workspace_size));
  m.impl("prefill_workspace_size", TORCH_BOX(&ops::prefill_workspace_size));
  m.impl("parse_plan", TORCH_BOX(&ops::parse_plan));
  m.impl("check_plan", TORCH_BOX(&ops::check_plan));
  m.impl("has_cuda", TORCH_BOX(&ops::has_cuda));
}
