#!/usr/bin/env python3
"""Randomized and adversarial comparison of `kascade reference` with the NumPy oracle.

Generates SPEC 9 case directories (random shapes and parameters, plus hand-picked adversarial
ones: ties, n < k_min, unaligned p0, partial last tiles, G = 1..8, D 16..128, large scores,
pooling all, fixed budget, reuse with non-identity maps, empty selections), runs
`kascade reference CASE_DIR OUT_DIR` on each and checks, per SPEC 7:
  - outputs: relative L2 error <= 1e-5 against ref_numpy given the same selection, no NaN/Inf;
  - selections: same shape and counts, well formed, and covered pooled mass (plus the diagonal
    tile's mass) within 1e-3 of the NumPy oracle's own selection.
Then feeds malformed inputs, each of which must exit non-zero with exactly one stderr line that
names the offending file, and leave no output behind.

    python3 tests/python/compare_reference.py --kascade build/bin/kascade [--cases 150] [--seed 1]

Exit status 0 when everything agrees, 1 otherwise, 77 (ctest's skip code) without numpy.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("compare_reference: numpy is not installed; skipping the NumPy oracle comparison")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_numpy  # noqa: E402

OUTPUT_TOLERANCE = 1e-5  # SPEC 7, fp32
MASS_TOLERANCE = 1e-3  # SPEC 7 selection equivalence


def write_case(case_dir, case, q, k, v, selection=None):
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(case, f)
    np.save(os.path.join(case_dir, "q.npy"), q)
    np.save(os.path.join(case_dir, "k.npy"), k)
    np.save(os.path.join(case_dir, "v.npy"), v)
    if selection is not None:
        np.save(os.path.join(case_dir, "select.npy"), selection)


def run_reference(kascade, case_dir, out_dir):
    return subprocess.run([kascade, "reference", case_dir, out_dir], capture_output=True, text=True, timeout=300)


def rel_l2(reference, actual):
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(actual))):
        return float("inf")
    ref_norm = np.linalg.norm(reference)
    diff = np.linalg.norm(actual - reference)
    return diff / ref_norm if ref_norm > 0 else diff


def row_problem(row, b):
    valid = row[row != -1]
    count = len(valid)
    if np.any(row[count:] != -1):
        return "padding -1 is followed by an index"
    if count and (valid.min() < 0 or valid.max() >= b):
        return "index outside the tile's candidates [0, %d)" % b
    if np.any(np.diff(valid) <= 0):
        return "indices not strictly ascending"
    return None


class Checker:
    def __init__(self, kascade, workdir):
        self.kascade = kascade
        self.workdir = workdir
        self.failures = []
        self.cases = 0
        self.exact_selections = 0
        self.equivalent_selections = 0
        self.worst_error = 0.0

    def fail(self, name, message):
        self.failures.append("%s: %s" % (name, message))

    def check(self, name, case, q, k, v, reuse_selection=None):
        """Runs one valid case through the binary and compares it with ref_numpy."""
        self.cases += 1
        case_dir = os.path.join(self.workdir, name)
        out_dir = os.path.join(self.workdir, name + "-out")
        write_case(case_dir, case, q, k, v, reuse_selection)
        proc = run_reference(self.kascade, case_dir, out_dir)
        if proc.returncode != 0:
            self.fail(name, "kascade reference failed (%d): %s" % (proc.returncode, proc.stderr.strip()))
            return
        full = ref_numpy.with_defaults(case)
        out = np.load(os.path.join(out_dir, "out.npy"))
        if out.dtype != np.float32 or out.shape != q.shape:
            self.fail(name, "out.npy is %s %s, expected float32 %s" % (out.dtype, out.shape, q.shape))
            return
        select_path = os.path.join(out_dir, "select.npy")
        hkv = k.shape[0]
        if full["role"] == "reuse":
            if os.path.exists(select_path):
                self.fail(name, "role reuse wrote select.npy")
            expected, _ = ref_numpy.attend(case, q, k, v, reuse_selection)
        else:
            actual_sel = np.load(select_path)
            expected_sel = ref_numpy.select(case, q, k)
            if not self.selections_agree(name, case, q, k, expected_sel, actual_sel):
                return
            if full["role"] == "dense":
                expected = ref_numpy.dense_output(full, q, k, v)
            else:  # the output given the binary's own selection (SPEC 7: same selection)
                expected = ref_numpy.sparse_output(full, q, k, v, actual_sel, ref_numpy.source_sets(full, hkv))
        error = rel_l2(expected, out)
        self.worst_error = max(self.worst_error, error)
        if not error <= OUTPUT_TOLERANCE:
            self.fail(name, "output relative L2 error %.3g > %g" % (error, OUTPUT_TOLERANCE))

    def selections_agree(self, name, case, q, k, expected, actual):
        if actual.dtype != np.int32 or actual.shape != expected.shape:
            self.fail(name, "select.npy is %s %s, expected int32 %s" % (actual.dtype, actual.shape, expected.shape))
            return False
        mass, diagonal, prefixes = ref_numpy.pooled(case, q, k)
        for s in range(expected.shape[0]):
            for tau, b in enumerate(prefixes):
                problem = row_problem(actual[s, tau], b)
                if problem:
                    self.fail(name, "select.npy [%d, %d]: %s" % (s, tau, problem))
                    return False
                want = expected[s, tau][expected[s, tau] >= 0]
                got = actual[s, tau][actual[s, tau] >= 0]
                if len(want) != len(got):
                    self.fail(name, "select.npy [%d, %d] has %d keys, expected %d" % (s, tau, len(got), len(want)))
                    return False
                covered_want = mass[s, tau, want].sum() + diagonal[s, tau]
                covered_got = mass[s, tau, got].sum() + diagonal[s, tau]
                if abs(covered_want - covered_got) > MASS_TOLERANCE * max(covered_want, covered_got):
                    self.fail(name, "select.npy [%d, %d] covers mass %.9g, the NumPy oracle's %.9g"
                              % (s, tau, covered_got, covered_want))
                    return False
        if np.array_equal(expected, actual):
            self.exact_selections += 1
        else:
            self.equivalent_selections += 1
        return True


# ---- case generation --------------------------------------------------------------------------

def arrays(rng, hq, hkv, nq, n, d, magnitude=1.0):
    q = (rng.standard_normal((hq, nq, d)) * magnitude).astype(np.float32)
    k = (rng.standard_normal((hkv, n, d)) * magnitude).astype(np.float32)
    v = rng.standard_normal((hkv, n, d)).astype(np.float32)
    return q, k, v


def reuse_selection_for(rng, case, q_shape, k_shape, truncate=False):
    """An anchor's selection for this shape: from another random layer, optionally thinned
    (fewer keys than the budget, possibly none) to exercise count < k."""
    hq, nq, d = q_shape
    hkv, n, _ = k_shape
    anchor_case = dict(case, role="anchor")
    anchor_case.pop("head_map", None)
    aq, ak, _ = arrays(rng, hq, hkv, nq, n, d)
    sel = ref_numpy.select(anchor_case, aq, ak)
    if truncate:
        for s in range(sel.shape[0]):
            for tau in range(sel.shape[1]):
                row = sel[s, tau][sel[s, tau] >= 0]
                keep = np.sort(rng.choice(row, size=rng.integers(0, len(row) + 1), replace=False)) if len(row) else row
                sel[s, tau] = -1
                sel[s, tau, : len(keep)] = keep
    return sel


def random_case(rng):
    mode = str(rng.choice(["decode", "prefill"]))
    role = str(rng.choice(["dense", "anchor", "reuse"]))
    hkv = int(rng.integers(1, 4))
    group = int(rng.integers(1, 9))
    d = int(rng.choice([16, 32, 64, 128]))
    n = int(rng.integers(1, 260))
    case = {"mode": mode, "role": role}
    if rng.random() < 0.7:
        case["rho"] = float(rng.choice([0.0, 0.05, 0.1, 0.3, 0.5, 1.0]))
    if rng.random() < 0.8:
        case["k_min"] = int(rng.choice([0, 1, 3, 8, 20, 64, 128]))
    if rng.random() < 0.3:
        case["k_multiple"] = int(rng.choice([1, 2, 4, 16, 64]))
    if rng.random() < 0.6:
        case["tile"] = int(rng.choice([1, 3, 8, 16, 32]))
    if rng.random() < 0.4:
        case["budget"] = str(rng.choice(["rolling", "fixed"]))
    if rng.random() < 0.3:
        case["pooling"] = str(rng.choice(["group", "all"]))
    if rng.random() < 0.2:
        case["scale"] = float(rng.uniform(0.01, 0.5))
    nq = 1 if mode == "decode" else int(rng.integers(1, n + 1))
    if mode == "prefill" and (n - nq != 0 or rng.random() < 0.3):
        case["p0"] = n - nq
    if role == "reuse" and rng.random() < 0.7:
        case["head_map"] = [int(x) for x in rng.integers(0, hkv, size=hkv)]
    q, k, v = arrays(rng, hkv * group, hkv, nq, n, d, magnitude=float(rng.choice([0.5, 1.0, 3.0])))
    selection = None
    if role == "reuse":
        selection = reuse_selection_for(rng, case, q.shape, k.shape, truncate=rng.random() < 0.3)
    return case, q, k, v, selection


def adversarial_cases(rng):
    """(name, case, q, k, v, reuse selection) for the shapes and values most likely to break."""
    cases = []

    def add(name, case, q, k, v, sel=None):
        cases.append((name, case, q, k, v, sel))

    # Integer scores: many exact ties in the pooled masses.
    q = rng.integers(-1, 2, size=(4, 40, 16)).astype(np.float32)
    k = rng.integers(-1, 2, size=(2, 90, 16)).astype(np.float32)
    v = rng.standard_normal((2, 90, 16)).astype(np.float32)
    add("ties_integer_scores", {"mode": "prefill", "role": "anchor", "p0": 50, "k_min": 7, "tile": 8}, q, k, v)
    # Duplicate keys: exact ties whatever the query.
    q, k, v = arrays(rng, 6, 3, 1, 64, 32)
    k[:, 10:30] = k[:, 10:11]
    add("duplicate_keys_decode", {"mode": "decode", "role": "anchor", "k_min": 9}, q, k, v)
    # scale 0: every score equal, selection = the first k keys, output = mean.
    q, k, v = arrays(rng, 2, 1, 30, 70, 16)
    add("scale_zero", {"mode": "prefill", "role": "anchor", "p0": 40, "scale": 0.0, "k_min": 5, "tile": 16}, q, k, v)
    # n < k_min (default 128): selection is everything, anchor equals dense.
    q, k, v = arrays(rng, 8, 2, 1, 100, 64)
    add("n_below_k_min", {"mode": "decode", "role": "anchor"}, q, k, v)
    q, k, v = arrays(rng, 4, 4, 1, 1, 16)
    add("decode_n_1", {"mode": "decode", "role": "dense"}, q, k, v)
    # Unaligned chunk with a partial last tile.
    q, k, v = arrays(rng, 6, 2, 45, 100, 32)
    add("unaligned_p0_partial_tile", {"mode": "prefill", "role": "anchor", "p0": 55, "tile": 16, "k_min": 4}, q, k, v)
    # kmax = 0: one tile at b = 0 (fresh prompt shorter than a tile).
    q, k, v = arrays(rng, 2, 2, 20, 20, 16)
    add("kmax_zero", {"mode": "prefill", "role": "anchor"}, q, k, v)
    # Empty decode selection (k = 0): zero output rows.
    q, k, v = arrays(rng, 3, 1, 1, 20, 16)
    add("empty_decode_selection", {"mode": "decode", "role": "anchor", "k_min": 0, "rho": 0.0}, q, k, v)
    # GQA extremes and head dims.
    for group, hkv, d in [(8, 1, 128), (1, 3, 16), (7, 2, 64), (5, 1, 48)]:
        q, k, v = arrays(rng, group * hkv, hkv, 33, 120, d)
        add("gqa_G%d_Hkv%d_D%d" % (group, hkv, d),
            {"mode": "prefill", "role": "anchor", "p0": 87, "k_min": 10, "rho": 0.2}, q, k, v)
    # Large-magnitude scores (near one-hot softmax rows).
    q, k, v = arrays(rng, 4, 2, 24, 80, 64, magnitude=30.0)
    add("large_scores_prefill", {"mode": "prefill", "role": "anchor", "p0": 56, "k_min": 6, "tile": 8}, q, k, v)
    q, k, v = arrays(rng, 4, 2, 1, 300, 64, magnitude=30.0)
    add("large_scores_decode", {"mode": "decode", "role": "dense", "k_min": 6}, q, k, v)
    # Pooling all and fixed budget.
    q, k, v = arrays(rng, 8, 4, 64, 200, 32)
    add("pooling_all_fixed", {"mode": "prefill", "role": "anchor", "p0": 136, "pooling": "all", "budget": "fixed",
                              "k_min": 16, "tile": 16}, q, k, v)
    # rho = 1 and k_multiple rounding past n.
    q, k, v = arrays(rng, 4, 2, 1, 70, 16)
    add("rho_one", {"mode": "decode", "role": "anchor", "rho": 1.0}, q, k, v)
    add("k_multiple_caps_at_n", {"mode": "decode", "role": "anchor", "k_min": 10, "k_multiple": 64}, q, k, v)
    q, k, v = arrays(rng, 2, 1, 9, 40, 16)
    add("tile_one", {"mode": "prefill", "role": "anchor", "p0": 31, "tile": 1, "k_min": 3}, q, k, v)
    # Reuse with non-identity maps, thinned selections, pooling all (map ignored).
    for name, case, truncate in [
        ("reuse_map_rotate", {"mode": "prefill", "role": "reuse", "p0": 40, "k_min": 8, "tile": 16,
                              "head_map": [2, 0, 1]}, False),
        ("reuse_map_collapse", {"mode": "decode", "role": "reuse", "k_min": 8, "head_map": [0, 0, 0]}, False),
        ("reuse_thinned", {"mode": "prefill", "role": "reuse", "p0": 40, "k_min": 8, "tile": 8,
                           "head_map": [1, 2, 2]}, True),
        ("reuse_pooling_all", {"mode": "prefill", "role": "reuse", "p0": 40, "pooling": "all", "k_min": 8,
                               "head_map": [2, 2, 0]}, False),
    ]:
        nq = 1 if case["mode"] == "decode" else 60
        q, k, v = arrays(rng, 6, 3, nq, 100, 32)
        add(name, case, q, k, v, reuse_selection_for(rng, case, q.shape, k.shape, truncate))
    return cases


# ---- malformed inputs -------------------------------------------------------------------------

def malformed_cases(rng):
    """(name, mutate(case_dir), substring the error line must contain)."""
    def set_case(**changes):
        def mutate(case_dir):
            path = os.path.join(case_dir, "case.json")
            with open(path) as f:
                case = json.load(f)
            for key, value in changes.items():
                if value is None:
                    case.pop(key, None)
                else:
                    case[key] = value
            with open(path, "w") as f:
                json.dump(case, f)
        return mutate

    def write_text(name, text):
        def mutate(case_dir):
            with open(os.path.join(case_dir, name), "w") as f:
                f.write(text)
        return mutate

    def save(name, array):
        return lambda case_dir: np.save(os.path.join(case_dir, name), array)

    def remove(name):
        return lambda case_dir: os.remove(os.path.join(case_dir, name))

    def truncate(name):
        def mutate(case_dir):
            path = os.path.join(case_dir, name)
            data = open(path, "rb").read()
            open(path, "wb").write(data[:-7])
        return mutate

    def fortran(name):
        def mutate(case_dir):
            path = os.path.join(case_dir, name)
            np.save(path, np.asfortranarray(np.load(path)))
        return mutate

    q, k, v = arrays(rng, 4, 2, 10, 40, 16)  # the base case: prefill reuse, p0 = 30, tile 4
    nan_q = q.copy()
    nan_q[1, 2, 3] = np.nan
    return [
        ("missing_case_json", remove("case.json"), "case.json"),
        ("case_not_json", write_text("case.json", "{mode: prefill"), "case.json"),
        ("case_is_array", write_text("case.json", "[1, 2]"), "case.json"),
        ("unknown_key", set_case(topk=3), "case.json"),
        ("unknown_mode", set_case(mode="verify"), "case.json"),
        ("unknown_role", set_case(role="oracle"), "case.json"),
        ("missing_mode", set_case(mode=None), "case.json"),
        ("rho_string", set_case(rho="0.1"), "case.json"),
        ("rho_above_one", set_case(rho=1.5), "case.json"),
        ("k_min_float", set_case(k_min=4.5), "case.json"),
        ("k_min_negative", set_case(k_min=-1), "case.json"),
        ("tile_zero", set_case(tile=0), "case.json"),
        ("k_multiple_zero", set_case(k_multiple=0), "case.json"),
        ("duplicate_key", write_text("case.json", '{"mode": "prefill", "role": "reuse", "p0": 30, "tile": 4, '
                                                  '"k_min": 3, "tile": 8}'), "case.json"),
        ("bad_budget", set_case(budget="sliding"), "case.json"),
        ("bad_pooling", set_case(pooling="heads"), "case.json"),
        ("scale_string", set_case(scale="auto"), "case.json"),
        ("head_map_length", set_case(head_map=[0]), "case.json"),
        ("head_map_range", set_case(head_map=[0, 2]), "case.json"),
        ("head_map_not_list", set_case(head_map=1), "case.json"),
        ("head_map_on_anchor", set_case(role="anchor"), "case.json"),  # base case has a head_map
        ("p0_mismatch", set_case(p0=29), "case.json"),
        ("p0_missing_chunk", set_case(p0=None), "case.json"),
        ("decode_nq_not_1", set_case(mode="decode", p0=None), "q.npy"),
        ("missing_q", remove("q.npy"), "q.npy"),
        ("q_float64", save("q.npy", q.astype(np.float64)), "q.npy"),
        ("q_rank2", save("q.npy", q[0]), "q.npy"),
        ("q_empty_axis", save("q.npy", q[:, :0]), "q.npy"),
        ("q_nan", save("q.npy", nan_q), "q.npy"),
        ("q_truncated", truncate("q.npy"), "q.npy"),
        ("k_fortran", fortran("k.npy"), "k.npy"),
        ("v_shape", save("v.npy", v[:, :39]), "v.npy"),
        ("k_head_dim", save("k.npy", np.concatenate([k, k], axis=2)), "k.npy"),
        ("hq_not_multiple", save("q.npy", q[:3]), "q.npy"),
        ("nq_exceeds_n", save("q.npy", np.concatenate([q] * 5, axis=1)), "q.npy"),
        ("select_missing", remove("select.npy"), "select.npy"),
        ("select_int64", lambda d: np.save(os.path.join(d, "select.npy"),
                                           np.load(os.path.join(d, "select.npy")).astype(np.int64)), "select.npy"),
        ("select_wrong_sets", lambda d: np.save(os.path.join(d, "select.npy"),
                                                np.load(os.path.join(d, "select.npy"))[:1]), "select.npy"),
        ("select_wrong_tiles", lambda d: np.save(os.path.join(d, "select.npy"),
                                                 np.load(os.path.join(d, "select.npy"))[:, :2]), "select.npy"),
        ("select_out_of_range", edit_select(lambda s: s.__setitem__((0, 0, 0), 30)), "select.npy"),
        ("select_negative", edit_select(lambda s: s.__setitem__((0, 1, 0), -2)), "select.npy"),
        ("select_not_ascending", edit_select(lambda s: s.__setitem__((1, 1, 1), s[1, 1, 0])), "select.npy"),
        ("select_padding_gap", edit_select(lambda s: s.__setitem__((0, 2, 0), -1)), "select.npy"),
        ("select_over_budget", widen_select(), "select.npy"),
        ("select_for_anchor", set_case(role="anchor", head_map=None), "select.npy"),
        ("decode_p0_wrong", decode_with_p0(), "case.json"),
    ]


def edit_select(change):
    def mutate(case_dir):
        path = os.path.join(case_dir, "select.npy")
        sel = np.load(path)
        change(sel)
        np.save(path, sel)
    return mutate


def widen_select():
    """One more key than the tile's budget (k = 3 at k_min = 3): append an extra column."""
    def mutate(case_dir):
        path = os.path.join(case_dir, "select.npy")
        sel = np.load(path)
        wider = np.concatenate([sel, np.full(sel.shape[:2] + (1,), -1, dtype=np.int32)], axis=2)
        row = np.arange(4, dtype=np.int32)  # 4 keys < b = 30 of tile 0
        wider[0, 0, :4] = row
        np.save(path, wider)
    return mutate


def decode_with_p0():
    def mutate(case_dir):
        with open(os.path.join(case_dir, "case.json"), "w") as f:
            json.dump({"mode": "decode", "role": "anchor", "p0": 3}, f)
        np.save(os.path.join(case_dir, "q.npy"), np.load(os.path.join(case_dir, "q.npy"))[:, :1])
        os.remove(os.path.join(case_dir, "select.npy"))
    return mutate


def check_malformed(checker, rng):
    q, k, v = arrays(rng, 4, 2, 10, 40, 16)
    base = {"mode": "prefill", "role": "reuse", "p0": 30, "tile": 4, "k_min": 3, "head_map": [1, 0]}
    selection = ref_numpy.select(dict(base, role="anchor", head_map=None), q, k)
    assert selection.shape == (2, 3, 3)
    for name, mutate, must_name in malformed_cases(rng):
        case_dir = os.path.join(checker.workdir, "bad-" + name)
        clean_base = {key: value for key, value in base.items() if value is not None}
        write_case(case_dir, clean_base, q, k, v, selection)
        mutate(case_dir)
        # Fresh OUT_DIR: must not be created. Existing OUT_DIR: must be left exactly as it was.
        fresh_out = os.path.join(checker.workdir, "bad-" + name + "-fresh")
        kept_out = os.path.join(checker.workdir, "bad-" + name + "-kept")
        os.makedirs(kept_out)
        with open(os.path.join(kept_out, "out.npy"), "w") as f:
            f.write("previous")
        for out_dir in (fresh_out, kept_out):
            proc = run_reference(checker.kascade, case_dir, out_dir)
            lines = proc.stderr.splitlines()
            if proc.returncode == 0:
                checker.fail("malformed " + name, "exit status 0 (expected an error)")
            elif len(lines) != 1 or not lines[0].strip():
                checker.fail("malformed " + name, "expected one stderr line, got %r" % proc.stderr)
            elif must_name not in lines[0]:
                checker.fail("malformed " + name, "error line does not name %s: %s" % (must_name, lines[0]))
            if proc.stdout:
                checker.fail("malformed " + name, "wrote to stdout: %r" % proc.stdout)
        if os.path.exists(fresh_out):
            checker.fail("malformed " + name, "created OUT_DIR despite the error")
        if sorted(os.listdir(kept_out)) != ["out.npy"] or open(os.path.join(kept_out, "out.npy")).read() != "previous":
            checker.fail("malformed " + name, "touched the existing OUT_DIR: %s" % sorted(os.listdir(kept_out)))
    # The usage errors: wrong argument count.
    proc = subprocess.run([checker.kascade, "reference", checker.workdir], capture_output=True, text=True)
    if proc.returncode == 0 or len(proc.stderr.splitlines()) != 1:
        checker.fail("malformed argument count", "expected one error line and a non-zero exit, got %d %r"
                     % (proc.returncode, proc.stderr))
    return len(malformed_cases(rng)) + 1


def check_replaces_existing(checker, rng):
    """A second run into the same OUT_DIR replaces both files and leaves no temporaries."""
    out_dir = os.path.join(checker.workdir, "replace-out")
    for i, (mode, nq) in enumerate([("prefill", 30), ("decode", 1)]):
        q, k, v = arrays(rng, 2, 1, nq, 50, 16)
        case_dir = os.path.join(checker.workdir, "replace-%d" % i)
        write_case(case_dir, {"mode": mode, "role": "anchor", "p0": 50 - nq, "k_min": 4}, q, k, v)
        proc = run_reference(checker.kascade, case_dir, out_dir)
        if proc.returncode != 0:
            checker.fail("replace", proc.stderr.strip())
            return
    if sorted(os.listdir(out_dir)) != ["out.npy", "select.npy"]:
        checker.fail("replace", "OUT_DIR holds %s" % sorted(os.listdir(out_dir)))
    if np.load(os.path.join(out_dir, "out.npy")).shape != (2, 1, 16):
        checker.fail("replace", "out.npy was not replaced")
    # OUT_DIR that is a regular file: one error line, the file left alone.
    blocker = os.path.join(checker.workdir, "replace-blocker")
    with open(blocker, "w") as f:
        f.write("not a directory")
    proc = run_reference(checker.kascade, os.path.join(checker.workdir, "replace-1"), blocker)
    if proc.returncode == 0 or len(proc.stderr.splitlines()) != 1 or "not a directory" not in proc.stderr:
        checker.fail("replace", "OUT_DIR that is a file: got %d %r" % (proc.returncode, proc.stderr))
    if open(blocker).read() != "not a directory":
        checker.fail("replace", "OUT_DIR that is a file was modified")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kascade", required=True, help="path of the kascade binary")
    parser.add_argument("--cases", type=int, default=150, help="number of random cases")
    parser.add_argument("--seed", type=int, default=20251216)
    parser.add_argument("--keep", action="store_true", help="keep the case directories")
    args = parser.parse_args()
    if not os.access(args.kascade, os.X_OK):
        print("compare_reference: %s is not an executable" % args.kascade)
        return 1
    rng = np.random.default_rng(args.seed)
    workdir = tempfile.mkdtemp(prefix="kascade-compare-")
    checker = Checker(args.kascade, workdir)
    try:
        for i in range(args.cases):
            case, q, k, v, sel = random_case(rng)
            checker.check("random-%03d" % i, case, q, k, v, sel)
        for name, case, q, k, v, sel in adversarial_cases(rng):
            checker.check(name, case, q, k, v, sel)
        malformed = check_malformed(checker, rng)
        check_replaces_existing(checker, rng)
    finally:
        if args.keep:
            print("case directories kept in", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("compare_reference: seed %d, %d valid cases (%d selections identical, %d equivalent by covered mass), "
          "worst output rel L2 %.3g, %d malformed inputs"
          % (args.seed, checker.cases, checker.exact_selections, checker.equivalent_selections, checker.worst_error,
             malformed))
    for failure in checker.failures:
        print("FAIL", failure)
    return 1 if checker.failures else 0


if __name__ == "__main__":
    sys.exit(main())
