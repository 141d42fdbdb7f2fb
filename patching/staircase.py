"""Staircase batching of patched forwards over one group of pairs (same length, same first difference).

Every patched row enters the forward at the layer of its patch, with the benign residual entering that
layer as input (the blocks below it would recompute exactly that residual). Instead of one forward per
layer, a chunk of rows (sorted by layer) goes through the blocks once while the batch grows: at block
``l`` the rows patched at ``l`` are appended, and each hook point of block ``l`` gets one hook that
applies every new row's patch through a per-row mask. Rows appended earlier are never touched again by
a hook (each row carries exactly one patch), so every row computes exactly its own patched forward.

All tensors here cover the suffix only (positions ``d ..`` of the group, see :mod:`patching.prefix`);
with ``d > 0`` every forward reads the prefix keys/values from a fresh cache.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lens.errors import ToxlensError
from lens.hooks import HookFn, attach
from lens.kv_cache import shimmed
from lens.model import LensModel, Prepared
from lens.prompts import ContrastPairs
from patching.prefix import (
    PrefixKV,
    first_difference,
    new_cache,
    prefix_kv,
    prepare_suffix,
    with_cache,
)
from patching.targets import Patch


@dataclass(frozen=True)
class Row:
    """One patched forward: ``pair`` indexes the group's tensors; ``positions`` are suffix positions
    (``None``: all); ``head`` selects one head of ``hook_z``."""

    pair: int
    layer: int
    site: str  # "z" | "mlp_out" | "resid_pre"
    hook_name: str
    head: int | None
    positions: tuple[int, ...] | None


@dataclass
class GroupInputs:
    """A group's suffix tensors (``[pair, suffix, ...]``) and the layer call arguments for the suffix."""

    prepared: Prepared
    placeholder: Any  # the cache object inside ``prepared`` (None without a prefix)
    kv: PrefixKV | None
    benign_resid: list[Tensor]
    toxic_acts: dict[str, Tensor]
    toxic_resid: list[Tensor]

    @property
    def suffix_len(self) -> int:
        return int(self.benign_resid[0].shape[1])


def chunks(rows: list[Row], max_rows: int) -> Iterator[list[Row]]:
    """Rows sorted by layer (stable), cut into chunks of at most ``max_rows``."""
    ordered = sorted(rows, key=lambda r: r.layer)
    for start in range(0, len(ordered), max_rows):
        yield ordered[start : start + max_rows]


def _mask(rows: list[Row], width: int, seq: int, hook_name: str, device: torch.device) -> Tensor:
    mask = torch.zeros(len(rows), seq, width, dtype=torch.bool, device=device)
    for r, row in enumerate(rows):
        if row.hook_name != hook_name:
            continue
        pos: Any = slice(None) if row.positions is None else list(row.positions)
        mask[r, pos, row.head if row.site == "z" and row.head is not None else 0] = True
    return mask


def _replace_tail(offset: int, mask: Tensor, source: Tensor) -> Callable[[Tensor], Tensor]:
    """Hook: rows ``offset ..`` of the activation take ``source`` where ``mask``; earlier rows untouched."""

    def hook(activation: Tensor) -> Tensor:
        tail = torch.where(mask, source.to(activation.dtype), activation[offset:])
        return tail if offset == 0 else torch.cat([activation[:offset], tail])

    return hook


def _entry(
    model: LensModel, g: GroupInputs, new: list[Row], pair_new: Tensor, offset: int
) -> tuple[Tensor, list[tuple[str, HookFn]]]:
    """Inputs of the rows entering at this layer and the hooks applying their patches."""
    layer, seq, device = new[0].layer, g.suffix_len, model.device
    x = g.benign_resid[layer][pair_new]
    if any(r.site == "resid_pre" for r in new):
        name = new[[r.site for r in new].index("resid_pre")].hook_name
        mask = _mask(new, 1, seq, name, device)
        x = torch.where(mask, g.toxic_resid[layer][pair_new].to(x.dtype), x)
    hooks: list[tuple[str, HookFn]] = []
    for name in sorted({r.hook_name for r in new if r.site != "resid_pre"}):
        source = g.toxic_acts[name][pair_new]
        width = source.shape[2] if source.ndim == 4 else 1
        mask = _mask(new, width, seq, name, device)
        hooks.append((name, _replace_tail(offset, mask.unsqueeze(-1) if source.ndim == 4 else mask, source)))
    return x, hooks


def run_chunk(model: LensModel, g: GroupInputs, chunk: list[Row]) -> Float[Tensor, "row suffix d_model"]:
    """The final residual (suffix positions) of every row of ``chunk`` (sorted by layer), in order."""
    device = model.device
    pairs = torch.tensor([r.pair for r in chunk], device=device)
    cache = new_cache() if g.kv is not None else None
    prepared = with_cache(g.prepared, g.placeholder, cache) if g.kv is not None else g.prepared
    x: Tensor | None = None
    n = 0
    with shimmed(model.blocks):
        for layer in range(chunk[0].layer, model.n_layers):
            lo = n
            while n < len(chunk) and chunk[n].layer == layer:
                n += 1
            hooks: list[tuple[str, HookFn]] = []
            if n > lo:
                x_new, hooks = _entry(model, g, chunk[lo:n], pairs[lo:n], lo)
                x = x_new if x is None else torch.cat([x, x_new])
            if x is None:
                raise ToxlensError(f"chunk starts at layer {chunk[0].layer} but no row enters there")
            if g.kv is not None:
                g.kv.cache_layer(cache, layer, pairs[:n])
            with attach(model.bridge, hooks):
                x = model.run_layers(x, prepared, layer, layer + 1)
    if x is None:
        raise ToxlensError("empty chunk: expected at least one patched row")
    return x


@dataclass
class Full:
    """One length group's full-length benign/toxic tensors (``[pair, pos, ...]``)."""

    prepared: Prepared
    tokens: Tensor
    benign_resid: list[Tensor]
    toxic_acts: dict[str, Tensor]
    toxic_resid: list[Tensor]


def by_first_difference(pairs: ContrastPairs, idx: list[int]) -> dict[int, list[int]]:
    """First differing position → rows of the length group ``idx`` (positions into ``idx``)."""
    out: dict[int, list[int]] = defaultdict(list)
    for a, i in enumerate(idx):
        p = pairs.pairs[i]
        out[first_difference(p.toxic_ids, p.benign_ids)].append(a)
    return dict(out)


def group_inputs(model: LensModel, full: Full, local: list[int], d: int) -> GroupInputs:
    """The suffix (positions ``d ..``) of the rows ``local`` of a length group, with their prefix cache."""
    rows = torch.tensor(local, device=full.tokens.device)
    dev_rows = rows.to(model.device)

    def cut(t: Tensor) -> Tensor:
        return t[dev_rows, d:]

    kv, placeholder, prepared = None, None, full.prepared
    if d > 0:
        kv = prefix_kv(model, full.tokens[rows, :d])
        prepared, placeholder = prepare_suffix(model, full.tokens[rows[:1]], kv)
    return GroupInputs(
        prepared,
        placeholder,
        kv,
        [cut(t) for t in full.benign_resid],
        {k: cut(v) for k, v in full.toxic_acts.items()},
        [cut(t) for t in full.toxic_resid],
    )


def suffix_rows(
    patches: list[Patch],
    n_pairs: int,
    d: int,
    length: int,
    classes: list[dict[str, tuple[int, ...]]] | None = None,
) -> tuple[list[Row], list[int], list[tuple[int, int]]]:
    """Rows to run (with each row's patch column) and the ``(pair, column)`` no-ops: patches that sit
    only before the first difference ``d``, empty position classes, or pairs whose tokens never differ.
    ``classes[a]`` holds pair ``a``'s position classes (absolute positions) for ``pos_class`` patches."""
    rows: list[Row] = []
    cols: list[int] = []
    noop: list[tuple[int, int]] = []
    for a in range(n_pairs):
        for j, p in enumerate(patches):
            absolute: tuple[int, ...] | None = None if p.pos is None else (p.pos,)
            if p.pos_class is not None:
                if classes is None:
                    raise ToxlensError(f"patch {p} needs the pairs' position classes")
                absolute = classes[a][p.pos_class]
            if d >= length or (absolute is not None and all(q < d for q in absolute)):
                noop.append((a, j))
                continue
            positions = None if absolute is None else tuple(q - d for q in absolute if q >= d)
            rows.append(Row(a, p.layer, p.site, p.hook_name, p.head, positions))
            cols.append(j)
    return rows, cols, noop
