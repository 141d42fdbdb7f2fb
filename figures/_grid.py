"""Cell tables and grids shared by the figure functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from lens.components import parse_component
from lens.errors import ToxlensError
from patching.result import PatchResult


def cell_table(result: PatchResult) -> pd.DataFrame:
    """``result.to_dataframe()`` with the parsed component of each cell: kind, layer, head, pos
    (``nan`` where a name has none; kind ``"cell"`` for names that are not component names)."""
    frame = result.to_dataframe()[["name", "score", "ci_low", "ci_high"]].copy()
    parsed: list[tuple[str, float, float, float]] = []
    for name in frame["name"]:
        try:
            c = parse_component(name)
        except ToxlensError:
            parsed.append(("cell", np.nan, np.nan, np.nan))
            continue
        parsed.append((c.kind, c.layer, _or_nan(c.head), _or_nan(c.pos)))
    frame[["kind", "layer", "head", "pos"]] = pd.DataFrame(parsed, index=frame.index)
    return frame


def grid(
    table: pd.DataFrame, row: str, col: str, label: Callable[[Any], str]
) -> tuple[list[int], list[int], np.ndarray, list[list[str]]]:
    """Pivot ``table`` into a ``row × col`` score matrix (``nan`` for absent cells) and hover texts."""
    rows = sorted({int(v) for v in table[row]})
    cols = sorted({int(v) for v in table[col]})
    z = np.full((len(rows), len(cols)), np.nan)
    text = [["" for _ in cols] for _ in rows]
    ri, ci = {v: i for i, v in enumerate(rows)}, {v: j for j, v in enumerate(cols)}
    for cell in table.itertuples():
        i, j = ri[int(getattr(cell, row))], ci[int(getattr(cell, col))]
        z[i, j] = float(cell.score)
        text[i][j] = label(cell)
    return rows, cols, z, text


def ci_label(result: PatchResult) -> str:
    return f"{100 * float(result.metadata.get('ci_level', 0.95)):g}% CI"


def hover_lines(result: PatchResult) -> Callable[[Any], str]:
    """A function from a :func:`cell_table` row to its hover text (name, score, CI, n_pairs)."""
    ci, n = ci_label(result), result.n_pairs

    def label(cell: Any) -> str:
        return (
            f"<b>{cell.name}</b><br>score {cell.score:.4f}<br>"
            f"{ci} [{cell.ci_low:.4f}, {cell.ci_high:.4f}]<br>n_pairs {n}"
        )

    return label


def subtitle(result: PatchResult) -> str:
    """One line naming the model, target, metric and number of pairs of ``result``."""
    meta = result.metadata
    model, metric = _named(meta.get("model"), "spec"), _named(meta.get("metric"), "name")
    parts = [
        model,
        f"target {meta['target']}" if meta.get("target") else None,
        f"metric {metric}" if metric else None,
        f"{result.n_pairs} pairs",
    ]
    return " · ".join(p for p in parts if p)


def _named(value: Any, key: str) -> str | None:
    value = value.get(key) if isinstance(value, dict) else value
    return str(value) if value else None


def _or_nan(v: int | None) -> float:
    return np.nan if v is None else float(v)
