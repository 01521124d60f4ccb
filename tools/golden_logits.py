#!/usr/bin/env python3
"""Reference logits of the default model from Hugging Face transformers, for the engine's golden test.

  python3 tools/golden_logits.py MODEL.gguf tests/data/engine/golden_prompts.json OUT.json

Needs torch, transformers and the `gguf` package (transformers loads the GGUF itself: it
dequantizes the weights and undoes llama.cpp's q/k permutation). The forward pass runs in fp32
on the CPU with eager attention, so no TF32 or reduced-precision kernel is involved. For every
prompt and every position it records the TOP logits (ids and values); the C++ test
(tests/engine/test_golden.cpp) checks top-1 agreement and the largest difference on those ids.
"""
import json
import os
import sys

TOP = 10


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    model_path, prompts_path, out_path = argv[1:]
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_grad_enabled(False)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(model_path)),
        gguf_file=os.path.basename(model_path),
        dtype=torch.float32,
        attn_implementation="eager",
    ).eval()
    prompts = json.load(open(prompts_path, encoding="utf-8"))["prompts"]
    out = {
        "model": os.path.basename(model_path),
        "reference": "transformers %s, torch %s, fp32 CPU, eager attention" % (transformers.__version__, torch.__version__),
        "top": TOP,
        "prompts": [],
    }
    for p in prompts:
        ids = torch.tensor([p["ids"]], dtype=torch.long)
        logits = model(input_ids=ids).logits[0].float()  # [T, vocab]
        values, indices = torch.topk(logits, TOP, dim=-1)
        out["prompts"].append({
            "name": p["name"],
            "ids": p["ids"],
            "top_ids": indices.tolist(),
            "top_values": [[round(float(v), 6) for v in row] for row in values],
        })
        print(p["name"], len(p["ids"]), "tokens; last top-1:", int(indices[-1, 0]), float(values[-1, 0]))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv)
