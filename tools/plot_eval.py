#!/usr/bin/env python3
"""Plots a `kascade eval` result: accuracy and answer log-likelihood change against rho, one
line per selection policy, dense as a horizontal reference.

    tools/plot_eval.py bench/results/eval_quick/eval.json            # writes eval.png beside it
    tools/plot_eval.py RESULT.json --out plot.png --group 2048        # one length (or task) only

Needs matplotlib (scripts/requirements.txt). Reads the "summary" rows of the JSON file.
"""
import argparse
import json
import os
import sys

STYLE = {
    "oracle": ("tab:gray", "--", "o"),
    "kascade": ("tab:red", "-", "o"),
    "kascade-pooled": ("tab:orange", "-", "s"),
    "streaming": ("tab:blue", "-", "^"),
    "quest": ("tab:green", "-", "v"),
    "omnikv": ("tab:purple", "-", "D"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", help="eval.json written by kascade eval")
    parser.add_argument("--out", help="PNG to write (default: eval.png beside the result, or eval_<group>.png)")
    parser.add_argument("--group", default="all", help="'all' (default), a length or a task name")
    args = parser.parse_args()

    try:
        with open(args.result) as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"plot_eval: cannot read {args.result}: {e}")
    if result.get("format") != "kascade-eval":
        sys.exit(f"plot_eval: {args.result} is not a kascade eval result (format {result.get('format')!r})")
    rows = [r for r in result["summary"] if r["group"] == args.group]
    if not rows:
        groups = sorted({r["group"] for r in result["summary"]})
        sys.exit(f"plot_eval: no summary rows for group {args.group!r} (groups: {', '.join(groups)})")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, ll_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    dense = [r for r in rows if r["policy"] == "dense"]
    if dense:
        acc_ax.axhline(dense[0]["accuracy"], color="black", lw=1.5, label="dense")
        ll_ax.axhline(0.0, color="black", lw=1.5, label="dense")
    for policy, (color, ls, marker) in STYLE.items():
        pts = sorted((r["rho"], r["accuracy"], r["delta_logprob"]) for r in rows if r["policy"] == policy)
        if not pts:
            continue
        rhos = [p[0] for p in pts]
        acc_ax.plot(rhos, [p[1] for p in pts], color=color, ls=ls, marker=marker, label=policy)
        ll_ax.plot(rhos, [p[2] for p in pts], color=color, ls=ls, marker=marker, label=policy)
    cfg = result["config"]
    where = "all lengths and tasks" if args.group == "all" else args.group
    acc_ax.set(xlabel="rho (top-k fraction)", ylabel="exact match (%)", title=f"accuracy ({where})", ylim=(-5, 105))
    ll_ax.set(xlabel="rho (top-k fraction)", ylabel="Δ answer log-likelihood vs dense (nats/token)",
              title="answer log-likelihood change")
    for ax in (acc_ax, ll_ax):
        ax.set_xscale("log")
        ax.set_xticks(cfg["rhos"])
        ax.set_xticklabels([f"{r:g}" for r in cfg["rhos"]])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    ll_ax.legend(fontsize=8, loc="lower right")
    prov = result.get("provenance", {})
    fig.suptitle(f"{result.get('model', '')} — {cfg['examples']} example(s) x {len(cfg['tasks'])} tasks x "
                 f"lengths {','.join(map(str, cfg['lengths']))}, k_min {cfg['k_min']}, commit {prov.get('commit', '?')}",
                 fontsize=9)
    fig.tight_layout()
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.result)),
                                   "eval.png" if args.group == "all" else f"eval_{args.group}.png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
