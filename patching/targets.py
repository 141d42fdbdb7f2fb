"""What a sweep patches: named target sets → axis names, coordinates and one :class:`Patch` per cell.

A :class:`Patch` copies the toxic run's activation at one hook into the benign run:

* ``site="z"``: ``blocks.{layer}.attn.hook_z[:, pos, head]`` (one query head's output before W_O);
* ``site="mlp_out"``: ``blocks.{layer}.hook_mlp_out[:, pos]``;
* ``site="resid_pre"``: ``blocks.{layer}.hook_resid_pre[:, pos]``;

with ``pos=None`` meaning every position. ``pos_class`` (target ``components_by_class``) patches a per-pair set
of positions instead: ``diff`` (the two prompts' tokens differ), ``final`` (the last position when it is not a
diff position) or ``after`` (every other position after the first difference); see :func:`position_classes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lens.components import all_components, parse_component
from lens.errors import ToxlensError
from lens.hooks import mlp_out_name, resid_pre_name, z_name
from lens.model import LensModel

SITE_HOOKS = {"z": z_name, "mlp_out": mlp_out_name, "resid_pre": resid_pre_name}
TARGETS = ("components", "heads", "mlps", "resid_by_pos", "heads_by_pos", "components_by_class")
POSITION_CLASSES = ("diff", "after", "final")


@dataclass(frozen=True)
class Patch:
    site: str
    layer: int
    head: int | None = None
    pos: int | None = None
    pos_class: str | None = None

    @property
    def hook_name(self) -> str:
        return SITE_HOOKS[self.site](self.layer)


@dataclass(frozen=True)
class SweepSpec:
    target: str
    dims: tuple[str, ...]
    coords: dict[str, list[Any]]
    patches: list[Patch]
    component: str | None = None  # for single-kind layer axes (mlps): name suffix


def sweep_spec(target: str, model: LensModel, seq_len: int | None = None) -> SweepSpec:
    """Build the cells of a named sweep. Positional targets need the (single) sequence length."""
    n_layers, n_heads = model.n_layers, model.n_heads
    layers, heads = list(range(n_layers)), list(range(n_heads))
    if target == "components":
        names = all_components(n_layers, n_heads)
        patches = []
        for name in names:
            c = parse_component(name)
            patches.append(Patch("z", c.layer, c.head) if c.kind == "head" else Patch("mlp_out", c.layer))
        return SweepSpec(target, ("component",), {"component": names}, patches)
    if target == "components_by_class":
        names = all_components(n_layers, n_heads)
        patches = []
        for name in names:
            c = parse_component(name)
            for cls in POSITION_CLASSES:
                site, head = ("z", c.head) if c.kind == "head" else ("mlp_out", None)
                patches.append(Patch(site, c.layer, head, None, cls))
        return SweepSpec(
            target,
            ("component", "position"),
            {"component": names, "position": list(POSITION_CLASSES)},
            patches,
        )
    if target == "heads":
        return SweepSpec(
            target,
            ("layer", "head"),
            {"layer": layers, "head": heads},
            [Patch("z", layer, h) for layer in layers for h in heads],
        )
    if target == "mlps":
        return SweepSpec(
            target, ("layer",), {"layer": layers}, [Patch("mlp_out", layer) for layer in layers], "mlp"
        )
    if target in ("resid_by_pos", "heads_by_pos"):
        if seq_len is None:
            raise ToxlensError(
                f"target {target!r} patches single positions, so every pair must have the same token length"
            )
        pos = list(range(seq_len))
        if target == "resid_by_pos":
            return SweepSpec(
                target,
                ("layer", "pos"),
                {"layer": layers, "pos": pos},
                [Patch("resid_pre", layer, None, p) for layer in layers for p in pos],
                "resid_pre",
            )
        return SweepSpec(
            target,
            ("layer", "head", "pos"),
            {"layer": layers, "head": heads, "pos": pos},
            [Patch("z", layer, h, p) for layer in layers for h in heads for p in pos],
        )
    raise ToxlensError(f"unknown patching target {target!r}; expected one of {', '.join(TARGETS)}")


def position_classes(toxic: Sequence[int], benign: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """The three disjoint position sets of one pair (same length): ``diff``, ``after`` and ``final``.
    Positions before the first difference belong to none (a patch there changes nothing)."""
    if len(toxic) != len(benign):
        raise ToxlensError(
            f"position classes need equal lengths, got {len(toxic)} (toxic) and {len(benign)} (benign) tokens"
        )
    diff = tuple(i for i, (a, b) in enumerate(zip(toxic, benign)) if a != b)
    if not diff:
        return {"diff": (), "after": (), "final": ()}
    last = len(toxic) - 1
    final = () if last in diff else (last,)
    after = tuple(i for i in range(diff[0], last) if i not in diff)
    return {"diff": diff, "after": after, "final": final}
