"""KascadeAttention: every layer of one model, in FlashInfer's plan/run manner (here begin/run:
"plan" names only the calibration plan; FlashInfer's plan_decode / plan_prefill remain as
deprecated aliases).

The wrapper owns what the calls share and allocates it once, at construction, for the largest
batch and context it is told about: the workspace, one selection buffer per anchor (written by
the anchor's call, read by its reuse layers), and the plan's head maps on the device. A layer's
role (layer 0, anchor or reuse) comes from the plan.

    attn = KascadeAttention(plan, device="cuda", dtype=torch.bfloat16, max_batch=8, max_seq_len=32768)
    attn.begin_prefill(q_indptr, page_indptr, page_indices, seq_lens, q_indptr_host, seq_lens_host)
    for layer in range(plan.layers):
        out = attn.run(layer, q, k_cache[layer], v_cache[layer])       # q [total_q, Hq, D]
    attn.begin_decode(page_indptr, page_indices, seq_lens)             # once per decode step
    for layer in range(plan.layers):
        attn.run(layer, q, k_cache[layer], v_cache[layer], out=out)    # q [B, Hq, D]

KV caches are paged: `kv_layout="NHD"` takes [pages, page_size, Hkv, D] (ours and FlashInfer's
NHD), "HND" takes [pages, Hkv, page_size, D] (FlashInfer's HND); both are read through strides,
never copied. A decode step allocates nothing and never synchronises with the host, so it can be
captured in a CUDA graph: update page tables and seq_lens in place and replay.
"""

from __future__ import annotations

import math
import warnings

import torch

from ._ops import ops
from .errors import KascadeError
from .plan import Plan

KV_LAYOUTS = ("NHD", "HND")
_PREFILL_MASS_BUDGET_BYTES = 256 << 20  # kPrefillMassBudgetBytes in kascade/attention_prefill.h
_WORKSPACE_ALIGNMENT = 256


def _as_plan(plan) -> Plan:
    return plan if isinstance(plan, Plan) else Plan.load(plan)


class KascadeAttention:
    def __init__(
        self,
        plan,
        *,
        device="cpu",
        dtype=torch.bfloat16,
        max_batch: int = 1,
        max_seq_len: int,
        max_prefill_tokens: int | None = None,
        scale: float | None = None,
        kv_layout: str = "NHD",
    ):
        self.plan = _as_plan(plan)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not ops.has_cuda():
                raise KascadeError("KascadeAttention: this build does not include the CUDA kernels (it was built "
                                   "without nvcc); use device='cpu' or reinstall with the CUDA toolkit")
            if not torch.cuda.is_available():
                raise KascadeError(f"KascadeAttention: device {self.device} requested but torch sees no CUDA device")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = dtype
        if self.device.type not in ("cpu", "cuda"):
            raise KascadeError(f"KascadeAttention: device {self.device} is not supported (cpu or cuda)")
        allowed = (torch.bfloat16, torch.float16) if self.device.type == "cuda" else (
            torch.bfloat16, torch.float16, torch.float32)
        if dtype not in allowed:
            raise KascadeError(f"KascadeAttention: dtype {dtype} is not supported on {self.device.type} "
                               f"(supported: {', '.join(str(t) for t in allowed)})")
        if kv_layout not in KV_LAYOUTS:
            raise KascadeError(f"KascadeAttention: kv_layout '{kv_layout}' is not one of {', '.join(KV_LAYOUTS)}")
        if max_batch < 1 or max_seq_len < 1:
            raise KascadeError(f"KascadeAttention: max_batch ({max_batch}) and max_seq_len ({max_seq_len}) "
                               "must be positive")
        self.kv_layout = kv_layout
        self.max_batch = max_batch
        self.max_seq_len = max_seq_len
        self.max_prefill_tokens = max_prefill_tokens or max_seq_len
        p = self.plan
        self.num_q_heads, self.num_kv_heads, self.head_dim = p.num_q_heads, p.num_kv_heads, p.head_dim
        self.scale = float(scale) if scale is not None else 1.0 / math.sqrt(p.head_dim)
        self._sparsity = (p.rho, p.k_min, p.k_multiple)

        # Device-resident head maps: row `layer` is what that reuse layer passes to its call.
        self.head_maps = torch.tensor(p.head_map, dtype=torch.int32, device=self.device)
        # One selection buffer per anchor, sized for the largest decode and prefill call.
        _, sets, _, k_cap = ops.decode_selection_shape(max_batch, p.num_kv_heads, max_seq_len, *self._sparsity,
                                                       p.pool_all)
        tiles_cap = -(-self.max_prefill_tokens // p.tile)
        self._index_capacity = max_batch * sets * max(1, tiles_cap) * k_cap
        self._count_capacity = max_batch * sets * max(1, tiles_cap)
        self.selections = [
            (torch.full((self._index_capacity,), -1, dtype=torch.int32, device=self.device),
             torch.zeros((self._count_capacity,), dtype=torch.int32, device=self.device))
            for _ in p.anchors
        ]
        self.workspace = torch.empty((self._workspace_bytes(),), dtype=torch.uint8, device=self.device)
        self._step = None  # what begin_decode / begin_prefill set for the layers of one step
        # Keys-read accounting over run() calls (keys_read()); off by default: it reads the
        # selection counts back to the host.
        self.track_keys = False
        self.keys_read_total = 0.0
        self.keys_dense_total = 0.0

    # ---- sizing ----------------------------------------------------------------------------
    def _workspace_bytes(self) -> int:
        p = self.plan
        need = 0
        for batch in range(1, self.max_batch + 1):
            for role in ("dense", "layer0", "anchor", "reuse"):
                need = max(need, ops.decode_workspace_size(
                    batch, p.num_q_heads, p.num_kv_heads, p.head_dim, self.dtype, self.max_seq_len, role,
                    *self._sparsity, p.pool_all, self.device))
        q_indptr = [i * self.max_prefill_tokens for i in range(self.max_batch + 1)]
        seq_lens = [self.max_seq_len] * self.max_batch
        largest = ops.prefill_workspace_size(
            q_indptr, seq_lens, p.num_q_heads, p.num_kv_heads, p.head_dim, self.dtype, "anchor", *self._sparsity,
            p.tile, p.rolling, p.pool_all, self.device)
        if largest:
            # The need is not monotone in the shape (the pooled-mass chunk is a whole number of tiles
            # under a 256 MiB budget), so take kascade/attention_prefill.h's bound for any shape up to
            # the largest: total_q * Hq * 4 + max(budget, B * S * max_p1 * 4) + alignment.
            sets = 1 if p.pool_all else p.num_kv_heads
            total_q = self.max_batch * self.max_prefill_tokens
            largest = max(largest, total_q * p.num_q_heads * 4 + max(_PREFILL_MASS_BUDGET_BYTES,
                          self.max_batch * sets * self.max_seq_len * 4) + 2 * _WORKSPACE_ALIGNMENT)
        return max(need, largest)

    # ---- per step ------------------------------------------------------------------------------
    def _check_index(self, name: str, t: torch.Tensor, length: int | None = None) -> None:
        if not isinstance(t, torch.Tensor):
            raise KascadeError(f"KascadeAttention: {name} must be a tensor, got {type(t).__name__}")
        if t.dtype != torch.int32 or t.device != self.device or t.dim() != 1:
            raise KascadeError(f"KascadeAttention: {name} must be 1-D int32 on {self.device}, got "
                               f"{t.dim()}-D {t.dtype} on {t.device}")
        if length is not None and t.numel() != length:
            raise KascadeError(f"KascadeAttention: {name} has {t.numel()} entries, expected {length}")

    def begin_decode(self, page_indptr: torch.Tensor, page_indices: torch.Tensor, seq_lens: torch.Tensor) -> None:
        """Sets up one decode step: one new query per sequence, seq_lens counting it."""
        batch = seq_lens.numel()
        if not 1 <= batch <= self.max_batch:
            raise KascadeError(f"KascadeAttention.begin_decode: batch {batch} is outside 1..{self.max_batch} "
                               "(max_batch)")
        self._check_index("seq_lens", seq_lens, batch)
        self._check_index("page_indptr", page_indptr, batch + 1)
        self._check_index("page_indices", page_indices)
        shape = ops.decode_selection_shape(batch, self.num_kv_heads, self.max_seq_len, *self._sparsity,
                                           self.plan.pool_all)
        self._step = ("decode", batch, (page_indptr, page_indices, seq_lens), self._selection_views(shape), None)

    def begin_prefill(self, q_indptr: torch.Tensor, page_indptr: torch.Tensor, page_indices: torch.Tensor,
                     seq_lens: torch.Tensor, q_indptr_host, seq_lens_host) -> None:
        """Sets up one prefill (or chunked-prefill) step of a ragged batch.

        q_indptr [B + 1] and seq_lens [B] on the device, with their host copies (lists); sequence
        b's queries are its last q_indptr[b+1] - q_indptr[b] positions (p0 = seq_len - nq).
        """
        q_indptr_host, seq_lens_host = [int(x) for x in q_indptr_host], [int(x) for x in seq_lens_host]
        batch = len(seq_lens_host)
        if not 1 <= batch <= self.max_batch:
            raise KascadeError(f"KascadeAttention.begin_prefill: batch {batch} is outside 1..{self.max_batch} "
                               "(max_batch)")
        if max(seq_lens_host) > self.max_seq_len:
            raise KascadeError(f"KascadeAttention.begin_prefill: a sequence of {max(seq_lens_host)} tokens exceeds "
                               f"max_seq_len {self.max_seq_len}")
        self._check_index("q_indptr", q_indptr, batch + 1)
        self._check_index("seq_lens", seq_lens, batch)
        self._check_index("page_indptr", page_indptr, batch + 1)
        self._check_index("page_indices", page_indices)
        p = self.plan
        try:
            shape = ops.prefill_selection_shape(q_indptr_host, seq_lens_host, self.num_kv_heads, *self._sparsity,
                                                p.tile, p.rolling, p.pool_all)
        except RuntimeError as e:
            raise KascadeError(f"KascadeAttention.begin_prefill: {e}") from None
        views = self._selection_views(shape)
        self._step = ("prefill", batch, (q_indptr, page_indptr, page_indices, seq_lens), views,
                      (q_indptr_host, seq_lens_host))

    # FlashInfer's names for the same two calls, from before "plan" meant only the calibration plan.
    def plan_decode(self, *args, **kwargs) -> None:
        """Deprecated alias of begin_decode."""
        warnings.warn("KascadeAttention.plan_decode is deprecated: call begin_decode", DeprecationWarning, stacklevel=2)
        self.begin_decode(*args, **kwargs)

    def plan_prefill(self, *args, **kwargs) -> None:
        """Deprecated alias of begin_prefill."""
        warnings.warn("KascadeAttention.plan_prefill is deprecated: call begin_prefill", DeprecationWarning,
                      stacklevel=2)
        self.begin_prefill(*args, **kwargs)

    def _selection_views(self, shape):
        batch, sets, tiles, k_max = shape
        n_index, n_count = batch * sets * tiles * k_max, batch * sets * tiles
        if n_index > self._index_capacity or n_count > self._count_capacity:
            raise KascadeError(
                f"KascadeAttention: this step needs a selection buffer [{batch}, {sets}, {tiles}, {k_max}], more than "
                f"the one allocated for max_batch {self.max_batch}, max_seq_len {self.max_seq_len}, "
                f"max_prefill_tokens {self.max_prefill_tokens}")
        return [(idx[:n_index].view(batch, sets, tiles, k_max), cnt[:n_count].view(batch, sets, tiles))
                for idx, cnt in self.selections]

    # ---- per layer -----------------------------------------------------------------------------
    def _cache_view(self, name: str, cache: torch.Tensor) -> torch.Tensor:
        if not isinstance(cache, torch.Tensor) or cache.dim() != 4:
            got = f"shape {list(cache.shape)}" if isinstance(cache, torch.Tensor) else type(cache).__name__
            raise KascadeError(f"KascadeAttention: {name} must be a 4-D paged cache ({self.kv_layout}), got {got}")
        if cache.dtype != self.dtype or cache.device != self.device:
            raise KascadeError(f"KascadeAttention: {name} is {cache.dtype} on {cache.device}, expected {self.dtype} "
                               f"on {self.device}")
        view = cache.transpose(1, 2) if self.kv_layout == "HND" else cache  # -> [pages, P, Hkv, D]
        if view.shape[2] != self.num_kv_heads or view.shape[3] != self.head_dim:
            raise KascadeError(f"KascadeAttention: {name} has shape {list(cache.shape)} ({self.kv_layout}); the plan's "
                               f"model has {self.num_kv_heads} kv heads of dim {self.head_dim}")
        return view

    def run(self, layer: int, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
            out: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of one layer for the planned step; writes and returns `out` (q's shape)."""
        if self._step is None:
            raise KascadeError("KascadeAttention.run: call begin_decode or begin_prefill first")
        phase, batch, index, views, host = self._step
        if not isinstance(q, torch.Tensor) or q.dim() != 3 or q.shape[1] != self.num_q_heads or \
                q.shape[2] != self.head_dim:
            got = list(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
            raise KascadeError(f"KascadeAttention.run: q must be [{'batch' if phase == 'decode' else 'tokens'}, "
                               f"{self.num_q_heads}, {self.head_dim}], got {got}")
        if q.dtype != self.dtype or q.device != self.device:
            raise KascadeError(f"KascadeAttention.run: q is {q.dtype} on {q.device}, expected {self.dtype} on "
                               f"{self.device}")
        k = self._cache_view("k_cache", k_cache)
        v = self._cache_view("v_cache", v_cache)
        if out is None:
            out = torch.empty_like(q)
        role = self.plan.role(layer)
        sel_indices, sel_counts = views[self.plan.anchor_slot(layer)]
        p = self.plan
        if phase == "decode":
            page_indptr, page_indices, seq_lens = index
            common = (q, k, v, page_indptr, page_indices, seq_lens, out)
            if role == "reuse":
                ops.decode_reuse(*common, sel_indices, sel_counts, self.head_maps[layer], self.workspace,
                                 *self._sparsity, p.pool_all, self.scale, self.max_seq_len)
            else:
                op = ops.decode_layer0 if role == "layer0" else ops.decode_anchor
                op(*common, sel_indices, sel_counts, self.workspace, *self._sparsity, p.pool_all, self.scale,
                   self.max_seq_len)
        else:
            q_indptr, page_indptr, page_indices, seq_lens = index
            q_indptr_host, seq_lens_host = host
            common = (q, q_indptr, k, v, page_indptr, page_indices, seq_lens, out)
            tail = (q_indptr_host, seq_lens_host, *self._sparsity, p.tile, p.rolling, p.pool_all, self.scale)
            if role == "reuse":
                ops.prefill_reuse(*common, sel_indices, sel_counts, self.head_maps[layer], *tail)
            else:
                op = ops.prefill_layer0 if role == "layer0" else ops.prefill_anchor
                op(*common, sel_indices, sel_counts, self.workspace, *tail)
        if self.track_keys:
            read, dense = self.keys_read(layer)
            self.keys_read_total += read
            self.keys_dense_total += dense
        return out

    def keys_read_fraction(self) -> float:
        """Keys read over keys dense attention reads, over the tracked run() calls."""
        return self.keys_read_total / self.keys_dense_total if self.keys_dense_total else 1.0

    # ---- accounting ----------------------------------------------------------------------------
    def keys_read(self, layer: int) -> tuple[float, float]:
        """(keys read, keys dense attention reads) by the last run of `layer` in the planned step.

        Summed over query heads and queries: layer 0 and anchors read every causal key (anchors
        rank all of them); a reuse layer reads its selection plus, in prefill, its tile's
        diagonal. Reads the selection counts back to the host (a synchronisation on a GPU).
        """
        phase, batch, index, views, host = self._step
        role = self.plan.role(layer)
        group = self.num_q_heads // self.num_kv_heads
        counts = views[self.plan.anchor_slot(layer)][1].to("cpu")
        if self.plan.pool_all:
            sources = [0] * self.num_kv_heads
        else:
            sources = list(self.plan.head_map[layer])
        if phase == "decode":
            lens = index[2].to("cpu").tolist()
            dense = float(sum(lens)) * self.num_q_heads
            if role != "reuse":
                return dense, dense
            return float(sum(int(counts[b, s, 0]) for b in range(batch) for s in sources)) * group, dense
        q_indptr_host, seq_lens_host = host
        read = dense = 0.0
        tile = self.plan.tile
        for b in range(batch):
            p1 = seq_lens_host[b]
            p0 = p1 - (q_indptr_host[b + 1] - q_indptr_host[b])
            dense += sum(t + 1 for t in range(p0, p1)) * self.num_q_heads
            for tau in range(-(-(p1 - p0) // tile)):
                begin = p0 + tau * tile
                rows = min(p1, begin + tile) - begin
                selected = sum(int(counts[b, s, tau]) for s in sources) * group
                read += rows * selected + rows * (rows + 1) // 2 * self.num_q_heads
        return (read, dense) if role == "reuse" else (dense, dense)
