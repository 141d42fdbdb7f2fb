"""One figure with every gradient method's scores against activation patching's (one panel per method)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from figures.plots import diagonal, kind_traces, paired_scores, pearson_r
from lens.errors import ToxlensError
from patching.result import PatchResult


def agreement_figure(
    activation: PatchResult, others: Sequence[PatchResult], title: str | None = None
) -> go.Figure:
    """Panels ``method score`` (y) vs ``activation score`` (x), Pearson r for heads, MLPs and all in each title."""
    if not others:
        raise ToxlensError("agreement_figure needs at least one gradient-method result beside activation")
    merged = [paired_scores(activation, other) for other in others]
    titles = []
    for other, both in zip(others, merged):
        rs = [
            f"{label} {pearson_r(part['score'], part['estimate']):.2f}"
            for label, part in (
                ("heads", both[both["kind"] == "head"]),
                ("MLPs", both[both["kind"] == "mlp"]),
                ("all", both),
            )
            if len(part) > 1
        ]
        titles.append(f"{other.method}: r {', '.join(rs)}")
    fig = make_subplots(rows=1, cols=len(others), subplot_titles=titles, shared_yaxes=False)
    for col, (other, both) in enumerate(zip(others, merged), start=1):
        for trace in kind_traces(both, other.method, size=7, show_legend=col == 1):
            fig.add_trace(trace, row=1, col=col)
        fig.add_shape(**diagonal(both), row=1, col=col)
        fig.update_xaxes(title_text="activation patching score", row=1, col=col)
        fig.update_yaxes(title_text=f"{other.method} score", row=1, col=col)
    fig.update_layout(
        title=title or "Gradient methods vs activation patching",
        template="plotly_white",
        legend_title_text="kind",
    )
    return fig
