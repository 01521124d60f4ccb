"""transformers integration: attn_implementation "kascade" through kascade.hf.enable.

Random tiny Llama models check the wiring without a download; the default model (SmolLM2-135M,
converted from the shipped GGUF at first use) checks that greedy decoding with Kascade gives the
same tokens as transformers' sdpa for prompts shorter than k_min, where Kascade is exact.
"""

from __future__ import annotations

import pytest
import torch

import kascade
from conftest import SMOLLM_PLAN, default_model_or_skip, plan_json

transformers = pytest.importorskip("transformers")
import kascade.hf  # noqa: E402


def tiny_llama(layers=4, hq=4, hkv=2, head_dim=16, seed=0):
    config = transformers.LlamaConfig(vocab_size=97, hidden_size=hq * head_dim, intermediate_size=64,
                                      num_hidden_layers=layers, num_attention_heads=hq, num_key_value_heads=hkv,
                                      head_dim=head_dim, max_position_embeddings=512)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    model.set_attn_implementation("sdpa")
    return model


def tiny_plan(k_min=128, anchors=(0, 2)):
    return kascade.Plan.from_json(plan_json(4, 4, 2, 16, list(anchors), [[0, 1], [1, 0], [0, 1], [1, 1]],
                                            k_min=k_min, tile=16), "tiny.json")


def greedy(model, ids, new_tokens):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                              do_sample=False)[:, ids.shape[1]:]


def test_plan_for_another_model_is_refused():
    model = tiny_llama()
    with pytest.raises(kascade.KascadeError,
                       match=r"kascade.hf.enable: plan for 'smollm2-135m-instruct': model.layers is 30 but the "
                             r"model has 4"):
        kascade.hf.enable(model, SMOLLM_PLAN)
    assert model.config._attn_implementation == "sdpa"  # left as it was


def test_tiny_model_matches_sdpa_below_k_min():
    """Prompt + answer shorter than k_min: every selection is the whole prefix, Kascade is exact."""
    model = tiny_llama()
    ids = torch.randint(0, 97, (2, 50), generator=torch.Generator().manual_seed(1))
    want = greedy(model, ids, 12)
    state = kascade.hf.enable(model, tiny_plan(), max_batch=2, track_keys=True)
    got = greedy(model, ids, 12)
    assert torch.equal(got, want)
    assert state.keys_read_fraction() == 1.0
    kascade.hf.disable(model)
    assert torch.equal(greedy(model, ids, 12), want)


def test_long_prompt_reads_fewer_keys():
    model = tiny_llama()
    ids = torch.randint(0, 97, (1, 300), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dense_logits = model(ids).logits[0, -1]
    state = kascade.hf.enable(model, tiny_plan(k_min=8), track_keys=True)
    with torch.no_grad():
        sparse_logits = model(ids).logits[0, -1]
    assert state.keys_read_fraction() < 0.8
    assert torch.isfinite(sparse_logits).all()
    assert not torch.equal(sparse_logits, dense_logits)  # reuse layers really attend to fewer keys
    out = greedy(model, ids, 3)  # prefill then decode steps run
    assert out.shape == (1, 3)


def test_padded_batch_is_refused():
    model = tiny_llama()
    kascade.hf.enable(model, tiny_plan(), max_batch=2)
    ids = torch.randint(0, 97, (2, 20))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with pytest.raises(kascade.KascadeError, match="hides padded tokens"):
        model.generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=False)


def test_wrong_dtype_is_refused():
    model = tiny_llama()
    kascade.hf.enable(model, tiny_plan())
    model.to(torch.float64)  # after enable: the state was made for float32
    with pytest.raises(kascade.KascadeError, match="q is torch.float64 on cpu, expected torch.float32"):
        model(torch.randint(0, 97, (1, 8)))


@pytest.mark.model
def test_default_model_greedy_matches_sdpa():
    """SmolLM2-135M (fp32, CPU): Kascade with the shipped plan gives sdpa's greedy tokens below k_min."""
    model, tokenizer = default_model_or_skip(torch.float32)
    prompts = ["The capital of France is", "List three colours of the rainbow:"]
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        kascade.hf.disable(model)
        want = greedy(model, ids, 16)
        state = kascade.hf.enable(model, SMOLLM_PLAN, max_seq_len=256, track_keys=True)
        got = greedy(model, ids, 16)
        assert ids.shape[1] + 16 < state.plan.k_min
        assert got.tolist() == want.tolist(), f"{prompt!r}: {tokenizer.decode(got[0])!r} vs {tokenizer.decode(want[0])!r}"
