"""Circuit faithfulness: how much of the toxic-vs-benign difference a set of components carries.

For a set ``S`` of components (heads ``(l, h)``: ``blocks.l.attn.hook_z[:, :, h]``; MLPs ``l``:
``blocks.l.hook_mlp_out``; every position) and pairs ``i``::

    D            = mean_i m(toxic_i) − mean_i m(benign_i)
    sufficiency  = (mean_i m(benign_i with S from toxic_i) − mean_i m(benign_i)) / D
    necessity    = (mean_i m(toxic_i) − mean_i m(toxic_i with S from benign_i)) / D

All components of ``S`` are patched together, in one forward; every other component keeps the
activation of the run being patched. :func:`faithfulness` evaluates the top-``k`` of a ranking for each
``k`` and, as a baseline, ``n_random`` seeded random ``k``-sets drawn from the same pool.

How it is fast: pairs are grouped by length (no padding); both clean runs are executed once per group,
keeping the residual entering every block and the activations of every patchable component; every
patched run resumes at the earliest patched layer of its set from the cached residual; the
(pair, set) rows are sorted by that layer and stacked along the batch, each row with its own masks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from lens.components import all_components, parse_component
from lens.errors import ToxlensError
from lens.hooks import attach, keepers
from lens.metrics import Metric
from lens.model import LensModel
from lens.prompts import ContrastPairs
from patching.activation import residuals_by_layer
from patching.circuit_result import DEFINITIONS, FaithfulnessResult
from patching.targets import Patch

KINDS = ("head", "mlp")


def component_patch(name: str, model: LensModel) -> Patch:
    c = parse_component(name, model.n_layers, model.n_heads)
    if c.kind not in KINDS or c.pos is not None:
        raise ToxlensError(f"component {name!r}: expected a head 'L5H3' or an MLP 'L7.mlp' (all positions)")
    return Patch("z", c.layer, c.head) if c.kind == "head" else Patch("mlp_out", c.layer)


def check_ks(ks: list[int], n_ranking: int, n_pool: int) -> list[int]:
    """Unique, sorted ks; each a positive int at most the ranking's and the pool's size."""
    if not ks:
        raise ToxlensError("ks is empty; expected at least one k (e.g. 1,2,5,10)")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ToxlensError(f"every k must be a positive integer, got {k!r}")
        limit = min(n_ranking, n_pool)
        if k > limit:
            raise ToxlensError(
                f"k = {k} is larger than the {limit} components available "
                f"(ranking: {n_ranking}, random pool: {n_pool}); expected k <= {limit}"
            )
    return sorted(set(ks))


def random_sets(pool: list[str], ks: list[int], n_random: int, seed: int) -> list[list[list[str]]]:
    """``n_random`` sets of size ``k`` for each ``k`` (uniform, without replacement, in pool order),
    all drawn from one ``torch.Generator`` seeded with ``seed``: ``[k][draw] -> names``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in ks:
        draws = []
        for _ in range(n_random):
            picked = sorted(torch.randperm(len(pool), generator=gen)[:k].tolist())
            draws.append([pool[i] for i in picked])
        out.append(draws)
    return out


def faithfulness(
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    ranking: list[str],
    ks: list[int],
    n_random: int = 20,
    seed: int = 0,
    kind: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    threshold: float = 0.8,
) -> FaithfulnessResult:
    """Sufficiency and necessity of the top-``k`` of ``ranking`` (best first) and of random ``k``-sets.

    ``kind`` (``"head"`` / ``"mlp"``) keeps only components of that kind in the ranking; the random pool
    is every component of the model of the kinds left in the ranking.
    """
    from patching.locate import check_separation

    if kind is not None and kind not in KINDS:
        raise ToxlensError(f"kind must be one of {', '.join(KINDS)} or None, got {kind!r}")
    if len(set(ranking)) != len(ranking):
        raise ToxlensError("the ranking names a component more than once; expected unique names")
    for name in ranking:
        component_patch(name, model)
    if kind is not None:
        ranking = [n for n in ranking if parse_component(n).kind == kind]
    kinds = {parse_component(n).kind for n in ranking}
    pool = [n for n in all_components(model.n_layers, model.n_heads) if parse_component(n).kind in kinds]
    ks = check_ks(ks, len(ranking), len(pool))
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise ToxlensError(f"n_random must be an integer >= 1, got {n_random!r}")
    if batch_size < 1:
        raise ToxlensError(f"batch_size must be >= 1, got {batch_size}")
    check_separation(model, pairs, metric)
    top = [ranking[:k] for k in ks]
    draws = random_sets(pool, ks, n_random, seed)
    # Evaluate each distinct set once.
    universe = all_components(model.n_layers, model.n_heads)
    index = {n: i for i, n in enumerate(universe)}
    distinct: dict[frozenset[int], int] = {}
    for names in [*top, *(s for per_k in draws for s in per_k)]:
        distinct.setdefault(frozenset(index[n] for n in names), len(distinct))
    sets = [sorted(s) for s in distinct]
    patches = [component_patch(n, model) for n in universe]
    t0 = time.perf_counter()
    into_benign, into_toxic, m_toxic, m_benign, timings = patch_sets(
        model, pairs, metric, patches, sets, batch_size, progress
    )
    timings["total_s"] = time.perf_counter() - t0

    def gather(values: Tensor, groups: list[list[str]]) -> Tensor:
        return values[:, [distinct[frozenset(index[n] for n in g)] for g in groups]]

    n_pairs = len(pairs)
    metadata = {
        "definitions": DEFINITIONS,
        "ks": ks,
        "n_random": n_random,
        "seed": seed,
        "kind": kind,
        "threshold": threshold,
        "pool": pool,
        "ranking": ranking,
        "model": {"spec": model.spec, **model.info.to_dict()},
        "metric": metric.to_dict(),
        "pairs": {
            "source": pairs.source,
            "n_pairs": n_pairs,
            "prepend_bos": pairs.prepend_bos,
            "lines": [p.line for p in pairs.pairs],
            "lengths": {str(k): len(v) for k, v in pairs.length_groups().items()},
        },
        "batch_size": batch_size,
        "distinct_sets": len(sets),
        "timings": timings,
    }
    flat_draws = [s for per_k in draws for s in per_k]
    return FaithfulnessResult(
        ks=ks,
        top_sets=top,
        random_sets=draws,
        m_toxic=m_toxic,
        m_benign=m_benign,
        suff_patched=gather(into_benign, top),
        nec_patched=gather(into_toxic, top),
        random_suff_patched=gather(into_benign, flat_draws).reshape(n_pairs, len(ks), n_random),
        random_nec_patched=gather(into_toxic, flat_draws).reshape(n_pairs, len(ks), n_random),
        metadata=metadata,
    )


@torch.no_grad()
def patch_sets(
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    patches: list[Patch],
    sets: list[list[int]],
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, float]]:
    """Metric per pair with each set of ``patches`` patched together (all positions), both ways.

    Returns ``into_benign [pair, set]`` (benign run, the set's outputs from the toxic run),
    ``into_toxic [pair, set]`` (toxic run, the set's outputs from the benign run), ``m_toxic``,
    ``m_benign`` and timings.
    """
    n_pairs = len(pairs)
    into_benign = torch.full((n_pairs, len(sets)), float("nan"))
    into_toxic = torch.full((n_pairs, len(sets)), float("nan"))
    m_toxic, m_benign = torch.empty(n_pairs), torch.empty(n_pairs)
    starts = [min(patches[c].layer for c in s) for s in sets]
    order = sorted(range(len(sets)), key=lambda j: starts[j])
    hook_names = sorted({patches[c].hook_name for s in sets for c in s})
    timings = {"cache_s": 0.0, "sweep_s": 0.0}
    groups = pairs.length_groups()
    n_steps = 2 * sum(-(-len(idx) * len(sets) // batch_size) for idx in groups.values())
    bar = tqdm(total=n_steps, desc="circuit faithfulness", unit="fwd", delay=3.0, disable=not progress)
    try:
        for _length, idx in groups.items():
            t0 = time.perf_counter()
            pair_ids = torch.tensor(idx, device=model.device)
            runs = {}
            for side in ("benign", "toxic"):
                prepared = model.prepare(pairs.tokens(idx, side))
                acts: dict[str, Tensor] = {}
                with attach(model.bridge, keepers(acts, hook_names)):
                    resid, final = residuals_by_layer(model, prepared)
                values = metric(model.logits_at(final), pair_ids).float().cpu()
                (m_benign if side == "benign" else m_toxic)[idx] = values
                runs[side] = (prepared, resid, acts)
            timings["cache_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = [(a, j) for j in order for a in range(len(idx))]
            for base, source, out in (("benign", "toxic", into_benign), ("toxic", "benign", into_toxic)):
                prepared, resid, _ = runs[base]
                source_acts = runs[source][2]
                for begin in range(0, len(rows), batch_size):
                    chunk = rows[begin : begin + batch_size]
                    start = min(starts[j] for _, j in chunk)
                    row_ids = torch.tensor([a for a, _ in chunk], device=model.device)
                    masks = set_masks(model, patches, [sets[j] for _, j in chunk])
                    hooks = [(n, _replace(m, source_acts[n][row_ids])) for n, m in masks.items()]
                    with attach(model.bridge, hooks):
                        final = model.run_layers(resid[start][row_ids], prepared, start=start)
                    values = metric(model.logits_at(final), pair_ids[row_ids]).float().cpu()
                    for (a, j), v in zip(chunk, values.tolist()):
                        out[idx[a], j] = v
                    bar.update(1)
            timings["sweep_s"] += time.perf_counter() - t0
    finally:
        bar.close()
    return into_benign, into_toxic, m_toxic, m_benign, timings


def set_masks(model: LensModel, patches: list[Patch], row_sets: list[list[int]]) -> dict[str, Tensor]:
    """Per hook, a boolean mask ``[row, 1, head, 1]`` (``hook_z``) or ``[row, 1, 1]`` (``hook_mlp_out``)
    that is True where a row's set patches that head / MLP (every position)."""
    masks: dict[str, Tensor] = {}
    n_rows = len(row_sets)
    for r, members in enumerate(row_sets):
        for c in members:
            p = patches[c]
            if p.hook_name not in masks:
                shape = (n_rows, 1, model.n_heads, 1) if p.site == "z" else (n_rows, 1, 1)
                masks[p.hook_name] = torch.zeros(shape, dtype=torch.bool, device=model.device)
            masks[p.hook_name][(r, 0, p.head) if p.site == "z" else (r, 0)] = True
    return masks


def _replace(
    mask: Bool[Tensor, "row ..."], source: Float[Tensor, "row pos ..."]
) -> Callable[[Tensor], Tensor]:
    def hook(activation: Tensor) -> Tensor:
        return torch.where(mask, source.to(activation.dtype), activation)

    return hook
