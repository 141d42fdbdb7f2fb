"""Edits built from a :class:`~patching.neuron_result.NeuronRanking` (``toxlens locate --texts``).

Weight edits are folded into the parameters (no run-time cost, exportable); each saves the tensors it
touches and restores them bit-identically on undo, and records ``edit.n_changed`` (parameter entries
whose value changed) and ``edit.n_units`` (neurons / rows / layers edited):

* :func:`dampen` — AurA (Suau et al. 2024): every neuron with AUROC > ``min_auroc`` (0.5) gets
  ``α = 1 − 2·(AUROC − 0.5)``; multiplying its activation by α is folded into its value vector
  (row ``i`` of the output weight). :func:`random_alphas` makes the control: within each layer the same
  α values given to randomly permuted neurons (same count per layer, same α multiset).
* the controls — ``random_seed`` in :func:`surgery` and :func:`subtract`: as many rows / neurons of
  the same layers drawn at random, edited by the same rule (registry: ``surgery-random``,
  ``subtract-random``; ``dampen-random`` is :func:`random_alphas`).
* :func:`surgery` — Model Surgery (Wang et al. 2024): in each edited layer, the ``k`` input rows (GPT-2
  ``W_in``, gated MLPs ``W_gate``) whose effective row ``W_i ⊙ γ`` (γ: the MLP's input-norm weight) is
  most aligned with the probe direction θ are shifted ``W_i ← W_i − α·‖W_i‖·θ``: those neurons are
  driven down when the toxic direction is present.
* ``project`` — ProFS-style: its own module, :mod:`interventions.neuron_project`.

:func:`subtract` (Lee et al. 2024) is a hook edit: the value vector(s) most aligned with the probe
(``cos_probe``) are subtracted, ``scale ×`` each, from the MLP output of their layer at every position
during generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interventions.edit_base import Edit, _hook_edit
from lens.errors import ToxlensError
from lens.hooks import mlp_out_name
from lens.model import LensModel
from lens.weights import mlp_weights
from patching.neuron_result import NeuronRanking


def _layers(model: LensModel, layers: Sequence[int] | None, default: Sequence[int]) -> list[int]:
    out = list(default) if layers is None else [int(x) for x in layers]
    bad = [x for x in out if not 0 <= x < model.n_layers]
    if not out or bad or len(set(out)) != len(out):
        raise ToxlensError(f"layers must be distinct ints in [0, {model.n_layers}), got {layers!r}")
    return out


def check_ranking(model: LensModel, ranking: NeuronRanking) -> None:
    """Refuse a ranking made on a model of another shape (layers, neurons, d_model, vocabulary)."""
    if not isinstance(ranking, NeuronRanking):
        raise ToxlensError(f"expected a NeuronRanking (toxlens locate --texts), got {type(ranking).__name__}")
    d_mlp = mlp_weights(model, 0).d_mlp
    if ranking.n_layers != model.n_layers or ranking.d_mlp != d_mlp:
        raise ToxlensError(
            f"the neuron ranking is for {ranking.n_layers} layers × {ranking.d_mlp} neurons "
            f"({ranking.metadata.get('spec')!r}); this model has {model.n_layers} × {d_mlp} ({model.spec!r})"
        )
    made = ranking.metadata.get("model", {})
    for key in ("d_model", "d_vocab", "n_heads"):
        if key in made and made[key] != getattr(model.info, key):
            raise ToxlensError(
                f"the neuron ranking is for a model with {key}={made[key]} ({ranking.metadata.get('spec')!r}); "
                f"this model has {key}={getattr(model.info, key)} ({model.spec!r})"
            )


def weight_edit(
    model: LensModel,
    description: str,
    params: Sequence[nn.Parameter],
    mutate: Callable[[], None],
    n_units: int,
) -> Edit:
    """Run ``mutate()`` (in-place, no grad) on ``params``; undo copies the saved originals back.

    A NaN/inf produced by the edit restores the weights and raises."""
    unique = list({id(p): p for p in params}.values())
    saved = [p.detach().clone() for p in unique]

    @torch.no_grad()
    def restore() -> None:
        for p, s in zip(unique, saved):
            p.copy_(s)

    try:
        with torch.no_grad():
            mutate()
        bad = [i for i, p in enumerate(unique) if not torch.isfinite(p).all()]
        if bad:
            raise ToxlensError(f"{description}: the edit produced NaN/inf weights; expected finite values")
    except BaseException:
        restore()
        raise
    edit = Edit(model, description, restore, unique)
    edit.n_changed = int(sum(int((p != s).sum()) for p, s in zip(unique, saved)))
    edit.n_units = n_units
    return edit


# -- dampen (AurA) -----------------------------------------------------------------------------------
def aura_alphas(
    ranking: NeuronRanking, min_auroc: float = 0.5, layers: Sequence[int] | None = None
) -> Float[Tensor, "layer d_mlp"]:
    """AurA's factors: ``1 − 2·(AUROC − 0.5)`` where AUROC > ``min_auroc`` (in ``layers``), else 1."""
    if not 0.5 <= float(min_auroc) < 1:
        raise ToxlensError(f"min_auroc must be in [0.5, 1), got {min_auroc!r}")
    auroc = ranking.neuron_auroc.double()
    alpha = torch.where(auroc > min_auroc, 1 - 2 * (auroc - 0.5), torch.ones_like(auroc))
    if layers is not None:
        keep = torch.zeros(ranking.n_layers, dtype=torch.bool)
        keep[list(layers)] = True
        alpha[~keep] = 1.0
    return alpha.float()


def random_alphas(alpha: Float[Tensor, "layer d_mlp"], seed: int = 0) -> Float[Tensor, "layer d_mlp"]:
    """The control: in each layer, the same α values on a random permutation of the neurons."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.stack([row[torch.randperm(row.numel(), generator=gen)] for row in alpha])


def dampen(
    model: LensModel, alpha: Float[Tensor, "layer d_mlp"] | NeuronRanking, label: str = "dampen"
) -> Edit:
    """Multiply neuron ``(l, i)``'s activation by ``alpha[l, i]``, folded into its value vector."""
    if isinstance(alpha, NeuronRanking):
        check_ranking(model, alpha)
        alpha = aura_alphas(alpha)
    d_mlp = mlp_weights(model, 0).d_mlp
    if not isinstance(alpha, Tensor) or alpha.shape != (model.n_layers, d_mlp):
        shape = tuple(alpha.shape) if isinstance(alpha, Tensor) else type(alpha).__name__
        raise ToxlensError(f"alpha must have shape ({model.n_layers}, {d_mlp}) (layer, neuron), got {shape}")
    if not torch.isfinite(alpha).all():
        raise ToxlensError("alpha has NaN/inf entries; expected finite factors")
    mlps = {la: mlp_weights(model, la) for la in range(model.n_layers) if (alpha[la] != 1).any()}
    params = [p for la in mlps for p in mlps[la].out_params]

    def mutate() -> None:
        for la, w in mlps.items():
            w.out.mul_(alpha[la].to(w.out)[:, None])

    n = int((alpha != 1).sum())
    return weight_edit(model, f"{label}({n} neurons in {len(mlps)} layers)", params, mutate, n)


# -- surgery -----------------------------------------------------------------------------------------
def surgery(
    model: LensModel,
    ranking: NeuronRanking,
    k: int = 32,
    alpha: float = 1.0,
    layers: Sequence[int] | None = None,
    random_seed: int | None = None,
) -> Edit:
    """Shift the ``k`` input rows per layer most aligned with the probe direction (module docstring).

    With ``random_seed`` (the control): ``k`` rows per layer drawn at random (seeded, per layer) instead,
    shifted by the same rule."""
    check_ranking(model, ranking)
    layers = _layers(model, layers, range(model.n_layers))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ToxlensError(f"k must be an int >= 1, got {k!r}")
    a = float(alpha)
    theta = ranking.probe_direction.float()
    mlps = {la: mlp_weights(model, la) for la in layers}
    if k > mlps[layers[0]].d_mlp:
        raise ToxlensError(f"k must be <= d_mlp={mlps[layers[0]].d_mlp}, got {k}")
    params = [p for la in layers for p in mlps[la].params]

    def mutate() -> None:
        for la in layers:
            w = mlps[la]
            row = w.inputs[0]  # W_gate for gated MLPs, W_in for GPT-2
            gamma = _mlp_norm_weight(model, la, row)
            t = theta.to(row)
            eff = row * gamma if gamma is not None else row
            if random_seed is None:
                cos = torch.nn.functional.cosine_similarity(eff, t[None], dim=-1)
                top = cos.topk(k).indices
            else:
                top = _random_units(row.shape[0], k, random_seed, la).to(row.device)
            row[top] -= a * row[top].norm(dim=-1, keepdim=True) * t[None]

    which = "" if random_seed is None else f", random rows seed={random_seed}"
    label = f"surgery(k={k}/layer, alpha={a:g}, {len(layers)} layers{which})"
    return weight_edit(model, label, params, mutate, k * len(layers))


def _random_units(n: int, k: int, seed: int, layer: int) -> Tensor:
    """``k`` distinct indices of ``n``, drawn with a generator seeded by ``(seed, layer)``."""
    gen = torch.Generator().manual_seed(int(seed) * 100_003 + int(layer))
    return torch.randperm(n, generator=gen)[:k]


def _mlp_norm_weight(model: LensModel, layer: int, like: Tensor) -> Tensor | None:
    norm = getattr(getattr(model.blocks[layer], "ln2", None), "original_component", None)
    gamma = getattr(norm, "weight", None)
    return gamma.detach().to(like) if isinstance(gamma, Tensor) else None


def subtract(
    model: LensModel,
    ranking: NeuronRanking,
    n_neurons: int = 1,
    scale: float = 10.0,
    random_seed: int | None = None,
) -> Edit:
    """Subtract ``scale ×`` the value vectors of the ``n_neurons`` neurons most aligned with the probe
    (``cos_probe``) from their layer's MLP output, at every position (a hook edit).

    With ``random_seed`` (the control): each chosen neuron is replaced by another neuron of the same
    layer drawn at random (seeded), subtracted at the same scale."""
    check_ranking(model, ranking)
    if isinstance(n_neurons, bool) or not isinstance(n_neurons, int) or n_neurons < 1:
        raise ToxlensError(f"n_neurons must be an int >= 1, got {n_neurons!r}")
    s = float(scale)
    if not torch.isfinite(torch.tensor(s)):
        raise ToxlensError(f"scale must be finite, got {scale!r}")
    flat = ranking.cos_probe.flatten().topk(n_neurons).indices
    chosen = [(int(i) // ranking.d_mlp, int(i) % ranking.d_mlp) for i in flat]
    if random_seed is not None:  # the control: as many other neurons of the same layers, at random
        located = set(chosen)
        draws: dict[int, list[int]] = {}
        for la, _ in chosen:
            if la not in draws:
                perm = _random_units(ranking.d_mlp, ranking.d_mlp, random_seed, la).tolist()
                draws[la] = [n for n in perm if (la, n) not in located]
        chosen = [(la, draws[la].pop(0)) for la, _ in chosen]
    by_layer: dict[int, Tensor] = {}
    for la, n in chosen:
        v = mlp_weights(model, la).out[n].detach().clone()
        by_layer[la] = by_layer.get(la, torch.zeros_like(v)) + s * v

    def hook_for(vec: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda x: x - vec.to(x)

    hooks = [(mlp_out_name(la), hook_for(v)) for la, v in by_layer.items()]
    names = ", ".join(f"L{la}.mlp.n{n}" for la, n in chosen)
    edit = _hook_edit(model, f"subtract({names}, scale={s:g})", hooks)
    edit.n_changed, edit.n_units = 0, len(chosen)
    return edit
