"""Plotly figure of one generation trace: :func:`probe_trace` (see :mod:`figures.interventions` for the
trace format) and :func:`discarded_steps`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from figures._eval_common import COLORS, ROLLBACK_LINE, ROLLBACK_NOTE, _esc, _fmt, _number, _score
from lens.errors import ToxlensError


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
