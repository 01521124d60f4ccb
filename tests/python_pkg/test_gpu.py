"""The CUDA side of the package (skipped without a GPU and a build with the CUDA kernels):
every op on CUDA against the CPU oracle (SPEC 7), CUDA-graph capture and replay of a decode
step with changed lengths, torch.compile(fullgraph=True) of a decode step, and transformers with
the default model on the GPU.

    pytest tests/python_pkg -m gpu            # tools/device.sh python runs this on a GPU machine
"""

from __future__ import annotations

import pytest
import torch

import kascade
from conftest import (HAS_GPU, SMOLLM_PLAN, TOLERANCE, Sparsity, check_selection_mass, default_model_or_skip,
                      make_batch, plan_json, ref_numpy, rel_l2)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and CUDA kernels")]

ops = kascade.ops
HQ, HKV = 8, 2
DECODE_LENS = [1, 17, 97, 300, 1023]
PREFILL_LENS, PREFILL_NQ = [17, 300, 1023], [17, 113, 1023]


def decode_case(d, dtype, layout, seed):
    kv = make_batch(DECODE_LENS, HKV, d, dtype, layout, seed=seed)
    q = torch.randn(len(DECODE_LENS), HQ, d, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    return q, kv


def run_decode_on(device, role, q, kv, sp, max_len, selection=None, head_map=None):
    kv = kv.to(device)
    q = q.to(device)
    ws_bytes = ops.decode_workspace_size(q.shape[0], HQ, HKV, q.shape[2], q.dtype, max_len, role, sp.rho, sp.k_min,
                                         sp.k_multiple, sp.pool_all, torch.device(device))
    ws = torch.empty(ws_bytes, dtype=torch.uint8, device=device)
    out = torch.full_like(q, float("nan"))
    common = (q, kv.k_cache, kv.v_cache, kv.page_indptr, kv.page_indices, kv.seq_lens, out)
    if role == "dense":
        ops.decode_dense(*common, ws, sp.scale, max_len)
        return out, None
    if role == "reuse":
        hm = torch.tensor(head_map, dtype=torch.int32, device=device)
        sel = tuple(t.to(device) for t in selection)
        ops.decode_reuse(*common, *sel, hm, ws, *sp.decode_args(), max_len)
        return out, sel
    shape = ops.decode_selection_shape(q.shape[0], HKV, max_len, sp.rho, sp.k_min, sp.k_multiple, sp.pool_all)
    sel = (torch.full(shape, -7, dtype=torch.int32, device=device),
           torch.full(shape[:3], -7, dtype=torch.int32, device=device))
    (ops.decode_layer0 if role == "layer0" else ops.decode_anchor)(*common, *sel, ws, *sp.decode_args(), max_len)
    return out, sel


@pytest.mark.parametrize("layout", ["nhd", "hnd", "hf"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("role", ["dense", "layer0", "anchor", "reuse"])
def test_decode_cuda_against_cpu_oracle(role, d, dtype, layout):
    sp = Sparsity(rho=0.1, k_min=16)
    max_len = 1024
    q, kv = decode_case(d, dtype, layout, seed=d + len(layout))
    cpu_sel = gpu_sel = None
    head_map = [1, 0]
    if role == "reuse":  # one selection (the CPU anchor's) read by both implementations
        _, cpu_sel = run_decode_on("cpu", "anchor", q, kv, sp, max_len)
        gpu_sel = cpu_sel
    want, cpu_out_sel = run_decode_on("cpu", role, q, kv, sp, max_len, cpu_sel, head_map)
    got, got_sel = run_decode_on("cuda", role, q, kv, sp, max_len, gpu_sel, head_map)
    got = got.cpu()
    tol = TOLERANCE[dtype]
    for b in range(q.shape[0]):
        qb = q[b].double().numpy()[:, None, :]
        if role in ("layer0", "anchor"):
            case = sp.case("decode", "anchor")
            rows, counts = got_sel[0][b].cpu().numpy(), got_sel[1][b].cpu().numpy()
            check_selection_mass(case, qb, kv.seq_k[b], rows, counts, f"cuda decode_{role} sequence {b}")
        if role == "anchor":  # the output given the kernel's own selection
            c = ref_numpy.with_defaults(sp.case("decode", "anchor"))
            ref = ref_numpy.sparse_output(c, qb, kv.seq_k[b], kv.seq_v[b], rows, ref_numpy.source_sets(c, HKV))
            err = rel_l2(ref, got[b].double().numpy()[:, None, :])
        else:
            err = rel_l2(want[b].double().numpy(), got[b].double().numpy())
        assert err <= tol, f"cuda decode_{role} sequence {b} (n={DECODE_LENS[b]}): relative L2 error {err:.3g}"


def run_prefill_on(device, role, q, q_indptr_host, kv, sp, selection=None, head_map=None):
    kv = kv.to(device)
    q = q.to(device)
    q_indptr = torch.tensor(q_indptr_host, dtype=torch.int32, device=device)
    out = torch.full_like(q, float("nan"))
    common = (q, q_indptr, kv.k_cache, kv.v_cache, kv.page_indptr, kv.page_indices, kv.seq_lens, out)
    host = (q_indptr_host, PREFILL_LENS)
    if role == "dense":
        ops.prefill_dense(*common, *host, sp.scale)
        return out, None
    if role == "reuse":
        hm = torch.tensor(head_map, dtype=torch.int32, device=device)
        sel = tuple(t.to(device) for t in selection)
        ops.prefill_reuse(*common, *sel, hm, *host, *sp.prefill_args())
        return out, sel
    shape = ops.prefill_selection_shape(q_indptr_host, PREFILL_LENS, HKV, sp.rho, sp.k_min, sp.k_multiple, sp.tile,
                                        sp.rolling, sp.pool_all)
    sel = (torch.full(shape, -7, dtype=torch.int32, device=device),
           torch.full(shape[:3], -7, dtype=torch.int32, device=device))
    ws_bytes = ops.prefill_workspace_size(q_indptr_host, PREFILL_LENS, HQ, HKV, q.shape[2], q.dtype, role, sp.rho,
                                          sp.k_min, sp.k_multiple, sp.tile, sp.rolling, sp.pool_all,
                                          torch.device(device))
    ws = torch.empty(ws_bytes, dtype=torch.uint8, device=device)
    (ops.prefill_layer0 if role == "layer0" else ops.prefill_anchor)(*common, *sel, ws, *host, *sp.prefill_args())
    return out, sel


@pytest.mark.parametrize("layout", ["nhd", "hf"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("role", ["dense", "layer0", "anchor", "reuse"])
def test_prefill_cuda_against_cpu_oracle(role, d, dtype, layout):
    sp = Sparsity(rho=0.1, k_min=16, tile=32)
    kv = make_batch(PREFILL_LENS, HKV, d, dtype, layout, seed=d)
    q_indptr_host = [0]
    for nq in PREFILL_NQ:
        q_indptr_host.append(q_indptr_host[-1] + nq)
    q = torch.randn(q_indptr_host[-1], HQ, d, generator=torch.Generator().manual_seed(d + 5)).to(dtype)
    head_map = [1, 1]
    sel = None
    if role == "reuse":
        _, sel = run_prefill_on("cpu", "anchor", q, q_indptr_host, kv, sp)
    want, _ = run_prefill_on("cpu", role, q, q_indptr_host, kv, sp, sel, head_map)
    got, got_sel = run_prefill_on("cuda", role, q, q_indptr_host, kv, sp, sel, head_map)
    got = got.cpu()
    tol = TOLERANCE[dtype]
    for b in range(len(PREFILL_LENS)):
        lo, hi = q_indptr_host[b], q_indptr_host[b + 1]
        n = PREFILL_LENS[b]
        qb = q[lo:hi].double().numpy().transpose(1, 0, 2)
        c = ref_numpy.with_defaults(sp.case("prefill", "anchor", p0=n - (hi - lo)))
        tiles = len(ref_numpy.tiles_of(c, n, hi - lo))
        if role in ("layer0", "anchor"):
            rows, counts = got_sel[0][b, :, :tiles].cpu().numpy(), got_sel[1][b, :, :tiles].cpu().numpy()
            check_selection_mass(c, qb, kv.seq_k[b], rows, counts, f"cuda prefill_{role} sequence {b}")
        if role == "anchor":
            ref = ref_numpy.sparse_output(c, qb, kv.seq_k[b], kv.seq_v[b], rows, ref_numpy.source_sets(c, HKV))
            err = rel_l2(ref, got[lo:hi].double().numpy().transpose(1, 0, 2))
        else:
            err = rel_l2(want[lo:hi].double().numpy(), got[lo:hi].double().numpy())
        assert err <= tol, f"cuda prefill_{role} sequence {b}: relative L2 error {err:.3g}"


# ---- the wrapper on the GPU: CUDA graphs and torch.compile ----------------------------------------

LAYERS, D = 6, 64


def gpu_plan():
    return kascade.Plan.from_json(plan_json(LAYERS, HQ, HKV, D, [0, 3], [[0, 1], [1, 0], [1, 1], [0, 1], [0, 0],
                                                                       [1, 0]], k_min=16, tile=32), "gpu.json")


def paged_step(batch, max_len, page_size=16, device="cuda"):
    pages = max_len // page_size
    k = torch.randn(LAYERS, batch * pages, page_size, HKV, D, device=device, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    page_indptr = torch.arange(0, (batch + 1) * pages, pages, dtype=torch.int32, device=device)
    page_indices = torch.randperm(batch * pages, device=device).to(torch.int32)
    return k, v, page_indptr, page_indices


def test_cuda_graph_replay_with_changed_lengths():
    batch, max_len = 4, 2048
    attn = kascade.KascadeAttention(gpu_plan(), device="cuda", dtype=torch.bfloat16, max_batch=batch,
                                    max_seq_len=max_len)
    k, v, page_indptr, page_indices = paged_step(batch, max_len)
    seq_lens = torch.tensor([100, 700, 1500, 2048], dtype=torch.int32, device="cuda")
    q = torch.randn(batch, HQ, D, device="cuda", dtype=torch.bfloat16)
    outs = [torch.empty_like(q) for _ in range(LAYERS)]
    attn.begin_decode(page_indptr, page_indices, seq_lens)

    def step():
        for layer in range(LAYERS):
            attn.run(layer, q, k[layer], v[layer], out=outs[layer])

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up off the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for lens in ([1, 17, 97, 1023], [2048, 1, 600, 129], [128, 129, 130, 131]):
        seq_lens.copy_(torch.tensor(lens, dtype=torch.int32))
        q.normal_()
        graph.replay()
        replayed = [o.clone() for o in outs]
        step()  # eager, same inputs
        for layer in range(LAYERS):
            assert torch.equal(replayed[layer], outs[layer]), f"lengths {lens}, layer {layer}: replay != eager"
        # Layer 0's output is dense attention: against the CPU oracle for these lengths.
        cpu_out = torch.empty(batch, HQ, D, dtype=torch.bfloat16)
        ops.decode_dense(q.cpu(), k[0].cpu(), v[0].cpu(), page_indptr.cpu(), page_indices.cpu(), seq_lens.cpu(),
                         cpu_out, torch.empty(0, dtype=torch.uint8), 0.0, max_len)
        err = rel_l2(cpu_out.double().numpy(), outs[0].cpu().double().numpy())
        assert err <= TOLERANCE[torch.bfloat16], f"lengths {lens}: layer 0 relative L2 error {err:.3g}"


def test_compiled_decode_step_on_gpu():
    batch, max_len = 2, 1024
    attn = kascade.KascadeAttention(gpu_plan(), device="cuda", dtype=torch.bfloat16, max_batch=batch,
                                    max_seq_len=max_len)
    k, v, page_indptr, page_indices = paged_step(batch, max_len)
    seq_lens = torch.tensor([333, 1024], dtype=torch.int32, device="cuda")
    attn.begin_decode(page_indptr, page_indices, seq_lens)
    w = torch.randn(HQ * D, HQ * D, device="cuda", dtype=torch.bfloat16) / 32

    def step(x):
        for layer in range(LAYERS):
            x = attn.run(layer, (x.view(batch, -1) @ w).view(batch, HQ, D), k[layer], v[layer])
        return x

    x = torch.randn(batch, HQ, D, device="cuda", dtype=torch.bfloat16)
    eager = step(x)
    compiled = torch.compile(step, fullgraph=True)(x)
    assert (compiled.float() - eager.float()).norm() <= 1e-2 * eager.float().norm()


# ---- transformers on the GPU ---------------------------------------------------------------------

@pytest.mark.model
def test_default_model_on_gpu_greedy_matches_sdpa():
    model, tokenizer = default_model_or_skip(torch.bfloat16, device="cuda")
    import kascade.hf
    plan = kascade.Plan.load(SMOLLM_PLAN)
    for prompt in ["The capital of France is", "List three colours of the rainbow:"]:
        ids = tokenizer(prompt, return_tensors="pt").input_ids.cuda()
        kascade.hf.disable(model)
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
        kascade.hf.enable(model, plan, max_seq_len=256)
        got = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
        assert got.tolist() == want.tolist(), f"{prompt!r}: {tokenizer.decode(got[0])!r} vs {tokenizer.decode(want[0])!r}"
