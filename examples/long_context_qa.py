#!/usr/bin/env python3
"""Long-context question answering with Kascade in transformers.

Loads the default model (SmolLM2-135M-Instruct, converted from the shipped GGUF at first use),
hides a fact in a long filler context, and answers a question about it twice: with transformers'
own sdpa attention and with Kascade (the shipped plan). Prints both answers, the time of each and
the fraction of keys Kascade's attention read.

    python examples/long_context_qa.py                     # GPU when there is one, else CPU
    python examples/long_context_qa.py --length 4096 --device cuda
    python examples/long_context_qa.py --plan plans/smollm2-135m-instruct.json --model /path/to/hf_dir

On the CPU, Kascade runs through the reference oracle (plain loops): expect a minute or more.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

import kascade
import kascade.hf
import kascade.models

HERE = Path(__file__).resolve().parent
DEFAULT_PLAN = HERE.parent / "plans" / "smollm2-135m-instruct.json"

FILLER = [
    "The river bends twice before it reaches the old mill.",
    "Farmers in the valley grow barley, beans and a little rye.",
    "In winter the pass is closed and the village trades by sled.",
    "The library keeps its maps in a cabinet by the north window.",
    "A bell in the square rings every hour from six until ten.",
    "Children learn to swim in the lake behind the school.",
    "The baker starts work at four and sells out by noon.",
    "Travellers rest at the inn, whose roof was mended last spring.",
]


def build_prompt(tokenizer, length: int, seed: int):
    rng = random.Random(seed)
    code = rng.randint(1000, 9999)
    fact = f"The secret code of the blue door is {code}."
    sentences = []
    while len(tokenizer(" ".join(sentences)).input_ids) < length:
        sentences.append(rng.choice(FILLER))
    sentences.insert(len(sentences) // 3, fact)
    question = "What is the secret code of the blue door? Answer with the number only."
    messages = [{"role": "user", "content": " ".join(sentences) + "\n\n" + question}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    if not isinstance(ids, torch.Tensor):  # some versions return a BatchEncoding
        ids = ids["input_ids"]
    return ids, str(code)


def answer(model, tokenizer, ids, new_tokens: int):
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False)
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip(), time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=2048, help="context length in tokens (default 2048)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--plan", default=str(DEFAULT_PLAN), help="Kascade plan (default: the shipped SmolLM2 plan)")
    ap.add_argument("--model", default=None, help="a Hugging Face model folder (default: the default model)")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.length < 64:
        print(f"long_context_qa: --length {args.length} is too short (at least 64 tokens)", file=sys.stderr)
        return 2
    device = ("cuda" if torch.cuda.is_available() and kascade.has_cuda() else "cpu") if args.device == "auto" \
        else args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    try:
        if args.model:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation="sdpa")
            model, tokenizer = model.to(device).eval(), AutoTokenizer.from_pretrained(args.model)
        else:
            model, tokenizer = kascade.models.load_default_model(dtype=dtype, device=device)
        plan = kascade.Plan.load(args.plan)
        ids, code = build_prompt(tokenizer, args.length, args.seed)
        ids = ids.to(device)
        max_len = ids.shape[1] + args.new_tokens

        dense_text, dense_s = answer(model, tokenizer, ids, args.new_tokens)
        state = kascade.hf.enable(model, plan, max_seq_len=max_len, track_keys=True)
        sparse_text, sparse_s = answer(model, tokenizer, ids, args.new_tokens)
    except kascade.KascadeError as e:
        print(f"long_context_qa: {e}", file=sys.stderr)
        return 1
    print(f"context: {ids.shape[1]} tokens on {device} ({dtype}); the hidden code is {code}")
    print(f"sdpa:    {dense_text!r}  ({dense_s:.2f} s){'  correct' if code in dense_text else ''}")
    print(f"kascade: {sparse_text!r}  ({sparse_s:.2f} s){'  correct' if code in sparse_text else ''}")
    print(f"kascade read {100 * state.keys_read_fraction():.1f}% of the keys dense attention reads "
          f"(plan {Path(args.plan).name}: anchors {list(plan.anchors)}, rho {plan.rho}, k_min {plan.k_min})")
    if device == "cpu":
        print("note: on the CPU Kascade runs through the reference oracle, so its time says nothing about speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
