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


def _repeat(prepared: Prepared, resid: Tensor) -> Prepared:
    return Prepared(resid=resid, args=prepared.args, kwargs=prepared.kwargs)


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
        with torch.no_grad():
            benign_acts: dict[str, Tensor] = {}
            with attach(model.bridge, keepers(benign_acts, names)):
                m_benign = metric(model.logits_at(model.run_layers(benign.resid, benign)), pair_ids)
        e0, e1 = benign.resid.detach(), toxic.resid.detach()
        a = alphas(steps).to(e0.device, e0.dtype)
        total = {name: torch.zeros_like(benign_acts[name]) for name in names}
        per_chunk = max(1, max_rows // n)
        for start in range(0, steps, per_chunk):
            chunk = a[start : start + per_chunk]
            k = len(chunk)
            resid = (e0.unsqueeze(0) + chunk.view(-1, 1, 1, 1) * (e1 - e0).unsqueeze(0)).reshape(
                k * n, *e0.shape[1:]
            )
            resid.requires_grad_(True)  # so that block 0's input (hook_resid_pre of layer 0) is in the graph
            with torch.enable_grad():
                acts: dict[str, Tensor] = {}
                with attach(model.bridge, keepers(acts, names, keep_graph=True)):
                    m = metric(
                        model.logits_at(model.run_layers(resid, _repeat(benign, resid))), pair_ids.repeat(k)
                    )
                grads = torch.autograd.grad(m.sum(), [acts[name] for name in names])
            for name, g in zip(names, grads):
                total[name] += g.reshape(k, n, *g.shape[1:]).sum(0)
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
        with torch.no_grad():
            benign_acts: dict[str, Tensor] = {}
            with attach(model.bridge, keepers(benign_acts, names)):
                resid, final = residuals_by_layer(model, benign)
            m_benign = metric(model.logits_at(final), pair_ids)
        a = alphas(steps)
        out: dict[str, Tensor] = {}
        per_chunk = max(1, max_rows // n)
        for name in names:
            layer = int(name.split(".")[1])
            b0, b1 = benign_acts[name], toxic_acts[name]
            total = torch.zeros_like(b0)
            for start in range(0, steps, per_chunk):
                chunk = a[start : start + per_chunk].to(b0.device, b0.dtype)
                k = len(chunk)
                shape = (-1,) + (1,) * b0.ndim
                point = (b0.unsqueeze(0) + chunk.view(shape) * (b1 - b0).unsqueeze(0)).reshape(
                    k * n, *b0.shape[1:]
                )
                point.requires_grad_(True)
                x = resid[layer].repeat(k, *([1] * (resid[layer].ndim - 1)))
                with torch.enable_grad():
                    with attach(model.bridge, [(name, _constant(point))]):
                        final = model.run_layers(x, _repeat(benign, x), start=layer)
                    m = metric(model.logits_at(final), pair_ids.repeat(k))
                    (g,) = torch.autograd.grad(m.sum(), [point])
                total += g.reshape(k, n, *g.shape[1:]).sum(0)
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
