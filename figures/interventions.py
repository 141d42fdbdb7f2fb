"""Plotly figures of generation traces and ``toxlens evaluate`` results; nothing here runs a model.

* :func:`probe_trace` — the monitor probe's score of every fed token, in the order the tokens were fed,
  with the tokens that a later rollback discarded drawn apart and a marker at each rollback;
* :func:`toxicity_by_condition` — a metric per condition with its CI as error bars;
* :func:`toxicity_vs_perplexity` — the steering-scale sweep (and the conditions) in the toxicity /
  perplexity plane;
* :func:`render_evaluation` / :func:`render_trace` — read saved output and write the HTML figures.

A trace is the dict of ``Generation.to_dict()``. Its ``timeline`` lists the events in the order they
happened: ``{"event": "token", "position", "token", "score"}`` per fed token and ``{"event": "rollback",
"position": safe_position, "at", "to", "discarded", "forbidden"}`` per rollback. In :func:`probe_trace` the x
of an event is its index in the timeline, so a rollback sits between the token that triggered it and the next
fed token. A token is *discarded* when a later rollback's (safe) position is before the token's position.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from figures._eval_common import (
    MAX_ROLLBACK_TRACES,
    SUMMARY_METRICS,
    _num_or,
    _number,
    _require,
    _slug,
)
from figures.eval_plots import toxicity_by_condition, toxicity_vs_perplexity
from figures.plots import write_figures
from figures.traces import discarded_steps, probe_trace
from lens.errors import ToxlensError


# -- reading saved output and writing figures ------------------------------------------------------------
def render_evaluation(directory: str | Path, out: str | Path | None = None) -> list[Path]:
    """Draw the figures of a ``toxlens evaluate`` directory into ``out`` (default ``directory/figures``):
    ``toxicity_by_condition.html``, ``toxicity_vs_perplexity.html`` (the sweep when ``sweep.csv`` exists,
    else the conditions alone) and ``probe_trace_{condition}_p{prompt}_s{sample}.html`` for the first
    three traced samples with a rollback and the first one without (ordered by condition as in
    ``summary.csv``, prompt_index, sample_index). Everything is read and drawn before anything is
    written. Returns the written HTML paths."""
    d = Path(directory)
    if not d.is_dir():
        raise ToxlensError(f"{str(d)!r} is not a directory (expected a `toxlens evaluate` output dir)")
    if not (d / "summary.csv").is_file():
        raise ToxlensError(f"{str(d)!r} has no summary.csv (expected a `toxlens evaluate` output dir)")
    summary = _read_csv(d / "summary.csv", ["condition", "toxicity_probability"])
    summary["condition"] = summary["condition"].astype(str)
    if "perplexity" not in summary.columns:
        summary["perplexity"] = np.nan
    sweep = (
        _read_csv(d / "sweep.csv", ["scale", "perplexity", "toxicity_probability"])
        if (d / "sweep.csv").is_file()
        else None
    )
    figs: dict[str, go.Figure] = {
        "toxicity_by_condition": toxicity_by_condition(summary, metrics=summary_panels(summary)),
        "toxicity_vs_perplexity": toxicity_vs_perplexity(sweep, summary=summary),
    }
    meta = _read_meta(d / "result.json")
    for sample in pick_traces(_read_samples(d / "samples.jsonl"), summary["condition"].tolist()):
        trace = sample["trace"]
        name = f"probe_trace_{_slug(str(sample.get('condition')))}_p{sample.get('prompt_index')}_s{sample.get('sample_index')}"
        while name in figs:
            name += "_"
        figs[name] = probe_trace(
            trace, _lookup("threshold", trace, sample, meta), _lookup("safe_threshold", trace, sample, meta)
        )
    return write_figures(figs, Path(out) if out is not None else d / "figures")


def summary_panels(summary: pd.DataFrame) -> list[str]:
    """The metrics ``toxicity_by_condition.html`` draws: those of ``SUMMARY_METRICS`` in ``summary``, and
    ``stopped_share`` when some condition ended samples at the rollback budget (the length a cut costs)."""
    panels = [m for m in SUMMARY_METRICS if m in summary.columns]
    if "stopped_share" in summary.columns and bool((pd.to_numeric(summary["stopped_share"]) > 0).any()):
        panels.append("stopped_share")
    return panels


def pick_traces(samples: Sequence[dict[str, Any]], conditions: Sequence[str]) -> list[dict[str, Any]]:
    """The samples whose trace is drawn: the first :data:`MAX_ROLLBACK_TRACES` with a rollback, then the
    first without one, ordered by (condition order in ``conditions``, prompt_index, sample_index)."""
    rank = {c: i for i, c in enumerate(conditions)}
    traced = [(k, s) for k, s in enumerate(samples) if isinstance(s.get("trace"), dict)]

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, float, float, int]:
        k, s = item
        cond = str(s.get("condition"))
        return (rank.get(cond, len(rank)), _num_or(s.get("prompt_index")), _num_or(s.get("sample_index")), k)

    ordered = [s for _, s in sorted(traced, key=key)]
    with_rb = [s for s in ordered if _has_rollback(s["trace"])]
    without = [s for s in ordered if not _has_rollback(s["trace"])]
    return with_rb[:MAX_ROLLBACK_TRACES] + without[:1]


def render_trace(json_path: str | Path, out_html: str | Path, threshold: float | None = None) -> Path:
    """Draw the trace of a ``toxlens generate --json`` output (one JSON object with the trace keys and
    possibly ``threshold`` / ``safe_threshold``) into ``out_html``; returns the written path."""
    path, out = Path(json_path), Path(out_html)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ToxlensError(f"{str(path)!r}: could not read a JSON generation trace ({e})") from e
    if not isinstance(data, dict):
        raise ToxlensError(
            f"{str(path)!r} holds a JSON {type(data).__name__}, expected one generation object"
        )
    fig = probe_trace(data, threshold, data.get("safe_threshold"))
    return write_figures({out.name: fig}, out.parent)[0]


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except Exception as e:  # empty or malformed CSV
        raise ToxlensError(f"{str(path)!r}: could not read the CSV ({e})") from e
    _require(frame, required, repr(str(path)))
    return frame


def _read_samples(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    samples = []
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise ToxlensError(f"{str(path)!r} line {n}: not JSON ({e})") from e
            if not isinstance(obj, dict):
                raise ToxlensError(
                    f"{str(path)!r} line {n}: expected a JSON object, got {type(obj).__name__}"
                )
            samples.append(obj)
    return samples


def _read_meta(path: Path) -> dict[str, Any]:
    """``result.json`` when present and readable (only consulted for thresholds), else ``{}``."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _lookup(key: str, *sources: dict[str, Any]) -> float | None:
    """The first numeric ``key`` in ``sources`` (or in a source's ``"policy"`` dict)."""
    for src in sources:
        for d in (src, src.get("policy")):
            if isinstance(d, dict) and _number(d.get(key)) is not None:
                return _number(d.get(key))
    return None


def _has_rollback(trace: dict[str, Any]) -> bool:
    return bool(trace.get("rollbacks")) or any(
        isinstance(e, dict) and e.get("event") == "rollback" for e in trace.get("timeline") or []
    )


__all__ = [
    "discarded_steps",
    "pick_traces",
    "probe_trace",
    "render_evaluation",
    "render_trace",
    "toxicity_by_condition",
    "toxicity_vs_perplexity",
]
