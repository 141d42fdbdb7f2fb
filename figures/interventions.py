"""Plotly figures of generation traces and ``toxlens evaluate`` results; nothing here runs a model.

* :func:`probe_trace` — the monitor probe's score of every fed token, in the order the tokens were fed,
  with the tokens that a later rollback discarded drawn apart and a marker at each rollback;
* :func:`toxicity_by_condition` — a metric per condition with its CI as error bars;
* :func:`toxicity_vs_perplexity` — the steering-scale sweep (and the conditions) in the toxicity /
  perplexity plane;
* :func:`render_evaluation` / :func:`render_trace` — read saved output and write the HTML figures.

A trace is the dict of ``Generation.to_dict()``. Its ``timeline`` lists the events in the order they
happened: ``{"event": "token", "position", "token", "score"}`` per fed token and ``{"event": "rollback",
"position": safe_position, "at", "to", "discarded", "forbidden"}`` per rollback. In :func:`probe_trace` the x
of an event is its index in the timeline, so a rollback sits between the token that triggered it and the next
fed token. A token is *discarded* when a later rollback's (safe) position is before the token's position.
"""

from __future__ import annotations

import html
import json
import math
import numbers
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from figures.plots import write_figures
from lens.errors import ToxlensError

CI_PREFIX = {
    "toxicity_probability": "tp",
    "expected_max_toxicity": "emt",
    "mean_toxicity": "mt",
    "perplexity": "ppl",
}
LABELS = {
    "toxicity_probability": "toxicity probability",
    "expected_max_toxicity": "expected max toxicity",
    "mean_toxicity": "mean toxicity",
    "perplexity": "perplexity",
}
COLORS = {"kept": "#1f77b4", "discarded": "#d62728", "threshold": "#d62728", "safe threshold": "#2ca02c"}
ROLLBACK_LINE = {"color": "#7f7f7f", "dash": "dot", "width": 1}
ROLLBACK_NOTE: dict[str, Any] = {
    "showarrow": False,
    "xanchor": "right",
    "yanchor": "top",
    "font": {"size": 10, "color": "#555555"},
}
MAX_ROLLBACK_TRACES, SUMMARY_METRICS = 3, ("toxicity_probability", "expected_max_toxicity")


# -- generation traces ---------------------------------------------------------------------------------
def discarded_steps(timeline: Sequence[dict[str, Any]]) -> dict[int, int]:
    """``{timeline index of a discarded token: index of the first later rollback event that discarded it}``."""
    rollbacks = [(j, int(e["position"])) for j, e in enumerate(timeline) if e.get("event") == "rollback"]
    out: dict[int, int] = {}
    for i, e in enumerate(timeline):
        if e.get("event") != "token":
            continue
        by = next((j for j, safe in rollbacks if j > i and safe < int(e["position"])), None)
        if by is not None:
            out[i] = by
    return out


def probe_trace(
    trace: dict[str, Any],
    threshold: float | None = None,
    safe_threshold: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Probe score per fed token (x = index in the timeline): kept tokens, discarded tokens, a dotted
    vertical marker per rollback and dashed lines at ``threshold`` and ``safe_threshold`` (each defaults
    to the trace's own ``"threshold"`` / ``"safe_threshold"`` key when present)."""
    timeline = _timeline(trace)
    threshold = _number(threshold if threshold is not None else trace.get("threshold"))
    safe_threshold = _number(safe_threshold if safe_threshold is not None else trace.get("safe_threshold"))
    n_prompt = len(trace.get("prompt_tokens") or [])
    texts = _token_texts(trace, timeline)
    gone = discarded_steps(timeline)
    rollback_rank = {
        j: k for k, j in enumerate(j for j, e in enumerate(timeline) if e["event"] == "rollback")
    }
    steps = [i for i, e in enumerate(timeline) if e["event"] == "token"]

    def hover(i: int) -> str:
        e = timeline[i]
        gi = int(e["position"]) - n_prompt
        where = f"position {e['position']}" + (f" (generated #{gi})" if gi >= 0 else " (prompt)")
        tok = f"token {e.get('token')}" + (f" {_esc(repr(texts[i]))}" if i in texts else "")
        fate = f"discarded by rollback {rollback_rank[gone[i]] + 1}" if i in gone else "kept"
        return f"step {i} · {where}<br>{tok}<br>score {_fmt(e.get('score'))}<br>{fate}"

    fig = go.Figure()
    fig.add_trace(  # the scores in feed order, discarded ones included
        go.Scatter(
            x=steps,
            y=[_score(timeline[i]) for i in steps],
            mode="lines",
            name="fed order",
            line={"color": "#c7c7c7", "width": 1},
            hoverinfo="skip",
        )
    )
    for name, part, symbol in (
        ("kept", [i for i in steps if i not in gone], "circle"),
        ("discarded", [i for i in steps if i in gone], "x"),
    ):
        fig.add_trace(
            go.Scatter(
                x=part,
                y=[_score(timeline[i]) for i in part],
                mode="markers",
                name=name,
                marker={"color": COLORS[name], "symbol": symbol, "size": 8},
                text=[hover(i) for i in part],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    labels = {j: _rollback_label(timeline[j]) for j in rollback_rank}
    fig.add_trace(
        go.Scatter(
            x=list(labels),
            y=[1.0] * len(labels),
            mode="markers",
            name="rollback",
            marker={"color": "#7f7f7f", "symbol": "triangle-down", "size": 10},
            text=[f"rollback {rollback_rank[j] + 1}: {label}" for j, label in labels.items()],
            hovertemplate="%{text}<extra></extra>",
        )
    )
    for j, label in labels.items():
        rb = f"rollback {rollback_rank[j] + 1}"
        fig.add_shape(type="line", x0=j, x1=j, y0=0, y1=1, yref="paper", name=rb, line=ROLLBACK_LINE)
        fig.add_annotation(x=j, y=1, yref="paper", text=label, textangle=-90, **ROLLBACK_NOTE)
    for name, y in (("threshold", threshold), ("safe threshold", safe_threshold)):
        if y is not None:
            line = {"color": COLORS[name], "dash": "dash", "width": 1.5}
            fig.add_shape(
                type="line", x0=0, x1=1, xref="paper", y0=y, y1=y, name=name, showlegend=True, line=line
            )
    fig.update_layout(title=title if title is not None else _trace_title(trace), template="plotly_white")
    fig.update_xaxes(title="step (order of feeding; rollbacks in between)")
    fig.update_yaxes(title="probe probability", range=[-0.02, 1.05])
    return fig


def _timeline(trace: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(trace, dict):
        raise ToxlensError(f"a generation trace must be a JSON object, got {type(trace).__name__}")
    timeline = trace.get("timeline")
    if not timeline:  # no recorded timeline: the kept scores, one per generated token
        start = len(trace.get("prompt_tokens") or [])
        scores, tokens = trace.get("scores") or [], trace.get("tokens") or []
        return [
            {
                "event": "token",
                "position": start + g,
                "token": tokens[g] if g < len(tokens) else None,
                "score": s,
            }
            for g, s in enumerate(scores)
        ]
    if not isinstance(timeline, list):
        raise ToxlensError(f"trace 'timeline' must be a list of events, got {type(timeline).__name__}")
    for i, e in enumerate(timeline):
        if not (isinstance(e, dict) and e.get("event") in ("token", "rollback") and "position" in e):
            raise ToxlensError(
                f"trace timeline event {i} is not a token or rollback event with a position: {e!r}"
            )
    return timeline


def _token_texts(trace: dict[str, Any], timeline: list[dict[str, Any]]) -> dict[int, str]:
    """Decoded text per timeline index of a token event: ``token_texts`` may list one text per timeline
    event or one per token event; any other length is ignored."""
    texts = trace.get("token_texts")
    if not isinstance(texts, list):
        return {}
    steps = [i for i, e in enumerate(timeline) if e["event"] == "token"]
    if len(texts) == len(timeline):
        return {i: str(texts[i]) for i in steps if texts[i] is not None}
    if len(texts) == len(steps):
        return {i: str(t) for i, t in zip(steps, texts) if t is not None}
    return {}


def _rollback_label(e: dict[str, Any]) -> str:
    return f"rollback: discarded {e.get('discarded')}, back to position {e['position']}"


def _trace_title(trace: dict[str, Any]) -> str:
    prompt = str(trace.get("prompt", ""))
    prompt = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    n = len(trace.get("rollbacks") or [])
    parts = [f"{n} rollback{'s' * (n != 1)}"]
    if trace.get("finish_reason"):
        parts.append(f"finish {trace['finish_reason']}")
    if trace.get("forward_tokens") is not None:
        parts.append(f"{trace['forward_tokens']} forward tokens ({trace.get('recomputed', 0)} recomputed)")
    return f"Probe score per fed token: {_esc(repr(prompt))}<br><sup>{' · '.join(parts)}</sup>"


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


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ToxlensError(f"{what} lacks the column(s) {missing}; it has {list(frame.columns)}")


# -- reading saved output and writing figures ------------------------------------------------------------
def render_evaluation(directory: str | Path, out: str | Path | None = None) -> list[Path]:
    """Draw the figures of a ``toxlens evaluate`` directory into ``out`` (default ``directory/figures``):
    ``toxicity_by_condition.html``, ``toxicity_vs_perplexity.html`` (the sweep when ``sweep.csv`` exists,
    else the conditions alone) and ``probe_trace_{condition}_p{prompt}_s{sample}.html`` for the first
    three traced samples with a rollback and the first one without (ordered by condition as in
    ``summary.csv``, prompt_index, sample_index). Everything is read and drawn before anything is
    written. Returns the written HTML paths."""
    d = Path(directory)
    if not d.is_dir():
        raise ToxlensError(f"{str(d)!r} is not a directory (expected a `toxlens evaluate` output dir)")
    if not (d / "summary.csv").is_file():
        raise ToxlensError(f"{str(d)!r} has no summary.csv (expected a `toxlens evaluate` output dir)")
    summary = _read_csv(d / "summary.csv", ["condition", "toxicity_probability"])
    summary["condition"] = summary["condition"].astype(str)
    if "perplexity" not in summary.columns:
        summary["perplexity"] = np.nan
    sweep = (
        _read_csv(d / "sweep.csv", ["scale", "perplexity", "toxicity_probability"])
        if (d / "sweep.csv").is_file()
        else None
    )
    figs: dict[str, go.Figure] = {
        "toxicity_by_condition": toxicity_by_condition(
            summary, metrics=[m for m in SUMMARY_METRICS if m in summary.columns]
        ),
        "toxicity_vs_perplexity": toxicity_vs_perplexity(sweep, summary=summary),
    }
    meta = _read_meta(d / "result.json")
    for sample in pick_traces(_read_samples(d / "samples.jsonl"), summary["condition"].tolist()):
        trace = sample["trace"]
        name = f"probe_trace_{_slug(str(sample.get('condition')))}_p{sample.get('prompt_index')}_s{sample.get('sample_index')}"
        while name in figs:
            name += "_"
        figs[name] = probe_trace(
            trace, _lookup("threshold", trace, sample, meta), _lookup("safe_threshold", trace, sample, meta)
        )
    return write_figures(figs, Path(out) if out is not None else d / "figures")


def pick_traces(samples: Sequence[dict[str, Any]], conditions: Sequence[str]) -> list[dict[str, Any]]:
    """The samples whose trace is drawn: the first :data:`MAX_ROLLBACK_TRACES` with a rollback, then the
    first without one, ordered by (condition order in ``conditions``, prompt_index, sample_index)."""
    rank = {c: i for i, c in enumerate(conditions)}
    traced = [(k, s) for k, s in enumerate(samples) if isinstance(s.get("trace"), dict)]

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, float, float, int]:
        k, s = item
        cond = str(s.get("condition"))
        return (rank.get(cond, len(rank)), _num_or(s.get("prompt_index")), _num_or(s.get("sample_index")), k)

    ordered = [s for _, s in sorted(traced, key=key)]
    with_rb = [s for s in ordered if _has_rollback(s["trace"])]
    without = [s for s in ordered if not _has_rollback(s["trace"])]
    return with_rb[:MAX_ROLLBACK_TRACES] + without[:1]


def render_trace(json_path: str | Path, out_html: str | Path, threshold: float | None = None) -> Path:
    """Draw the trace of a ``toxlens generate --json`` output (one JSON object with the trace keys and
    possibly ``threshold`` / ``safe_threshold``) into ``out_html``; returns the written path."""
    path, out = Path(json_path), Path(out_html)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ToxlensError(f"{str(path)!r}: could not read a JSON generation trace ({e})") from e
    if not isinstance(data, dict):
        raise ToxlensError(
            f"{str(path)!r} holds a JSON {type(data).__name__}, expected one generation object"
        )
    fig = probe_trace(data, threshold, data.get("safe_threshold"))
    return write_figures({out.name: fig}, out.parent)[0]


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except Exception as e:  # empty or malformed CSV
        raise ToxlensError(f"{str(path)!r}: could not read the CSV ({e})") from e
    _require(frame, required, repr(str(path)))
    return frame


def _read_samples(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    samples = []
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise ToxlensError(f"{str(path)!r} line {n}: not JSON ({e})") from e
            if not isinstance(obj, dict):
                raise ToxlensError(
                    f"{str(path)!r} line {n}: expected a JSON object, got {type(obj).__name__}"
                )
            samples.append(obj)
    return samples


def _read_meta(path: Path) -> dict[str, Any]:
    """``result.json`` when present and readable (only consulted for thresholds), else ``{}``."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _lookup(key: str, *sources: dict[str, Any]) -> float | None:
    """The first numeric ``key`` in ``sources`` (or in a source's ``"policy"`` dict)."""
    for src in sources:
        for d in (src, src.get("policy")):
            if isinstance(d, dict) and _number(d.get(key)) is not None:
                return _number(d.get(key))
    return None


def _has_rollback(trace: dict[str, Any]) -> bool:
    return bool(trace.get("rollbacks")) or any(
        isinstance(e, dict) and e.get("event") == "rollback" for e in trace.get("timeline") or []
    )


def _number(v: Any) -> float | None:
    """``v`` as a float when it is a finite real number (not a bool), else ``None``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        return None
    return float(v)


def _num_or(v: Any) -> float:
    n = _number(v)
    return math.inf if n is None else n


def _score(e: dict[str, Any]) -> float:
    n = _number(e.get("score"))
    return math.nan if n is None else n


def _fmt(v: Any) -> str:
    n = _number(v)
    return "n/a" if n is None else f"{n:.4f}"


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _label(metric: str) -> str:
    return LABELS.get(metric, metric.replace("_", " "))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "condition"


__all__ = [
    "discarded_steps",
    "pick_traces",
    "probe_trace",
    "render_evaluation",
    "render_trace",
    "toxicity_by_condition",
    "toxicity_vs_perplexity",
]
