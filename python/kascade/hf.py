"""transformers integration: `attn_implementation="kascade"` for prefill and decode.

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to("cuda")
    kascade.hf.enable(model, "plans/smollm2-135m-instruct.json")
    model.generate(**inputs, max_new_tokens=64)      # every attention call is a Kascade call
    kascade.hf.disable(model)                         # back to sdpa

enable() checks the plan against the model's shape (one KascadeError naming the field),
registers "kascade" with transformers' AttentionInterface and AttentionMaskInterface, and
attaches one KascadeAttention (workspace, selection buffers, head maps) to the model's attention
modules. transformers' cache [B, Hkv, L, D] is read in place as B pages of L tokens
(`.transpose(1, 2)` is a view), so nothing is copied but the queries of a prefill.

Supported: causal decoder models whose attention modules carry `layer_idx` (Llama, Mistral,
Qwen2/3 without sliding windows), the dynamic cache, batches without padding. Padded batches,
sliding windows and explicit 4-D masks are refused with a KascadeError.
"""

from __future__ import annotations

import torch

from .attention import KascadeAttention
from .errors import KascadeError
from .plan import Plan

NAME = "kascade"


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_shape(model) -> tuple[int, int, int, int]:
    """(layers, query heads, kv heads, head dim) of a transformers causal LM."""
    c = _text_config(model)
    hq = c.num_attention_heads
    hkv = getattr(c, "num_key_value_heads", None) or hq
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // hq
    return c.num_hidden_layers, hq, hkv, head_dim


def _check_supported(model) -> None:
    c = _text_config(model)
    layer_types = getattr(c, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types) or (
            getattr(c, "sliding_window", None) and getattr(c, "use_sliding_window", True)):
        raise KascadeError(f"kascade.hf.enable: {type(model).__name__} uses sliding-window attention, which Kascade "
                           "does not implement (it needs full causal attention in every layer)")


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, kascade_attention_forward)
    AttentionMaskInterface.register(NAME, kascade_mask)


def enable(model, plan, *, max_seq_len: int | None = None, max_batch: int = 1,
           max_prefill_tokens: int | None = None, track_keys: bool = False) -> KascadeAttention:
    """Switches `model` to Kascade attention with `plan` (a Plan or a path); returns its state."""
    plan = plan if isinstance(plan, Plan) else Plan.load(plan)
    layers, hq, hkv, head_dim = model_shape(model)
    try:
        plan.check_model(layers, hq, hkv, head_dim)
    except KascadeError as e:
        raise KascadeError(f"kascade.hf.enable: {e}") from None
    _check_supported(model)
    c = _text_config(model)
    attention_modules = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "scaling")]
    if len(attention_modules) != layers:
        raise KascadeError(f"kascade.hf.enable: found {len(attention_modules)} attention modules with a layer_idx, "
                           f"the config says {layers} layers")
    scales = {float(m.scaling) for m in attention_modules}
    if len(scales) != 1:
        raise KascadeError(f"kascade.hf.enable: the layers use different softmax scales {sorted(scales)}")
    param = next(model.parameters())
    state = KascadeAttention(plan, device=param.device, dtype=param.dtype, max_batch=max_batch,
                             max_seq_len=max_seq_len or c.max_position_embeddings,
                             max_prefill_tokens=max_prefill_tokens, scale=scales.pop())
    state.track_keys = track_keys
    state.hf_step = None
    for m in attention_modules:
        m.kascade_state = state
    _register()
    model.set_attn_implementation(NAME)
    model.kascade_state = state
    return state


def disable(model, attn_implementation: str = "sdpa") -> None:
    """Switches back to a transformers implementation and drops the Kascade state."""
    model.set_attn_implementation(attn_implementation)
    for m in model.modules():
        if hasattr(m, "kascade_state"):
            del m.kascade_state


def kascade_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                 attention_mask=None, **kwargs):
    """AttentionMaskInterface entry: Kascade is causal by construction, so no mask is built.

    A padding mask that hides tokens is refused (the kernels take every cached position 0..n-1).
    """
    if attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all()):
        raise KascadeError("attn_implementation 'kascade': the attention mask hides padded tokens; Kascade attends "
                           "to every cached position, so run batches without padding (or one prompt at a time)")
    return None


def _plan_step(state: KascadeAttention, batch: int, q_len: int, kv_len: int, device) -> None:
    """Plans the step (once per forward, at layer 0): B pages of kv_len tokens, one per sequence."""
    key = (batch, q_len, kv_len)
    if state.hf_step == key:
        return
    page_indptr = torch.arange(batch + 1, dtype=torch.int32, device=device)
    page_indices = torch.arange(batch, dtype=torch.int32, device=device)
    seq_lens = torch.full((batch,), kv_len, dtype=torch.int32, device=device)
    if q_len == 1:
        state.begin_decode(page_indptr, page_indices, seq_lens)
    else:
        q_indptr_host = [b * q_len for b in range(batch + 1)]
        q_indptr = torch.tensor(q_indptr_host, dtype=torch.int32, device=device)
        state.begin_prefill(q_indptr, page_indptr, page_indices, seq_lens, q_indptr_host, [kv_len] * batch)
    state.hf_step = key


def kascade_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """AttentionInterface entry. query [B, Hq, Lq, D]; key/value [B, Hkv, Lk, D] (the whole cache)."""
    state = getattr(module, "kascade_state", None)
    if state is None:
        raise KascadeError("attn_implementation 'kascade': this model has no Kascade state; call "
                           "kascade.hf.enable(model, plan) instead of setting the name directly")
    if attention_mask is not None:
        raise KascadeError("attn_implementation 'kascade': got an explicit attention mask; Kascade attention is "
                           "causal over unpadded sequences and takes none")
    if dropout:
        raise KascadeError(f"attn_implementation 'kascade': attention dropout {dropout} is not supported "
                           "(inference only: call model.eval())")
    if scaling is not None and abs(float(scaling) - state.scale) > 1e-12 * state.scale:
        raise KascadeError(f"attn_implementation 'kascade': layer {module.layer_idx} uses scale {scaling}, the "
                           f"state was made for {state.scale}")
    batch, hq, q_len, head_dim = query.shape
    kv_len = key.shape[2]
    if module.layer_idx == 0:
        state.hf_step = None  # a new forward: plan it
    _plan_step(state, batch, q_len, kv_len, query.device)
    # [B, Hkv, L, D] -> [B, L, Hkv, D]: B pages of L tokens, read through strides.
    k_pages, v_pages = key.transpose(1, 2), value.transpose(1, 2)
    if q_len == 1:
        q = query.reshape(batch, hq, head_dim)
        if not q.is_contiguous():
            q = q.contiguous()
        out = state.run(module.layer_idx, q, k_pages, v_pages)
        return out.view(batch, 1, hq, head_dim), None
    q = query.transpose(1, 2).reshape(batch * q_len, hq, head_dim)  # [B*L, Hq, D], a copy
    out = state.run(module.layer_idx, q, k_pages, v_pages)
    return out.view(batch, q_len, hq, head_dim), None
