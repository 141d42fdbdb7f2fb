"""Plotly figure of a circuit-faithfulness result: sufficiency and necessity of the ranking's top-k
sets against k, with the random k-sets' mean ± sd as bands."""

from __future__ import annotations

import plotly.graph_objects as go

from patching.circuit_result import FaithfulnessResult

COLORS = {"sufficiency": "#d62728", "necessity": "#1f77b4"}


def faithfulness_figure(result: FaithfulnessResult, title: str | None = None) -> go.Figure:
    table = result.to_dataframe()
    ks = table["k"].tolist()
    fig = go.Figure()
    for what, mean_col, sd_col in (
        ("sufficiency", "random_mean", "random_sd"),
        ("necessity", "random_necessity_mean", "random_necessity_sd"),
    ):
        color = COLORS[what]
        mean, sd = table[mean_col], table[sd_col]
        fig.add_trace(
            go.Scatter(
                x=ks + ks[::-1],
                y=(mean + sd).tolist() + (mean - sd).tolist()[::-1],
                fill="toself",
                fillcolor=color,
                opacity=0.15,
                line={"width": 0},
                hoverinfo="skip",
                name=f"random {what}: mean ± sd",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=ks, y=mean, mode="lines", line={"color": color, "dash": "dot"}, name=f"random {what}"
            )
        )
        fig.add_trace(
            go.Scatter(
                x=ks,
                y=table[what],
                mode="lines+markers",
                line={"color": color},
                name=f"{what} (top-k)",
                text=[", ".join(s) for s in result.top_sets],
                hovertemplate="k=%{x}<br>" + what + "=%{y:.3f}<br>%{text}<extra></extra>",
            )
        )
    threshold = float(result.metadata["threshold"])
    fig.add_hline(y=threshold, line={"dash": "dash", "color": "grey"}, annotation_text=f"{threshold:g}")
    meta = result.metadata
    source = meta.get("ranking_source", {})
    default = (
        f"Circuit faithfulness: top-k by {source.get('column', 'ranking')} vs "
        f"{meta.get('n_random')} random k-sets<br><sup>k80 = {result.k80}, random k80 = "
        f"{result.random_k80}; {meta.get('model', {}).get('spec', '')}, "
        f"{meta.get('pairs', {}).get('n_pairs', '?')} pairs, metric {meta.get('metric', {}).get('name')}</sup>"
    )
    fig.update_layout(title=title or default, template="plotly_white", hovermode="closest")
    fig.update_xaxes(title="k (components patched together)", type="log" if max(ks) >= 10 else "linear")
    fig.update_yaxes(title="share of mean m(toxic) − mean m(benign)")
    return fig
