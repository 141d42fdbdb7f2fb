"""``project`` — ProFS-style (Uppaal et al. 2025) projection of the toxic subspace out of MLP value vectors,
and its controls.

The toxic subspace ``P_l`` of what MLP ``l`` writes (top right-singular vectors of the toxic-minus-non-toxic
mean MLP outputs, centred as ProFS does; stored in the ranking by ``toxlens locate --texts``) is projected
out of value vectors: ``W_out[i] ← W_out[i] (I − P_lᵀP_l)``. Which value vectors (``neurons``):

* ``located`` (the edit): the ``ceil(top_frac · d_mlp)`` neurons of the layer with the highest AUROC
  under the human labels; ``top_frac = 1`` is ProFS as published (every value vector, and the bias);
* ``random`` (the control ``project-random``): as many neurons per layer drawn uniformly (seeded);
* ``random-unlocated``: as many drawn from the neurons that are *not* located (a uniform draw holds
  ``top_frac`` of located ones on average).

And which subspace (``subspace``): ``toxic`` (the located one) or ``random`` — ``rank`` orthonormal
directions per layer drawn at random (seeded), the control for the subspace itself. A folded weight edit:
restored bit-identically on undo; ``n_changed`` counts the entries whose value changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from interventions.edit_base import Edit
from interventions.neuron_edits import _layers, _random_units, check_ranking, weight_edit
from lens.errors import ToxlensError
from lens.model import LensModel
from lens.weights import MLPWeights, mlp_weights
from patching.neuron_result import NeuronRanking

NEURONS = ("located", "random", "random-unlocated")
SUBSPACES = ("toxic", "random")


def project(
    model: LensModel,
    ranking: NeuronRanking,
    rank: int = 2,
    layers: Sequence[int] | None = None,
    top_frac: float = 1.0,
    neurons: str = "located",
    subspace: str = "toxic",
    seed: int = 0,
) -> Edit:
    """Project each edited layer's subspace out of the chosen value vectors (module docstring).
    ``layers`` default: the second half of the model. ``seed`` draws the random neurons and directions
    (per layer)."""
    check_ranking(model, ranking)
    sub = ranking.toxic_subspace
    if sub is None:
        raise ToxlensError("the neuron ranking has no toxic subspace (re-run toxlens locate --texts)")
    layers = _layers(model, layers, range(model.n_layers // 2, model.n_layers))
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= sub.shape[1]:
        raise ToxlensError(f"rank must be an int in [1, {sub.shape[1]}], got {rank!r}")
    if isinstance(top_frac, bool) or not isinstance(top_frac, int | float) or not 0 < top_frac <= 1:
        raise ToxlensError(f"top_frac must be a number in (0, 1], got {top_frac!r}")
    if neurons not in NEURONS:
        raise ToxlensError(f"neurons must be one of {NEURONS}, got {neurons!r}")
    if subspace not in SUBSPACES:
        raise ToxlensError(f"subspace must be one of {SUBSPACES}, got {subspace!r}")
    mlps: dict[int, MLPWeights] = {la: mlp_weights(model, la) for la in layers}
    params = [p for la in layers for p in mlps[la].out_params]
    d_mlp = ranking.d_mlp
    count = min(d_mlp, max(1, math.ceil(float(top_frac) * d_mlp)))
    if neurons == "random-unlocated" and 2 * count > d_mlp:
        raise ToxlensError(
            f"neurons='random-unlocated' needs top_frac <= 0.5 (as many unlocated neurons as located "
            f"ones), got top_frac={top_frac!r}"
        )

    def rows(la: int) -> Tensor | None:
        if count == d_mlp:  # every value vector (random-unlocated was refused above)
            return None
        if neurons == "random":
            return _random_units(d_mlp, count, seed, la)
        located = ranking.neuron_auroc[la].topk(count).indices
        if neurons == "located":
            return located
        others = torch.ones(d_mlp, dtype=torch.bool)
        others[located] = False
        pool = others.nonzero().squeeze(1)
        return pool[_random_units(len(pool), count, seed, la)]

    def basis_of(la: int, like: Tensor) -> Tensor:
        if subspace == "toxic":
            return sub[la, :rank].double().to(like.device)  # [rank, d_model], orthonormal rows
        gen = torch.Generator().manual_seed(int(seed) * 100_003 + 50_021 + la)
        q, _ = torch.linalg.qr(torch.randn(sub.shape[-1], rank, generator=gen, dtype=torch.float64))
        return q.T.contiguous().to(like.device)

    def mutate() -> None:
        for la in layers:
            w = mlps[la]
            basis = basis_of(la, w.out)
            idx = rows(la)
            if idx is None:  # every value vector, and the bias (ProFS as published)
                w.out.copy_(_without(w.out, basis))
                if w.out_bias is not None:
                    w.out_bias.copy_(_without(w.out_bias, basis))
            else:
                idx = idx.to(w.out.device)
                w.out[idx] = _without(w.out[idx], basis)

    which = "" if count == d_mlp else f", {count} neurons/layer"
    which += "" if neurons == "located" else f" {neurons} seed={seed}"
    which += "" if subspace == "toxic" else f", random subspace seed={seed}"
    return weight_edit(
        model, f"project(rank={rank}, {len(layers)} layers{which})", params, mutate, len(layers)
    )


def _without(x: Tensor, basis: Tensor) -> Tensor:
    """``x`` (rows, or one vector) with its component in the span of ``basis``'s orthonormal rows removed,
    computed in float64."""
    x64 = x.double()
    return (x64 - (x64 @ basis.T) @ basis).to(x.dtype)
