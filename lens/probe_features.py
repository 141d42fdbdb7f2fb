"""Residual-stream features of texts: tokenized, grouped by length (never padded), pooled.

Texts are grouped by token length and batched only within a group, so no padding ever enters a forward
and a text's features do not depend on the batch it ran in. Texts longer than ``max_tokens`` (default:
the model's context) keep their first ``max_tokens``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from lens.errors import ToxlensError
from lens.hooks import attach, keepers
from lens.model import LensModel
from lens.probe_core import HOOKS, POOLINGS


def tokenize_texts(
    model: LensModel, texts: Sequence[str], prepend_bos: bool, max_tokens: int
) -> list[list[int]]:
    """Token ids of every text, cut to its first ``max_tokens``; a text without tokens is an error."""
    ids = [model.tokenize(t, prepend_bos)[:max_tokens] for t in texts]
    empty = [i for i, row in enumerate(ids) if not row]
    if empty:
        raise ToxlensError(
            f"texts {empty[:5]} have no tokens; expected every text to give at least one token"
        )
    return ids


def length_groups(ids: Sequence[Sequence[int]], batch_size: int) -> Iterator[list[int]]:
    """Text indices grouped by token length (never padded), at most ``batch_size`` per group."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(ids):
        groups[len(row)].append(i)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            yield members[start : start + batch_size]


def length_batches(
    model: LensModel, ids: Sequence[Sequence[int]], names: Sequence[str], stop: int, batch_size: int
) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
    """Run blocks ``0 .. stop-1`` over the texts grouped by token length (never padded), ``batch_size``
    at a time; yield each batch's text indices and its activations at the hooks ``names``."""
    for rows in length_groups(ids, batch_size):
        yield rows, run_batch(model, [ids[i] for i in rows], names, stop)


def run_batch(
    model: LensModel, rows: Sequence[Sequence[int]], names: Sequence[str], stop: int
) -> dict[str, Tensor]:
    """Run blocks ``0 .. stop-1`` over one batch of equal-length token rows; the activations at ``names``."""
    seen: dict[str, Tensor] = {}
    prepared = model.prepare(torch.tensor([list(r) for r in rows], device=model.device))
    with attach(model.bridge, keepers(seen, list(names))):
        model.run_layers(prepared.resid, prepared, 0, stop)
    return seen


# -- features ---------------------------------------------------------------------------------
@torch.no_grad()
def collect_residuals(
    model: LensModel,
    texts: Sequence[str],
    layers: Sequence[int],
    batch_size: int = 32,
    hook: str = "resid_post",
    pooling: str = "mean",
    prepend_bos: bool = False,
    max_tokens: int | None = None,
) -> dict[int, Float[Tensor, "n d_model"]]:
    """Pooled residual stream of every text at every layer in ``layers`` (float32, on the CPU)."""
    if hook not in HOOKS:
        raise ToxlensError(f"unknown probe hook {hook!r}; expected one of {sorted(HOOKS)}")
    if pooling not in POOLINGS:
        raise ToxlensError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    if batch_size < 1:
        raise ToxlensError(f"batch_size must be >= 1, got {batch_size}")
    layers = list(layers)
    bad = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if not layers or bad:
        raise ToxlensError(f"layers must be a non-empty list within [0, {model.n_layers}), got {layers}")
    if not texts:
        raise ToxlensError("collect_residuals needs at least one text, got none")
    ids = tokenize_texts(model, texts, prepend_bos, max_tokens or model.info.n_ctx)
    feats = {layer: torch.zeros(len(texts), model.info.d_model) for layer in layers}
    names = {HOOKS[hook](layer): layer for layer in layers}
    for rows, seen in length_batches(model, ids, list(names), max(layers) + 1, batch_size):
        for name, layer in names.items():
            act = seen[name].float()
            feats[layer][rows] = (act.mean(1) if pooling == "mean" else act[:, -1]).cpu()
    return feats
