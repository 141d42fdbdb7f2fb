"""One figure with every gradient method's scores against activation patching's (one panel per method)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from figures._grid import cell_table
from figures.plots import KIND_COLORS, pearson_r
from lens.errors import ToxlensError
from patching.result import PatchResult


def agreement_figure(
    activation: PatchResult, others: Sequence[PatchResult], title: str | None = None
) -> go.Figure:
    """Panels ``method score`` (y) vs ``activation score`` (x), Pearson r for heads, MLPs and all in each title."""
    if not others:
        raise ToxlensError("agreement_figure needs at least one gradient-method result beside activation")
    act = cell_table(activation)
    titles = []
    merged = []
    for other in others:
        est = cell_table(other)
        if list(est["name"]) != list(act["name"]):
            raise ToxlensError(
                f"{other.method} ({len(est)} cells) and activation ({len(act)} cells) do not cover the same cells"
            )
        both = act.assign(estimate=est["score"].to_numpy())
        merged.append(both)
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
        for kind, part in both.groupby("kind", sort=False):
            fig.add_trace(
                go.Scatter(
                    x=part["score"],
                    y=part["estimate"],
                    mode="markers",
                    name=str(kind),
                    legendgroup=str(kind),
                    showlegend=col == 1,
                    text=part["name"],
                    marker={"color": KIND_COLORS.get(str(kind), "#7f7f7f"), "size": 7, "opacity": 0.8},
                    hovertemplate="%{text}<br>activation %{x:.4f}<br>"
                    + other.method
                    + " %{y:.4f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        lo = float(min(both["score"].min(), both["estimate"].min()))
        hi = float(max(both["score"].max(), both["estimate"].max()))
        fig.add_shape(
            type="line",
            x0=lo,
            y0=lo,
            x1=hi,
            y1=hi,
            line={"dash": "dash", "color": "gray", "width": 1},
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="activation patching score", row=1, col=col)
        fig.update_yaxes(title_text=f"{other.method} score", row=1, col=col)
    fig.update_layout(
        title=title or "Gradient methods vs activation patching",
        template="plotly_white",
        legend_title_text="kind",
    )
    return fig
