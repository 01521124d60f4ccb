"""The torch.ops.kascade operators on the CPU: schemas and fake tensors (opcheck), and every op
against the independent NumPy oracle over random ragged batches in every cache layout.

The CPU ops run the C++ reference oracle on gathered pages; the NumPy oracle (tests/python) reads
the same values per sequence in SPEC 9 form, so these tests check the whole op path: strides,
page tables, dtype widening and rounding, selection buffers and the head map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kascade
from conftest import (LAYOUTS, TOLERANCE, Sparsity, check_selection_mass, make_batch, ref_numpy, rel_l2)

ops = kascade.ops
HQ, HKV, D = 6, 2, 16
DECODE_LENS = [1, 17, 40, 97]
PREFILL_LENS, PREFILL_NQ = [17, 70, 97], [17, 30, 97]  # sequence 1 is a chunk at p0 = 40
HEAD_MAP = [1, 1]  # both kv heads of the reuse layer read the anchor's set 1


def decode_inputs(dtype=torch.float32, layout="nhd", device="cpu", seed=0, lens=DECODE_LENS):
    kv = make_batch(lens, HKV, D, dtype, layout, seed=seed, device=device)
    g = torch.Generator().manual_seed(seed + 100)
    q = torch.randn(len(lens), HQ, D, generator=g).to(dtype).to(device)
    return q, kv


def decode_selection(sp, batch, max_seq_len, device="cpu"):
    shape = ops.decode_selection_shape(batch, HKV, max_seq_len, sp.rho, sp.k_min, sp.k_multiple, sp.pool_all)
    idx = torch.full(shape, -7, dtype=torch.int32, device=device)  # garbage: the op must overwrite all
    cnt = torch.full(shape[:3], -7, dtype=torch.int32, device=device)
    return idx, cnt


def run_decode(role, q, kv, sp, max_seq_len, selection=None, head_map=None, workspace=None):
    """Calls decode_<role>; returns (out, (sel_indices, sel_counts))."""
    out = torch.full_like(q, float("nan"))
    ws = workspace if workspace is not None else torch.empty(0, dtype=torch.uint8, device=q.device)
    common = (q, kv.k_cache, kv.v_cache, kv.page_indptr, kv.page_indices, kv.seq_lens, out)
    if role == "dense":
        ops.decode_dense(*common, ws, sp.scale, max_seq_len)
        return out, None
    if role == "reuse":
        hm = torch.tensor(head_map if head_map is not None else [], dtype=torch.int32, device=q.device)
        ops.decode_reuse(*common, *selection, hm, ws, *sp.decode_args(), max_seq_len)
        return out, selection
    selection = selection or decode_selection(sp, q.shape[0], max_seq_len, q.device)
    op = ops.decode_layer0 if role == "layer0" else ops.decode_anchor
    op(*common, *selection, ws, *sp.decode_args(), max_seq_len)
    return out, selection


def prefill_inputs(dtype=torch.float32, layout="nhd", device="cpu", seed=0):
    kv = make_batch(PREFILL_LENS, HKV, D, dtype, layout, seed=seed, device=device)
    q_indptr_host = [0]
    for nq in PREFILL_NQ:
        q_indptr_host.append(q_indptr_host[-1] + nq)
    g = torch.Generator().manual_seed(seed + 200)
    q = torch.randn(q_indptr_host[-1], HQ, D, generator=g).to(dtype).to(device)
    q_indptr = torch.tensor(q_indptr_host, dtype=torch.int32, device=device)
    return q, q_indptr, q_indptr_host, kv


def prefill_selection(sp, q_indptr_host, device="cpu"):
    shape = ops.prefill_selection_shape(q_indptr_host, PREFILL_LENS, HKV, sp.rho, sp.k_min, sp.k_multiple, sp.tile,
                                        sp.rolling, sp.pool_all)
    return (torch.full(shape, -7, dtype=torch.int32, device=device),
            torch.full(shape[:3], -7, dtype=torch.int32, device=device))


def run_prefill(role, q, q_indptr, q_indptr_host, kv, sp, selection=None, head_map=None, workspace=None):
    out = torch.full_like(q, float("nan"))
    ws = workspace if workspace is not None else torch.empty(0, dtype=torch.uint8, device=q.device)
    common = (q, q_indptr, kv.k_cache, kv.v_cache, kv.page_indptr, kv.page_indices, kv.seq_lens, out)
    host = (q_indptr_host, PREFILL_LENS)
    if role == "dense":
        ops.prefill_dense(*common, *host, sp.scale)
        return out, None
    if role == "reuse":
        hm = torch.tensor(head_map if head_map is not None else [], dtype=torch.int32, device=q.device)
        ops.prefill_reuse(*common, *selection, hm, *host, *sp.prefill_args())
        return out, selection
    selection = selection or prefill_selection(sp, q_indptr_host, q.device)
    op = ops.prefill_layer0 if role == "layer0" else ops.prefill_anchor
    op(*common, *selection, ws, *host, *sp.prefill_args())
    return out, selection


def numpy_q(q):
    return q.detach().cpu().double().numpy()


def check_decode(role, q, kv, sp, out, selection, head_map=None):
    """Every sequence of a decode call against the NumPy oracle (SPEC 7)."""
    tol = TOLERANCE[q.dtype]
    qn = numpy_q(q)
    for b, (k, v) in enumerate(zip(kv.seq_k, kv.seq_v)):
        qb = qn[b][:, None, :]  # [Hq, 1, D]
        np_role = {"dense": "dense", "layer0": "dense", "anchor": "anchor", "reuse": "reuse"}[role]
        case = sp.case("decode", np_role, head_map=head_map)
        rows = selection[0][b].cpu().numpy() if selection is not None else None
        counts = selection[1][b].cpu().numpy() if selection is not None else None
        if role == "reuse":
            want, _ = ref_numpy.attend(case, qb, k, v, rows)
        elif role == "anchor":
            # Outputs are compared given the op's own selection; the selection by covered mass.
            check_selection_mass(case, qb, k, rows, counts, f"decode_{role} sequence {b}")
            want = ref_numpy.sparse_output(ref_numpy.with_defaults(case), qb, k, v, rows,
                                           ref_numpy.source_sets(ref_numpy.with_defaults(case), k.shape[0]))
        else:
            want, _ = ref_numpy.attend(case, qb, k, v)
            if role == "layer0":
                check_selection_mass(case, qb, k, rows, counts, f"decode_{role} sequence {b}")
        got = out[b].detach().cpu().double().numpy()[:, None, :]
        err = rel_l2(want, got)
        assert err <= tol, f"decode_{role} sequence {b}: relative L2 error {err:.3g} > {tol}"


def check_prefill(role, q, q_indptr_host, kv, sp, out, selection, head_map=None):
    tol = TOLERANCE[q.dtype]
    qn = numpy_q(q)
    for b, (k, v) in enumerate(zip(kv.seq_k, kv.seq_v)):
        lo, hi = q_indptr_host[b], q_indptr_host[b + 1]
        n = PREFILL_LENS[b]
        qb = qn[lo:hi].transpose(1, 0, 2)  # [Hq, nq, D]
        np_role = {"dense": "dense", "layer0": "dense", "anchor": "anchor", "reuse": "reuse"}[role]
        case = ref_numpy.with_defaults(sp.case("prefill", np_role, p0=n - (hi - lo), head_map=head_map))
        tiles = len(ref_numpy.tiles_of(case, n, hi - lo))
        rows = selection[0][b, :, :tiles].cpu().numpy() if selection is not None else None
        counts = selection[1][b, :, :tiles].cpu().numpy() if selection is not None else None
        if selection is not None:  # tiles past the sequence's last are empty
            assert np.all(selection[1][b, :, tiles:].cpu().numpy() == 0 if role != "reuse" else True)
        if role == "reuse":
            want, _ = ref_numpy.attend(case, qb, k, v, rows)
        elif role == "anchor":
            check_selection_mass(case, qb, k, rows, counts, f"prefill_{role} sequence {b}")
            want = ref_numpy.sparse_output(case, qb, k, v, rows, ref_numpy.source_sets(case, k.shape[0]))
        else:
            want, _ = ref_numpy.attend(case, qb, k, v)
            if role == "layer0":
                check_selection_mass(case, qb, k, rows, counts, f"prefill_{role} sequence {b}")
        got = out[lo:hi].detach().cpu().double().numpy().transpose(1, 0, 2)
        err = rel_l2(want, got)
        assert err <= tol, f"prefill_{role} sequence {b}: relative L2 error {err:.3g} > {tol}"


# ---- opcheck: schemas, fake tensors, autograd registration, AOT dispatch ------------------------

def _opcheck_cases():
    sp = Sparsity()
    q, kv = decode_inputs()
    max_len = 128
    sel = decode_selection(sp, q.shape[0], max_len)
    ws = torch.empty(0, dtype=torch.uint8)
    hm = torch.tensor(HEAD_MAP, dtype=torch.int32)
    common = (q, kv.k_cache, kv.v_cache, kv.page_indptr, kv.page_indices, kv.seq_lens, torch.empty_like(q))
    ops.decode_anchor(*common, *sel, ws, *sp.decode_args(), max_len)  # a valid selection for reuse
    yield "decode_dense", common + (ws, 0.0, max_len)
    yield "decode_layer0", common + (*decode_selection(sp, q.shape[0], max_len), ws, *sp.decode_args(), max_len)
    yield "decode_anchor", common + (*decode_selection(sp, q.shape[0], max_len), ws, *sp.decode_args(), max_len)
    yield "decode_reuse", common + (*sel, hm, ws, *sp.decode_args(), max_len)
    q, q_indptr, qh, kv = prefill_inputs()
    common = (q, q_indptr, kv.k_cache, kv.v_cache, kv.page_indptr, kv.page_indices, kv.seq_lens,
              torch.empty_like(q))
    psel = prefill_selection(sp, qh)
    ops.prefill_anchor(*common, *psel, ws, qh, PREFILL_LENS, *sp.prefill_args())
    yield "prefill_dense", common + (qh, PREFILL_LENS, 0.0)
    yield "prefill_layer0", common + (*prefill_selection(sp, qh), ws, qh, PREFILL_LENS, *sp.prefill_args())
    yield "prefill_anchor", common + (*prefill_selection(sp, qh), ws, qh, PREFILL_LENS, *sp.prefill_args())
    yield "prefill_reuse", common + (*psel, hm, qh, PREFILL_LENS, *sp.prefill_args())


OPCHECK_CASES = dict(_opcheck_cases())


def test_every_attention_op_has_an_opcheck_case():
    assert sorted(OPCHECK_CASES) == sorted(kascade.ATTENTION_OPS)


@pytest.mark.parametrize("name", kascade.ATTENTION_OPS)
def test_opcheck(name):
    torch.library.opcheck(getattr(ops, name).default, OPCHECK_CASES[name])


# ---- every op against the NumPy oracle -----------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("role", ["dense", "layer0", "anchor"])
def test_decode_against_numpy(role, layout):
    sp = Sparsity()
    q, kv = decode_inputs(layout=layout, seed=hash((role, layout)) % 1000)
    out, sel = run_decode(role, q, kv, sp, max_seq_len=128)
    check_decode(role, q, kv, sp, out, sel)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pool_all", [False, True])
def test_decode_reuse_against_numpy(layout, pool_all):
    sp = Sparsity(pool_all=pool_all)
    q, kv = decode_inputs(layout=layout, seed=7)
    _, sel = run_decode("anchor", q, kv, sp, max_seq_len=128)
    q2, kv2 = decode_inputs(layout=layout, seed=8)  # the reuse layer's own q, k, v
    out, _ = run_decode("reuse", q2, kv2, sp, 128, selection=sel, head_map=HEAD_MAP)
    check_decode("reuse", q2, kv2, sp, out, sel, head_map=None if pool_all else HEAD_MAP)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("role", ["layer0", "reuse"])
def test_decode_16bit_against_numpy(role, dtype):
    sp = Sparsity(rho=0.2, k_min=4, k_multiple=4)
    q, kv = decode_inputs(dtype=dtype, seed=11)
    out, sel = run_decode("layer0", q, kv, sp, max_seq_len=97)
    if role == "reuse":
        out, _ = run_decode("reuse", q, kv, sp, 97, selection=sel, head_map=HEAD_MAP)
    assert out.dtype == dtype
    check_decode(role, q, kv, sp, out, sel, head_map=HEAD_MAP if role == "reuse" else None)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("role", ["dense", "layer0", "anchor"])
def test_prefill_against_numpy(role, layout):
    sp = Sparsity()
    q, q_indptr, qh, kv = prefill_inputs(layout=layout, seed=hash((role, layout)) % 1000)
    out, sel = run_prefill(role, q, q_indptr, qh, kv, sp)
    check_prefill(role, q, qh, kv, sp, out, sel)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("budget", ["rolling", "fixed"])
def test_prefill_reuse_against_numpy(layout, budget):
    sp = Sparsity(rolling=budget == "rolling")
    q, q_indptr, qh, kv = prefill_inputs(layout=layout, seed=3)
    _, sel = run_prefill("anchor", q, q_indptr, qh, kv, sp)
    q2, _, _, kv2 = prefill_inputs(layout=layout, seed=4)
    out, _ = run_prefill("reuse", q2, q_indptr, qh, kv2, sp, selection=sel, head_map=HEAD_MAP)
    check_prefill("reuse", q2, qh, kv2, sp, out, sel, head_map=HEAD_MAP)


def test_prefill_bf16_against_numpy():
    sp = Sparsity()
    q, q_indptr, qh, kv = prefill_inputs(dtype=torch.bfloat16, seed=5)
    out, sel = run_prefill("layer0", q, q_indptr, qh, kv, sp)
    check_prefill("layer0", q, qh, kv, sp, out, sel)


def test_rho_one_anchor_equals_dense():
    """SPEC 7: with rho = 1 every key is selected and the anchor's output is dense attention."""
    sp = Sparsity(rho=1.0)
    q, kv = decode_inputs(seed=21)
    dense, _ = run_decode("dense", q, kv, sp, 128)
    anchor, _ = run_decode("anchor", q, kv, sp, 128)
    assert rel_l2(dense.double().numpy(), anchor.double().numpy()) <= 1e-6


# ---- size queries --------------------------------------------------------------------------------

def test_selection_shapes_follow_the_budget():
    assert ops.decode_selection_shape(3, 4, 1000, 0.1, 128, 1, False) == [3, 4, 1, 128]
    assert ops.decode_selection_shape(3, 4, 5000, 0.1, 128, 64, True) == [3, 1, 1, 512]
    # Rolling budget of the last tile (b = 100 + 6 * 32 = 292): max(16, floor(29.2)) = 29.
    assert ops.prefill_selection_shape([0, 100, 300], [100, 300], 3, 0.1, 16, 1, 32, True, False) == [2, 3, 7, 29]
    # Fixed budget: min(b, k(p1)) = min(292, 30).
    assert ops.prefill_selection_shape([0, 100, 300], [100, 300], 3, 0.1, 16, 1, 32, False, False) == [2, 3, 7, 30]


def test_cpu_needs_no_workspace():
    cpu = torch.device("cpu")
    assert ops.decode_workspace_size(2, 8, 2, 64, torch.bfloat16, 4096, "anchor", 0.1, 128, 1, False, cpu) == 0
    assert ops.prefill_workspace_size([0, 10], [10], 8, 2, 64, torch.bfloat16, "layer0", 0.1, 128, 1, 32, True,
                                      False, cpu) == 0


# ---- bad input: one error naming the argument ---------------------------------------------------

def _decode_dense_args(**override):
    q, kv = decode_inputs()
    args = dict(q=q, k_cache=kv.k_cache, v_cache=kv.v_cache, page_indptr=kv.page_indptr,
                page_indices=kv.page_indices, seq_lens=kv.seq_lens, out=torch.empty_like(q),
                workspace=torch.empty(0, dtype=torch.uint8), scale=0.0, max_seq_len=128)
    args.update(override)
    return args


def _every_other(cache):
    """The same values with head-dim stride 2 (a view into a twice-as-wide buffer)."""
    wide = torch.zeros(*cache.shape[:3], 2 * cache.shape[3], dtype=cache.dtype)
    wide[..., ::2] = cache
    return wide[..., ::2]


@pytest.mark.parametrize("override, message", [
    (lambda a: {"q": a["q"].double()}, "q must be float32, float16 or bfloat16"),
    (lambda a: {"out": a["out"].half()}, "out must have q's dtype"),
    (lambda a: {"k_cache": a["k_cache"].half()}, "k_cache (float16) and v_cache (float32) must have q's dtype"),
    (lambda a: {"q": a["q"][:, :5].contiguous()}, "must be a multiple of Hkv"),
    (lambda a: {"seq_lens": a["seq_lens"][:3]}, "seq_lens has shape [3], expected [4]"),
    (lambda a: {"page_indices": a["page_indices"].long()}, "page_indices must be int32"),
    (lambda a: {"page_indices": a["page_indices"] + 1000}, "is not a page of k_cache"),
    (lambda a: {"k_cache": _every_other(a["k_cache"]), "v_cache": _every_other(a["v_cache"])},
     "k_cache's last dim (head dim) must have stride 1"),
    (lambda a: {"max_seq_len": 50}, "seq_lens[3] = 97 exceeds max_seq_len 50"),
])
def test_decode_bad_input_names_the_argument(override, message):
    args = _decode_dense_args()
    args.update(override(args))
    with pytest.raises(RuntimeError) as info:
        ops.decode_dense(**args)
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith("kascade.decode_dense: ") and message in first_line, str(info.value)


def _reuse_args(phase):
    """Valid keyword arguments of decode_reuse / prefill_reuse, the selection an anchor's."""
    sp = Sparsity()
    hm = torch.tensor(HEAD_MAP, dtype=torch.int32)
    if phase == "decode":
        q, kv = decode_inputs()
        _, (idx, cnt) = run_decode("anchor", q, kv, sp, 128)
        args = dict(workspace=torch.empty(0, dtype=torch.uint8), max_seq_len=128)
        args.update(zip(("rho", "k_min", "k_multiple", "pool_all", "scale"), sp.decode_args()))
    else:
        q, q_indptr, qh, kv = prefill_inputs()
        _, (idx, cnt) = run_prefill("anchor", q, q_indptr, qh, kv, sp)
        args = dict(q_indptr=q_indptr, q_indptr_host=qh, seq_lens_host=list(PREFILL_LENS))
        args.update(zip(("rho", "k_min", "k_multiple", "tile", "rolling", "pool_all", "scale"), sp.prefill_args()))
    args.update(q=q, k_cache=kv.k_cache, v_cache=kv.v_cache, page_indptr=kv.page_indptr,
                page_indices=kv.page_indices, seq_lens=kv.seq_lens, out=torch.empty_like(q), sel_indices=idx,
                sel_counts=cnt, head_map=hm)
    return args


def _with_q_indptr_entry(q_indptr, i, value):
    changed = q_indptr.clone()
    changed[i] = value
    return changed


# The rules both phases share give the same message under either op's name.
SHARED_RULES = [
    (lambda a: {"q": a["q"].double()}, "q must be float32, float16 or bfloat16"),
    (lambda a: {"out": a["out"].half()}, "out must have q's dtype"),
    (lambda a: {"q": a["q"][:, :5].contiguous()}, "must be a multiple of Hkv"),
    (lambda a: {"seq_lens": a["seq_lens"][:-1]}, "seq_lens has shape"),
    (lambda a: {"page_indices": a["page_indices"].long()}, "page_indices must be int32"),
    (lambda a: {"page_indices": a["page_indices"] + 1000}, "is not a page of k_cache"),
    (lambda a: {"sel_indices": a["sel_indices"][..., :-1].contiguous()}, "sel_indices has shape"),
    (lambda a: {"sel_counts": a["sel_counts"].long()}, "sel_counts must be int32"),
    (lambda a: {"head_map": torch.tensor([0, 1, 1], dtype=torch.int32)}, "head_map has shape [3], expected [2]"),
    (lambda a: {"head_map": a["head_map"].long()}, "head_map must be int32"),
]
PREFILL_RULES = [
    (lambda a: {"q_indptr": a["q_indptr"].long()}, "q_indptr must be int32"),
    (lambda a: {"q_indptr_host": a["q_indptr_host"][:-1] + [a["q_indptr_host"][-1] + 1]},
     "q_indptr_host ends at 145 but q holds 144 query rows"),
    (lambda a: {"q_indptr": _with_q_indptr_entry(a["q_indptr"], 1, 18)},
     "q_indptr[1] = 18 differs from q_indptr_host[1] = 17"),
]


@pytest.mark.parametrize("phase, override, message",
                         [("decode", *rule) for rule in SHARED_RULES] +
                         [("prefill", *rule) for rule in SHARED_RULES + PREFILL_RULES])
def test_reuse_bad_input_names_the_argument(phase, override, message):
    args = _reuse_args(phase)
    args.update(override(args))
    op = f"{phase}_reuse"
    with pytest.raises(RuntimeError) as info:
        getattr(ops, op)(**args)
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith(f"kascade.{op}: ") and message in first_line, str(info.value)


def test_reuse_refuses_a_selection_of_the_wrong_shape():
    sp = Sparsity()
    q, kv = decode_inputs()
    idx, cnt = decode_selection(sp, q.shape[0], 256)  # sized for another max_seq_len
    with pytest.raises(RuntimeError, match="sel_indices has shape"):
        run_decode("reuse", q, kv, sp, 128, selection=(idx, cnt))


def test_cuda_tensors_without_cuda_kernels_are_refused():
    if kascade.has_cuda() or not torch.cuda.is_available():
        pytest.skip("needs a CPU-only build on a machine with a GPU")
    q, kv = decode_inputs(device="cuda")
    with pytest.raises(RuntimeError, match="this build does not include the CUDA kernels"):
        run_decode("dense", q, kv, Sparsity(), 128)


def test_reuse_of_a_corrupt_selection_is_refused_on_the_cpu():
    sp = Sparsity()
    q, kv = decode_inputs()
    _, (idx, cnt) = run_decode("anchor", q, kv, sp, 128)
    idx[2, 0, 0, 0] = 500  # not a key of sequence 2 (40 keys)
    with pytest.raises(RuntimeError, match=r"^kascade\.decode_reuse: "):
        run_decode("reuse", q, kv, sp, 128, selection=(idx, cnt), head_map=HEAD_MAP)


# ---- against the C++ oracle's own file interface (SPEC 9: `kascade reference CASE_DIR OUT_DIR`) --

def _kascade_cli():
    """$KASCADE_CLI, else the source tree's build/bin/kascade (what scripts/test.sh builds), else None."""
    import os
    from pathlib import Path
    path = os.environ.get("KASCADE_CLI") or str(Path(__file__).resolve().parents[2] / "build" / "bin" / "kascade")
    return path if Path(path).is_file() and os.access(path, os.X_OK) else None


def _reference_cli(tmp_path, name, case, q, k, v, select=None):
    """Runs `kascade reference` on one sequence; returns (out [Hq, nq, D], select or None)."""
    import json
    import subprocess
    case_dir, out_dir = tmp_path / f"{name}-case", tmp_path / f"{name}-out"
    case_dir.mkdir()
    (case_dir / "case.json").write_text(json.dumps(case))
    np.save(case_dir / "q.npy", q.astype(np.float32))
    np.save(case_dir / "k.npy", k.astype(np.float32))
    np.save(case_dir / "v.npy", v.astype(np.float32))
    if select is not None:
        np.save(case_dir / "select.npy", select.astype(np.int32))
    done = subprocess.run([_kascade_cli(), "reference", str(case_dir), str(out_dir)], capture_output=True, text=True)
    assert done.returncode == 0, f"kascade reference {name}: {done.stderr.strip()}"
    sel_path = out_dir / "select.npy"
    return np.load(out_dir / "out.npy"), (np.load(sel_path) if sel_path.exists() else None)


@pytest.mark.skipif(_kascade_cli() is None, reason="no kascade CLI (build/bin/kascade or $KASCADE_CLI)")
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_float32_ops_equal_the_cli_oracle_bitwise(tmp_path, phase):
    """fp32 through the ops (HND cache, ragged batch, chunked prefill) is bit for bit what the C++
    oracle's SPEC 9 file interface computes for each sequence, selections included."""
    sp = Sparsity()
    if phase == "decode":
        q, kv = decode_inputs(layout="hnd", seed=31)
        _, sel = run_decode("anchor", q, kv, sp, 128)
        out, _ = run_decode("reuse", q, kv, sp, 128, selection=sel, head_map=HEAD_MAP)
        rows = [(b, q[b].numpy()[:, None, :], 0) for b in range(q.shape[0])]
    else:
        q, q_indptr, qh, kv = prefill_inputs(layout="hnd", seed=32)
        _, sel = run_prefill("anchor", q, q_indptr, qh, kv, sp)
        out, _ = run_prefill("reuse", q, q_indptr, qh, kv, sp, selection=sel, head_map=HEAD_MAP)
        rows = [(b, q[qh[b]:qh[b + 1]].numpy().transpose(1, 0, 2), PREFILL_LENS[b] - (qh[b + 1] - qh[b]))
                for b in range(len(PREFILL_LENS))]
    for b, qb, p0 in rows:
        k, v = kv.seq_k[b], kv.seq_v[b]
        _, want_sel = _reference_cli(tmp_path, f"a{b}", sp.case(phase, "anchor", p0=p0), qb, k, v)
        tiles, width = want_sel.shape[1], want_sel.shape[2]
        got_sel = sel[0][b, :, :tiles].numpy()
        assert np.array_equal(got_sel[:, :, :width], want_sel) and np.all(got_sel[:, :, width:] == -1), \
            f"{phase} sequence {b}: selection differs from the CLI oracle's"
        want_out, _ = _reference_cli(tmp_path, f"r{b}", sp.case(phase, "reuse", p0=p0, head_map=HEAD_MAP), qb, k, v,
                                     want_sel)
        got_out = out[b].numpy()[:, None, :] if phase == "decode" else out[qh[b]:qh[b + 1]].numpy().transpose(1, 0, 2)
        assert np.array_equal(got_out, want_out), f"{phase} sequence {b}: reuse output differs from the CLI oracle's"
