"""Component names: ``L{layer}H{head}`` for a query head, ``L{layer}.mlp`` for an MLP.

Positional cells of the residual-stream and head×position sweeps are ``L{layer}.resid_pre@{pos}`` and
``L{layer}H{head}@{pos}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lens.errors import ToxlensError

_NAME = re.compile(r"^L(?P<layer>\d+)(?:H(?P<head>\d+)|\.(?P<what>mlp|resid_pre))(?:@(?P<pos>\d+))?$")


@dataclass(frozen=True)
class Component:
    kind: str  # "head" | "mlp" | "resid_pre"
    layer: int
    head: int | None = None
    pos: int | None = None

    @property
    def name(self) -> str:
        base = f"L{self.layer}H{self.head}" if self.kind == "head" else f"L{self.layer}.{self.kind}"
        return base if self.pos is None else f"{base}@{self.pos}"


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def mlp_name(layer: int) -> str:
    return f"L{layer}.mlp"


def parse_component(name: str, n_layers: int | None = None, n_heads: int | None = None) -> Component:
    """Parse a component name; with ``n_layers``/``n_heads`` also check it exists in the model."""
    m = _NAME.match(name.strip())
    if not m:
        raise ToxlensError(f"unknown component name {name!r}; expected e.g. 'L5H3' (head) or 'L7.mlp'")
    layer = int(m["layer"])
    head = int(m["head"]) if m["head"] is not None else None
    pos = int(m["pos"]) if m["pos"] is not None else None
    kind = "head" if head is not None else str(m["what"])
    if n_layers is not None and layer >= n_layers:
        raise ToxlensError(f"component {name!r}: layer {layer} does not exist (model has {n_layers} layers)")
    if n_heads is not None and head is not None and head >= n_heads:
        raise ToxlensError(
            f"component {name!r}: head {head} does not exist (model has {n_heads} heads per layer)"
        )
    return Component(kind, layer, head, pos)


def all_components(n_layers: int, n_heads: int) -> list[str]:
    """Every head and MLP, layer by layer: ``L0H0 … L0H{n-1}, L0.mlp, L1H0, …``."""
    names: list[str] = []
    for layer in range(n_layers):
        names.extend(head_name(layer, h) for h in range(n_heads))
        names.append(mlp_name(layer))
    return names
