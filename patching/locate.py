"""`locate`: rank every attention head and MLP by how much it carries the toxic-vs-benign difference.

Runs activation patching, attribution patching or both over all heads and MLPs (all positions) and
joins them into one table. :func:`write_locate` writes the table, the saved results and a JSON
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
from patching.activation import DEFINITION as ACTIVATION_DEFINITION
from patching.activation import activation_patching
from patching.attribution import DEFINITION as ATTRIBUTION_DEFINITION
from patching.attribution import attribution_patching
from patching.result import PatchResult

METHODS = ("activation", "attribution", "both")
CSV_COLUMNS = [
    "component",
    "kind",
    "layer",
    "head",
    "score_activation",
    "score_attribution",
    "ci_low",
    "ci_high",
    "rank",
]


@dataclass
class LocateResult:
    activation: PatchResult | None
    attribution: PatchResult | None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def primary(self) -> PatchResult:
        """The result ranks come from: activation when it was run, else attribution."""
        result = self.activation or self.attribution
        if result is None:
            raise ToxlensError("locate result holds neither an activation nor an attribution result")
        return result

    def table(self) -> pd.DataFrame:
        """One row per head and MLP with the columns of ``components.csv``, sorted by rank."""
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
        for label, result in (("activation", self.activation), ("attribution", self.attribution)):
            frame[f"score_{label}"] = result.mean.numpy() if result is not None else np.nan
        frame["ci_low"] = primary.ci_low.numpy()
        frame["ci_high"] = primary.ci_high.numpy()
        key = "score_activation" if self.activation is not None else "score_attribution"
        if not np.isfinite(frame[key].to_numpy(float)).all():
            raise ToxlensError(
                f"{key} is not finite for {int((~np.isfinite(frame[key].to_numpy(float))).sum())} "
                "component(s): mean m(toxic) equals mean m(benign), so the scores divide by zero"
            )
        frame["rank"] = frame[key].rank(ascending=False, method="first").astype(int)
        return frame.sort_values("rank").reset_index(drop=True)[CSV_COLUMNS]

    def top_k(self, k: int = 10) -> pd.DataFrame:
        return self.table().head(k)

    def pearson_r(self, kind: str | None = "head") -> float | None:
        """Pearson r between attribution and activation scores (over heads by default; ``None``: all)."""
        if self.activation is None or self.attribution is None:
            return None
        table = self.table()
        if kind is not None:
            table = table[table["kind"] == kind]
        x, y = table["score_activation"].to_numpy(float), table["score_attribution"].to_numpy(float)
        if len(x) < 2 or x.std() == 0 or y.std() == 0:
            return float("nan")
        return float(np.corrcoef(x, y)[0, 1])


def locate(
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    method: str = "both",
    batch_size: int = 64,
    progress: bool = True,
) -> LocateResult:
    """Score every head and MLP with ``method`` (``activation``, ``attribution`` or ``both``)."""
    if method not in METHODS:
        raise ToxlensError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    check_separation(model, pairs, metric)
    timings: dict[str, float] = {}
    attribution = activation = None
    if method in ("attribution", "both"):
        t0 = time.perf_counter()
        attribution = attribution_patching(model, pairs, metric, "components")
        timings["attribution_s"] = time.perf_counter() - t0
    if method in ("activation", "both"):
        t0 = time.perf_counter()
        activation = activation_patching(
            model, pairs, metric, "components", batch_size=batch_size, progress=progress
        )
        timings["activation_s"] = time.perf_counter() - t0
    return LocateResult(activation, attribution, timings)


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
            "activation": ACTIVATION_DEFINITION,
            "attribution": ATTRIBUTION_DEFINITION,
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
        "methods": [
            m for m, r in (("activation", result.activation), ("attribution", result.attribution)) if r
        ],
        "pearson_r_heads": _finite_or_none(result.pearson_r("head")),
        "pearson_r_all": _finite_or_none(result.pearson_r(None)),
        "top_k": result.top_k(top_k).astype(object).where(lambda f: f.notna(), None).to_dict("records"),
        "wall_time_s": timings,
        "versions": library_versions(),
    }


def write_locate(result: LocateResult, directory: Path, info: dict[str, Any]) -> None:
    """Write components.csv, result.json and the saved results (``activation/``, ``attribution/``)."""
    result.table().to_csv(directory / "components.csv", index=False)
    for label, res in (("activation", result.activation), ("attribution", result.attribution)):
        if res is not None:
            res.save(directory / label)
    (directory / "result.json").write_text(
        json.dumps(json_safe(info), indent=2, default=str, allow_nan=False)
    )


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and np.isfinite(x) else None
