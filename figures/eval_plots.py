"""Plotly figures of ``toxlens evaluate`` summaries: :func:`toxicity_by_condition` (a metric per
condition with its CI) and :func:`toxicity_vs_perplexity` (the steering-scale sweep and the conditions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from figures._eval_common import CI_PREFIX, COLORS, _esc, _fmt, _label, _require
from lens.errors import ToxlensError


# -- evaluation summaries -------------------------------------------------------------------------------
def toxicity_by_condition(
    summary: pd.DataFrame,
    metric: str = "toxicity_probability",
    *,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """One bar per condition with asymmetric error bars from the metric's CI columns (``tp_ci_*``,
    ``emt_ci_*``, ``mt_ci_*``, ``ppl_ci_*``; none when absent); ``metrics`` draws one panel per metric."""
    names = [metric] if metrics is None else list(metrics)
    if not names:
        raise ToxlensError("toxicity_by_condition needs at least one metric")
    _require(summary, ["condition", *names], "summary")
    conditions = summary["condition"].astype(str).tolist()
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[_label(m) for m in names])
    for col, name in enumerate(names, start=1):
        y, minus, plus = _with_ci(summary, name)
        lo, hi = y - minus, y + plus
        fig.add_trace(
            go.Bar(
                x=conditions,
                y=y,
                name=name,
                showlegend=False,
                error_y=_errors(minus, plus),
                marker_color=COLORS["kept"],
                text=[
                    f"{_esc(c)}<br>{_label(name)} {_fmt(v)}"
                    + (f"<br>CI [{_fmt(a)}, {_fmt(b)}]" if np.isfinite(a) else "")
                    for c, v, a, b in zip(conditions, y, lo, hi)
                ],
                textposition="none",
                hovertemplate="%{text}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(title_text=_label(name), row=1, col=col, rangemode="tozero")
        fig.update_xaxes(title_text="condition", row=1, col=col)
    default = f"{' and '.join(_label(m) for m in names)} by condition"
    fig.update_layout(
        title=title if title is not None else default[0].upper() + default[1:], template="plotly_white"
    )
    return fig


def toxicity_vs_perplexity(
    sweep: pd.DataFrame | None,
    x: str = "perplexity",
    y: str = "toxicity_probability",
    *,
    summary: pd.DataFrame | None = None,
    title: str | None = None,
) -> go.Figure:
    """``y`` against ``x`` along a steering-scale sweep (points labelled ``s=scale``, joined in scale order),
    with the conditions of ``summary`` as separate labelled markers; error bars from the CI columns."""
    if sweep is None and summary is None:
        raise ToxlensError("toxicity_vs_perplexity needs a sweep, a summary or both")
    fig = go.Figure()
    missing: list[str] = []
    if sweep is not None:
        _require(sweep, ["scale", x, y], "sweep")
        sweep = sweep.sort_values("scale", kind="stable")
        labels = [f"s={float(s):g}" for s in sweep["scale"]]
        fig.add_trace(
            _points(sweep, x, y, labels, "steering sweep", "lines+markers+text", "circle", "#9467bd")
        )
        missing += [label for label, ok in zip(labels, _finite(sweep, x, y)) if not ok]
    if summary is not None:
        _require(summary, ["condition", x, y], "summary")
        for k, ok in enumerate(_finite(summary, x, y)):
            one = summary.iloc[[k]]
            name = str(one["condition"].iloc[0])
            fig.add_trace(_points(one, x, y, [name], name, "markers+text", "diamond", None))
            missing += [] if ok else [name]
    if missing:
        fig.add_annotation(
            text=f"not plotted (no {x} or {y}): {_esc(', '.join(missing))}",
            xref="paper",
            yref="paper",
            x=0,
            y=-0.18,
            showarrow=False,
            xanchor="left",
            font={"size": 11, "color": "#7f7f7f"},
        )
    default = f"{_label(y)} vs {_label(x)}"
    fig.update_layout(
        title=title if title is not None else default[0].upper() + default[1:], template="plotly_white"
    )
    fig.update_xaxes(title=_label(x))
    fig.update_yaxes(title=_label(y))
    return fig


def _points(
    frame: pd.DataFrame,
    x: str,
    y: str,
    labels: list[str],
    name: str,
    mode: str,
    symbol: str,
    color: str | None,
) -> go.Scatter:
    xs, xm, xp = _with_ci(frame, x)
    ys, ym, yp = _with_ci(frame, y)
    marker: dict[str, Any] = {"symbol": symbol, "size": 11 if symbol == "diamond" else 8}
    if color is not None:
        marker["color"] = color
    return go.Scatter(
        x=xs,
        y=ys,
        mode=mode,
        name=name,
        text=labels,
        textposition="top center",
        marker=marker,
        error_x=_errors(xm, xp),
        error_y=_errors(ym, yp),
        hovertemplate=f"%{{text}}<br>{_label(x)} %{{x:.4g}}<br>{_label(y)} %{{y:.4g}}<extra>{_esc(name)}</extra>",
    )


def _with_ci(frame: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values of ``metric`` and their distances to the CI bounds (``nan`` where a bound is absent)."""
    value = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
    prefix = CI_PREFIX.get(metric, metric)
    lo_col, hi_col = f"{prefix}_ci_low", f"{prefix}_ci_high"
    if lo_col not in frame.columns or hi_col not in frame.columns:
        nan = np.full_like(value, np.nan)
        return value, nan, nan
    lo = pd.to_numeric(frame[lo_col], errors="coerce").to_numpy(dtype=float)
    hi = pd.to_numeric(frame[hi_col], errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return value, np.maximum(value - lo, 0.0), np.maximum(hi - value, 0.0)


def _errors(minus: np.ndarray, plus: np.ndarray) -> dict[str, Any]:
    if np.isnan(minus).all() and np.isnan(plus).all():
        return {"visible": False}
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "visible": True}


def _finite(frame: pd.DataFrame, x: str, y: str) -> list[bool]:
    xs, ys = (pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float) for c in (x, y))
    return [bool(a) for a in np.isfinite(xs) & np.isfinite(ys)]
