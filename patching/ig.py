"""Integrated gradients for components (EAP-IG style, node level).

``g_c`` of :mod:`patching.attribution` becomes the gradient averaged along a straight path from the
benign to the toxic run, ``m`` steps, midpoint rule (``α_k = (k − ½)/m``, ``k = 1..m``)::

    Δ̂_i(c) = Σ_{positions, features of c} (1/m) Σ_k ∂m/∂a_c |_{path(α_k)} · (a_c(toxic_i) − a_c(benign_i))

Two paths (``mode``):

* ``"inputs"`` (default, EAP-IG): the embedding output (the residual stream entering block 0) is
  interpolated, ``e(α) = e_benign + α·(e_toxic − e_benign)``, and every component's gradient is read in
  the same ``m`` forward/backward passes. Cost: 2 forwards + ``m`` × (1 forward + 1 backward).
* ``"activations"``: each hook site (one layer's ``hook_z`` — all its heads together — or one MLP's
  ``hook_mlp_out``) is interpolated on its own, everything downstream recomputed, the run resumed at
  that layer from the benign residual. For a site holding one component (an MLP) this converges, as
  ``m → ∞``, to the exact activation-patching effect (fundamental theorem of calculus); for a layer's
  heads, their scores sum to the effect of patching them all. Cost: ``m`` × (forward + backward) per site.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from lens.errors import ToxlensError
from lens.hooks import HookFn, attach, keepers
from lens.metrics import Metric
from lens.model import LensModel, Prepared
from patching.activation import residuals_by_layer
from patching.attribution import gradient_method
from patching.result import PatchResult

MODES = ("inputs", "activations")
DEFINITION = (
    "attribution patching with g_c = (1/m) sum_k grad_{a_c} m at alpha_k = (k - 1/2)/m on the straight "
    "path from benign to toxic (mode 'inputs': embeddings interpolated; 'activations': each site's activation)"
)


def alphas(steps: int) -> Tensor:
    return (torch.arange(steps, dtype=torch.float32) + 0.5) / steps


def step_chunks(steps: int, n_rows: int, max_rows: int) -> Iterator[Tensor]:
    """The midpoints ``α_k``, in chunks of at most ``max_rows // n_rows`` steps (at least one)."""
    a, per_chunk = alphas(steps), max(1, max_rows // n_rows)
    for start in range(0, steps, per_chunk):
        yield a[start : start + per_chunk]


def interpolate(start: Tensor, end: Tensor, chunk: Tensor) -> Tensor:
    """``start + α·(end − start)`` for every α of ``chunk``, stacked along the batch: ``[len(chunk)·batch, …]``."""
    alpha = chunk.to(start.device, start.dtype).view((-1,) + (1,) * start.ndim)
    return (start.unsqueeze(0) + alpha * (end - start).unsqueeze(0)).reshape(-1, *start.shape[1:])


@torch.no_grad()
def benign_run(
    model: LensModel, benign: Prepared, names: list[str], metric: Metric, pair_ids: Tensor
) -> tuple[Tensor, dict[str, Tensor], list[Tensor]]:
    """m(benign), the benign activations at ``names`` and the residual entering every block."""
    acts: dict[str, Tensor] = {}
    with attach(model.bridge, keepers(acts, names)):
        resid, final = residuals_by_layer(model, benign)
    return metric(model.logits_at(final), pair_ids), acts, resid


def input_path_gradients(steps: int, max_rows: int) -> Any:
    def gradients(
        model: LensModel,
        benign: Prepared,
        toxic: Prepared,
        _toxic_acts: dict[str, Tensor],
        names: list[str],
        metric: Metric,
        pair_ids: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        n = benign.resid.shape[0]
        m_benign, benign_acts, _ = benign_run(model, benign, names, metric, pair_ids)
        total = {name: torch.zeros_like(benign_acts[name]) for name in names}
        for chunk in step_chunks(steps, n, max_rows):
            resid = interpolate(benign.resid.detach(), toxic.resid.detach(), chunk)
            resid.requires_grad_(True)  # so that block 0's input (hook_resid_pre of layer 0) is in the graph
            with torch.enable_grad():
                acts: dict[str, Tensor] = {}
                with attach(model.bridge, keepers(acts, names, keep_graph=True)):
                    final = model.run_layers(resid, replace(benign, resid=resid))
                    m = metric(model.logits_at(final), pair_ids.repeat(len(chunk)))
                grads = torch.autograd.grad(m.sum(), [acts[name] for name in names])
            for name, g in zip(names, grads):
                total[name] += g.reshape(len(chunk), n, *g.shape[1:]).sum(0)
        return m_benign, {name: t / steps for name, t in total.items()}, benign_acts

    return gradients


def activation_path_gradients(steps: int, max_rows: int) -> Any:
    def gradients(
        model: LensModel,
        benign: Prepared,
        _toxic: Prepared,
        toxic_acts: dict[str, Tensor],
        names: list[str],
        metric: Metric,
        pair_ids: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        n = benign.resid.shape[0]
        m_benign, benign_acts, resid = benign_run(model, benign, names, metric, pair_ids)
        out: dict[str, Tensor] = {}
        for name in names:
            layer = int(name.split(".")[1])
            total = torch.zeros_like(benign_acts[name])
            for chunk in step_chunks(steps, n, max_rows):
                point = interpolate(benign_acts[name], toxic_acts[name], chunk).requires_grad_(True)
                x = resid[layer].repeat(len(chunk), *([1] * (resid[layer].ndim - 1)))
                with torch.enable_grad():
                    with attach(model.bridge, [(name, _constant(point))]):
                        final = model.run_layers(x, replace(benign, resid=x), start=layer)
                    m = metric(model.logits_at(final), pair_ids.repeat(len(chunk)))
                    (g,) = torch.autograd.grad(m.sum(), [point])
                total += g.reshape(len(chunk), n, *g.shape[1:]).sum(0)
            out[name] = total / steps
        return m_benign, out, benign_acts

    return gradients


def _constant(value: Tensor) -> HookFn:
    def replace(_activation: Tensor) -> Tensor:
        return value

    return replace


def integrated_gradients(
    model: LensModel,
    pairs: Any,
    metric: Metric,
    target: str = "components",
    steps: int = 5,
    mode: str = "inputs",
    max_rows: int = 64,
    **_: Any,
) -> PatchResult:
    """IG estimate over ``target`` (same targets, cells and outputs as attribution patching)."""
    if mode not in MODES:
        raise ToxlensError(f"unknown IG mode {mode!r}; expected one of {', '.join(MODES)}")
    if steps < 1:
        raise ToxlensError(f"IG needs steps >= 1, got {steps}")
    if max_rows < 1:
        raise ToxlensError(f"IG needs max_rows >= 1, got {max_rows}")
    make = input_path_gradients if mode == "inputs" else activation_path_gradients
    extra = {"steps": steps, "mode": mode, "rule": "midpoint", "max_rows": max_rows}
    return gradient_method("ig", make(steps, max_rows), DEFINITION, model, pairs, metric, target, extra)
