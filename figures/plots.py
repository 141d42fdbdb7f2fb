"""Plotly figures of :class:`~patching.result.PatchResult` objects.

Every figure function takes results and returns a ``go.Figure``; nothing here runs a model. Scores are
``result.mean`` (1 = the cell alone restores the toxic metric, 0 = no effect), with the bootstrap CI
``[ci_low, ci_high]`` in the hover text or as error bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from figures._grid import cell_table, grid, hover_lines, subtitle
from lens.errors import ToxlensError
from patching.result import PatchResult

COLORSCALE = "RdBu_r"  # positive (towards toxic) = red, negative = blue
KIND_COLORS = {"head": "#1f77b4", "mlp": "#d62728", "resid_pre": "#2ca02c"}


def pearson_r(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation over the pairs where both values are finite; ``nan`` when fewer than two
    such pairs remain or either side has zero variance."""
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if a.shape != b.shape:
        raise ToxlensError(f"pearson_r needs equally long inputs, got {a.size} and {b.size} values")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        return float("nan")
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if denom == 0.0 or not np.isfinite(denom):
        return float("nan")
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def heads_heatmap(result: PatchResult, title: str | None = None) -> go.Figure:
    """Layer × head heat map of the score, for ``(layer, head)`` or ``(component,)`` results."""
    if result.dims not in (("layer", "head"), ("component",)):
        raise ToxlensError(f"heads_heatmap needs dims ('layer', 'head') or ('component',), got {result.dims}")
    table = cell_table(result)
    table = table[(table["kind"] == "head") & table["pos"].isna()]
    if table.empty:
        raise ToxlensError(f"result {result.metadata.get('target', result.dims)!r} holds no attention heads")
    layers, heads, z, text = grid(table, "layer", "head", hover_lines(result))
    fig = _heatmap(z, heads, layers, text)
    fig.update_layout(title=_title(title, "Attention heads", result), template="plotly_white")
    fig.update_xaxes(title="head", tickmode="array", tickvals=heads)
    fig.update_yaxes(title="layer", tickmode="array", tickvals=layers, autorange="reversed")
    return fig


def mlp_bar(result: PatchResult, title: str | None = None) -> go.Figure:
    """MLP score by layer with asymmetric CI error bars, for ``(layer,)`` MLP or ``(component,)`` results."""
    is_mlps = result.dims == ("layer",) and result.metadata.get("component") == "mlp"
    if not (is_mlps or result.dims == ("component",)):
        raise ToxlensError(
            f"mlp_bar needs an MLP sweep (dims ('layer',)) or dims ('component',), not {result.dims}"
        )
    table = cell_table(result)
    table = table[(table["kind"] == "mlp") & table["pos"].isna()].sort_values("layer", kind="stable")
    if table.empty:
        raise ToxlensError(f"result {result.metadata.get('target', result.dims)!r} holds no MLPs")
    score = table["score"].to_numpy()
    lines = hover_lines(result)
    fig = go.Figure(
        go.Bar(
            x=table["layer"].astype(int).to_numpy(),
            y=score,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": np.maximum(table["ci_high"].to_numpy() - score, 0.0),
                "arrayminus": np.maximum(score - table["ci_low"].to_numpy(), 0.0),
            },
            marker_color=np.where(score >= 0, KIND_COLORS["mlp"], KIND_COLORS["head"]),
            text=[lines(row) for row in table.itertuples()],
            textposition="none",
            hovertemplate="%{text}<extra></extra>",
        )
    )
    fig.update_layout(title=_title(title, "MLPs", result), template="plotly_white", showlegend=False)
    fig.update_xaxes(title="layer", tickmode="array", tickvals=table["layer"].astype(int).tolist())
    fig.update_yaxes(title="score", zeroline=True)
    return fig


def paired_scores(activation: PatchResult, other: PatchResult) -> pd.DataFrame:
    """``cell_table(activation)`` with ``other``'s score per cell as ``estimate`` (both must cover the same cells)."""
    label = other.method
    act, est = cell_table(activation), cell_table(other)
    missing, extra = set(act["name"]) - set(est["name"]), set(est["name"]) - set(act["name"])
    if missing or extra or len(act) != len(est):
        raise ToxlensError(
            f"activation ({len(act)} cells, dims {activation.dims}) and {label} ({len(est)} cells, dims "
            f"{other.dims}) do not cover the same cells: only in activation {_few(missing)}, "
            f"only in {label} {_few(extra)}"
        )
    est = est[["name", "score"]].rename(columns={"score": "estimate"})
    return act.merge(est, on="name", validate="one_to_one")


def kind_traces(both: pd.DataFrame, label: str, size: int = 8, show_legend: bool = True) -> list[go.Scatter]:
    """One marker trace per kind: ``estimate`` (y, named ``label``) against the activation ``score`` (x)."""
    return [
        go.Scatter(
            x=part["score"],
            y=part["estimate"],
            mode="markers",
            name=str(kind),
            legendgroup=str(kind),
            showlegend=show_legend,
            text=part["name"],
            marker={"color": KIND_COLORS.get(str(kind), "#7f7f7f"), "size": size, "opacity": 0.8},
            hovertemplate="%{text}<br>activation %{x:.4f}<br>" + label + " %{y:.4f}<extra></extra>",
        )
        for kind, part in both.groupby("kind", sort=False)
    ]


def diagonal(both: pd.DataFrame) -> dict[str, Any]:
    """The ``y = x`` line over the finite range of both scores, as ``add_shape`` arguments."""
    values = np.concatenate([both["score"].to_numpy(), both["estimate"].to_numpy()])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    return {
        "type": "line",
        "x0": lo,
        "y0": lo,
        "x1": hi,
        "y1": hi,
        "line": {"dash": "dash", "color": "gray", "width": 1},
    }


def attribution_scatter(
    activation: PatchResult, attribution: PatchResult, title: str | None = None
) -> go.Figure:
    """A gradient method's estimate (y: attribution, RelP or IG — ``attribution.method``) against the
    activation-patching score (x), one point per cell."""
    label = attribution.method
    both = paired_scores(activation, attribution)
    r_all = pearson_r(both["score"], both["estimate"])
    heads = both[both["kind"] == "head"]
    r_heads = pearson_r(heads["score"], heads["estimate"])
    fig = go.Figure(kind_traces(both, label))
    fig.add_shape(**diagonal(both))
    stats = f"Pearson r = {r_all:.3f} (all {len(both)} cells), r = {r_heads:.3f} ({len(heads)} heads)"
    fig.update_layout(
        title=f"{title or label + ' vs activation patching'}<br><sup>{stats}</sup>",
        template="plotly_white",
        legend_title_text="kind",
    )
    fig.update_xaxes(title="activation patching score")
    fig.update_yaxes(title=f"{label} score")
    return fig


def resid_pos_heatmap(
    result: PatchResult, tokens: list[str] | None = None, title: str | None = None
) -> go.Figure:
    """Layer × position heat map of a ``(layer, pos)`` sweep; ``tokens`` label the positions."""
    if result.dims != ("layer", "pos"):
        raise ToxlensError(f"resid_pos_heatmap needs dims ('layer', 'pos'), got {result.dims}")
    positions = [int(p) for p in result.coords["pos"]]
    if tokens is not None and len(tokens) != len(positions):
        raise ToxlensError(f"{len(tokens)} token labels given for {len(positions)} positions")
    layers, pos, z, text = grid(cell_table(result), "layer", "pos", hover_lines(result))
    labels = dict(zip(positions, tokens or []))
    ticktext = [f"{labels[p]} ({p})" if p in labels else str(p) for p in pos]
    fig = _heatmap(z, pos, layers, text)
    fig.update_layout(title=_title(title, "Residual stream by position", result), template="plotly_white")
    fig.update_xaxes(title="position", tickmode="array", tickvals=pos, ticktext=ticktext)
    fig.update_yaxes(title="layer", tickmode="array", tickvals=layers, autorange="reversed")
    return fig


def write_figures(figs: dict[str, go.Figure], directory: str | Path) -> list[Path]:
    """Write each figure as ``{name}.html`` into ``directory``; the plotly.js bundle is written once,
    as ``plotly.min.js`` beside them (works offline). Returns the HTML paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = out / (name if name.endswith(".html") else f"{name}.html")
        fig.write_html(path, include_plotlyjs="directory", full_html=True, auto_open=False)
        paths.append(path)
    return paths


def _title(title: str | None, what: str, result: PatchResult) -> str:
    if title is not None:
        return title
    return f"{what}: {result.method} patching<br><sup>{subtitle(result)}</sup>"


def _few(names: set[str], k: int = 5) -> str:
    if not names:
        return "none"
    shown = sorted(names)[:k]
    return ", ".join(shown) + (f" (+{len(names) - k} more)" if len(names) > k else "")


__all__ = [
    "COLORSCALE",
    "attribution_scatter",
    "heads_heatmap",
    "mlp_bar",
    "pearson_r",
    "resid_pos_heatmap",
    "write_figures",
]


def _heatmap(z: Any, x: Any, y: Any, text: Any) -> go.Figure:
    """A layer-by-something heat map, diverging around 0, hover text per cell."""
    return go.Figure(
        go.Heatmap(
            z=z,
            x=x,
            y=y,
            text=text,
            hovertemplate="%{text}<extra></extra>",
            colorscale=COLORSCALE,
            zmid=0.0,
            colorbar={"title": "score"},
            xgap=1,
            ygap=1,
        )
    )
