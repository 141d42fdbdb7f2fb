"""Steering sweeps: one ``steer@{scale}`` condition per scale, evaluated like any other condition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from interventions.conditions import Condition
from interventions.evaluate import Evaluation, evaluate
from interventions.steering import Steer
from lens.errors import ToxlensError
from lens.model import LensModel


def sweep_conditions(
    model: LensModel, vector: torch.Tensor, layer: int, scales: Sequence[float], site: str = "resid_pre"
) -> list[Condition]:
    """One ``steer@{scale}`` condition per scale: ``scale × vector`` at every position of ``layer``
    (scale 0: the model unsteered)."""
    if not scales:
        raise ToxlensError("a steering sweep needs at least one scale")
    conds = []
    for a in scales:
        steer = Steer(vector, layer, float(a), positions="all", site=site)
        steer.check(model)
        conds.append(
            Condition(f"steer@{float(a):g}", steers=[steer] if a != 0 else [], settings=steer.describe())
        )
    return conds


def sweep_table(result: Evaluation, scales: Sequence[float]) -> pd.DataFrame:
    """The sweep table of a result holding the ``steer@{scale}`` conditions: a ``scale`` column in front
    of their summary rows."""
    names = [f"steer@{float(a):g}" for a in scales]
    sweep = result.summary.set_index("condition").loc[names].reset_index()
    sweep.insert(0, "scale", [float(a) for a in scales])
    return sweep


def sweep_steering(
    model: LensModel,
    prompts: Sequence[str],
    vector: torch.Tensor,
    layer: int,
    scales: Sequence[float],
    *,
    site: str = "resid_pre",
    **kwargs: Any,
) -> tuple[pd.DataFrame, Evaluation]:
    """One :func:`evaluate` run per steering scale (``scale × vector`` at every position of ``layer``;
    scale 0 runs the model unsteered). Returns the sweep table (a ``scale`` column in front of the
    summary columns) and the full evaluation (samples included)."""
    result = evaluate(model, prompts, sweep_conditions(model, vector, layer, scales, site), **kwargs)
    return sweep_table(result, scales), result
