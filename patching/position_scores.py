"""Position-resolved component scores for ``toxlens locate --positions`` and ``--rank-by``.

Each head/MLP's activation score (all positions) is split into three disjoint position classes per pair
(:func:`patching.targets.position_classes`): ``diff``, ``after`` and ``final``; each class is patched on
its own (target ``components_by_class``). ``components_by_position.csv`` holds one row per component:
``component, score_diff, score_after, score_final, score_all``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lens.errors import ToxlensError
from lens.metrics import Metric
from lens.model import LensModel
from lens.prompts import ContrastPairs
from patching.activation import activation_patching
from patching.result import PatchResult
from patching.targets import POSITION_CLASSES

RANK_BY = ("all", *POSITION_CLASSES)
CLASSES_DEFINITION = (
    "per pair: diff = positions where the toxic and benign tokens differ; final = the last position when "
    "it is not a diff position; after = every other position after the first difference; positions before "
    "the first difference are no-ops. Each class is patched on its own (same score definition)."
)


def position_table(by_class: PatchResult, whole: PatchResult) -> pd.DataFrame:
    """``component, score_diff, score_after, score_final, score_all`` (component order of the sweep)."""
    components = list(by_class.coords["component"])
    if whole.names() != components:
        raise ToxlensError(
            f"position scores cover {len(components)} components but the all-position result has "
            f"{len(whole.names())}; expected the same components in the same order"
        )
    frame = pd.DataFrame({"component": components})
    for k, cls in enumerate(by_class.coords["position"]):
        frame[f"score_{cls}"] = by_class.mean[:, k].numpy()
    frame["score_all"] = whole.mean.numpy()
    return frame


def position_scores(
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    whole: PatchResult | None,
    batch_size: int,
    progress: bool = True,
) -> tuple[pd.DataFrame, PatchResult]:
    """Run the ``components_by_class`` sweep (and the all-position one when ``whole`` is None)."""
    by_class = activation_patching(model, pairs, metric, "components_by_class", batch_size, progress)
    if whole is None:
        whole = activation_patching(model, pairs, metric, "components", batch_size, progress)
    return position_table(by_class, whole), by_class


def rerank(table: pd.DataFrame, positions: pd.DataFrame, rank_by: str) -> pd.DataFrame:
    """``components.csv`` ranked by ``score_{rank_by}`` of ``positions`` (``all``: unchanged)."""
    if rank_by not in RANK_BY:
        raise ToxlensError(f"unknown --rank-by {rank_by!r}; expected one of {', '.join(RANK_BY)}")
    if rank_by == "all":
        return table
    score = positions.set_index("component")[f"score_{rank_by}"]
    out = table.copy()
    out["rank"] = score.loc[out["component"]].rank(ascending=False, method="first").astype(int).to_numpy()
    return out.sort_values("rank").reset_index(drop=True)


def write_positions(directory: Path, positions: pd.DataFrame) -> None:
    positions.to_csv(directory / "components_by_position.csv", index=False)
