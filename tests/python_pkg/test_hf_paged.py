"""transformers continuous batching with "paged|kascade" (kascade.hf.enable registers it).

A random tiny Llama runs model.generate_batch on the CPU: greedy tokens equal paged|sdpa's below
k_min (Kascade exact there), including steps that mix decoding sequences with prompt chunks; with
a small k_min every sequence gives the tokens of its own model.generate under "kascade" (the
non-paged path), so the paged page tables, the decode/prefill split and the per-kind selection
buffers compute the same attention; bad input is one KascadeError.
"""

from __future__ import annotations

import gc

import pytest
import torch

import kascade
from conftest import SMOLLM_PLAN, default_model_or_skip, plan_json, requires_gpu

transformers = pytest.importorskip("transformers")
import kascade.hf  # noqa: E402
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: E402

VOCAB = 97


def tiny_llama(seed=0, device="cpu"):
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      max_position_embeddings=512)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    if device == "cuda":
        model = model.to(device="cuda", dtype=torch.float16)
    model.set_attn_implementation("sdpa")
    return model


# The first two tests run on both devices: on CUDA through our kernels, in f16 (the CUDA ops take
# 16-bit caches; f16 keeps the tiny model's close greedy margins), without transformers' CUDA
# graphs (a paged|kascade step reads its lengths on the host).
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, requires_gpu])]


def tiny_plan(k_min):
    return kascade.Plan.from_json(plan_json(4, 4, 2, 16, [0, 2], [[0, 1], [1, 0], [0, 1], [1, 1]], k_min=k_min,
                                            tile=16), "tiny.json")


def prompts_of(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def generate_batch(model, prompts, new_tokens, max_batch_tokens):
    """Greedy continuous batching; (tokens per prompt, errors per prompt), in prompt order."""
    config = transformers.GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1,
                                           pad_token_id=0)
    cb_config = transformers.ContinuousBatchingConfig(num_blocks=64, block_size=16, max_batch_tokens=max_batch_tokens,
                                                      use_cuda_graph=False)
    with torch.no_grad():
        results = model.generate_batch(prompts, generation_config=config, continuous_batching_config=cb_config)
    assert len(results) == len(prompts)
    ordered = list(results.values())
    return [r.generated_tokens for r in ordered], [r.error for r in ordered]


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_matches_paged_sdpa_below_k_min_with_mixed_steps(device):
    """66 + 45 + 12 prompt tokens through 64-token steps: chunked prompts share steps with decoding sequences."""
    model = tiny_llama(device=device)
    prompts = prompts_of((66, 45, 12))
    want, errors = generate_batch(model, prompts, 10, max_batch_tokens=64)
    assert errors == [None] * 3
    kascade.hf.enable(model, tiny_plan(k_min=128), track_keys=True)
    got, errors = generate_batch(model, prompts, 10, max_batch_tokens=64)
    assert errors == [None] * 3
    assert got == want
    paged = model.kascade_paged
    assert paged.step_counts["mixed"] > 0 and paged.step_counts["decode"] > 0, paged.step_counts
    assert paged.keys_read_fraction() == 1.0  # every selection is the whole prefix
    assert model.config._attn_implementation == "kascade"  # continuous batching switched back


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_batch_matches_each_sequence_alone(device):
    """k_min 8: the sparse path. One step holds all prompts, then decode steps; each sequence must
    give the tokens that model.generate gives it alone through the non-paged "kascade" path."""
    model = tiny_llama(device=device)
    prompts = prompts_of((100, 70, 41), seed=3)
    kascade.hf.enable(model, tiny_plan(k_min=8), track_keys=True)
    got, errors = generate_batch(model, prompts, 6, max_batch_tokens=256)
    assert errors == [None] * 3
    paged = model.kascade_paged
    assert paged.step_counts == {"decode": 5, "prefill": 1, "mixed": 0}
    assert paged.keys_read_fraction() < 0.9
    for prompt, tokens in zip(prompts, got):
        ids = torch.tensor([prompt], device=device)
        with torch.no_grad():
            alone = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
        assert tokens == alone[0, len(prompt):].tolist()
    kascade.hf.disable(model)
    dense, _ = generate_batch(model, prompts, 6, max_batch_tokens=256)
    assert dense != got  # the reuse layers really attended to fewer keys


def test_sparse_chunked_prefill_runs():
    """A 150-token prompt in 32-token chunks beside decoding sequences, k_min 8: runs, reads fewer keys."""
    model = tiny_llama()
    kascade.hf.enable(model, tiny_plan(k_min=8), track_keys=True)
    got, errors = generate_batch(model, prompts_of((150, 20, 9), seed=4), 5, max_batch_tokens=32)
    assert errors == [None] * 3
    assert [len(t) for t in got] == [5, 5, 5] and all(0 <= t < VOCAB for seq in got for t in seq)
    assert model.kascade_paged.step_counts["mixed"] > 0
    assert model.kascade_paged.keys_read_fraction() < 0.9


def test_sequence_longer_than_max_seq_len_is_refused():
    model = tiny_llama()
    kascade.hf.enable(model, tiny_plan(k_min=128), max_seq_len=40)
    _, errors = generate_batch(model, prompts_of((50,)), 2, max_batch_tokens=64)
    assert errors[0] is not None and "sequence 0 reaches 50 tokens, more than max_seq_len 40" in errors[0]


def test_plain_forward_under_the_paged_name_is_refused():
    model = tiny_llama()
    kascade.hf.enable(model, tiny_plan(k_min=128))
    model.set_attn_implementation(kascade.hf.PAGED_NAME)
    with pytest.raises(kascade.KascadeError, match="called without transformers' paged cache"):
        model(torch.randint(0, VOCAB, (1, 8)))


def test_model_without_state_is_refused():
    enabled, other = tiny_llama(), tiny_llama()
    kascade.hf.enable(enabled, tiny_plan(k_min=128))
    other.set_attn_implementation(kascade.hf.PAGED_NAME)  # registered by the other model's enable
    _, errors = generate_batch(other, prompts_of((10,)), 2, max_batch_tokens=64)
    assert errors[0] is not None and "this model has no Kascade state" in errors[0]


def test_block_table_and_mask_are_refused():
    model = tiny_llama()
    kascade.hf.enable(model, tiny_plan(k_min=128))
    module = model.model.layers[0].self_attn
    q, kv = torch.zeros(1, 4, 1, 16), torch.zeros(1, 2, 1, 16)
    cu = torch.tensor([0, 1], dtype=torch.int32)
    index = [torch.zeros(1, dtype=torch.int64)]
    common = dict(cache=object(), cu_seq_lens_q=cu, cu_seq_lens_k=cu, read_index=index, write_index=index)
    with pytest.raises(kascade.KascadeError, match="got a block table"):
        kascade.hf.paged_kascade_attention_forward(module, q, kv, kv, None, block_table=torch.zeros(1, 1, 1), **common)
    with pytest.raises(kascade.KascadeError, match="got an attention mask"):
        kascade.hf.paged_kascade_attention_forward(module, q, kv, kv, torch.zeros(1, 1, 1, 1), **common)


def test_disable_unregisters_both_names():
    gc.collect()  # models enabled by earlier tests and dropped since must not keep the names
    model = tiny_llama()
    kascade.hf.enable(model, tiny_plan(k_min=128))
    assert kascade.hf.PAGED_NAME in ALL_ATTENTION_FUNCTIONS and kascade.hf.NAME in ALL_ATTENTION_FUNCTIONS
    kascade.hf.disable(model)
    assert kascade.hf.PAGED_NAME not in ALL_ATTENTION_FUNCTIONS and kascade.hf.NAME not in ALL_ATTENTION_FUNCTIONS
    assert not hasattr(model.model.layers[0].self_attn, "kascade_paged")


@pytest.mark.model
def test_default_model_continuous_batching_matches_paged_sdpa():
    """SmolLM2-135M (fp32, CPU), shipped plan: greedy continuous batching equals paged|sdpa below k_min."""
    model, tokenizer = default_model_or_skip(torch.float32)
    prompts = [tokenizer(p).input_ids for p in ("The capital of France is", "List three colours of the rainbow:")]
    want, errors = generate_batch(model, prompts, 12, max_batch_tokens=64)
    assert errors == [None, None]
    kascade.hf.enable(model, SMOLLM_PLAN, max_seq_len=256)
    got, errors = generate_batch(model, prompts, 12, max_batch_tokens=64)
    assert errors == [None, None]
    assert max(len(p) for p in prompts) + 12 < model.kascade_paged.plan.k_min
    assert got == want, f"{[tokenizer.decode(t) for t in got]} vs {[tokenizer.decode(t) for t in want]}"
