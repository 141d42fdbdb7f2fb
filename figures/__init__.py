"""Plotly figures of patching results (heads heat map, MLP bars, attribution-vs-activation scatter)."""

from figures.plots import (
    attribution_scatter,
    heads_heatmap,
    mlp_bar,
    pearson_r,
    resid_pos_heatmap,
    write_figures,
)

__all__ = [
    "attribution_scatter",
    "heads_heatmap",
    "mlp_bar",
    "pearson_r",
    "resid_pos_heatmap",
    "write_figures",
]
