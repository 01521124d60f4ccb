"""Shared pieces of the kascade package tests: random paged caches in every supported layout,
the call arguments of each op, and the independent NumPy oracle (tests/python/ref_numpy.py).

Run: pytest tests/python_pkg (after `pip install --no-build-isolation .`). Tests marked `gpu`
skip without CUDA; tests marked `model` skip without transformers or the default model.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import kascade

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import ref_numpy  # noqa: E402  (the NumPy second opinion of SPEC 3-5)

HAS_GPU = torch.cuda.is_available() and kascade.has_cuda()
requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and a build with the CUDA kernels")

# The default model's shipped plan.
SMOLLM_PLAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plans",
                           "smollm2-135m-instruct.json")


def default_model_or_skip(dtype, device="cpu"):
    """(model, tokenizer) of the default model in transformers, or the test skips (no
    transformers, or the model is not installed: kascade.models says which)."""
    pytest.importorskip("transformers")
    import kascade.models
    try:
        return kascade.models.load_default_model(dtype=dtype, device=device)
    except kascade.KascadeError as e:
        pytest.skip(str(e))


# SPEC 7 output tolerances (relative L2) by storage dtype.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
MASS_TOLERANCE = 1e-3  # SPEC 7 selection equivalence

# Layouts of one layer's cache: ours / FlashInfer NHD [pages, P, Hkv, D], FlashInfer HND
# [pages, Hkv, P, D], and transformers' [B, Hkv, L, D] (one page of L tokens per sequence).
LAYOUTS = ("nhd", "hnd", "hf")


@dataclass
class PagedBatch:
    """A random ragged batch over a paged cache, plus the same data per sequence in SPEC 9 form."""
    k_cache: torch.Tensor  # [pages, P, Hkv, D] view (strided for hnd/hf)
    v_cache: torch.Tensor
    page_indptr: torch.Tensor
    page_indices: torch.Tensor
    seq_lens: torch.Tensor
    seq_k: list  # per sequence [Hkv, n, D] float64 (values as stored)
    seq_v: list

    def to(self, device):
        moved = {f: getattr(self, f).to(device) for f in ("k_cache", "v_cache", "page_indptr", "page_indices",
                                                          "seq_lens")}
        return PagedBatch(**moved, seq_k=self.seq_k, seq_v=self.seq_v)


def make_batch(seq_lens, hkv, d, dtype, layout, page_size=16, seed=0, device="cpu", value_seed=None) -> PagedBatch:
    """`seed` fixes the page table, `value_seed` (default: seed) the K/V values, so that the
    layers of one model can share a page table and differ in values."""
    g = torch.Generator().manual_seed(seed)
    values = torch.Generator().manual_seed(seed if value_seed is None else value_seed)
    batch = len(seq_lens)
    if layout == "hf":
        length = max(seq_lens) + 5  # a cache with room past the longest sequence
        store_k = torch.randn(batch, hkv, length, d, generator=values).to(dtype)
        store_v = torch.randn(batch, hkv, length, d, generator=values).to(dtype)
        k_cache, v_cache = store_k.transpose(1, 2), store_v.transpose(1, 2)  # [B, L, Hkv, D] views
        page_indptr = list(range(batch + 1))
        page_indices = list(range(batch))
    else:
        pages_of = [math.ceil(n / page_size) + (b % 2) for b, n in enumerate(seq_lens)]  # some spare pages
        total = sum(pages_of) + 3
        perm = torch.randperm(total, generator=g).tolist()  # pages scattered over the pool
        page_indptr = [0]
        for p in pages_of:
            page_indptr.append(page_indptr[-1] + p)
        page_indices = perm[: page_indptr[-1]]
        if layout == "hnd":
            store_k = torch.randn(total, hkv, page_size, d, generator=values).to(dtype)
            store_v = torch.randn(total, hkv, page_size, d, generator=values).to(dtype)
            k_cache, v_cache = store_k.transpose(1, 2), store_v.transpose(1, 2)
        else:
            k_cache = torch.randn(total, page_size, hkv, d, generator=values).to(dtype)
            v_cache = torch.randn(total, page_size, hkv, d, generator=values).to(dtype)
    seq_k, seq_v = [], []
    for b, n in enumerate(seq_lens):
        pages = torch.tensor(page_indices[page_indptr[b]:page_indptr[b + 1]])
        k = k_cache[pages].reshape(-1, hkv, d)[:n]  # [n, Hkv, D]
        v = v_cache[pages].reshape(-1, hkv, d)[:n]
        seq_k.append(k.permute(1, 0, 2).double().numpy())
        seq_v.append(v.permute(1, 0, 2).double().numpy())
    as_i32 = lambda x: torch.tensor(x, dtype=torch.int32, device=device)  # noqa: E731
    return PagedBatch(k_cache.to(device), v_cache.to(device), as_i32(page_indptr), as_i32(page_indices),
                      as_i32(list(seq_lens)), seq_k, seq_v)


@dataclass
class Sparsity:
    rho: float = 0.1
    k_min: int = 8
    k_multiple: int = 1
    tile: int = 16
    rolling: bool = True
    pool_all: bool = False
    scale: float = 0.0  # 0: 1/sqrt(D)

    def case(self, mode, role, p0=0, head_map=None):
        """The SPEC 9 case.json of one sequence's call with these parameters."""
        c = {"mode": mode, "role": role, "rho": self.rho, "k_min": self.k_min, "k_multiple": self.k_multiple,
             "tile": self.tile, "budget": "rolling" if self.rolling else "fixed",
             "pooling": "all" if self.pool_all else "group"}
        if mode == "prefill":
            c["p0"] = p0
        if head_map is not None:
            c["head_map"] = list(head_map)
        if self.scale:
            c["scale"] = self.scale
        return c

    def decode_args(self):
        return (self.rho, self.k_min, self.k_multiple, self.pool_all, self.scale)

    def prefill_args(self):
        return (self.rho, self.k_min, self.k_multiple, self.tile, self.rolling, self.pool_all, self.scale)


def rel_l2(reference: np.ndarray, actual: np.ndarray) -> float:
    if not np.all(np.isfinite(actual)):
        return math.inf
    denom = np.linalg.norm(reference)
    diff = np.linalg.norm(actual - reference)
    return diff / denom if denom > 0 else diff


def check_selection_mass(case, q, k, got_rows, got_counts, where=""):
    """SPEC 7: per (set, tile) equal counts and covered pooled mass (+ diagonal) within 1e-3."""
    mass, diagonal, prefixes = ref_numpy.pooled(case, q, k)
    want = ref_numpy.select(case, q, k)
    for s in range(want.shape[0]):
        for tau in range(want.shape[1]):
            w = want[s, tau][want[s, tau] >= 0]
            count = int(got_counts[s, tau])
            g = np.asarray(got_rows[s, tau][:count])
            assert count == len(w), f"{where} set {s} tile {tau}: {count} keys selected, oracle {len(w)}"
            assert np.all(np.asarray(got_rows[s, tau][count:]) == -1), f"{where} set {s} tile {tau}: padding not -1"
            assert len(set(g.tolist())) == count and np.all(g >= 0) and np.all(g < prefixes[tau]), \
                f"{where} set {s} tile {tau}: malformed selection {g.tolist()}"
            covered_w = mass[s, tau, w].sum() + diagonal[s, tau]
            covered_g = mass[s, tau, g].sum() + diagonal[s, tau]
            assert abs(covered_w - covered_g) <= MASS_TOLERANCE * max(covered_w, covered_g, 1e-30), \
                f"{where} set {s} tile {tau}: covers mass {covered_g}, oracle {covered_w}"


def plan_json(layers, hq, hkv, head_dim, anchors, head_map=None, name="test-model", rho=0.1, k_min=8, tile=16,
              pooling="group", budget="rolling"):
    head_map = head_map or [list(range(hkv)) for _ in range(layers)]
    return json.dumps({
        "format": "kascade-plan", "version": 1,
        "model": {"name": name, "layers": layers, "hq": hq, "hkv": hkv, "head_dim": head_dim},
        "anchors": anchors, "head_map": head_map,
        "sparsity": {"rho": rho, "k_min": k_min, "k_multiple": 1, "tile": tile, "budget": budget,
                     "pooling": pooling},
        "provenance": {"notes": "made by the kascade package tests"},
    })


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
