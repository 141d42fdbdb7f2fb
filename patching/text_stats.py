"""Per-text pooled activations of every neuron, head and MLP, streamed over labelled texts.

One pass over the texts (grouped by token length, never padded, ``batch_size`` at a time) keeps, per
text, only pooled values — never a per-token activation cache of the whole set:

* ``neurons`` ``[n_texts, n_layers, d_mlp]``: every MLP neuron's activation (see :mod:`lens.neurons`)
  pooled over the text's tokens with ``pooling`` (``mean`` or ``max``);
* ``z`` ``[n_texts, n_layers, n_heads, d_head]`` and ``mlp_out`` ``[n_texts, n_layers, d_model]``: the
  mean over tokens of each head's ``hook_z`` and each MLP's output (mean pooling is linear, so a
  head's output projected on any direction can be computed afterwards from its pooled ``z``);
* ``resid`` ``[n_texts, d_model]``: the mean over tokens of the last block's ``hook_resid_post``.

Memory is ``n_texts × (n_layers·(d_mlp + 2·d_model) + d_model) × 4`` bytes (smollm2-135m: 187 KB a text).
:func:`auroc_columns` turns pooled values into one ROC AUC per unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lens.errors import ToxlensError
from lens.hooks import mlp_out_name, resid_post_name, z_name
from lens.model import LensModel
from lens.probe_features import length_groups, run_batch, tokenize_texts
from lens.weights import mlp_weights, neuron_act_name

POOLINGS = ("mean", "max")


@dataclass
class PooledStats:
    neurons: Float[Tensor, "n layer d_mlp"]
    z: Float[Tensor, "n layer head_index d_head"]
    mlp_out: Float[Tensor, "n layer d_model"]
    resid: Float[Tensor, "n d_model"]
    n_tokens: Int[Tensor, "n"]
    pooling: str
    baseline_neurons: Float[Tensor, "layer d_mlp"]


@dataclass
class PooledBatch:
    """One batch's pooled values (rows in batch order) and its baseline texts' neuron-activation sums."""

    neurons: Float[Tensor, "b layer d_mlp"]
    z: Float[Tensor, "b layer head_index d_head"]
    mlp_out: Float[Tensor, "b layer d_model"]
    resid: Float[Tensor, "b d_model"]
    base_sum: Float[Tensor, "layer d_mlp"] | None  # float64; None when no row is a baseline text


# (batches of text indices, token ids of every text, baseline flag per text) -> one PooledBatch per batch
Pooler = Callable[[list[list[int]], list[list[int]], Tensor], Iterable[PooledBatch]]


@torch.no_grad()
def pool_batch(
    model: LensModel, rows: Sequence[Sequence[int]], pooling: str, in_base: Bool[Tensor, "b"]
) -> PooledBatch:
    """Pool every unit's activation over one batch of equal-length token rows."""
    nl = model.n_layers
    names = [neuron_act_name(la) for la in range(nl)] + [z_name(la) for la in range(nl)]
    names += [mlp_out_name(la) for la in range(nl)] + [resid_post_name(nl - 1)]
    seen = run_batch(model, rows, names, nl)
    neurons, z, mlp_out, base = [], [], [], []
    for layer in range(nl):
        act = seen[neuron_act_name(layer)].float()
        neurons.append((act.mean(1) if pooling == "mean" else act.amax(1)).cpu())
        if in_base.any():
            base.append(act[in_base.to(act.device)].sum((0, 1)).double().cpu())
        z.append(seen[z_name(layer)].float().mean(1).cpu())
        mlp_out.append(seen[mlp_out_name(layer)].float().mean(1).cpu())
    return PooledBatch(
        torch.stack(neurons, 1),
        torch.stack(z, 1),
        torch.stack(mlp_out, 1),
        seen[resid_post_name(nl - 1)].float().mean(1).cpu(),
        torch.stack(base) if base else None,
    )


def local_pooler(model: LensModel, pooling: str) -> Pooler:
    """The in-process :data:`Pooler`: :func:`pool_batch` on each batch in turn."""

    def pool(batches: list[list[int]], ids: list[list[int]], in_base: Tensor) -> Iterator[PooledBatch]:
        for rows in batches:  # lazily: one batch's activations in memory at a time
            yield pool_batch(model, [ids[i] for i in rows], pooling, in_base[rows])

    return pool


@torch.no_grad()
def collect_pooled(
    model: LensModel,
    texts: Sequence[str],
    pooling: str = "max",
    batch_size: int = 32,
    prepend_bos: bool = False,
    max_tokens: int = 64,
    baseline: Bool[Tensor, "n"] | None = None,
    progress: Callable[[int, int], None] | None = None,
    pooler: Pooler | None = None,
) -> PooledStats:
    """Pool every unit's activation over each text (see the module docstring).

    ``baseline_neurons`` is the mean neuron activation over every token of the texts selected by
    ``baseline`` (all texts when None). ``pooler`` runs the batches (default: here, one after another;
    :mod:`toxlens.locate_texts_sharded`: on Ray workers); the batches, and the order in which their values are
    gathered and summed, are the same either way, so the result is too."""
    if pooling not in POOLINGS:
        raise ToxlensError(f"unknown neuron pooling {pooling!r}; expected one of {POOLINGS}")
    if batch_size < 1 or max_tokens < 1:
        raise ToxlensError(f"batch_size and max_tokens must be >= 1, got {batch_size}, {max_tokens}")
    if not texts:
        raise ToxlensError("collect_pooled needs at least one text, got none")
    ids = tokenize_texts(model, texts, prepend_bos, max_tokens)
    n, nl, info = len(texts), model.n_layers, model.info
    d_mlp = mlp_weights(model, 0).d_mlp
    out = PooledStats(
        neurons=torch.zeros(n, nl, d_mlp),
        z=torch.zeros(n, nl, info.n_heads, info.d_head),
        mlp_out=torch.zeros(n, nl, info.d_model),
        resid=torch.zeros(n, info.d_model),
        n_tokens=torch.tensor([len(r) for r in ids]),
        pooling=pooling,
        baseline_neurons=torch.zeros(nl, d_mlp),
    )
    in_base = torch.ones(n, dtype=torch.bool) if baseline is None else baseline.bool()
    if in_base.shape != (n,) or not in_base.any():
        raise ToxlensError(f"baseline must select some of the {n} texts, got {tuple(in_base.shape)} / none")
    batches = list(length_groups(ids, batch_size))
    pooled = (pooler or local_pooler(model, pooling))(batches, ids, in_base)
    base_sum = torch.zeros(nl, d_mlp, dtype=torch.float64)
    done = 0
    for rows, part in zip(batches, pooled, strict=True):
        out.neurons[rows] = part.neurons
        out.z[rows] = part.z
        out.mlp_out[rows] = part.mlp_out
        out.resid[rows] = part.resid
        if part.base_sum is not None:
            base_sum += part.base_sum
        done += len(rows)
        if progress is not None:
            progress(done, n)
    out.baseline_neurons = (base_sum / out.n_tokens[in_base].sum()).float()
    return out


def auroc_columns(x: Float[Tensor, "n m"], y: Int[Tensor, "n"], chunk: int = 4096) -> Float[Tensor, "m"]:
    """ROC AUC of every column of ``x`` as a score for ``y == 1``: P(pos > neg), ties counting one half.

    Computed exactly from mid-ranks (Mann–Whitney U): ``(Σ ranks of positives − n₊(n₊+1)/2) / (n₊·n₋)``.
    """
    from scipy.stats import rankdata

    y_np = y.numpy().astype(bool)
    n_pos, n_neg = int(y_np.sum()), int((~y_np).sum())
    if n_pos == 0 or n_neg == 0:
        raise ToxlensError(f"AUROC needs both classes, got {n_pos} positive and {n_neg} negative texts")
    flat = x.reshape(x.shape[0], -1)
    out = np.empty(flat.shape[1])
    for start in range(0, flat.shape[1], chunk):
        block = flat[:, start : start + chunk].double().numpy()
        ranks = rankdata(block, axis=0, method="average")
        u = ranks[y_np].sum(0) - n_pos * (n_pos + 1) / 2
        out[start : start + chunk] = u / (n_pos * n_neg)
    return torch.from_numpy(out).float().reshape(x.shape[1:])


def effect_size(x: Float[Tensor, "n ..."], y: Int[Tensor, "n"]) -> Float[Tensor, "..."]:
    """(mean over positives − mean over negatives) / pooled standard deviation, per unit (0 if constant)."""
    pos, neg = x[y == 1].double(), x[y == 0].double()
    var = (pos.var(0, unbiased=False) * len(pos) + neg.var(0, unbiased=False) * len(neg)) / len(x)
    diff = pos.mean(0) - neg.mean(0)
    return torch.where(var > 0, diff / var.clamp_min(1e-30).sqrt(), torch.zeros_like(diff)).float()
