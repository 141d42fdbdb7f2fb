"""Plotly figures of patching results (heads heat map, MLP bars, attribution-vs-activation scatter).

Also of generation traces and evaluation results (``figures.interventions``)."""

from figures.interventions import (
    probe_trace,
    render_evaluation,
    render_trace,
    toxicity_by_condition,
    toxicity_vs_perplexity,
)
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
    "probe_trace",
    "render_evaluation",
    "render_trace",
    "resid_pos_heatmap",
    "toxicity_by_condition",
    "toxicity_vs_perplexity",
    "write_figures",
]
