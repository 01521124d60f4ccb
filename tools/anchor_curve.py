#!/usr/bin/env python3
"""The accuracy-versus-anchors curve of one calibration run (docs/calibration.md, --plans-dir).

For every anchor count m, the best plan of that count (DIR/plans/m<M>.json) was evaluated with
`kascade eval --policies kascade` into DIR/<curve>/m<M>/eval.json (tools/device.sh accuracy
curve). This prints one Markdown table: m, anchors, pooling, the held-out KL that calibration
measured, and on the evaluation split the exact match, the answer log-likelihood change against
dense with its 95% interval (clustered by example), the question/answer KL, the share of keys
read, and the same for the per-layer oracle when the grid has it.

  tools/anchor_curve.py RESULTS/curve RESULTS/calibration.report.json [--oracle grid/eval.json.xz]
"""
import argparse
import glob
import json
import lzma
import os
import re
import sys


def load_json(path):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def summary_row(ev, policy, group="all"):
    for s in ev["summary"]:
        if s["policy"] == policy and s["group"] == group and (policy == "dense" or abs(s["rho"] - 0.1) < 1e-9):
            return s
    return None


def interval(x):
    return f'{x["mean"]:+.3f} [{x["lo"]:+.3f}, {x["hi"]:+.3f}]'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("curve", help="directory holding m<M>/eval.json")
    ap.add_argument("report", help="the calibration report (kascade-calibration-report v2)")
    ap.add_argument("--oracle", help="an eval.json(.xz) with the oracle policy on the same examples")
    ap.add_argument("--groups", default="all,1024,2048,4096,8192", help="summary groups of the answer-delta columns")
    a = ap.parse_args()
    report = load_json(a.report)
    if report.get("format") != "kascade-calibration-report":
        sys.exit(f"{a.report}: not a calibration report")
    held_out = {b["m"]: b for b in report.get("best_per_anchor_count", [])}
    layers = report["model"]["layers"]
    groups = a.groups.split(",")
    rows = []
    for path in sorted(glob.glob(os.path.join(a.curve, "m*", "eval.json")),
                       key=lambda p: int(re.search(r"m(\d+)", p).group(1))):
        m = int(re.search(r"m(\d+)", path).group(1))
        ev = load_json(path)
        rows.append((m, ev))
    if not rows:
        sys.exit(f"{a.curve}: no m<M>/eval.json")
    n = summary_row(rows[0][1], "dense")["examples"]
    print(f"Accuracy against anchor count (evaluation split, N = {n} examples, rho 0.1; held-out KL from "
          f"the calibration's development split). Answer delta: answer log-likelihood change per token "
          f"against dense, 95% interval clustered by example.\n")
    head = ["m", "anchors", "pooling", "held-out KL", "EM (dense)", "EM"] + [f"delta {g}" for g in groups] + \
           ["KL q", "KL a", "top-1 a", "keys read"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for m, ev in rows:
        s = {g: summary_row(ev, "kascade", g) for g in groups}
        d = summary_row(ev, "dense")
        ho = held_out.get(m, {})
        cells = [str(m), " ".join(map(str, ho.get("anchors", []))),
                 ho.get("pooling", "?"), f'{ho["kl"]:.4f}' if "kl" in ho else "",
                 f'{d["accuracy"]["mean"]:.1f}%', f'{s["all"]["accuracy"]["mean"]:.1f}% [{s["all"]["accuracy"]["lo"]:.1f}, {s["all"]["accuracy"]["hi"]:.1f}]']
        cells += [interval(s[g]["delta_logprob"]) if s[g] else "" for g in groups]
        cells += [f'{s["all"]["kl_question"]["mean"]:.3f}', f'{s["all"]["kl_answer"]["mean"]:.3f}',
                  f'{100 * s["all"]["top1_answer"]["mean"]:.1f}%', f'{100 * s["all"]["keys_fraction"]:.1f}%']
        print("| " + " | ".join(cells) + " |")
    if a.oracle:
        ev = load_json(a.oracle)
        s = {g: summary_row(ev, "oracle", g) for g in groups}
        if s["all"]:
            cells = [str(layers), "every layer (oracle)", "group", "", "", f'{s["all"]["accuracy"]["mean"]:.1f}%']
            cells += [interval(s[g]["delta_logprob"]) if s[g] else "" for g in groups]
            cells += [f'{s["all"]["kl_question"]["mean"]:.3f}', f'{s["all"]["kl_answer"]["mean"]:.3f}',
                      f'{100 * s["all"]["top1_answer"]["mean"]:.1f}%', f'{100 * s["all"]["keys_fraction"]:.1f}%']
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
