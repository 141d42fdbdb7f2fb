"""Activation patching (denoising), fast.

For a cell c (a head, an MLP, or a residual position) and a pair i::

    patched_i(c) = m(benign_i with c's activation taken from toxic_i)
    score(c)     = (mean_i patched_i(c) − mean_i m(benign_i)) / (mean_i m(toxic_i) − mean_i m(benign_i))

How it is fast, and exact:

* pairs are grouped by token length, so no padding ever enters a forward pass;
* the benign run is executed block by block once and its residual stream entering every block is
  kept; a patch at layer l resumes from that residual at block l — blocks 0..l-1 are never re-run;
* prefix sharing (:mod:`patching.prefix`): within a length group, pairs are grouped by their first
  differing token d; positions before d are identical in both runs (causal attention), so a patch
  there is a no-op (its score is m(benign) without a forward) and every patched forward runs only on
  positions d.., reading the prefix's keys/values from a fresh cache;
* staircase batching (:mod:`patching.staircase`): the rows of a group (one per pair and patch, at most
  ``batch_size`` per forward) go through the blocks once, the batch growing as each layer's rows join
  with their patch applied through per-row masks;
* only the activations the sweep needs are cached from the toxic run, and only the final position
  is unembedded.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from lens.errors import ToxlensError
from lens.hooks import attach, keepers
from lens.metrics import Metric
from lens.model import LensModel, Prepared
from lens.prompts import ContrastPairs
from patching.result import PatchResult
from patching.staircase import Full, by_first_difference, group_inputs, run_chunk, suffix_rows
from patching.targets import Patch, SweepSpec, position_classes, sweep_spec

DEFINITION = (
    "score(c) = (mean_i m(benign_i with c's activation from toxic_i) - mean_i m(benign_i)) "
    "/ (mean_i m(toxic_i) - mean_i m(benign_i))"
)
SPEED_SCHEME = (
    "groups by (length, first differing token d); patches before d are no-ops; patched forwards run on "
    "positions d.. with the prefix keys/values cached; staircase batches (rows join at their patch's layer, "
    "per-row masks), at most batch_size rows and max_tokens_per_forward tokens (rows x prompt length) per forward"
)
POSITIONS = {
    "components": "all",
    "heads": "all",
    "mlps": "all",
    "components_by_class": "per pair: diff (tokens differ), after (other positions after the first "
    "difference), final (last position when not a diff position)",
}
BATCH_SIZE = 1024  # default rows per patched forward: big batches keep the matmuls efficient
MAX_TOKENS = 65536  # memory cap: rows x prompt length per patched forward


def balanced(items: list[int], cap: int) -> list[list[int]]:
    """``items`` cut into the fewest chunks of at most ``cap``, of (nearly) equal size."""
    n_chunks = -(-len(items) // cap)
    size = -(-len(items) // max(1, n_chunks))
    return [items[i : i + size] for i in range(0, len(items), size)]


def capture(
    model: LensModel, prepared: Prepared, hook_names: list[str], keep_graph: bool = False
) -> tuple[Float[Tensor, "batch pos d_model"], dict[str, Tensor]]:
    """Run the whole model on ``prepared`` and keep the activations at ``hook_names`` (only those)."""
    acts: dict[str, Tensor] = {}
    with attach(model.bridge, keepers(acts, hook_names, keep_graph)):
        final = model.run_layers(prepared.resid, prepared)
    return final, acts


def residuals_by_layer(model: LensModel, prepared: Prepared) -> tuple[list[Tensor], Tensor]:
    """The residual stream entering every block (``resid_pre``) and the final residual."""
    x, resid = prepared.resid, []
    for layer in range(model.n_layers):
        resid.append(x)
        x = model.run_layers(x, prepared, layer, layer + 1)
    return resid, x


@torch.no_grad()
def run_patches(
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    patches: list[Patch],
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
    """Metric under each patch, per pair: returns ``patched [pair, patch]``, ``m_toxic``, ``m_benign``, timings."""
    if batch_size < 1:
        raise ToxlensError(f"batch_size must be >= 1, got {batch_size}")
    n_pairs = len(pairs)
    patched = torch.full((n_pairs, len(patches)), float("nan"))
    m_toxic, m_benign = torch.empty(n_pairs), torch.empty(n_pairs)
    needed = sorted({p.hook_name for p in patches if p.site != "resid_pre"})
    timings = {"cache_s": 0.0, "sweep_s": 0.0}
    groups = pairs.length_groups()
    bar = tqdm(total=len(pairs), desc="activation patching", unit="pair", delay=3.0, disable=not progress)
    try:
        for length, idx in groups.items():
            t0 = time.perf_counter()
            pair_ids = torch.tensor(idx, device=model.device)
            benign_tokens = pairs.tokens(idx, "benign")
            benign = model.prepare(benign_tokens)
            toxic = model.prepare(pairs.tokens(idx, "toxic"))
            benign_resid, benign_final = residuals_by_layer(model, benign)
            toxic_resid: list[Tensor] = []
            if any(p.site == "resid_pre" for p in patches):  # one toxic pass keeps both
                toxic_acts: dict[str, Tensor] = {}
                with attach(model.bridge, keepers(toxic_acts, needed)):
                    toxic_resid, toxic_final = residuals_by_layer(model, toxic)
            else:
                toxic_final, toxic_acts = capture(model, toxic, needed)
            m_benign[idx] = metric(model.logits_at(benign_final), pair_ids).float().cpu()
            m_toxic[idx] = metric(model.logits_at(toxic_final), pair_ids).float().cpu()
            timings["cache_s"] += time.perf_counter() - t0
            full = Full(benign, benign_tokens, benign_resid, toxic_acts, toxic_resid)
            for d, local in by_first_difference(pairs, idx).items():
                t0 = time.perf_counter()
                g = group_inputs(model, full, local, d)
                timings["cache_s"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                classes = None
                if any(p.pos_class is not None for p in patches):
                    members = [pairs.pairs[idx[a]] for a in local]
                    classes = [position_classes(m.toxic_ids, m.benign_ids) for m in members]
                rows, cols, noop = suffix_rows(patches, len(local), d, length, classes)
                for a, j in noop:  # a patch before the first difference changes nothing
                    patched[idx[local[a]], j] = m_benign[idx[local[a]]]
                order = sorted(range(len(rows)), key=lambda r: rows[r].layer)
                for part in balanced(order, min(batch_size, max(1, MAX_TOKENS // length))):
                    final = run_chunk(model, g, [rows[r] for r in part])
                    ids = pair_ids[torch.tensor([local[rows[r].pair] for r in part], device=model.device)]
                    values = metric(model.logits_at(final), ids).float().cpu()
                    for r, v in zip(part, values.tolist()):
                        patched[idx[local[rows[r].pair]], cols[r]] = v
                timings["sweep_s"] += time.perf_counter() - t0
                bar.update(len(local))
    finally:
        bar.close()
    return patched, m_toxic, m_benign, timings


def activation_patching(
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    target: str = "components",
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
) -> PatchResult:
    """Activation-patching sweep over ``target`` (``components``, ``heads``, ``mlps``,
    ``resid_by_pos``, ``heads_by_pos``) → :class:`PatchResult`."""
    spec = _spec(target, model, pairs)
    t0 = time.perf_counter()
    patched, m_toxic, m_benign, timings = run_patches(
        model, pairs, metric, spec.patches, batch_size, progress
    )
    timings["total_s"] = time.perf_counter() - t0
    return build_result(
        "activation",
        spec,
        patched,
        m_toxic,
        m_benign,
        model,
        pairs,
        metric,
        timings,
        {
            "definition": DEFINITION,
            "batch_size": batch_size,
            "max_tokens_per_forward": MAX_TOKENS,
            "speed_scheme": SPEED_SCHEME,
        },
    )


def _spec(target: str, model: LensModel, pairs: ContrastPairs) -> SweepSpec:
    lengths = list(pairs.length_groups())
    return sweep_spec(target, model, lengths[0] if len(lengths) == 1 else None)


def build_result(
    method: str,
    spec: SweepSpec,
    patched: Tensor,
    m_toxic: Tensor,
    m_benign: Tensor,
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    timings: dict[str, float],
    extra: dict[str, Any],
) -> PatchResult:
    shape = tuple(len(spec.coords[d]) for d in spec.dims)
    metadata = {
        "target": spec.target,
        "component": spec.component,
        "model": model.info.to_dict(),
        "metric": metric.to_dict(),
        "pairs": pairs_metadata(pairs),
        "positions": POSITIONS.get(spec.target, "one per cell"),
        "timings": timings,
        **extra,
    }
    return PatchResult(
        method, spec.dims, spec.coords, patched.reshape(len(pairs), *shape), m_toxic, m_benign, metadata
    )


def pairs_metadata(pairs: ContrastPairs) -> dict[str, Any]:
    """What a result records about its pairs: source, count, ``prepend_bos``, pairs per length."""
    return {
        "source": pairs.source,
        "n_pairs": len(pairs),
        "prepend_bos": pairs.prepend_bos,
        "lengths": {str(k): len(v) for k, v in pairs.length_groups().items()},
    }


def patch_components(model: LensModel, pairs: ContrastPairs, metric: Metric, **kw: Any) -> PatchResult:
    """Every head (``L{l}H{h}``) and MLP (``L{l}.mlp``), all positions."""
    return activation_patching(model, pairs, metric, "components", **kw)


def patch_heads(model: LensModel, pairs: ContrastPairs, metric: Metric, **kw: Any) -> PatchResult:
    """Every query head, all positions: dims ``(layer, head)``."""
    return activation_patching(model, pairs, metric, "heads", **kw)


def patch_resid_by_pos(model: LensModel, pairs: ContrastPairs, metric: Metric, **kw: Any) -> PatchResult:
    """The residual stream entering each layer, one position at a time: dims ``(layer, pos)``."""
    return activation_patching(model, pairs, metric, "resid_by_pos", **kw)
