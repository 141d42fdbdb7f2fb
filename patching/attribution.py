"""Attribution patching: the first-order (gradient) estimate of activation patching, for every cell at once.

For a cell c with activation a_c and a pair i::

    Δ̂_i(c)      = Σ_{positions, features of c} g_c(i) · (a_c(toxic_i) − a_c(benign_i))
    patched_i(c) = m(benign_i) + Δ̂_i(c)
    score(c)     = mean_i Δ̂_i(c) / (mean_i m(toxic_i) − mean_i m(benign_i))

with ``g_c(i) = ∂m/∂a_c`` at the benign run for plain attribution patching. The gradient-based
methods (:mod:`patching.relp`, :mod:`patching.ig`) only replace ``g`` — everything else here is shared
through :func:`first_order_patches` and a :data:`GradientFn`.

Cost per length group (plain attribution): one forward on the toxic prompts (no grad, caching only the
swept hooks), one forward on the benign prompts keeping those activations in the graph, and one
backward (``torch.autograd.grad`` with respect to the cached activations only — no parameter gradients).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lens.hooks import HookFn, attach, keepers
from lens.metrics import Metric
from lens.model import LensModel, Prepared
from patching.activation import _spec, build_result, capture
from patching.result import PatchResult
from patching.targets import Patch

DEFINITION = (
    "patched_i(c) = m(benign_i) + sum grad_{a_c} m(benign_i) . (a_c(toxic_i) - a_c(benign_i)); "
    "score(c) = mean_i (patched_i(c) - m(benign_i)) / (mean_i m(toxic_i) - mean_i m(benign_i))"
)

# (model, benign, toxic, toxic_acts, hook names, metric, pair ids) ->
#     (m_benign [batch], gradient per hook name, benign activation per hook name)
GradientFn = Callable[
    [LensModel, Prepared, Prepared, dict[str, Tensor], list[str], Metric, Tensor],
    tuple[Tensor, dict[str, Tensor], dict[str, Tensor]],
]


def benign_gradients(
    model: LensModel,
    benign: Prepared,
    names: list[str],
    metric: Metric,
    pair_ids: Tensor,
    extra_hooks: list[tuple[str, HookFn]] | None = None,
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """``∂m/∂a`` at the benign run for every hook in ``names`` (with ``extra_hooks`` attached too)."""
    with torch.enable_grad(), warnings.catch_warnings():
        # With a hook on a norm's hook_scale (RelP's LN-rule) the bridge notes that it rebuilds the norm's
        # output from the hooked values: float rounding only.
        warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")
        resid = benign.resid.detach().requires_grad_(True)
        acts: dict[str, Tensor] = {}
        with attach(model.bridge, [*keepers(acts, names, keep_graph=True), *(extra_hooks or [])]):
            final = model.run_layers(resid, benign)
            m = metric(model.logits_at(final), pair_ids)
        grads = dict(zip(names, torch.autograd.grad(m.sum(), [acts[n] for n in names])))
    return m.detach(), grads, {n: a.detach() for n, a in acts.items()}


def hooked_gradients(make_hooks: Callable[[LensModel], list[tuple[str, HookFn]]]) -> GradientFn:
    """A :data:`GradientFn`: gradients at the benign run with ``make_hooks(model)`` attached (fresh hooks
    per forward pass) — none for plain attribution, the LRP rules for RelP."""

    def gradients(
        model: LensModel,
        benign: Prepared,
        _toxic: Prepared,
        _toxic_acts: dict[str, Tensor],
        names: list[str],
        metric: Metric,
        pair_ids: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        return benign_gradients(model, benign, names, metric, pair_ids, make_hooks(model))

    return gradients


plain_gradients = hooked_gradients(lambda _model: [])


def first_order_patches(
    model: LensModel,
    pairs: Any,
    metric: Metric,
    patches: list[Patch],
    gradients: GradientFn,
) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
    """``m_benign + Σ g · Δa`` for each patch and pair: ``patched [pair, patch]``, ``m_toxic``, ``m_benign``."""
    n_pairs = len(pairs)
    patched = torch.full((n_pairs, len(patches)), float("nan"))
    m_toxic, m_benign = torch.empty(n_pairs), torch.empty(n_pairs)
    names = sorted({p.hook_name for p in patches})
    timings = {"forward_backward_s": 0.0}
    for _length, idx in pairs.length_groups().items():
        t0 = time.perf_counter()
        pair_ids = torch.tensor(idx, device=model.device)
        with torch.no_grad():
            toxic = model.prepare(pairs.tokens(idx, "toxic"))
            toxic_final, toxic_acts = capture(model, toxic, names)
            m_toxic[idx] = metric(model.logits_at(toxic_final), pair_ids).float().cpu()
        benign = model.prepare(pairs.tokens(idx, "benign"))
        m, grads, benign_acts = gradients(model, benign, toxic, toxic_acts, names, metric, pair_ids)
        m_benign[idx] = m.float().cpu()
        contribs = {n: (grads[n] * (toxic_acts[n] - benign_acts[n])).float() for n in names}
        for j, p in enumerate(patches):
            contrib = contribs[p.hook_name]  # [batch, pos, head, d_head] or [batch, pos, d_model]
            if p.pos is not None:
                contrib = contrib[:, p.pos : p.pos + 1]
            if p.head is not None:
                contrib = contrib[:, :, p.head]
            patched[idx, j] = m_benign[idx] + contrib.reshape(len(idx), -1).sum(-1).cpu()
        timings["forward_backward_s"] += time.perf_counter() - t0
    return patched, m_toxic, m_benign, timings


def estimate_patches(
    model: LensModel, pairs: Any, metric: Metric, patches: list[Patch]
) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
    """First-order estimate of the metric under each patch (plain gradients at the benign run)."""
    return first_order_patches(model, pairs, metric, patches, plain_gradients)


def gradient_method(
    method: str,
    gradients: GradientFn,
    definition: str,
    model: LensModel,
    pairs: Any,
    metric: Metric,
    target: str,
    extra: dict[str, Any],
) -> PatchResult:
    """Run a first-order method over ``target`` and label the result (shared by every gradient method)."""
    spec = _spec(target, model, pairs)
    t0 = time.perf_counter()
    patched, m_toxic, m_benign, timings = first_order_patches(model, pairs, metric, spec.patches, gradients)
    timings["total_s"] = time.perf_counter() - t0
    return build_result(
        method,
        spec,
        patched,
        m_toxic,
        m_benign,
        model,
        pairs,
        metric,
        timings,
        {"definition": definition, **extra},
    )


def attribution_patching(
    model: LensModel, pairs: Any, metric: Metric, target: str = "components", **_: Any
) -> PatchResult:
    """Attribution-patching estimate over ``target`` (same targets and cells as activation patching)."""
    return gradient_method("attribution", plain_gradients, DEFINITION, model, pairs, metric, target, {})
