"""`locate`: rank every attention head and MLP by how much it carries the toxic-vs-benign difference.

Runs any of the registered methods (:mod:`patching.methods`: activation, attribution, RelP, IG) over
all heads and MLPs (all positions) and joins them into one table, with each gradient method's agreement
with activation patching (:mod:`patching.agreement`). :func:`write_locate` writes the table, the saved results and a JSON
summary into a directory (figures are added by the CLI, which sits above this package).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lens.components import parse_component
from lens.errors import ToxlensError
from lens.io import json_safe
from lens.metrics import Metric
from lens.model import LensModel
from lens.prompts import ContrastPairs
from patching.agreement import agreement_stats
from patching.methods import METHODS, parse_methods, run_method
from patching.result import PatchResult

BASE_COLUMNS = ["component", "kind", "layer", "head"]
TAIL_COLUMNS = ["ci_low", "ci_high", "rank"]


@dataclass
class LocateResult:
    """One :class:`PatchResult` per method run (registry order), over every head and MLP."""

    results: dict[str, PatchResult]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def activation(self) -> PatchResult | None:
        return self.results.get("activation")

    @property
    def attribution(self) -> PatchResult | None:
        return self.results.get("attribution")

    @property
    def primary_method(self) -> str:
        """The method ranks come from: activation when it was run, else the first method run."""
        if not self.results:
            raise ToxlensError("locate result holds no method's result")
        return "activation" if "activation" in self.results else next(iter(self.results))

    @property
    def primary(self) -> PatchResult:
        return self.results[self.primary_method]

    def table(self) -> pd.DataFrame:
        """One row per head and MLP: ``component, kind, layer, head, score_<method>…, ci_low, ci_high, rank``."""
        primary = self.primary
        names = primary.names()
        parsed = [parse_component(n) for n in names]
        frame = pd.DataFrame(
            {
                "component": names,
                "kind": [c.kind for c in parsed],
                "layer": [c.layer for c in parsed],
                "head": pd.array([c.head for c in parsed], dtype="Int64"),
            }
        )
        for label, result in self.results.items():
            frame[f"score_{label}"] = result.mean.numpy()
        frame["ci_low"] = primary.ci_low.numpy()
        frame["ci_high"] = primary.ci_high.numpy()
        key = f"score_{self.primary_method}"
        if not np.isfinite(frame[key].to_numpy(float)).all():
            raise ToxlensError(
                f"{key} is not finite for {int((~np.isfinite(frame[key].to_numpy(float))).sum())} "
                "component(s): mean m(toxic) equals mean m(benign), so the scores divide by zero"
            )
        frame["rank"] = frame[key].rank(ascending=False, method="first").astype(int)
        columns = BASE_COLUMNS + [f"score_{m}" for m in self.results] + TAIL_COLUMNS
        return frame.sort_values("rank").reset_index(drop=True)[columns]

    def top_k(self, k: int = 10) -> pd.DataFrame:
        return self.table().head(k)

    def pearson_r(self, kind: str | None = "head", method: str = "attribution") -> float | None:
        """Pearson r between ``method``'s and activation's scores (over heads by default; ``None``: all)."""
        if "activation" not in self.results or method not in self.results:
            return None
        return agreement_stats(self.table(), method, kind)["pearson"]

    def agreement(self, forward_s: float | None = None) -> dict[str, Any]:
        """For every gradient method run beside activation: Pearson and Spearman r against activation for
        heads, MLPs and all components, top-10 overlap, and cost (seconds and forward-pass equivalents)."""
        if "activation" not in self.results:
            return {}
        table = self.table()
        out: dict[str, Any] = {}
        for method in self.results:
            if not METHODS[method].gradient:
                continue
            stats: dict[str, Any] = {
                kind_label: agreement_stats(table, method, kind)
                for kind_label, kind in (("heads", "head"), ("mlps", "mlp"), ("all", None))
            }
            seconds = self.timings.get(f"{method}_s")
            stats["cost"] = {
                "seconds": seconds,
                "forward_equivalents": seconds / forward_s if seconds and forward_s else None,
                "nominal": METHODS[method].nominal_cost(self.results[method].metadata),
            }
            out[method] = stats
        return out


def locate(
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    method: str = "both",
    batch_size: int = 64,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> LocateResult:
    """Score every head and MLP with each method of ``method`` (a comma-separated list of
    ``activation, attribution, relp, ig``; ``both`` = activation + attribution; ``all``).

    ``settings`` holds the methods' options (``ig_steps``, ``ig_mode``, ``relp_ah_rule``); they are
    recorded in each result's metadata. ``timings`` gets ``<method>_s`` and, when a gradient method runs
    beside activation, ``forward_s`` (one plain forward over the benign prompts of the pairs, for the cost
    in forward-pass equivalents).
    """
    names = parse_methods(method)
    check_separation(model, pairs, metric)
    timings: dict[str, float] = {}
    if "activation" in names and any(METHODS[m].gradient for m in names):  # for the cost in forward passes
        timings["forward_s"] = time_one_forward(model, pairs)
    opts = {"batch_size": batch_size, "progress": progress, **(settings or {})}
    results: dict[str, PatchResult] = {}
    for name in names:
        t0 = time.perf_counter()
        results[name] = run_method(name, model, pairs, metric, "components", opts)
        timings[f"{name}_s"] = time.perf_counter() - t0
    return LocateResult(results, timings)


@torch.no_grad()
def time_one_forward(model: LensModel, pairs: ContrastPairs, repeat: int = 2) -> float:
    """Seconds of one plain forward over the benign prompts of all pairs (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _length, idx in pairs.length_groups().items():
            model.final_logits(pairs.tokens(idx, "benign").to(model.device))
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def check_separation(model: LensModel, pairs: ContrastPairs, metric: Metric, rel_tol: float = 1e-6) -> None:
    """Refuse pairs on which the metric does not separate toxic from benign (one forward per side).

    Every score divides by ``mean_i m(toxic_i) − mean_i m(benign_i)``; when that is zero (or not
    finite) no ranking exists, so this raises instead of writing NaN / inf scores.
    """
    m_toxic, m_benign = torch.empty(len(pairs)), torch.empty(len(pairs))
    for _length, idx in pairs.length_groups().items():
        ids = torch.tensor(idx, device=model.device)
        for side, out in (("toxic", m_toxic), ("benign", m_benign)):
            logits = model.final_logits(pairs.tokens(idx, side).to(model.device))
            out[idx] = metric(logits, ids).float().cpu()
    mt, mb = float(m_toxic.mean()), float(m_benign.mean())
    if not (np.isfinite(mt) and np.isfinite(mb)):
        raise ToxlensError(
            f"{pairs.source}: the metric is not finite (mean m(toxic) = {mt}, mean m(benign) = {mb}); "
            "expected finite values — check the toxic token set / targets"
        )
    if abs(mt - mb) <= rel_tol * max(1.0, abs(mt), abs(mb)):
        raise ToxlensError(
            f"{pairs.source}: mean m(toxic) = mean m(benign) = {mt:.6g}, so every score would divide by "
            "zero; expected pairs whose toxic and benign prompts change the metric"
        )


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("toxlens", "torch", "transformers", "transformer-lens", "numpy", "safetensors", "plotly"):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def summary(
    result: LocateResult,
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    top_k: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    primary = result.primary
    info = model.info.to_dict()
    return {
        "model": {"spec": model.spec, **info},
        "metric": {**metric.to_dict(), "averaged_over": "pairs"},
        "definitions": {
            **{m: METHODS[m].definition for m in METHODS},
            "ci": f"percentile bootstrap over pairs, {primary.metadata['n_boot']} resamples, "
            f"level {primary.metadata['ci_level']}, seed {primary.metadata['bootstrap_seed']}",
            "component_output": "head (l,h): blocks.l.attn.hook_z[:, :, h] at every position; "
            "MLP l: blocks.l.hook_mlp_out at every position",
        },
        "m_toxic": float(primary.m_toxic.mean()),
        "m_benign": float(primary.m_benign.mean()),
        "m_toxic_per_pair": primary.m_toxic.tolist(),
        "m_benign_per_pair": primary.m_benign.tolist(),
        "prepend_bos": pairs.prepend_bos,
        "counts": {
            "pairs": len(pairs),
            "layers": info["n_layers"],
            "heads_per_layer": info["n_heads"],
            "heads": info["n_layers"] * info["n_heads"],
            "mlps": info["n_layers"],
            "components": len(primary.names()),
            "pair_lengths": {str(k): len(v) for k, v in pairs.length_groups().items()},
        },
        "methods": list(result.results),
        "primary_method": result.primary_method,
        "method_settings": {m: _settings(r) for m, r in result.results.items()},
        "pearson_r_heads": _finite_or_none(result.pearson_r("head")),
        "pearson_r_all": _finite_or_none(result.pearson_r(None)),
        "agreement_with_activation": result.agreement(result.timings.get("forward_s")),
        "top_k": result.top_k(top_k).astype(object).where(lambda f: f.notna(), None).to_dict("records"),
        "wall_time_s": timings,
        "versions": library_versions(),
    }


def write_locate(
    result: LocateResult, directory: Path, info: dict[str, Any], table: pd.DataFrame | None = None
) -> None:
    """Write components.csv (``table``, default ``result.table()``), result.json and the saved results
    (one subdirectory per method)."""
    (result.table() if table is None else table).to_csv(directory / "components.csv", index=False)
    for label, res in result.results.items():
        res.save(directory / label)
    (directory / "result.json").write_text(
        json.dumps(json_safe(info), indent=2, default=str, allow_nan=False)
    )


def _settings(result: PatchResult) -> dict[str, Any]:
    keys = ("batch_size", "steps", "mode", "rule", "max_rows", "rules", "ah_rule", "stabilizer")
    return {k: result.metadata[k] for k in keys if k in result.metadata}


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and np.isfinite(x) else None
