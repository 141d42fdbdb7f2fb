"""Attribution patching: the first-order (gradient) estimate of activation patching, for every cell at once.

For a cell c with activation a_c and a pair i::

    Δ̂_i(c)      = Σ_{positions, features of c} ∂m/∂a_c |_{benign_i} · (a_c(toxic_i) − a_c(benign_i))
    patched_i(c) = m(benign_i) + Δ̂_i(c)
    score(c)     = mean_i Δ̂_i(c) / (mean_i m(toxic_i) − mean_i m(benign_i))

Cost per length group: one forward on the toxic prompts (no grad, caching only the swept hooks), one
forward on the benign prompts keeping those activations in the graph, and one backward
(``torch.autograd.grad`` with respect to the cached activations only — no parameter gradients).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from lens.metrics import Metric
from lens.model import LensModel
from lens.prompts import ContrastPairs
from patching.activation import _spec, build_result, capture
from patching.result import PatchResult
from patching.targets import Patch

DEFINITION = (
    "patched_i(c) = m(benign_i) + sum grad_{a_c} m(benign_i) . (a_c(toxic_i) - a_c(benign_i)); "
    "score(c) = mean_i (patched_i(c) - m(benign_i)) / (mean_i m(toxic_i) - mean_i m(benign_i))"
)


def estimate_patches(
    model: LensModel, pairs: ContrastPairs, metric: Metric, patches: list[Patch]
) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
    """First-order estimate of the metric under each patch: ``patched [pair, patch]``, ``m_toxic``, ``m_benign``."""
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
        benign.resid.requires_grad_(True)
        with torch.enable_grad():
            benign_final, benign_acts = capture(model, benign, names, keep_graph=True)
            m = metric(model.logits_at(benign_final), pair_ids)
            grads = dict(zip(names, torch.autograd.grad(m.sum(), [benign_acts[n] for n in names])))
        m_benign[idx] = m.detach().float().cpu()
        for name in names:
            # delta * grad, computed once per hook; patches then only select and sum.
            grads[name] = (grads[name] * (toxic_acts[name] - benign_acts[name].detach())).float()
        for j, p in enumerate(patches):
            contrib = grads[p.hook_name]  # [batch, pos, head, d_head] or [batch, pos, d_model]
            if p.pos is not None:
                contrib = contrib[:, p.pos : p.pos + 1]
            if p.head is not None:
                contrib = contrib[:, :, p.head]
            patched[idx, j] = m_benign[idx] + contrib.reshape(len(idx), -1).sum(-1).cpu()
        timings["forward_backward_s"] += time.perf_counter() - t0
    return patched, m_toxic, m_benign, timings


def attribution_patching(
    model: LensModel, pairs: ContrastPairs, metric: Metric, target: str = "components", **_: Any
) -> PatchResult:
    """Attribution-patching estimate over ``target`` (same targets and cells as activation patching)."""
    spec = _spec(target, model, pairs)
    t0 = time.perf_counter()
    patched, m_toxic, m_benign, timings = estimate_patches(model, pairs, metric, spec.patches)
    timings["total_s"] = time.perf_counter() - t0
    return build_result(
        "attribution",
        spec,
        patched,
        m_toxic,
        m_benign,
        model,
        pairs,
        metric,
        timings,
        {"definition": DEFINITION},
    )
