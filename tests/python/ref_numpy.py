"""An independent NumPy implementation of SPEC sections 3-5 and 9 (the second opinion).

Written from SPEC.md alone, in whole-array NumPy (float64 throughout), so that it shares no
structure with the C++ oracle it checks. One call of `attend` is one attention call of one
layer for one sequence, with the arrays and case.json keys of SPEC 9:

    out, select = attend(case, q, k, v)                 # dense / anchor: select [S, tiles, kmax]
    out, _ = attend(reuse_case, q2, k2, v2, select)     # reuse of that selection

`pooled(case, q, k)` returns the masses an anchor ranks, for comparing selections by the mass
they cover (SPEC 7): masses [S, tiles, n] (zero for non-candidates) and diagonals [S, tiles].
"""

import math

import numpy as np

DEFAULTS = {
    "rho": 0.1,
    "k_min": 128,
    "k_multiple": 1,
    "tile": 32,
    "budget": "rolling",
    "p0": 0,
    "pooling": "group",
    "head_map": None,
    "scale": None,
}


def with_defaults(case):
    full = dict(DEFAULTS)
    full.update(case)
    return full


def budget(n, rho, k_min, k_multiple):
    """SPEC 3: k(n) = min(n, max(k_min, floor(rho * n))), rounded up to k_multiple, at most n."""
    if n <= 0:
        return 0
    k = min(n, max(k_min, math.floor(float(rho) * float(n))))
    if k_multiple > 1:
        k = min(n, ((k + k_multiple - 1) // k_multiple) * k_multiple)
    return k


def tiles_of(case, n, nq):
    """The query tiles as (b, first position, end position): candidates are keys < b."""
    if case["mode"] == "decode":
        return [(n, n - 1, n)]  # one query at n-1 whose candidates are all n keys
    p0, size = n - nq, case["tile"]
    return [(b, b, min(b + size, n)) for b in range(p0, n, size)]


def tile_budget(case, b, n):
    c = case
    if c["mode"] == "decode":
        return budget(n, c["rho"], c["k_min"], c["k_multiple"])
    if c["budget"] == "rolling":
        return budget(b, c["rho"], c["k_min"], c["k_multiple"])
    return min(b, budget(n, c["rho"], c["k_min"], c["k_multiple"]))


def _scale(case, d):
    if case["scale"] is None:
        return float(np.float32(1.0) / np.sqrt(np.float32(d)))
    return float(np.float32(case["scale"]))


def _probabilities(case, q, k):
    """Exact causal softmax [Hq, nq, n] in float64 (zero above the diagonal)."""
    hq, nq, d = q.shape
    hkv, n, _ = k.shape
    group = hq // hkv
    k_per_head = np.repeat(k.astype(np.float64), group, axis=0)  # head h reads kv head h // G
    scores = np.einsum("hqd,hnd->hqn", q.astype(np.float64), k_per_head) * _scale(case, d)
    positions = np.arange(n - nq, n)
    visible = np.arange(n)[None, :] <= positions[:, None]  # [nq, n]
    scores = np.where(visible[None], scores, -np.inf)
    scores -= scores.max(axis=2, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(axis=2, keepdims=True)


def _sets(case, hq, hkv):
    """Query heads of every selection set: the GQA groups, or all heads with pooling all."""
    if case["pooling"] == "all":
        return [np.arange(hq)]
    group = hq // hkv
    return [np.arange(g * group, (g + 1) * group) for g in range(hkv)]


def pooled(case, q, k):
    case = with_defaults(case)
    hq, nq, _ = q.shape
    hkv, n, _ = k.shape
    probs = _probabilities(case, q, k)
    tiles = tiles_of(case, n, nq)
    sets = _sets(case, hq, hkv)
    mass = np.zeros((len(sets), len(tiles), n))
    diagonal = np.zeros((len(sets), len(tiles)))
    first = n - nq
    for tau, (b, t0, t1) in enumerate(tiles):
        rows = probs[:, t0 - first : t1 - first, :]  # [Hq, rows, n]
        for s, heads in enumerate(sets):
            summed = rows[heads].sum(axis=(0, 1))
            mass[s, tau, :b] = summed[:b]
            diagonal[s, tau] = summed[b:].sum()
    return mass, diagonal, [b for b, _, _ in tiles]


def select(case, q, k):
    """The anchor's selection [S, tiles, kmax], ascending, -1 padded; ties to the lower index."""
    case = with_defaults(case)
    n = k.shape[1]
    mass, _, prefixes = pooled(case, q, k)
    budgets = [tile_budget(case, b, n) for b in prefixes]
    kmax = max(budgets) if budgets else 0
    out = np.full((mass.shape[0], len(prefixes), kmax), -1, dtype=np.int32)
    for s in range(mass.shape[0]):
        for tau, b in enumerate(prefixes):
            candidates = mass[s, tau, :b]
            # lexsort: the last key is primary -> mass descending, then index ascending.
            order = np.lexsort((np.arange(b), -candidates))
            chosen = np.sort(order[: budgets[tau]])
            out[s, tau, : len(chosen)] = chosen
    return out


def sparse_output(case, q, k, v, selection, set_of_kv_head):
    """Attention of every query over its selection row plus the tile's diagonal keys."""
    hq, nq, d = q.shape
    hkv, n, _ = k.shape
    group = hq // hkv
    tiles = tiles_of(case, n, nq)
    scale = _scale(case, d)
    first = n - nq
    out = np.zeros((hq, nq, d))
    for tau, (b, t0, t1) in enumerate(tiles):
        for h in range(hq):
            g = h // group
            row = selection[set_of_kv_head[g], tau]
            chosen = row[row >= 0]
            for t in range(t0, t1):
                keys = np.concatenate([chosen, np.arange(b, t + 1)]).astype(np.int64)
                if keys.size == 0:
                    continue  # an empty key set gives a zero row (SPEC leaves it open; see docs)
                s = (k[g, keys].astype(np.float64) @ q[h, t - first].astype(np.float64)) * scale
                w = np.exp(s - s.max())
                out[h, t - first] = (w / w.sum()) @ v[g, keys].astype(np.float64)
    return out


def dense_output(case, q, k, v):
    probs = _probabilities(case, q, k)
    hq = q.shape[0]
    group = hq // k.shape[0]
    v_per_head = np.repeat(v.astype(np.float64), group, axis=0)
    return np.einsum("hqn,hnd->hqd", probs, v_per_head)


def source_sets(case, hkv):
    """Selection set read by each kv head: the head map (identity default), or set 0 with pooling all."""
    if case["pooling"] == "all":
        return [0] * hkv
    if case["role"] == "reuse" and case["head_map"] is not None:
        return list(case["head_map"])
    return list(range(hkv))


def attend(case, q, k, v, reuse_selection=None):
    """Returns (out [Hq, nq, D] float64, selection or None) for one SPEC 9 case."""
    case = with_defaults(case)
    hkv = k.shape[0]
    if case["role"] == "reuse":
        return sparse_output(case, q, k, v, reuse_selection, source_sets(case, hkv)), None
    sel = select(case, q, k)
    if case["role"] == "dense":
        return dense_output(case, q, k, v), sel
    return sparse_output(case, q, k, v, sel, source_sets(case, hkv)), sel
