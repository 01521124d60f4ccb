#!/usr/bin/env python3
"""Plot decode benchmark results (bench/results/*.json from kascade-bench-decode).

    python3 bench/plot_decode.py bench/results/decode_h100.json [-o bench/results/decode_h100.png]

One panel per (model, batch): time per layer against context length for the dense baselines
(cuDNN SDPA, PyTorch flash) and for each kascade role, plus the 32-layer schedule per layer.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [  # (impl, role, label, style)
    ("cudnn", "dense", "cuDNN SDPA dense", "k-"),
    ("flash", "dense", "PyTorch flash dense", "k:"),
    ("kascade", "dense", "kascade dense", "C0-o"),
    ("kascade", "layer0", "kascade layer 0", "C1-o"),
    ("kascade", "anchor", "kascade anchor", "C2-o"),
    ("kascade", "reuse", "kascade reuse", "C3-o"),
    ("kascade", "schedule", "kascade 32-layer schedule (per layer)", "C4--s"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    try:
        with open(args.results) as f:
            doc = json.load(f)
        records = doc["records"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"plot_decode.py: cannot read {args.results}: {e}")
    panels = sorted({(r["model"], r["batch"]) for r in records if r.get("impl") == "kascade"})
    if not panels:
        sys.exit(f"plot_decode.py: {args.results} has no kascade records")
    models = sorted({m for m, _ in panels})
    batches = sorted({b for _, b in panels})
    fig, axes = plt.subplots(len(models), len(batches), figsize=(4.2 * len(batches), 3.6 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for j, batch in enumerate(batches):
            ax = axes[i][j]
            for impl, role, label, style in SERIES:
                pts = sorted(
                    (r["context"], r["ms_per_layer"] if role == "schedule" else r["ms"])
                    for r in records
                    if r.get("model") == model and r.get("batch") == batch and r.get("impl") == impl
                    and r.get("role") == role and r.get("ms") is not None)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, markersize=4)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{model}, batch {batch}", fontsize=10)
            ax.set_xlabel("context (tokens)")
            ax.set_ylabel("ms per layer")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Decode attention per layer, bf16, rho 0.1, page 16 — {doc.get('device', '')}", fontsize=11)
    fig.tight_layout()
    out = args.output or args.results.rsplit(".", 1)[0] + ".png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
