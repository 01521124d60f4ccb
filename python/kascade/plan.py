"""A Kascade plan (anchor layers, head map, top-k policy), read through the C++ parser.

``Plan.load(path)`` hands the text to ``torch.ops.kascade.parse_plan``: the same strict parser the
CLI and the engine use, so a malformed plan fails with the JSON path of the bad field, e.g.
``plan.json: head_map[3][1]: 5 is not a kv head (hkv = 3)``. Errors are raised as KascadeError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ._ops import ops
from .errors import KascadeError

ROLES = ("layer0", "anchor", "reuse")


@dataclass(frozen=True)
class Plan:
    model_name: str
    layers: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    anchors: tuple
    head_map: tuple  # [layers][Hkv]: kv head of the layer's anchor read by each kv head
    rho: float
    k_min: int
    k_multiple: int
    tile: int
    rolling: bool
    pool_all: bool
    text: str  # the canonical JSON the C++ parser wrote back

    @classmethod
    def from_json(cls, text: str, name: str = "plan") -> "Plan":
        try:
            canonical = ops.parse_plan(text, name)
        except RuntimeError as e:
            raise KascadeError(str(e)) from None
        d = json.loads(canonical)
        model, sparsity = d["model"], d["sparsity"]
        return cls(
            model_name=model["name"],
            layers=model["layers"],
            num_q_heads=model["hq"],
            num_kv_heads=model["hkv"],
            head_dim=model["head_dim"],
            anchors=tuple(d["anchors"]),
            head_map=tuple(tuple(row) for row in d["head_map"]),
            rho=float(sparsity["rho"]),
            k_min=int(sparsity["k_min"]),
            k_multiple=int(sparsity["k_multiple"]),
            tile=int(sparsity["tile"]),
            rolling=sparsity["budget"] == "rolling",
            pool_all=sparsity["pooling"] == "all",
            text=canonical,
        )

    @classmethod
    def load(cls, path) -> "Plan":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise KascadeError(f"plan {path}: cannot read it ({e.strerror})") from None
        return cls.from_json(text, str(path))

    def check_model(self, layers: int, num_q_heads: int, num_kv_heads: int, head_dim: int) -> None:
        """Raises KascadeError unless the plan was made for a model of this shape."""
        try:
            ops.check_plan(self.text, self.model_name, layers, num_q_heads, num_kv_heads, head_dim)
        except RuntimeError as e:
            raise KascadeError(str(e)) from None

    def role(self, layer: int) -> str:
        """'layer0' (dense output, selects), 'anchor' (selects, sparse output) or 'reuse'."""
        if not 0 <= layer < self.layers:
            raise KascadeError(f"plan for '{self.model_name}': layer {layer} is outside 0..{self.layers - 1}")
        if layer == 0:
            return "layer0"
        return "anchor" if layer in self.anchors else "reuse"

    def anchor_slot(self, layer: int) -> int:
        """Index in `anchors` of the anchor whose selection this layer writes or reads."""
        self.role(layer)
        return max(i for i, a in enumerate(self.anchors) if a <= layer)
