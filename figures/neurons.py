"""Figures of a :class:`~patching.neuron_result.NeuronRanking` (``toxlens locate --texts``).

* :func:`auroc_by_layer` — per layer, the distribution of neuron AUROCs (box) and the number of
  neurons above 0.6 / 0.7 (bars, right axis);
* :func:`top_neurons_table` — the top-k neurons with AUROC, cosine with the probe, logit-lens toxic
  mass and the tokens their value vectors promote most.

``python -m figures.neurons DIR`` regenerates both from a saved locate directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from figures.plots import write_figures
from lens.errors import ToxlensError
from patching.neuron_result import NeuronRanking


def auroc_by_layer(ranking: NeuronRanking, title: str | None = None) -> go.Figure:
    auroc = ranking.neuron_auroc
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for layer in range(ranking.n_layers):
        fig.add_trace(
            go.Box(
                y=auroc[layer].numpy(),
                name=str(layer),
                marker_color="#4c78a8",
                showlegend=False,
                boxpoints=False,
            ),
            secondary_y=False,
        )
    layers = [str(la) for la in range(ranking.n_layers)]
    for t, color in ((0.6, "#f58518"), (0.7, "#e45756")):
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=(auroc > t).sum(1).numpy(),
                name=f"# neurons AUROC > {t}",
                mode="lines+markers",
                line={"color": color},
            ),
            secondary_y=True,
        )
    pooling = ranking.metadata.get("pooling", "?")
    fig.update_layout(
        title=title or f"Neuron AUROC (toxic vs non-toxic text, {pooling} pooling) by layer",
        xaxis_title="layer",
        template="plotly_white",
    )
    fig.update_yaxes(title_text="AUROC", secondary_y=False)
    fig.update_yaxes(title_text="neurons above threshold", secondary_y=True)
    return fig


def top_neurons_table(ranking: NeuronRanking, k: int = 20, title: str | None = None) -> go.Figure:
    df = ranking.top_k(k)
    cols = ["rank", "component", "auroc", "cos_probe", "toxic_logit_mass", "attribution", "top_tokens"]
    cells = []
    for c in cols:
        values = df[c].tolist()
        cells.append([f"{v:.3f}" if isinstance(v, float) else str(v) for v in values])
    fig = go.Figure(
        go.Table(header={"values": cols, "align": "left"}, cells={"values": cells, "align": "left"})
    )
    fig.update_layout(title=title or f"Top {k} neurons by AUROC, with the tokens their value vectors promote")
    return fig


def write_neuron_figures(ranking: NeuronRanking, directory: str | Path, k: int = 20) -> list[Path]:
    figs = {"auroc_by_layer": auroc_by_layer(ranking), "top_neurons": top_neurons_table(ranking, max(k, 1))}
    return write_figures(figs, directory)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m figures.neurons", description=__doc__)
    p.add_argument("directory", help="a `toxlens locate --texts` output directory")
    p.add_argument("--out", default=None, help="figure directory (default: DIR/figures)")
    p.add_argument("--top-k", type=int, default=20)
    args = p.parse_args(argv)
    try:
        ranking = NeuronRanking.load(args.directory)
        out = Path(args.out) if args.out else Path(args.directory) / "figures"
        for path in write_neuron_figures(ranking, out, args.top_k):
            print(path)
    except ToxlensError as err:
        print(f"figures.neurons: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
