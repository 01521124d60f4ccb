"""KascadeAttention: roles from the plan, per-anchor selection buffers, device head maps, the
plan/run protocol, torch.compile of a step, and its bad-input errors."""

from __future__ import annotations

import pytest
import torch

import kascade
from conftest import TOLERANCE, Sparsity, check_selection_mass, make_batch, plan_json, ref_numpy, rel_l2

LAYERS, HQ, HKV, D = 5, 6, 2, 16
ANCHORS = [0, 2]
HEAD_MAP = [[0, 1], [1, 0], [0, 1], [1, 1], [0, 0]]  # reuse layers 1, 3, 4 read other sets
SEQ_LENS, NQ = [40, 97], [40, 20]  # a fresh prompt and a chunk at p0 = 77


@pytest.fixture
def plan():
    return kascade.Plan.from_json(plan_json(LAYERS, HQ, HKV, D, ANCHORS, HEAD_MAP), "test-plan.json")


def make_attention(plan, **kw):
    args = dict(device="cpu", dtype=torch.float32, max_batch=2, max_seq_len=128)
    args.update(kw)
    return kascade.KascadeAttention(plan, **args)


def test_plan_roles_and_slots(plan):
    assert [plan.role(layer) for layer in range(LAYERS)] == ["layer0", "reuse", "anchor", "reuse", "reuse"]
    assert [plan.anchor_slot(layer) for layer in range(LAYERS)] == [0, 0, 1, 1, 1]
    assert plan.num_q_heads == HQ and plan.num_kv_heads == HKV and plan.head_dim == D


def test_buffers_are_allocated_once(plan):
    attn = make_attention(plan)
    assert len(attn.selections) == len(ANCHORS)
    assert attn.head_maps.tolist() == HEAD_MAP and attn.head_maps.dtype == torch.int32
    before = [(i.data_ptr(), c.data_ptr()) for i, c in attn.selections] + [attn.workspace.data_ptr()]
    kv = make_batch(SEQ_LENS, HKV, D, torch.float32, "nhd", seed=1)
    attn.begin_decode(kv.page_indptr, kv.page_indices, kv.seq_lens)
    q = torch.randn(2, HQ, D)
    for layer in range(LAYERS):
        attn.run(layer, q, kv.k_cache, kv.v_cache)
    after = [(i.data_ptr(), c.data_ptr()) for i, c in attn.selections] + [attn.workspace.data_ptr()]
    assert before == after


@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
def test_prefill_then_decode_through_every_layer(plan, kv_layout):
    """Each layer's output against the NumPy oracle, reuse layers through their anchor's selection."""
    sp = Sparsity(rho=plan.rho, k_min=plan.k_min, tile=plan.tile)
    attn = make_attention(plan, kv_layout=kv_layout)
    g = torch.Generator().manual_seed(5)
    layout = "hnd" if kv_layout == "HND" else "nhd"
    caches = [make_batch(SEQ_LENS, HKV, D, torch.float32, layout, seed=10, value_seed=10 + layer)
              for layer in range(LAYERS)]  # one page table, per-layer values

    def raw(cache):  # the wrapper takes the caller's own layout
        return cache.transpose(1, 2) if kv_layout == "HND" else cache

    # Prefill: sequence 0 a fresh prompt, sequence 1 a chunk.
    q_indptr_host = [0, NQ[0], NQ[0] + NQ[1]]
    kv0 = caches[0]
    attn.begin_prefill(torch.tensor(q_indptr_host, dtype=torch.int32), kv0.page_indptr, kv0.page_indices,
                       kv0.seq_lens, q_indptr_host, SEQ_LENS)
    for layer in range(LAYERS):
        kv = caches[layer]
        q = torch.randn(q_indptr_host[-1], HQ, D, generator=g)
        out = attn.run(layer, q, raw(kv.k_cache), raw(kv.v_cache))
        role, slot = plan.role(layer), plan.anchor_slot(layer)
        sel_idx, sel_cnt = attn._step[3][slot]
        for b in range(2):
            lo, hi = q_indptr_host[b], q_indptr_host[b + 1]
            qb = q[lo:hi].double().numpy().transpose(1, 0, 2)
            np_role = {"layer0": "dense", "anchor": "anchor", "reuse": "reuse"}[role]
            case = ref_numpy.with_defaults(sp.case("prefill", np_role, p0=SEQ_LENS[b] - (hi - lo),
                                                   head_map=HEAD_MAP[layer] if role == "reuse" else None))
            tiles = len(ref_numpy.tiles_of(case, SEQ_LENS[b], hi - lo))
            rows, counts = sel_idx[b, :, :tiles].numpy(), sel_cnt[b, :, :tiles].numpy()
            if role == "reuse":
                want, _ = ref_numpy.attend(case, qb, kv.seq_k[b], kv.seq_v[b], rows)
            else:
                check_selection_mass(case, qb, kv.seq_k[b], rows, counts, f"layer {layer} sequence {b}")
                want = ref_numpy.dense_output(case, qb, kv.seq_k[b], kv.seq_v[b]) if role == "layer0" else \
                    ref_numpy.sparse_output(case, qb, kv.seq_k[b], kv.seq_v[b], rows,
                                            ref_numpy.source_sets(case, HKV))
            got = out[lo:hi].double().numpy().transpose(1, 0, 2)
            assert rel_l2(want, got) <= TOLERANCE[torch.float32], f"prefill layer {layer} sequence {b}"

    # Decode: one more token per sequence.
    attn.begin_decode(kv0.page_indptr, kv0.page_indices, kv0.seq_lens)
    out = torch.empty(2, HQ, D)
    for layer in range(LAYERS):
        kv = caches[layer]
        q = torch.randn(2, HQ, D, generator=g)
        assert attn.run(layer, q, raw(kv.k_cache), raw(kv.v_cache), out=out) is out
        role, slot = plan.role(layer), plan.anchor_slot(layer)
        sel_idx, sel_cnt = attn._step[3][slot]
        for b in range(2):
            qb = q[b].double().numpy()[:, None, :]
            np_role = {"layer0": "dense", "anchor": "anchor", "reuse": "reuse"}[role]
            case = ref_numpy.with_defaults(sp.case("decode", np_role,
                                                   head_map=HEAD_MAP[layer] if role == "reuse" else None))
            rows, counts = sel_idx[b].numpy(), sel_cnt[b].numpy()
            if role == "reuse":
                want, _ = ref_numpy.attend(case, qb, kv.seq_k[b], kv.seq_v[b], rows)
            else:
                check_selection_mass(case, qb, kv.seq_k[b], rows, counts, f"decode layer {layer} sequence {b}")
                want = ref_numpy.dense_output(case, qb, kv.seq_k[b], kv.seq_v[b]) if role == "layer0" else \
                    ref_numpy.sparse_output(case, qb, kv.seq_k[b], kv.seq_v[b], rows,
                                            ref_numpy.source_sets(case, HKV))
            assert rel_l2(want, out[b].double().numpy()[:, None, :]) <= TOLERANCE[torch.float32], \
                f"decode layer {layer} sequence {b}"


def test_keys_read_accounting(plan):
    attn = make_attention(plan)
    attn.track_keys = True
    kv = make_batch([97, 97], HKV, D, torch.float32, "nhd", seed=3)
    attn.begin_decode(kv.page_indptr, kv.page_indices, kv.seq_lens)
    for layer in range(LAYERS):
        attn.run(layer, torch.randn(2, HQ, D), kv.k_cache, kv.v_cache)
    # k(97) = max(8, 9) = 9 keys for each of the 3 reuse layers, 97 for the 2 anchors.
    assert attn.keys_dense_total == 5 * 2 * 97 * HQ
    assert attn.keys_read_total == (2 * 97 + 3 * 9) * 2 * HQ
    assert attn.keys_read_fraction() == pytest.approx((2 * 97 + 3 * 9) / (5 * 97))


def test_compiled_decode_step_matches_eager(plan):
    """torch.compile(fullgraph=True) traces the ops (fake impls, functionalized mutation)."""
    attn = make_attention(plan)
    kv = make_batch(SEQ_LENS, HKV, D, torch.float32, "nhd", seed=4)
    attn.begin_decode(kv.page_indptr, kv.page_indices, kv.seq_lens)
    q = torch.randn(2, HQ, D)

    def step(q):
        x = q
        for layer in range(LAYERS):
            x = attn.run(layer, x * 0.5, kv.k_cache, kv.v_cache)
        return x

    eager = step(q)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(q)
    assert torch.equal(eager, compiled)


# ---- bad input -----------------------------------------------------------------------------------

def test_plan_errors_carry_the_json_path():
    bad = plan_json(LAYERS, HQ, HKV, D, ANCHORS, [[0, 1], [5, 0], [0, 1], [1, 1], [0, 0]])
    with pytest.raises(kascade.KascadeError, match=r"bad\.json: head_map\[1\]\[0\]"):
        kascade.Plan.from_json(bad, "bad.json")
    with pytest.raises(kascade.KascadeError, match="cannot read"):
        kascade.Plan.load("/nonexistent/plan.json")


def test_plan_for_another_model(plan):
    with pytest.raises(kascade.KascadeError, match="plan for 'test-model': model.hq is 6 but the model has 32"):
        plan.check_model(LAYERS, 32, 8, D)


@pytest.fixture
def planned(plan):
    attn = make_attention(plan)
    kv = make_batch(SEQ_LENS, HKV, D, torch.float32, "nhd", seed=2)
    attn.begin_decode(kv.page_indptr, kv.page_indices, kv.seq_lens)
    return attn, kv


@pytest.mark.parametrize("q, message", [
    (torch.randn(2, HQ, D, dtype=torch.float64), "q is torch.float64 on cpu, expected torch.float32"),
    (torch.randn(2, HQ, D, device="meta"), "q is torch.float32 on meta, expected torch.float32 on cpu"),
    (torch.randn(2, HQ + 1, D), r"q must be \[batch, 6, 16\], got \[2, 7, 16\]"),
    (torch.randn(2, HQ), r"q must be \[batch, 6, 16\], got \[2, 6\]"),
])
def test_run_rejects_bad_queries(planned, q, message):
    attn, kv = planned
    with pytest.raises(kascade.KascadeError, match=message):
        attn.run(0, q, kv.k_cache, kv.v_cache)


def test_run_rejects_bad_caches(planned):
    attn, kv = planned
    q = torch.randn(2, HQ, D)
    with pytest.raises(kascade.KascadeError, match="k_cache is torch.bfloat16 on cpu, expected torch.float32"):
        attn.run(0, q, kv.k_cache.bfloat16(), kv.v_cache)
    with pytest.raises(kascade.KascadeError, match="has 3 kv heads|the plan's model has 2 kv heads"):
        attn.run(0, q, torch.zeros(4, 16, 3, D), kv.v_cache)
    with pytest.raises(kascade.KascadeError, match="must be a 4-D paged cache"):
        attn.run(0, q, kv.k_cache[0], kv.v_cache)


def test_constructor_and_plan_errors(plan):
    with pytest.raises(kascade.KascadeError, match="dtype torch.int32 is not supported"):
        make_attention(plan, dtype=torch.int32)
    with pytest.raises(kascade.KascadeError, match="kv_layout 'BHLD'"):
        make_attention(plan, kv_layout="BHLD")
    attn = make_attention(plan)
    kv = make_batch(SEQ_LENS, HKV, D, torch.float32, "nhd")
    with pytest.raises(kascade.KascadeError, match="call begin_decode or begin_prefill first"):
        attn.run(0, torch.randn(2, HQ, D), kv.k_cache, kv.v_cache)
    with pytest.raises(kascade.KascadeError, match="batch 3 is outside 1..2"):
        attn.begin_decode(torch.arange(4, dtype=torch.int32), torch.arange(3, dtype=torch.int32),
                          torch.ones(3, dtype=torch.int32))
    with pytest.raises(kascade.KascadeError, match="seq_lens must be 1-D int32 on cpu"):
        attn.begin_decode(kv.page_indptr, kv.page_indices, kv.seq_lens.long())
    with pytest.raises(kascade.KascadeError, match="exceeds max_seq_len 128"):
        attn.begin_prefill(torch.tensor([0, 10], dtype=torch.int32), kv.page_indptr[:2], kv.page_indices,
                           kv.seq_lens[:1], [0, 10], [300])


def test_cuda_device_without_cuda_is_refused(plan):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(kascade.KascadeError, match="does not include the CUDA kernels|sees no CUDA device"):
        make_attention(plan, device="cuda", dtype=torch.bfloat16)


def test_flashinfer_plan_names_are_deprecated_aliases(plan):
    # plan_decode / plan_prefill (FlashInfer's names) still work, warn, and set up the same step.
    kv = make_batch(SEQ_LENS, HKV, D, torch.float32, "nhd", seed=3)
    q = torch.randn(2, HQ, D)
    attn = make_attention(plan)
    attn.begin_decode(kv.page_indptr, kv.page_indices, kv.seq_lens)
    expected = [attn.run(layer, q, kv.k_cache, kv.v_cache).clone() for layer in range(LAYERS)]
    old = make_attention(plan)
    with pytest.warns(DeprecationWarning, match="plan_decode is deprecated: call begin_decode"):
        old.plan_decode(kv.page_indptr, kv.page_indices, kv.seq_lens)
    for layer in range(LAYERS):
        assert torch.equal(old.run(layer, q, kv.k_cache, kv.v_cache), expected[layer])
    with pytest.warns(DeprecationWarning, match="plan_prefill is deprecated: call begin_prefill"):
        with pytest.raises(kascade.KascadeError, match="KascadeAttention.begin_prefill: .*exceeds max_seq_len"):
            old.plan_prefill(torch.tensor([0, 10], dtype=torch.int32), kv.page_indptr[:2], kv.page_indices,
                             kv.seq_lens[:1], [0, 10], [300])
