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

Continuous batching: enable() also registers "paged|kascade", which transformers' continuous
batching (model.generate_batch, model.init_continuous_batching) switches "kascade" to. Its
PagedAttentionCache is [blocks * block_size, Hkv, D] per layer, read in place as pages of
block_size tokens ([blocks, block_size, Hkv, D], our NHD); the page table of a step comes from
transformers' read index (one gather per step, no KV copy). A step may mix decoding sequences
(one query) with prompt chunks: the two are run as separate decode and prefill calls, each with
its own selection buffers (see PagedKascade).
"""

from __future__ import annotations

import weakref

import torch

from .attention import KascadeAttention
from .errors import KascadeError
from .plan import Plan

NAME = "kascade"
PAGED_NAME = "paged|kascade"
_enabled_models = weakref.WeakSet()  # the names stay registered while one of these is enabled


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
    AttentionInterface.register(PAGED_NAME, paged_kascade_attention_forward)
    # No mask function for PAGED_NAME: continuous batching builds masks only for paged|eager and
    # paged|sdpa, and transformers skips mask creation for names without one.
    AttentionMaskInterface.register(NAME, kascade_mask)


def _unregister() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    for interface, names in ((AttentionInterface, (NAME, PAGED_NAME)), (AttentionMaskInterface, (NAME,))):
        for name in names:
            interface._global_mapping.pop(name, None)


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
    paged = PagedKascade(plan, device=param.device, dtype=param.dtype, scale=state.scale,
                         max_seq_len=state.max_seq_len, track_keys=track_keys)
    for m in attention_modules:
        m.kascade_state = state
        m.kascade_paged = paged
    _register()
    _enabled_models.add(model)
    model.set_attn_implementation(NAME)
    model.kascade_state = state
    model.kascade_paged = paged
    return state


def disable(model, attn_implementation: str = "sdpa") -> None:
    """Switches back to a transformers implementation and drops the Kascade state; the names
    "kascade" and "paged|kascade" are unregistered once no enabled model is left."""
    model.set_attn_implementation(attn_implementation)
    for m in model.modules():
        for attribute in ("kascade_state", "kascade_paged"):
            if hasattr(m, attribute):
                delattr(m, attribute)
    _enabled_models.discard(model)
    if not len(_enabled_models):
        _unregister()


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


def _refuse_unsupported(name, layer_idx, attention_mask, dropout, scaling, expected_scale, mask_why):
    """One KascadeError for what neither attention entry supports: a mask, dropout, another scale."""
    if attention_mask is not None:
        raise KascadeError(f"attn_implementation '{name}': got {mask_why} and takes none")
    if dropout:
        raise KascadeError(f"attn_implementation '{name}': attention dropout {dropout} is not supported "
                           "(inference only: call model.eval())")
    if scaling is not None and abs(float(scaling) - expected_scale) > 1e-12 * expected_scale:
        raise KascadeError(f"attn_implementation '{name}': layer {layer_idx} uses scale {scaling}, the "
                           f"state was made for {expected_scale}")


def kascade_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """AttentionInterface entry. query [B, Hq, Lq, D]; key/value [B, Hkv, Lk, D] (the whole cache)."""
    state = getattr(module, "kascade_state", None)
    if state is None:
        raise KascadeError("attn_implementation 'kascade': this model has no Kascade state; call "
                           "kascade.hf.enable(model, plan) instead of setting the name directly")
    _refuse_unsupported("kascade", module.layer_idx, attention_mask, dropout, scaling, state.scale,
                        "an explicit attention mask; Kascade attention is causal over unpadded sequences")
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


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class PagedKascade:
    """Kascade over transformers' PagedAttentionCache, for continuous batching ("paged|kascade").

    The sequences of a step with one query run as one decode call, the others (prompts and prompt
    chunks, p0 = seq_len - queries) as one prefill call. Each kind has its own KascadeAttention, so
    an anchor's decode and prefill selections never share a buffer; both are sized by the largest
    step seen so far (batch and chunk rounded up to powers of two, at most max_seq_len), growing
    at the first layer of a step when one does not fit. The step's page tables are built at layer 0.
    """

    def __init__(self, plan: Plan, *, device, dtype, scale: float, max_seq_len: int, track_keys: bool = False):
        self.plan, self.device, self.dtype, self.scale = plan, device, dtype, scale
        self.max_seq_len = max_seq_len
        self.track_keys = track_keys
        self.keys_read_total = 0.0
        self.keys_dense_total = 0.0
        self.decode_attention: KascadeAttention | None = None
        self.prefill_attention: KascadeAttention | None = None
        self._parts = None  # [(KascadeAttention, query rows)] of the current step: decode, prefill
        self.step_counts = {"decode": 0, "prefill": 0, "mixed": 0}  # steps seen, by the kinds they held

    def keys_read_fraction(self) -> float:
        """Keys read over keys dense attention reads, over the tracked calls of both kinds."""
        return self.keys_read_total / self.keys_dense_total if self.keys_dense_total else 1.0

    def _fitting(self, current: KascadeAttention | None, batch: int, chunk: int) -> KascadeAttention:
        if current is not None and current.max_batch >= batch and current.max_prefill_tokens >= chunk:
            return current
        if current is not None:
            batch, chunk = max(batch, current.max_batch), max(chunk, current.max_prefill_tokens)
        return KascadeAttention(self.plan, device=self.device, dtype=self.dtype, max_batch=_next_power_of_two(batch),
                                max_seq_len=self.max_seq_len, scale=self.scale,
                                max_prefill_tokens=min(_next_power_of_two(chunk), self.max_seq_len))

    def begin_step(self, cache, cu_seq_lens_q: torch.Tensor, cu_seq_lens_k: torch.Tensor, read_index,
                   write_index) -> None:
        """Splits the step into its decode and prefill sequences and builds their page tables."""
        cu_q = [int(x) for x in cu_seq_lens_q.tolist()]
        cu_k = [int(x) for x in cu_seq_lens_k.tolist()]
        if len(cu_q) != len(cu_k) or len(cu_q) < 2:
            raise KascadeError(f"attn_implementation '{PAGED_NAME}': cu_seq_lens_q has {len(cu_q)} entries and "
                               f"cu_seq_lens_k {len(cu_k)}; expected the same number, at least 2")
        # Without any cached token transformers passes an empty read index: the keys are the new
        # tokens, whose slots are the write index.
        no_past = read_index[0].numel() == 0
        slots, offsets = (write_index[0], cu_q) if no_past else (read_index[0], cu_k)
        decode, prefill = [], []
        for b in range(len(cu_q) - 1):
            queries, keys = cu_q[b + 1] - cu_q[b], cu_k[b + 1] - cu_k[b]
            if queries == 0:
                continue  # a padding sequence
            if queries > keys or (no_past and queries != keys):
                raise KascadeError(f"attn_implementation '{PAGED_NAME}': sequence {b} has {queries} queries over "
                                   f"{keys} keys{' and no cached tokens' if no_past else ''}")
            if keys > self.max_seq_len:
                raise KascadeError(f"attn_implementation '{PAGED_NAME}': sequence {b} reaches {keys} tokens, more "
                                   f"than max_seq_len {self.max_seq_len} given to kascade.hf.enable")
            (decode if queries == 1 else prefill).append((cu_q[b], queries, offsets[b], keys))
        parts = []
        if decode:
            self.decode_attention = self._fitting(self.decode_attention, len(decode), 1)
            pages, page_indptr, seq_lens = self._page_table(decode, slots, cache.block_size)
            self.decode_attention.begin_decode(page_indptr, pages, seq_lens)
            parts.append((self.decode_attention, self._rows(decode, slots.device)))
        if prefill:
            chunk = max(queries for _, queries, _, _ in prefill)
            self.prefill_attention = self._fitting(self.prefill_attention, len(prefill), chunk)
            pages, page_indptr, seq_lens = self._page_table(prefill, slots, cache.block_size)
            q_indptr_host = [0]
            for _, queries, _, _ in prefill:
                q_indptr_host.append(q_indptr_host[-1] + queries)
            q_indptr = torch.tensor(q_indptr_host, dtype=torch.int32, device=slots.device)
            self.prefill_attention.begin_prefill(q_indptr, page_indptr, pages, seq_lens, q_indptr_host,
                                                 [keys for _, _, _, keys in prefill])
            parts.append((self.prefill_attention, self._rows(prefill, slots.device)))
        if not parts:
            raise KascadeError(f"attn_implementation '{PAGED_NAME}': the step has no query tokens")
        self._parts = parts
        self.step_counts["mixed" if decode and prefill else "decode" if decode else "prefill"] += 1

    @staticmethod
    def _rows(seqs, device) -> torch.Tensor:
        return torch.tensor([r for q0, queries, _, _ in seqs for r in range(q0, q0 + queries)], dtype=torch.int64,
                            device=device)

    @staticmethod
    def _page_table(seqs, slots: torch.Tensor, block_size: int):
        """(page_indices, page_indptr, seq_lens) of `seqs` from their token slots in the cache.

        transformers stores position t of a sequence at slot block[t // block_size] * block_size
        + t % block_size, so a page is the slot of its first token over block_size. Every slot is
        checked against that layout: a different one is an error, never a wrong page.
        """
        device = slots.device
        first_token, page_indptr_host = [], [0]
        for _, _, offset, keys in seqs:
            blocks = -(-keys // block_size)
            first_token.extend(offset + j * block_size for j in range(blocks))
            page_indptr_host.append(page_indptr_host[-1] + blocks)
        pages = torch.div(slots[torch.tensor(first_token, dtype=torch.int64, device=device)], block_size,
                          rounding_mode="floor")
        keys = torch.tensor([k for _, _, _, k in seqs], dtype=torch.int64, device=device)
        offsets = torch.tensor([o for _, _, o, _ in seqs], dtype=torch.int64, device=device)
        seq_start = torch.cumsum(keys, 0) - keys
        position = torch.arange(int(keys.sum()), device=device) - torch.repeat_interleave(seq_start, keys)
        page_start = torch.tensor(page_indptr_host[:-1], dtype=torch.int64, device=device)
        expected = pages[torch.repeat_interleave(page_start, keys) + position // block_size] * block_size + \
            position % block_size
        if not torch.equal(slots[torch.repeat_interleave(offsets, keys) + position], expected):
            raise KascadeError(f"attn_implementation '{PAGED_NAME}': the paged cache's read index does not keep the "
                               f"tokens of a block in {block_size} consecutive slots; this transformers version lays "
                               "out its cache differently from the one kascade.hf was written for")
        as_i32 = lambda values: torch.tensor(values, dtype=torch.int32, device=device)  # noqa: E731
        return pages.to(torch.int32), as_i32(page_indptr_host), as_i32([k for _, _, _, k in seqs])

    def run(self, layer: int, query: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor) -> torch.Tensor:
        """query [1, Hq, T, D] (packed tokens) -> [T, Hq, D]; rows of padding tokens are zero."""
        q_tokens = query[0].transpose(0, 1)
        out = torch.zeros(q_tokens.shape, dtype=query.dtype, device=query.device)
        for attention, rows in self._parts:
            out[rows] = attention.run(layer, q_tokens[rows], k_pages, v_pages)
            if self.track_keys:
                read, dense = attention.keys_read(layer)
                self.keys_read_total += read
                self.keys_dense_total += dense
        return out


def paged_kascade_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, *,
                                    cache=None, cu_seq_lens_q=None, cu_seq_lens_k=None, read_index=None,
                                    write_index=None, block_table=None, **kwargs):
    """AttentionInterface entry of continuous batching. query [1, Hq, T, D] and key/value
    [1, Hkv, T, D] hold the step's new tokens, packed; cache is transformers' PagedAttentionCache."""
    paged = getattr(module, "kascade_paged", None)
    if paged is None:
        raise KascadeError(f"attn_implementation '{PAGED_NAME}': this model has no Kascade state; call "
                           "kascade.hf.enable(model, plan) instead of setting the name directly")
    if cache is None or cu_seq_lens_q is None or cu_seq_lens_k is None or read_index is None or write_index is None:
        raise KascadeError(f"attn_implementation '{PAGED_NAME}': called without transformers' paged cache and its "
                           "index tensors; it serves continuous batching (model.generate_batch), use 'kascade' for "
                           "model.generate or a plain forward")
    if block_table is not None:
        raise KascadeError(f"attn_implementation '{PAGED_NAME}': got a block table (transformers' decode fast path "
                           "for flash attention); run continuous batching with max_blocks_per_request=0")
    _refuse_unsupported(PAGED_NAME, module.layer_idx, attention_mask, dropout, scaling, paged.scale,
                        "an attention mask; Kascade attention is causal by construction")
    if query.is_cuda and torch.cuda.is_current_stream_capturing():
        raise KascadeError(f"attn_implementation '{PAGED_NAME}': a step reads its sequence lengths on the host, "
                           "which CUDA graph capture forbids; run continuous batching with use_cuda_graph=False")
    if isinstance(cu_seq_lens_k, dict):
        if set(cu_seq_lens_k) != {"full_attention"}:
            raise KascadeError(f"attn_implementation '{PAGED_NAME}': the cache has layer types "
                               f"{sorted(cu_seq_lens_k)}; Kascade needs full attention in every layer")
        cu_seq_lens_k = cu_seq_lens_k["full_attention"]
    if query.dim() != 4 or query.shape[0] != 1:
        raise KascadeError(f"attn_implementation '{PAGED_NAME}': query must be packed as [1, heads, tokens, dim], "
                           f"got {list(query.shape)}")
    if module.layer_idx == 0:
        paged.begin_step(cache, cu_seq_lens_q, cu_seq_lens_k, read_index, write_index)
    group, index_in_group = cache.layer_index_to_group_indices[module.layer_idx]
    k_store, v_store = cache.key_cache[index_in_group], cache.value_cache[index_in_group]
    # The write half of PagedAttentionCache.update; its read half (a gathered copy of every
    # sequence's keys and values) is what the page table replaces.
    k_store.index_copy_(0, write_index[group], key[0].transpose(0, 1))
    v_store.index_copy_(0, write_index[group], value[0].transpose(0, 1))
    page_shape = (-1, cache.block_size, k_store.shape[1], k_store.shape[2])
    return paged.run(module.layer_idx, query, k_store.view(page_shape), v_store.view(page_shape)), None
