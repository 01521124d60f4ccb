#!/usr/bin/env python3
"""Plot prefill benchmark results (bench/results/*.json from kascade-bench-prefill).

    python3 bench/plot_prefill.py bench/results/prefill_h100.json [-o bench/results/prefill_h100.png]

Left: time per layer against context for the dense baselines (cuDNN SDPA causal, PyTorch flash)
and each kascade role, plus the 32-layer schedule per layer (Llama-3.1-8B shape). Right: every
role's time as a ratio of cuDNN dense on the same shape, beside the issue's targets.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [  # (impl, role, label, style)
    ("cudnn", "dense", "cuDNN SDPA causal", "k-"),
    ("flash", "dense", "PyTorch flash causal", "k:"),
    ("kascade", "dense", "kascade dense", "C0-o"),
    ("kascade", "layer0", "kascade layer 0", "C1-o"),
    ("kascade", "anchor", "kascade anchor", "C2-o"),
    ("kascade", "reuse", "kascade reuse", "C3-o"),
    ("kascade", "schedule", "kascade 32-layer schedule (per layer)", "C4--s"),
]
TARGETS = {"dense": 1.0, "layer0": 1.5, "anchor": 1.25, "reuse": 0.13, "schedule": 1 / 3}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    try:
        with open(args.results) as f:
            doc = json.load(f)
        records = [r for r in doc["records"] if r.get("phase") == "prefill"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"plot_prefill.py: cannot read {args.results}: {e}")
    kascade = [r for r in records if r.get("impl") == "kascade"]
    if not kascade:
        sys.exit(f"plot_prefill.py: {args.results} has no kascade prefill records")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    model = "Llama-3.1-8B"
    for impl, role, label, style in SERIES:
        pts = sorted((r["context"], r["ms_per_layer"] if role == "schedule" else r["ms"]) for r in records
                     if r.get("model") == model and r.get("impl") == impl and r.get("role") == role
                     and r.get("ms") is not None)
        if pts:
            left.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, markersize=4)
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_title(f"{model} (32/8/128), batch 1", fontsize=10)
    left.set_xlabel("context (tokens)")
    left.set_ylabel("ms per layer")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)

    shapes = sorted({(r["model"], r["context"]) for r in kascade}, key=lambda s: (s[0] != model, s[1]))
    roles = ["dense", "layer0", "anchor", "reuse", "schedule"]
    width = 0.8 / len(shapes)
    for i, (m, n) in enumerate(shapes):
        ratios = []
        for role in roles:
            r = next((r for r in kascade if r["model"] == m and r["context"] == n and r["role"] == role), None)
            ratios.append(r.get("ratio_vs_cudnn") if r and r.get("ratio_vs_cudnn") is not None else 0.0)
        right.bar([k + i * width for k in range(len(roles))], ratios, width, label=f"{m} {n // 1024}k")
    for k, role in enumerate(roles):
        right.hlines(TARGETS[role], k - 0.05, k + 0.85, colors="r", linestyles="--", linewidth=1,
                     label="target (32k, 128k)" if k == 0 else None)
    right.set_xticks([k + 0.4 - width / 2 for k in range(len(roles))])
    right.set_xticklabels(["dense", "layer 0", "anchor", "reuse", "schedule\n(per layer)"])
    right.set_ylabel("time / cuDNN dense time")
    right.set_yscale("log")
    right.grid(True, axis="y", which="both", alpha=0.3)
    right.legend(fontsize=7)
    right.set_title("ratio to cuDNN SDPA causal (lower is faster)", fontsize=10)
    fig.suptitle(f"Prefill attention, bf16, rho 0.1, tile 32, page 16 — {doc.get('device', '')}, commit "
                 f"{doc.get('commit', '?')}", fontsize=11)
    fig.tight_layout()
    out = args.output or args.results.rsplit(".", 1)[0] + ".png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
