"""Kascade sparse attention for PyTorch.

    import kascade
    plan = kascade.Plan.load("plans/smollm2-135m-instruct.json")
    attn = kascade.KascadeAttention(plan, device="cuda", dtype=torch.bfloat16, max_seq_len=32768)
    kascade.hf.enable(model, plan)          # transformers: attn_implementation "kascade"

The operators live in torch.ops.kascade (kascade.ops): decode_{dense,layer0,anchor,reuse},
prefill_{dense,layer0,anchor,reuse}, the buffer-size queries and the plan parser. On CUDA tensors
they run the CUDA kernels, on CPU tensors the reference oracle.
"""

from ._ops import ATTENTION_OPS, library_path, ops
from .attention import KascadeAttention
from .errors import KascadeError
from .plan import Plan

__all__ = ["ATTENTION_OPS", "KascadeAttention", "KascadeError", "Plan", "library_path", "ops", "has_cuda"]
__version__ = "0.1.0"


def has_cuda() -> bool:
    """Whether this build includes the CUDA kernels."""
    return bool(ops.has_cuda())
