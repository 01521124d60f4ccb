#!/usr/bin/env python3
"""Tiny Hugging Face model directories and transformers' logits for the engine's HF golden tests.

Two steps, on two machines:

  python3 tools/make_hf_fixtures.py tokenizers tests/data/hf
      (here: needs the `tokenizers` package) trains a small byte-level BPE tokenizer per model
      directory (tokenizer.json, tokenizer_config.json), writes the prompts as token ids
      (prompts.json) and the ids `tokenizers` assigns to a varied corpus (tokenizer_ids.json).

      It also writes the SentencePiece-style BPE tokenizers (byte_fallback, "▁" for spaces) of
      SPM_TOKENIZERS into tests/data/hf/<name>/ with the ids and decoded text `tokenizers` gives
      for the corpus (spm_tokenizer_ids.json), a Mistral directory that reuses the
      mistral model's weights with such a tokenizer (mistral-spm), and llama2/tokenizer.gguf: the
      llama2 vocabulary as a GGUF "llama" tokenizer whose scores (-id: later merges score lower)
      make llama.cpp's highest-score merge order equal the merge order.

  python3 tools/make_hf_fixtures.py nfc-table
      prints the C++ table of code points that NFC leaves unchanged in any context
      (src/engine/tokenizer_utf8.cpp, kNfcStableRanges), from Python's unicodedata.

  python3 tools/make_hf_fixtures.py models tests/data/hf OUT_DIR
      (on the GPU machine: needs torch and transformers) builds random-weight models of each
      architecture, saves them with save_pretrained (safetensors) into OUT_DIR/<name>/, reloads
      them in fp32 and records the logits of every prompt position (top-10 ids and values,
      logits.json). Copy the directories' files next to their tokenizer files in tests/data/hf.

The models (hidden 64, 4 query / 2 kv heads, vocab 512):
  llama    LlamaForCausalLM, 3 layers, llama3 rope scaling, bf16, sharded (index + 2 files)
  mistral  MistralForCausalLM, 2 layers, sliding window 16 (the long prompt has 48 tokens), f16
  qwen2    Qwen2ForCausalLM, 2 layers, q/k/v bias, tied embeddings, bf16
  qwen3    Qwen3ForCausalLM, 2 layers, q/k norm, head_dim 32 (not hidden / heads), f32
Weights are stored in those dtypes and the reference runs in fp32 on the CPU with eager
attention, so both sides compute from exactly the stored values.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TOP = 10
VOCAB = 512
SLIDING_WINDOW = 16

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")

LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# Each model directory's tokenizer: pre-tokenizer family, special tokens, which are BOS/EOS.
TOKENIZERS = {
    "llama": dict(pre="llama3", specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                          "<|end_header_id|>", "<|eot_id|>"],
                  bos="<|begin_of_text|>", eos="<|eot_id|>", template=LLAMA3_TEMPLATE, merges_as_strings=False),
    "mistral": dict(pre="digits+bytelevel", specials=["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>",
                    template=None, merges_as_strings=True),
    "qwen2": dict(pre="qwen2", specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None,
                  eos="<|im_end|>", template=CHATML_TEMPLATE, merges_as_strings=False),
    "qwen3": dict(pre="qwen2", specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None,
                  eos="<|im_end|>", template=CHATML_TEMPLATE, merges_as_strings=True, non_special=["<think>"],
                  nfc=True),
}

TRAINING_TEXT = """The quick brown fox jumps over the lazy dog. A model reads a long prompt and answers.
Sparse attention keeps the keys that matter: anchor layers pick the top keys, the other layers reuse them.
In 2024 there were 365 days and 8760 hours; 3.14159 is close to pi, and 1,000,000 is a million.
def attention(q, k, v):\n    scores = q @ k.T / math.sqrt(d)\n    return softmax(scores) @ v\n
for (int i = 0; i < n; ++i) { total += weights[i] * values[i]; }
It's what they're saying: we've seen it, I'm sure, you'll see, he'd agree. DON'T PANIC!
Unicode text: café, naïve, façade, Ünïcödé, “quotes”, 你好世界, Привет мир, αβγ, 🙂🚀.
Whitespace   runs,\ttabs,\nnew lines\n\n and    trailing spaces   \n"""

PROMPT_TEXT = ("Once upon a time, in a small town by the sea, there lived an old fisherman who told stories "
               "about the stars. Every night the children came to listen, and every night he began again: "
               "the sky is a map, and the map is a story, and the story is ours to keep.")


def pre_tokenizer(kind):
    from tokenizers import Regex, pre_tokenizers
    if kind == "digits+bytelevel":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    regex = {"llama3": LLAMA3_REGEX, "qwen2": QWEN2_REGEX}[kind]
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train_tokenizer(spec):
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors, trainers
    from make_engine_fixtures import CORPUS
    tok = Tokenizer(models.BPE(ignore_merges=spec["pre"] == "llama3"))
    tok.pre_tokenizer = pre_tokenizer(spec["pre"])
    tok.decoder = decoders.ByteLevel()
    from tokenizers import pre_tokenizers
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 8, special_tokens=spec["specials"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TRAINING_TEXT, PROMPT_TEXT] * 4 + CORPUS, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec.get("non_special", [])])
    if spec.get("nfc"):  # as Qwen's own tokenizer.json (set after training: the merges are unchanged)
        from tokenizers import normalizers
        tok.normalizer = normalizers.NFC()
    if spec["bos"]:
        bos_id = tok.token_to_id(spec["bos"])
        tok.post_processor = processors.TemplateProcessing(single=spec["bos"] + " $A", pair=spec["bos"] + " $A $B",
                                                           special_tokens=[(spec["bos"], bos_id)])
    return tok


# ---- SentencePiece-style BPE (Llama 2, Mistral) ---------------------------------------------------
METASPACE = "\u2581"
SPM_SPECIALS = ["<unk>", "<s>", "</s>"]
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

# spaces: "normalizer" (Llama 2's Prepend + Replace) or a Metaspace pre-tokenizer (prepend scheme,
# split); strip: the decoder ends with Strip(" ", 1, 0).
SPM_TOKENIZERS = {
    "llama2": dict(vocab=1024, spaces="normalizer", strip=True, template=LLAMA2_TEMPLATE),
    "mistral-spm": dict(vocab=VOCAB, spaces="metaspace", scheme="first", split=False, strip=True,
                        template=MISTRAL_TEMPLATE),
    "spm-split": dict(vocab=768, spaces="metaspace", scheme="always", split=True, strip=False, template=None),
}

# Texts that exercise what is particular to SentencePiece-style BPE, besides the shared corpus.
SPM_EXTRA_TEXTS = [
    " one leading space", "  two leading spaces", "\u2581 a literal metaspace \u2581\u2581x",
    "<0x41> is the text of a byte token", "\U0001F999 llama, \U0001D518\U0001D52B\U0001D526 math letters",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "the the the the", "end with special</s>", "<s><s> twice",
    "</s>\n</s>", "\n", " ", "\u00e9\u00e8\u00ea \u00fc\u00f6\u00e4 \u00df",
]


def spm_random_texts(count, seed):
    """Short texts glued from pieces that stress the SentencePiece path (spaces, special-token
    text, "▁", byte-token text, characters outside the vocabulary) and random BMP characters."""
    import random
    rng = random.Random(seed)
    pieces = ["the", " the", "  ", " ", "\n", "\t", "a", "story", " map", "Hello", "ing", "3.14", "42", "\u4f60\u597d",
              "\U0001F642", "caf\u00e9", "e\u0301", "<s>", "</s>", "<unk>", METASPACE, "<0x41>", "def f(x):", "  return",
              "{", "}", "'s", "DON'T", "\u041f\u0440\u0438", "\u00a0", "\u200b", "x" * 30, ".", ",", "!", "?"]
    return ["".join(rng.choice(pieces) if rng.random() < 0.8 else chr(rng.randint(32, 0x2FFF))
                    for _ in range(rng.randint(1, 20))) for _ in range(count)]


def spm_complete_merges(tokens):
    """Every split of every token into two tokens, in the order of the token (then of the split):
    the merge list `tokenizers`' SentencePiece converter writes. With it a BPE merge happens
    wherever SentencePiece's highest-score merge would, so one vocabulary serves both."""
    index = {t: i for i, t in enumerate(tokens)}
    merges = []
    for t in tokens:
        for cut in range(1, len(t)):
            a, b = t[:cut], t[cut:]
            if a in index and b in index:
                merges.append((a, b))
    return merges


def train_spm_tokenizer(spec):
    """A SentencePiece-style BPE tokenizer (and its learned tokens) as SPM_TOKENIZERS describes."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from make_engine_fixtures import CORPUS
    # Words are learned with a Metaspace split so that merges stay within words, as SentencePiece's
    # do; the alphabet is limited so that rare characters (CJK, emoji) fall back to <0xNN> bytes.
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bytes_tokens = ["<0x%02X>" % b for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=spec["vocab"] - len(SPM_SPECIALS) - 256, show_progress=False,
                                  limit_alphabet=64)
    learner.train_from_iterator([TRAINING_TEXT, PROMPT_TEXT] * 4 + CORPUS, trainer=trainer)
    learned = sorted(learner.get_vocab().items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in learned]
    vocab = {t: i for i, t in enumerate(SPM_SPECIALS + bytes_tokens + tokens)}
    assert len(vocab) <= spec["vocab"], (len(vocab), spec["vocab"])  # a small corpus may stop short
    tok = Tokenizer(models.BPE(vocab=vocab, merges=spm_complete_merges(tokens), unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    if spec["spaces"] == "normalizer":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(METASPACE), normalizers.Replace(" ", METASPACE)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme=spec["scheme"],
                                                     split=spec["split"])
    steps = [decoders.Replace(METASPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if spec["strip"] else []))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPM_SPECIALS])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return tok, tokens


def write_llama_gguf(path, tok, template):
    """The tokenizer as a GGUF 'llama' vocabulary: normal tokens score -id, so a token made by a
    later merge scores lower; byte and special tokens score 0 and have their GGUF types."""
    import gguf
    pieces = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    types, scores = [], []
    for i, t in enumerate(pieces):
        if t == "<unk>":
            types.append(gguf.TokenType.UNKNOWN)
        elif t in SPM_SPECIALS:
            types.append(gguf.TokenType.CONTROL)
        elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
        scores.append(-float(i) if types[-1] == gguf.TokenType.NORMAL else 0.0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(pieces.index("<s>"))
    w.add_eos_token_id(pieces.index("</s>"))
    w.add_unk_token_id(pieces.index("<unk>"))
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_spm_tokenizers(data_dir):
    import shutil
    from tokenizers import Tokenizer
    from make_engine_fixtures import CORPUS
    cases_by_model = {}
    for name, spec in SPM_TOKENIZERS.items():
        out = os.path.join(data_dir, name)
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "tokenizer.json")
        # `tokenizers`' trainer breaks ties between equally frequent characters in hash order, which
        # changes from run to run: a committed tokenizer.json is kept (delete it to train anew),
        # and everything else is derived from it.
        if not os.path.exists(path):
            train_spm_tokenizer(spec)[0].save(path)
        config = {"tokenizer_class": "LlamaTokenizerFast", "model_max_length": 256, "bos_token": "<s>",
                  "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}
        if spec["template"]:
            config["chat_template"] = spec["template"]
        with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
        ref = Tokenizer.from_file(path)  # the saved file, read back, gives the reference ids
        texts = CORPUS + SPM_EXTRA_TEXTS + [s + " between " + s for s in SPM_SPECIALS] + spm_random_texts(200, 6)
        cases = []
        for t in texts:
            ids = ref.encode(t, add_special_tokens=False).ids
            cases.append({"text": t, "ids": ids, "decoded": ref.decode(ids, skip_special_tokens=False)})
        fallback_ids = set(range(len(SPM_SPECIALS), len(SPM_SPECIALS) + 256))
        assert sum(any(i in fallback_ids for i in c["ids"]) for c in cases) >= 5, "too little byte fallback"
        with_bos = ref.encode("Hello world").ids
        assert with_bos[0] == ref.token_to_id("<s>"), with_bos
        cases_by_model[name] = cases
        if name == "llama2":
            write_llama_gguf(os.path.join(out, "tokenizer.gguf"), ref, spec["template"])
        if name == "mistral-spm":  # the mistral model's weights (vocab 512, <s> = 1, </s> = 2) with this tokenizer
            for f in ["config.json", "generation_config.json", "model.safetensors"]:
                shutil.copy(os.path.join(data_dir, "mistral", f), os.path.join(out, f))
        print(name, "vocab", ref.get_vocab_size(), "merges", len(json.load(open(path))["model"]["merges"]))
    return cases_by_model


def make_tokenizers(data_dir):
    from make_engine_fixtures import CORPUS
    ids_doc = {"reference": None, "models": {}}
    prompts_doc = {"prompts": {}}
    for name, spec in TOKENIZERS.items():
        import tokenizers
        ids_doc["reference"] = "tokenizers %s" % tokenizers.__version__
        tok = train_tokenizer(spec)
        out = os.path.join(data_dir, name)
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "tokenizer.json")
        tok.save(path)
        doc = json.load(open(path, encoding="utf-8"))
        if spec["merges_as_strings"]:  # the older "a b" form, which tokenizers still reads
            doc["model"]["merges"] = [" ".join(m) for m in doc["model"]["merges"]]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 256,
                  "eos_token": spec["eos"], "bos_token": spec["bos"], "add_bos_token": spec["bos"] is not None}
        if spec["template"]:
            config["chat_template"] = spec["template"]
        with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
        # The saved file, read back, is what the reference ids come from.
        from tokenizers import Tokenizer
        ref = Tokenizer.from_file(path)
        texts = CORPUS + [s + " between " + s for s in spec["specials"] + spec.get("non_special", [])]
        cases = []
        for t in texts:
            case = {"text": t, "ids": ref.encode(t, add_special_tokens=False).ids}
            if spec.get("nfc"):  # kascade refuses text that NFC might change (see nfc_stable)
                case["nfc_refused"] = not all(nfc_stable(ord(ch)) for ch in t)
            cases.append(case)
        ids_doc["models"][name] = cases
        ids = ref.encode(PROMPT_TEXT, add_special_tokens=False).ids
        assert len(ids) >= 48, "prompt text is too short: %d tokens" % len(ids)
        prompts_doc["prompts"][name] = [
            {"name": "short", "text": "The sky is a map, and the map is a story.",
             "ids": ref.encode("The sky is a map, and the map is a story.", add_special_tokens=False).ids},
            {"name": "long48", "ids": ids[:48]},
        ]
        print(name, "vocab", ref.get_vocab_size(), "prompt tokens", len(ids))
    with open(os.path.join(data_dir, "tokenizer_ids.json"), "w", encoding="utf-8") as f:
        json.dump(ids_doc, f, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(data_dir, "prompts.json"), "w", encoding="utf-8") as f:
        json.dump(prompts_doc, f)
        f.write("\n")
    spm_doc = {"reference": ids_doc["reference"], "models": make_spm_tokenizers(data_dir)}
    with open(os.path.join(data_dir, "spm_tokenizer_ids.json"), "w", encoding="utf-8") as f:
        json.dump(spm_doc, f, ensure_ascii=False)
        f.write("\n")


# ---- NFC: the code points kascade accepts under an NFC normalizer -------------------------------
# kascade does not implement Unicode normalization. Under an NFC normalizer it accepts text made of
# code points that NFC leaves unchanged in any context (NFC_Quick_Check = Yes and combining class
# 0, i.e. not changed alone, not a combining mark, not the second half of a canonical
# composition), within these blocks: Latin, Greek, Cyrillic, punctuation, symbols, CJK, kana,
# Hangul syllables, fullwidth forms, emoji. Such text is already NFC, so NFC is the identity on it.
NFC_BLOCKS = [(0, 0x2FF), (0x370, 0x3FF), (0x400, 0x482), (0x2000, 0x206F), (0x2100, 0x214F), (0x2190, 0x23FF),
              (0x2500, 0x27BF), (0x3000, 0x303F), (0x3041, 0x3096), (0x30A1, 0x30FA), (0x4E00, 0x9FFF),
              (0xAC00, 0xD7A3), (0xFE0F, 0xFE0F), (0xFF01, 0xFF5E), (0x1F300, 0x1FAFF)]
_SECOND_OF_COMPOSITION = None


def nfc_stable(cp):
    import unicodedata as u
    global _SECOND_OF_COMPOSITION
    if _SECOND_OF_COMPOSITION is None:
        _SECOND_OF_COMPOSITION = set()
        for c in range(0x110000):
            d = u.decomposition(chr(c))
            if d and not d.startswith("<") and len(d.split()) == 2:
                _SECOND_OF_COMPOSITION.add(int(d.split()[1], 16))
    if not any(a <= cp <= b for a, b in NFC_BLOCKS):
        return False
    ch = chr(cp)
    return (u.normalize("NFC", ch) == ch and u.combining(ch) == 0 and cp not in _SECOND_OF_COMPOSITION
            and u.category(ch) not in ("Cn", "Cs"))


def nfc_table():
    import unicodedata
    ranges = []
    for a, b in NFC_BLOCKS:
        for cp in range(a, b + 1):
            if not nfc_stable(cp):
                continue
            if ranges and ranges[-1][1] + 1 == cp:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    print("// Unicode %s (Python %s unicodedata), %d ranges." % (unicodedata.unidata_version, sys.version.split()[0],
                                                                len(ranges)))
    for i in range(0, len(ranges), 4):
        print("    " + " ".join("{0x%X, 0x%X}," % tuple(r) for r in ranges[i:i + 4]))


# ---- models (GPU machine) -----------------------------------------------------------------------
def llama3_inv_freq(theta, head_dim, factor, low, high, original):
    """The llama3 rope scaling of transformers' _compute_llama3_parameters, in float64."""
    out = []
    for i in range(head_dim // 2):
        f = theta ** (-2.0 * i / head_dim)
        wavelen = 2 * math.pi / f
        if wavelen > original / low:
            f = f / factor
        elif wavelen >= original / high:
            smooth = (original / wavelen - low) / (high - low)
            f = (1 - smooth) * f / factor + smooth * f
        out.append(f)
    return out


def build(name, token_ids):
    import torch
    import transformers as tf
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                  bos_token_id=token_ids.get("bos"), eos_token_id=token_ids["eos"])
    if name == "llama":
        rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32}
        cfg = tf.LlamaConfig(**dict(common, num_hidden_layers=3), rope_theta=10000.0, rope_scaling=dict(rope),
                             tie_word_embeddings=False)
        model, dtype, shard = tf.LlamaForCausalLM(cfg), torch.bfloat16, "60KB"
    elif name == "mistral":
        cfg = tf.MistralConfig(**common, rope_theta=10000.0, sliding_window=SLIDING_WINDOW, head_dim=16,
                               tie_word_embeddings=False)
        model, dtype, shard = tf.MistralForCausalLM(cfg), torch.float16, None
    elif name == "qwen2":
        cfg = tf.Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False)
        model, dtype, shard = tf.Qwen2ForCausalLM(cfg), torch.bfloat16, None
    else:
        cfg = tf.Qwen3Config(**common, rope_theta=1000000.0, head_dim=32, tie_word_embeddings=False,
                             use_sliding_window=False)
        model, dtype, shard = tf.Qwen3ForCausalLM(cfg), torch.float32, None
    gen = torch.Generator().manual_seed(1234 + len(name))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in pname:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:  # projections and biases
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    if name == "llama":  # the model must run the scaling the config names, not plain RoPE
        want = llama3_inv_freq(10000.0, 16, 8.0, 1.0, 4.0, 32)
        got = model.model.rotary_emb.inv_freq.double().tolist()
        assert max(abs(a - b) / b for a, b in zip(want, got)) < 1e-5, (want, got)
    return model.to(dtype), shard


def make_models(data_dir, out_dir):
    import torch
    import transformers as tf
    from transformers import AutoModelForCausalLM
    torch.set_grad_enabled(False)
    prompts = json.load(open(os.path.join(data_dir, "prompts.json"), encoding="utf-8"))["prompts"]
    for name, spec in TOKENIZERS.items():
        vocab = json.load(open(os.path.join(data_dir, name, "tokenizer.json"), encoding="utf-8"))["model"]["vocab"]
        token_ids = {"bos": vocab[spec["bos"]] if spec["bos"] else None, "eos": vocab[spec["eos"]]}
        model, shard = build(name, token_ids)
        out = os.path.join(out_dir, name)
        kwargs = {"max_shard_size": shard} if shard else {}
        model.save_pretrained(out, safe_serialization=True, **kwargs)
        ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        doc = {"model": name, "architecture": type(ref).__name__, "top": TOP,
               "reference": "transformers %s, torch %s, fp32 CPU, eager attention" % (tf.__version__, torch.__version__),
               "prompts": []}
        for p in prompts[name]:
            ids = torch.tensor([p["ids"]], dtype=torch.long)
            logits = ref(input_ids=ids).logits[0].float()
            values, indices = torch.topk(logits, TOP, dim=-1)
            entry = {"name": p["name"], "ids": p["ids"], "top_ids": indices.tolist(),
                     "top_values": [[round(float(v), 6) for v in row] for row in values]}
            if name == "mistral":  # the window must change the answer, or the test proves nothing
                ref.config.sliding_window = None
                full = ref(input_ids=ids).logits[0].float()
                ref.config.sliding_window = SLIDING_WINDOW
                again = ref(input_ids=ids).logits[0].float()
                assert torch.equal(again, logits), "restoring the window did not restore the logits"
                entry["max_diff_without_window"] = float((full - logits).abs().max())
            doc["prompts"].append(entry)
            print(name, p["name"], len(p["ids"]), "tokens; last top-1", int(indices[-1, 0]),
                  {k: v for k, v in entry.items() if k == "max_diff_without_window"})
        with open(os.path.join(out, "logits.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.write("\n")
        print(name, sorted(os.listdir(out)))


def main(argv):
    if len(argv) == 2 and argv[1] == "nfc-table":
        nfc_table()
    elif len(argv) == 3 and argv[1] == "tokenizers":
        make_tokenizers(argv[2])
    elif len(argv) == 4 and argv[1] == "models":
        make_models(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
