"""Regenerate the figures of saved patching results.

``python -m figures.render DIR [--out OUT]`` where ``DIR`` is either a saved :class:`PatchResult`
(``result.json`` + ``result.safetensors``) or a ``toxlens locate`` output directory holding
``activation/``, ``attribution/``, ``relp/`` and/or ``ig/`` results. Figures go to ``DIR/figures/`` (or ``OUT``):

* ``heads_heatmap.html`` and ``mlp_bar.html`` of the activation result (else the attribution one),
  plus ``attribution_heads_heatmap.html`` / ``attribution_mlp_bar.html`` when both exist;
* ``<method>_vs_activation.html`` for every gradient method (attribution, relp, ig) run beside activation,
  and ``agreement.html`` with one panel per gradient method;
* ``resid_pos_heatmap.html`` for ``(layer, pos)`` results.

Everything is loaded and drawn before anything is written, so a bad input writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import plotly.graph_objects as go

from figures._grid import cell_table
from figures.agreement import agreement_figure
from figures.plots import attribution_scatter, heads_heatmap, mlp_bar, resid_pos_heatmap, write_figures
from lens.errors import ToxlensError
from patching.result import PatchResult

METHODS = ("activation", "attribution", "relp", "ig")


def load_results(directory: str | Path) -> dict[str, PatchResult]:
    """The results under ``directory``: ``{"result": r}`` for a saved result, else ``{method: r}``."""
    d = Path(directory)
    if not d.is_dir():
        raise ToxlensError(f"{str(d)!r} is not a directory (expected a saved result or a locate output dir)")
    if (d / "result.safetensors").exists():  # a locate dir has a summary result.json but no tensors
        return {"result": _load(d)}
    found = {m: _load(d / m) for m in METHODS if (d / m).is_dir()}
    if not found:
        raise ToxlensError(
            f"{str(d)!r} holds neither a saved PatchResult (result.json + result.safetensors) nor "
            f"any of {', '.join(m + '/' for m in METHODS)} result subdirectories"
        )
    return found


def _load(directory: Path) -> PatchResult:
    try:
        return PatchResult.load(directory)
    except ToxlensError:
        raise
    except Exception as e:  # corrupt JSON / safetensors: report which directory, as a ToxlensError
        raise ToxlensError(f"{str(directory)!r}: could not read the saved PatchResult ({e})") from e


def figures_for(results: dict[str, PatchResult]) -> dict[str, go.Figure]:
    """Every figure that applies to ``results`` (as returned by :func:`load_results`), by file stem."""
    figs: dict[str, go.Figure] = {}
    primary = "activation" if "activation" in results else next(iter(results))
    for key, result in results.items():
        prefix = "" if key == primary else f"{key}_"
        figs.update({prefix + name: fig for name, fig in _single(result).items()})
    if "activation" in results:
        gradient = [results[m] for m in METHODS[1:] if m in results]
        for result in gradient:
            figs[f"{result.method}_vs_activation"] = attribution_scatter(results["activation"], result)
        if gradient and results["activation"].dims == ("component",):
            figs["agreement"] = agreement_figure(results["activation"], gradient)
    if not figs:
        dims = {key: r.dims for key, r in results.items()}
        raise ToxlensError(f"no figure applies to results with dims {dims}")
    return figs


def _single(result: PatchResult) -> dict[str, go.Figure]:
    figs: dict[str, go.Figure] = {}
    table = cell_table(result)
    kinds = set(table[table["pos"].isna()]["kind"])  # kinds of the cells that are not positional
    if result.dims == ("layer", "head") or (result.dims == ("component",) and "head" in kinds):
        figs["heads_heatmap"] = heads_heatmap(result)
    if result.dims in (("layer",), ("component",)) and "mlp" in kinds:
        figs["mlp_bar"] = mlp_bar(result)
    if result.dims == ("layer", "pos"):
        tokens = result.metadata.get("tokens")
        if not (isinstance(tokens, list) and len(tokens) == len(result.coords["pos"])):
            tokens = None
        figs["resid_pos_heatmap"] = resid_pos_heatmap(
            result, None if tokens is None else [str(t) for t in tokens]
        )
    return figs


def render(directory: str | Path, out: str | Path | None = None) -> list[Path]:
    """Load the results under ``directory``, draw every figure and write them to ``out``
    (default ``directory/figures``). Returns the written HTML paths."""
    figs = figures_for(load_results(directory))
    return write_figures(figs, Path(out) if out is not None else Path(directory) / "figures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m figures.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="a saved PatchResult dir or a `toxlens locate` output dir")
    parser.add_argument("--out", default=None, help="where to write the figures (default: DIRECTORY/figures)")
    args = parser.parse_args(argv)
    try:
        paths = render(args.directory, args.out)
    except ToxlensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
