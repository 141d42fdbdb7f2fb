"""Constants and small helpers shared by the figures of generation traces and ``toxlens evaluate``
results (:mod:`figures.traces`, :mod:`figures.eval_plots`, :mod:`figures.interventions`)."""

from __future__ import annotations

import html
import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from lens.errors import ToxlensError

CI_PREFIX = {
    "toxicity_probability": "tp",
    "expected_max_toxicity": "emt",
    "mean_toxicity": "mt",
    "perplexity": "ppl",
}
LABELS = {
    "toxicity_probability": "toxicity probability",
    "expected_max_toxicity": "expected max toxicity",
    "mean_toxicity": "mean toxicity",
    "perplexity": "perplexity",
    "stopped_share": "share of samples stopped at the budget",
}
COLORS = {"kept": "#1f77b4", "discarded": "#d62728", "threshold": "#d62728", "safe threshold": "#2ca02c"}
ROLLBACK_LINE = {"color": "#7f7f7f", "dash": "dot", "width": 1}
ROLLBACK_NOTE: dict[str, Any] = {
    "showarrow": False,
    "xanchor": "right",
    "yanchor": "top",
    "font": {"size": 10, "color": "#555555"},
}
MAX_ROLLBACK_TRACES, SUMMARY_METRICS = 3, ("toxicity_probability", "expected_max_toxicity")


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ToxlensError(f"{what} lacks the column(s) {missing}; it has {list(frame.columns)}")


def _number(v: Any) -> float | None:
    """``v`` as a float when it is a finite real number (not a bool), else ``None``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        return None
    return float(v)


def _num_or(v: Any) -> float:
    n = _number(v)
    return math.inf if n is None else n


def _score(e: dict[str, Any]) -> float:
    n = _number(e.get("score"))
    return math.nan if n is None else n


def _fmt(v: Any) -> str:
    n = _number(v)
    return "n/a" if n is None else f"{n:.4f}"


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _label(metric: str) -> str:
    return LABELS.get(metric, metric.replace("_", " "))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "condition"
