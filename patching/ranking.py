"""Read a component ranking from a ``toxlens locate`` output directory (``components.csv`` +
``result.json``), and check that it belongs to a given model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lens.components import parse_component
from lens.errors import ToxlensError
from lens.model import LensModel

METHODS = ("activation", "attribution", "relp", "ig")
NEEDED = ("component", "kind", "rank")


@dataclass(frozen=True)
class Ranking:
    names: list[str]  # best first
    kinds: list[str]
    column: str  # the components.csv column the order comes from
    method: str | None  # None: the locate run's own rank
    source: str
    locate_info: dict[str, Any]

    def pool_size(self, kind: str | None) -> int:
        """Components of ``kind`` (``None``: of every kind the ranking holds) in the locate run."""
        return len(self.names) if kind is None else sum(k == kind for k in self.kinds)

    def to_dict(self) -> dict[str, Any]:
        info = self.locate_info
        return {
            "source": self.source,
            "column": self.column,
            "method": self.method,
            "rank_from": self.column if self.method else _rank_column(info.get("methods")),
            "locate_model": info.get("model", {}),
            "locate_metric": info.get("metric"),
            "locate_methods": info.get("methods"),
            "locate_pairs": info.get("counts", {}).get("pairs"),
            "locate_prepend_bos": info.get("prepend_bos"),
        }


def read_ranking(directory: str | Path, method: str | None = None) -> Ranking:
    """The components of a locate run ordered by ``score_<method>`` (descending; ties keep the locate
    rank order), or by the run's own ``rank`` column when ``method`` is ``None``."""
    d = Path(directory)
    csv, js = d / "components.csv", d / "result.json"
    if not d.is_dir() or not csv.is_file() or not js.is_file():
        raise ToxlensError(
            f"--from {str(directory)!r} is not a locate output directory: expected components.csv and "
            f"result.json in it, found {'neither' if not d.is_dir() else _present(d)}"
        )
    try:
        info = json.loads(js.read_text())
        table = pd.read_csv(csv)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise ToxlensError(f"--from {str(directory)!r}: could not read the locate output ({err})") from err
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise ToxlensError(f"{js}: expected a locate summary with a 'model' object")
    missing = [c for c in NEEDED if c not in table.columns]
    if missing:
        raise ToxlensError(f"{csv}: missing column(s) {missing}; expected a locate components.csv")
    if table.empty:
        raise ToxlensError(f"{csv}: no components")
    table = table.sort_values("rank", kind="stable")
    column = "rank"
    if method is not None:
        if method not in METHODS:
            raise ToxlensError(f"unknown --method {method!r}; expected one of {', '.join(METHODS)}")
        column = f"score_{method}"
        if column not in table.columns:
            raise ToxlensError(
                f"{csv} has no column {column!r} (columns: {', '.join(table.columns)}); "
                f"expected a locate run that scored with --method {method}"
            )
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        bad = int((~np.isfinite(values)).sum())
        if bad:
            what = "every" if bad == len(values) else f"{bad} of {len(values)}"
            raise ToxlensError(
                f"{csv}: column {column!r} is empty or not finite for {what} component(s); "
                f"expected the locate run to have scored every component with {method}"
            )
        table = table.assign(_v=values).sort_values("_v", ascending=False, kind="stable")
    names = [str(n) for n in table["component"]]
    for n in names:
        parse_component(n)
    return Ranking(names, [str(k) for k in table["kind"]], column, method, str(d), info)


def check_same_model(ranking: Ranking, model: LensModel | None = None, spec: str | None = None) -> None:
    """Refuse a locate run of another model: compare the spec (paths resolved) and, with ``model``,
    the architecture's layer / head counts and widths."""
    recorded = ranking.locate_info.get("model", {})
    given = spec if spec is not None else (model.spec if model is not None else None)
    if given is not None and _norm(str(recorded.get("spec"))) != _norm(given):
        raise ToxlensError(
            f"--from {ranking.source!r} is a locate run of model {recorded.get('spec')!r}, "
            f"but --model is {given!r}; expected the same model"
        )
    if model is None:
        return
    for key in ("n_layers", "n_heads", "d_model", "d_vocab"):
        have = getattr(model.info, key)
        if recorded.get(key) != have:
            raise ToxlensError(
                f"--from {ranking.source!r}: the locate run's model has {key} = {recorded.get(key)!r}, "
                f"the loaded model {model.spec!r} has {have}; expected the same model"
            )
    for name in ranking.names:
        parse_component(name, model.n_layers, model.n_heads)


def _rank_column(methods: Any) -> str | None:
    """The score column a locate run ranked by: activation when it ran, else attribution."""
    if not isinstance(methods, list) or not methods:
        return None
    return "score_activation" if "activation" in methods else f"score_{methods[0]}"


def _norm(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _present(d: Path) -> str:
    have = [n for n in ("components.csv", "result.json") if (d / n).is_file()]
    return f"only {have[0]}" if have else "neither"
