// src/torch/op_args.cpp — argument checks of the PyTorch operators (see op_args.h). Every
// message starts with the op's Python name and names the argument, what it is and what was
// expected; nothing here touches tensor memory on a GPU.
#include "op_args.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "kascade/budget.h"
#include "kascade/error.h"

namespace kascade::torch_ops {

const char* elem_name(Elem e) {
  switch (e) {
    case Elem::F32: return "float32";
    case Elem::F16: return "float16";
    case Elem::BF16: return "bfloat16";
    case Elem::I32: return "int32";
    case Elem::I64: return "int64";
    case Elem::U8: return "uint8";
    case Elem::Other: break;
  }
  return "an unsupported dtype";
}

int64_t OpTensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < dim; ++i) n *= sizes[i];
  return n;
}

bool OpTensor::contiguous() const {
  if (numel() == 0) return true;  // no element to address (e.g. a selection with k_max = 0)
  int64_t expected = 1;
  for (int i = dim - 1; i >= 0; --i) {
    if (sizes[i] != 1 && strides[i] != expected) return false;
    expected *= sizes[i];
  }
  return true;
}

std::string OpTensor::shape_str() const {
  std::ostringstream os;
  os << "[";
  for (int i = 0; i < dim; ++i) os << (i ? ", " : "") << sizes[i];
  os << "]";
  return os.str();
}

std::string OpTensor::device_str() const {
  switch (device) {
    case DeviceKind::CPU: return "cpu";
    case DeviceKind::CUDA: return "cuda:" + std::to_string(device_index);
    case DeviceKind::Other: break;
  }
  return "an unsupported device";
}

namespace {

DType storage_type(Elem e) {
  switch (e) {
    case Elem::F32: return DType::F32;
    case Elem::F16: return DType::F16;
    case Elem::BF16: return DType::BF16;
    default: break;
  }
  return DType::F32;
}

bool is_float(Elem e) { return e == Elem::F32 || e == Elem::F16 || e == Elem::BF16; }

// Checks `t` has rank `rank` and, where want[i] >= 0, that extent.
void check_dims(const char* op, const OpTensor& t, std::initializer_list<int64_t> want, const char* meaning) {
  bool ok = t.dim == static_cast<int>(want.size());
  int i = 0;
  for (int64_t w : want) {
    if (ok && w >= 0 && t.sizes[i] != w) ok = false;
    ++i;
  }
  if (ok) return;
  std::ostringstream expected;
  expected << "[";
  i = 0;
  for (int64_t w : want) {
    expected << (i++ ? ", " : "");
    if (w >= 0) expected << w; else expected << "*";
  }
  expected << "]";
  KASCADE_FAIL(op << ": " << t.name << " has shape " << t.shape_str() << ", expected " << expected.str() << " ("
                  << meaning << ")");
}

void check_elem(const char* op, const OpTensor& t, Elem want) {
  KASCADE_CHECK(t.elem == want, op << ": " << t.name << " must be " << elem_name(want) << ", got "
                                   << elem_name(t.elem));
}

void check_contiguous(const char* op, const OpTensor& t) {
  KASCADE_CHECK(t.contiguous(), op << ": " << t.name << " (shape " << t.shape_str()
                                   << ") must be contiguous; call .contiguous() first");
}

void check_same_device(const char* op, const OpTensor& ref, const OpTensor& t) {
  KASCADE_CHECK(t.device == ref.device && t.device_index == ref.device_index,
                op << ": " << t.name << " is on " << t.device_str() << " but " << ref.name << " is on "
                   << ref.device_str() << " (all tensors of a call must be on one device)");
}

void check_device_supported(const char* op, const OpTensor& q) {
  KASCADE_CHECK(q.device == DeviceKind::CPU || q.device == DeviceKind::CUDA,
                op << ": " << q.name << " is on " << q.device_str() << "; supported devices: cpu, cuda");
  if (q.device == DeviceKind::CUDA) {
    KASCADE_CHECK(built_with_cuda(), op << ": this build does not include the CUDA kernels (it was built without "
                                           "nvcc); reinstall on a machine with the CUDA toolkit");
    KASCADE_CHECK(q.elem == Elem::BF16 || q.elem == Elem::F16,
                  op << ": " << q.name << " is " << elem_name(q.elem) << "; the CUDA kernels take bfloat16 or float16");
  }
}

int32_t* i32(const OpTensor& t) { return static_cast<int32_t*>(t.data); }

int to_int(const char* op, const char* what, int64_t v) {
  KASCADE_CHECK(v >= 0 && v < (int64_t{1} << 31), op << ": " << what << " " << v << " is out of range");
  return static_cast<int>(v);
}

// The paged cache: k_cache, v_cache [pages, P, Hkv, D] sharing strides, last stride 1.
PagedKV make_kv(const char* op, const OpTensor& q, const OpTensor& k, const OpTensor& v, int batch, int head_dim) {
  check_dims(op, k, {-1, -1, -1, head_dim}, "pages, page_size, Hkv, D");
  check_dims(op, v, {-1, -1, -1, head_dim}, "pages, page_size, Hkv, D");
  KASCADE_CHECK(k.elem == q.elem && v.elem == q.elem, op << ": k_cache (" << elem_name(k.elem) << ") and v_cache ("
                                                         << elem_name(v.elem) << ") must have q's dtype ("
                                                         << elem_name(q.elem) << ")");
  for (int i = 0; i < 4; ++i) {
    KASCADE_CHECK(k.sizes[i] == v.sizes[i] && k.strides[i] == v.strides[i],
                  op << ": k_cache and v_cache must have the same shape and strides (dim " << i << ": size "
                     << k.sizes[i] << " vs " << v.sizes[i] << ", stride " << k.strides[i] << " vs " << v.strides[i]
                     << ")");
  }
  KASCADE_CHECK(k.strides[3] == 1, op << ": k_cache's last dim (head dim) must have stride 1, got " << k.strides[3]);
  KASCADE_CHECK(k.sizes[1] >= 1 && k.sizes[2] >= 1, op << ": k_cache has shape " << k.shape_str()
                                                        << "; page size and kv heads must be positive");
  KASCADE_CHECK(k.strides[0] >= 0 && k.strides[1] >= 0 && k.strides[2] >= 0,
                op << ": k_cache has a negative stride");
  PagedKV kv;
  kv.k = k.data;
  kv.v = v.data;
  kv.dtype = storage_type(q.elem);
  kv.batch = batch;
  kv.num_kv_heads = to_int(op, "k_cache kv heads", k.sizes[2]);
  kv.head_dim = head_dim;
  kv.page_size = to_int(op, "k_cache page size", k.sizes[1]);
  kv.page_stride = k.strides[0];
  kv.token_stride = k.strides[1];
  kv.head_stride = k.strides[2];
  return kv;
}

void check_index_vector(const char* op, const OpTensor& t, int64_t length, const char* meaning) {
  check_elem(op, t, Elem::I32);
  check_dims(op, t, {length}, meaning);
  check_contiguous(op, t);
}

// Host-side bounds of the page table (CPU only: on a GPU these live in device memory, and the
// kernels trust them, as kascade/kv_cache.h says).
void check_pages_cpu(const char* op, const PagedKV& kv, int64_t num_pages, int64_t num_indices) {
  for (int b = 0; b < kv.batch; ++b) {
    const int32_t lo = kv.page_indptr[b], hi = kv.page_indptr[b + 1];
    KASCADE_CHECK(lo >= 0 && hi >= lo && hi <= num_indices,
                  op << ": page_indptr[" << b << ".." << b + 1 << "] = " << lo << ".." << hi
                     << " is not a range of page_indices (" << num_indices << " entries)");
    const int64_t n = kv.seq_lens[b];
    KASCADE_CHECK(n >= 1, op << ": seq_lens[" << b << "] = " << n << " must be positive");
    const int64_t needed = (n + kv.page_size - 1) / kv.page_size;
    KASCADE_CHECK(hi - lo >= needed, op << ": sequence " << b << " of length " << n << " needs " << needed
                                        << " pages of " << kv.page_size << " tokens, page_indptr gives " << hi - lo);
    for (int64_t j = lo; j < lo + needed; ++j) {
      KASCADE_CHECK(kv.page_indices[j] >= 0 && kv.page_indices[j] < num_pages,
                    op << ": page_indices[" << j << "] = " << kv.page_indices[j] << " is not a page of k_cache (0.."
                       << num_pages - 1 << ")");
    }
  }
}

// q [rows, Hq, D], a float type on a supported device, contiguous; rows are the batch in decode
// and the ragged query rows in prefill.
struct QDims {
  int64_t rows = 0;
  int hq = 0;
  int d = 0;
};
QDims check_q(const char* op, const OpTensor& q, const char* dims_meaning) {
  check_device_supported(op, q);
  KASCADE_CHECK(is_float(q.elem), op << ": q must be float32, float16 or bfloat16, got " << elem_name(q.elem));
  check_dims(op, q, {-1, -1, -1}, dims_meaning);
  check_contiguous(op, q);
  return QDims{q.sizes[0], to_int(op, "Hq", q.sizes[1]), to_int(op, "head dim", q.sizes[2])};
}

// The fields both phases fill alike, once the tensors every op takes are on q's device.
void begin_call(PagedCall& c, const char* op, const PagedInputs& in) {
  for (const OpTensor* t : {&in.k_cache, &in.v_cache, &in.page_indptr, &in.page_indices, &in.seq_lens, &in.out})
    check_same_device(op, in.q, *t);
  c.op = op;
  c.role = in.role;
  c.device = in.q.device;
  c.device_index = in.q.device_index;
  c.params = to_params(op, in.sparsity);
  c.num_pages = in.k_cache.sizes[0];
}

// The paged cache (make_kv) with Hkv dividing Hq, its page table (page_indptr [batch + 1],
// page_indices 1-D, seq_lens [batch]: int32, contiguous) and out (q's dtype and shape, contiguous).
PagedKV check_paged_cache(const char* op, const PagedInputs& in, int batch, const QDims& q) {
  PagedKV kv = make_kv(op, in.q, in.k_cache, in.v_cache, batch, q.d);
  KASCADE_CHECK(q.hq % kv.num_kv_heads == 0, op << ": Hq (" << q.hq << ", from q) must be a multiple of Hkv ("
                                                << kv.num_kv_heads << ", from k_cache)");
  check_index_vector(op, in.page_indptr, batch + 1, "batch + 1");
  check_elem(op, in.page_indices, Elem::I32);
  KASCADE_CHECK(in.page_indices.dim == 1, op << ": page_indices must be 1-D, got shape " << in.page_indices.shape_str());
  check_contiguous(op, in.page_indices);
  check_index_vector(op, in.seq_lens, batch, "batch");
  kv.page_indptr = i32(in.page_indptr);
  kv.page_indices = i32(in.page_indices);
  kv.seq_lens = i32(in.seq_lens);
  KASCADE_CHECK(in.out.elem == in.q.elem, op << ": out must have q's dtype (" << elem_name(in.q.elem) << "), got "
                                             << elem_name(in.out.elem));
  check_dims(op, in.out, {q.rows, q.hq, q.d}, "q's shape");
  check_contiguous(op, in.out);
  return kv;
}

// The selection buffers (int32, contiguous, on q's device): sel_indices [batch, sets, tiles, k_max]
// and sel_counts [batch, sets, tiles], with `dims` = {batch, sets, tiles, k_max}.
Selection check_selection(const char* op, const PagedInputs& in, const std::array<int64_t, 4>& dims,
                          const char* indices_meaning, const char* counts_meaning) {
  for (const OpTensor* t : {&in.sel_indices, &in.sel_counts}) {
    check_same_device(op, in.q, *t);
    check_elem(op, *t, Elem::I32);
    check_contiguous(op, *t);
  }
  check_dims(op, in.sel_indices, {dims[0], dims[1], dims[2], dims[3]}, indices_meaning);
  check_dims(op, in.sel_counts, {dims[0], dims[1], dims[2]}, counts_meaning);
  Selection sel;
  sel.indices = i32(in.sel_indices);
  sel.counts = i32(in.sel_counts);
  sel.batch = static_cast<int>(dims[0]);
  sel.num_sets = static_cast<int>(dims[1]);
  sel.max_tiles = static_cast<int>(dims[2]);
  sel.k_max = dims[3];
  return sel;
}

// A reuse call's head map on q's device: empty for the identity (null), else [Hkv] int32, contiguous.
const int32_t* check_reuse_head_map(const char* op, const PagedInputs& in, int hkv) {
  const OpTensor& head_map = in.head_map;
  check_same_device(op, in.q, head_map);
  check_elem(op, head_map, Elem::I32);
  if (head_map.numel() == 0) return nullptr;
  check_dims(op, head_map, {hkv}, "one source kv head per kv head; empty for the identity");
  check_contiguous(op, head_map);
  return i32(head_map);
}

// The workspace on q's device: 1-D uint8, contiguous.
Workspace check_workspace(const char* op, const PagedInputs& in) {
  const OpTensor& ws = in.workspace;
  check_same_device(op, in.q, ws);
  check_elem(op, ws, Elem::U8);
  KASCADE_CHECK(ws.dim == 1, op << ": workspace must be 1-D uint8, got shape " << ws.shape_str());
  check_contiguous(op, ws);
  return Workspace{ws.data, static_cast<size_t>(ws.numel())};
}

// A CUDA call's workspace holds what its kernels need; `size_op` is the op that tells the size.
void check_workspace_bytes(const char* op, const Workspace& ws, size_t need, const char* size_op) {
  KASCADE_CHECK(ws.bytes >= need, op << ": workspace has " << ws.bytes << " bytes, this call needs " << need
                                     << " (ask " << size_op << ")");
}

}  // namespace

SparsityParams to_params(const char* op, const SparsityArgs& a) {
  KASCADE_CHECK(a.rho >= 0 && a.rho <= 1, op << ": rho " << a.rho << " is outside [0, 1]");
  KASCADE_CHECK(a.k_min >= 0 && a.k_min < (int64_t{1} << 31), op << ": k_min " << a.k_min << " is out of range");
  KASCADE_CHECK(a.k_multiple >= 1 && a.k_multiple < (int64_t{1} << 20),
                op << ": k_multiple " << a.k_multiple << " must be positive");
  KASCADE_CHECK(a.tile >= 1 && a.tile < (int64_t{1} << 20), op << ": tile " << a.tile << " must be positive");
  SparsityParams p;
  p.rho = a.rho;
  p.k_min = static_cast<int>(a.k_min);
  p.k_multiple = static_cast<int>(a.k_multiple);
  p.tile = static_cast<int>(a.tile);
  p.budget = a.rolling ? BudgetMode::Rolling : BudgetMode::Fixed;
  p.pooling = a.pool_all ? Pooling::All : Pooling::Group;
  p.scale = (std::isnan(a.scale) || a.scale <= 0) ? NAN : static_cast<float>(a.scale);
  return p;
}

std::array<int64_t, 3> decode_selection_dims(int64_t num_kv_heads, int64_t max_seq_len, const SparsityParams& sp) {
  const int64_t sets = sp.pooling == Pooling::All ? 1 : num_kv_heads;
  return {sets, 1, budget_k(max_seq_len, sp.rho, sp.k_min, sp.k_multiple)};
}

std::array<int64_t, 4> prefill_selection_dims(const std::vector<int64_t>& q_indptr_host,
                                              const std::vector<int64_t>& seq_lens_host, int64_t num_kv_heads,
                                              const SparsityParams& sp) {
  const int64_t batch = static_cast<int64_t>(seq_lens_host.size());
  KASCADE_CHECK(static_cast<int64_t>(q_indptr_host.size()) == batch + 1,
                "prefill: q_indptr_host has " << q_indptr_host.size() << " entries, expected batch + 1 = "
                                              << batch + 1);
  KASCADE_CHECK(batch == 0 || q_indptr_host[0] == 0, "prefill: q_indptr_host[0] must be 0, got " << q_indptr_host[0]);
  int64_t max_tiles = 0, k_max = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t nq = q_indptr_host[b + 1] - q_indptr_host[b];
    const int64_t p1 = seq_lens_host[b];
    KASCADE_CHECK(nq >= 0, "prefill: q_indptr_host must be non-decreasing (sequence " << b << " has " << nq
                                                                                       << " queries)");
    KASCADE_CHECK(p1 >= nq && p1 < (int64_t{1} << 31), "prefill: sequence " << b << " has " << nq
                                                           << " queries but seq_lens_host gives " << p1
                                                           << " keys (seq_lens must count the new tokens)");
    const int64_t p0 = p1 - nq;
    max_tiles = std::max(max_tiles, num_tiles(p0, p1, sp.tile));
    k_max = std::max(k_max, max_tile_budget(sp.rolling(), p0, p1, sp.tile, sp.rho, sp.k_min, sp.k_multiple));
  }
  return {batch, sp.pooling == Pooling::All ? 1 : num_kv_heads, max_tiles, k_max};
}

DecodeCall validate_decode(const char* op, const DecodeInputs& in) {
  DecodeCall c;
  const QDims q = check_q(op, in.q, "batch, Hq, D");
  const int batch = to_int(op, "batch", q.rows);
  KASCADE_CHECK(batch >= 1 && q.hq >= 1 && q.d >= 1,
                op << ": q has shape " << in.q.shape_str() << "; all dims must be positive");
  begin_call(c, op, in);
  const PagedKV kv = check_paged_cache(op, in, batch, q);
  KASCADE_CHECK(in.max_seq_len >= 1 && in.max_seq_len < (int64_t{1} << 31),
                op << ": max_seq_len " << in.max_seq_len << " must be in 1..2^31-1");
  c.workspace = check_workspace(op, in);
  c.shape = DecodeShape{batch, q.hq, kv.num_kv_heads, q.d, kv.dtype, in.max_seq_len};
  c.tensors.q = in.q.data;
  c.tensors.out = in.out.data;
  c.tensors.kv = kv;
  c.tensors.num_q_heads = q.hq;

  if (in.role != Role::Dense) {
    const auto dims = decode_selection_dims(kv.num_kv_heads, in.max_seq_len, c.params);
    c.selection = check_selection(op, in, {batch, dims[0], 1, dims[2]},
                                  "batch, selection sets, 1, k_max = budget_k(max_seq_len)",
                                  "batch, selection sets, 1");
  }
  if (in.role == Role::Reuse) c.head_map = check_reuse_head_map(op, in, kv.num_kv_heads);
  if (c.device == DeviceKind::CPU) {
    check_pages_cpu(op, kv, c.num_pages, in.page_indices.numel());
    for (int b = 0; b < batch; ++b)
      KASCADE_CHECK(kv.seq_lens[b] <= in.max_seq_len, op << ": seq_lens[" << b << "] = " << kv.seq_lens[b]
                                                         << " exceeds max_seq_len " << in.max_seq_len);
  } else {
    check_workspace_bytes(op, c.workspace, cuda_decode_workspace_size(c.shape, c.role, c.params),
                          "kascade.decode_workspace_size");
  }
  return c;
}

PrefillCall validate_prefill(const char* op, const PrefillInputs& in) {
  PrefillCall c;
  const QDims q = check_q(op, in.q, "total queries, Hq, D");
  KASCADE_CHECK(q.hq >= 1 && q.d >= 1,
                op << ": q has shape " << in.q.shape_str() << "; heads and head dim must be positive");
  check_same_device(op, in.q, in.q_indptr);
  begin_call(c, op, in);
  const int batch = to_int(op, "batch (length of seq_lens_host)", static_cast<int64_t>(in.seq_lens_host.size()));
  KASCADE_CHECK(batch >= 1, op << ": the batch is empty (seq_lens_host has no entries)");
  KASCADE_CHECK(static_cast<int64_t>(in.q_indptr_host.size()) == batch + 1,
                op << ": q_indptr_host has " << in.q_indptr_host.size() << " entries, expected batch + 1 = "
                   << batch + 1);
  KASCADE_CHECK(in.q_indptr_host.back() == q.rows, op << ": q_indptr_host ends at " << in.q_indptr_host.back()
                                                      << " but q holds " << q.rows << " query rows");
  check_index_vector(op, in.q_indptr, batch + 1, "batch + 1");
  const PagedKV kv = check_paged_cache(op, in, batch, q);

  const auto dims = prefill_selection_dims(in.q_indptr_host, in.seq_lens_host, kv.num_kv_heads, c.params);
  for (int64_t x : in.q_indptr_host) c.q_indptr_host.push_back(static_cast<int32_t>(x));
  for (int64_t x : in.seq_lens_host) c.seq_lens_host.push_back(static_cast<int32_t>(x));
  c.shape = PrefillShape{batch, q.hq, kv.num_kv_heads, q.d, kv.dtype, c.q_indptr_host.data(), c.seq_lens_host.data()};
  c.tensors = PrefillTensors{in.q.data, in.out.data, kv, q.hq, i32(in.q_indptr)};

  if (in.role != Role::Dense) {
    c.selection = check_selection(op, in, dims,
                                  "batch, selection sets, max tiles, k_max (ask kascade.prefill_selection_shape)",
                                  "batch, selection sets, max tiles");
  }
  if (in.role == Role::Reuse) c.head_map = check_reuse_head_map(op, in, kv.num_kv_heads);
  if (role_selects(in.role)) c.workspace = check_workspace(op, in);
  if (c.device == DeviceKind::CPU) {
    for (int b = 0; b <= batch; ++b)
      KASCADE_CHECK(c.tensors.q_indptr[b] == c.q_indptr_host[b], op << ": q_indptr[" << b << "] = " << c.tensors.q_indptr[b]
                                                                 << " differs from q_indptr_host[" << b
                                                                 << "] = " << c.q_indptr_host[b]);
    for (int b = 0; b < batch; ++b)
      KASCADE_CHECK(kv.seq_lens[b] == c.seq_lens_host[b], op << ": seq_lens[" << b << "] = " << kv.seq_lens[b]
                                                             << " differs from seq_lens_host[" << b
                                                             << "] = " << c.seq_lens_host[b]);
    check_pages_cpu(op, kv, c.num_pages, in.page_indices.numel());
    for (int b = 0; b < batch; ++b)
      KASCADE_CHECK(c.q_indptr_host[b + 1] > c.q_indptr_host[b],
                    op << ": sequence " << b << " has no query rows (q_indptr_host[" << b << "] == ["
                       << b + 1 << "])");
  } else if (role_selects(in.role)) {
    check_workspace_bytes(op, c.workspace, cuda_prefill_workspace_size(c.shape, c.role, c.params),
                          "kascade.prefill_workspace_size");
  }
  return c;
}

}  // namespace kascade::torch_ops
