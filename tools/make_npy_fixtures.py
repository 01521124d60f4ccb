#!/usr/bin/env python3
"""Writes the .npy fixtures of tests/core/test_npy.cpp with numpy's own writer.

The C++ reader is tested against files made by the reference implementation of the format, so
that both agree on headers, padding and byte order. Values follow simple formulas that the test
recomputes (arange, scaled), so the files stay tiny and the test needs no second copy of them.

    python3 tools/make_npy_fixtures.py [OUT_DIR]     # default: tests/data/npy
"""
import os
import sys

import numpy as np


def save(out_dir, name, array, version=None):
    path = os.path.join(out_dir, name)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, version=version, allow_pickle=False)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "data", "npy")
    os.makedirs(out_dir, exist_ok=True)

    # Accepted: every supported dtype, 0-d and zero-length shapes, versions 1, 2 and 3.
    save(out_dir, "f4_2x3.npy", np.arange(6, dtype=np.float32).reshape(2, 3) * np.float32(0.5))
    save(out_dir, "f2_5.npy", np.array([0.5, -1.0, 65504.0, 2.0 ** -24, 1.0 / 3.0], dtype=np.float16))
    save(out_dir, "i4_4.npy", np.array([0, -1, 2147483647, -2147483648], dtype=np.int32))
    save(out_dir, "i8_2x2.npy", np.array([[0, -1], [2 ** 62, -(2 ** 63)]], dtype=np.int64))
    save(out_dir, "f4_scalar.npy", np.array(3.25, dtype=np.float32))
    save(out_dir, "f4_0x3.npy", np.zeros((0, 3), dtype=np.float32))
    save(out_dir, "i4_2x0x4.npy", np.zeros((2, 0, 4), dtype=np.int32))
    save(out_dir, "f4_v2_2x2x2.npy", np.arange(8, dtype=np.float32).reshape(2, 2, 2), version=(2, 0))
    save(out_dir, "i8_v3_3.npy", np.arange(3, dtype=np.int64), version=(3, 0))

    # Rejected: Fortran order, big-endian, dtypes outside the supported set.
    save(out_dir, "bad_fortran_2x3.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    save(out_dir, "bad_big_endian.npy", np.arange(3, dtype=">f4"))
    save(out_dir, "bad_f8.npy", np.arange(3, dtype=np.float64))
    save(out_dir, "bad_u1.npy", np.arange(3, dtype=np.uint8))
    save(out_dir, "bad_bool.npy", np.array([True, False]))


if __name__ == "__main__":
    main()
