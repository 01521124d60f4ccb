"""Loads the operator library and registers the fake (meta) implementations.

The attention ops of ``torch.ops.kascade`` write caller-owned outputs and return nothing, so their
fake implementations only have to exist (and return None) for FakeTensor, ``torch.library.opcheck``
and ``torch.compile(fullgraph=True)`` to trace them. The C++ library registers the schemas and the
CPU (reference oracle) and CUDA (kernels) implementations through PyTorch's stable ABI.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

_LIBRARY_NAME = "_kascade_ops.so"

# The attention ops, each with the schema the C++ library registers (src/torch/register.cpp).
ATTENTION_OPS = (
    "decode_dense",
    "decode_layer0",
    "decode_anchor",
    "decode_reuse",
    "prefill_dense",
    "prefill_layer0",
    "prefill_anchor",
    "prefill_reuse",
)


def library_path() -> Path:
    """The operator library: $KASCADE_OPS_LIBRARY, else the one installed beside this file."""
    override = os.environ.get("KASCADE_OPS_LIBRARY")
    path = Path(override) if override else Path(__file__).with_name(_LIBRARY_NAME)
    if not path.is_file():
        where = "KASCADE_OPS_LIBRARY" if override else "the kascade package"
        raise ImportError(
            f"kascade: operator library {path} not found ({where}); build the package with "
            "`pip install --no-build-isolation .` from the source tree"
        )
    return path


def _load() -> None:
    if hasattr(torch.ops.kascade, "has_cuda"):
        return  # already loaded in this process (e.g. by a test harness)
    torch.ops.load_library(str(library_path()))
    for name in ATTENTION_OPS:
        torch.library.register_fake(f"kascade::{name}")(_fake_attention)


def _fake_attention(*args, **kwargs):
    # Outputs are mutated in place, with shapes the caller allocated: nothing to compute.
    return None


_load()
ops = torch.ops.kascade
