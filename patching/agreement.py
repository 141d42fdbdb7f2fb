"""Agreement of a gradient method's component scores with activation patching's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def agreement_stats(table: pd.DataFrame, method: str, kind: str | None, k: int = 10) -> dict[str, Any]:
    """Pearson/Spearman r of ``score_<method>`` against ``score_activation`` and the top-k overlap."""
    part = table if kind is None else table[table["kind"] == kind]
    x = part["score_activation"].to_numpy(float)
    y = part[f"score_{method}"].to_numpy(float)
    n = len(x)
    if n < 2 or x.std() == 0 or y.std() == 0:
        return {"n": n, "pearson": None, "spearman": None, f"top{k}_overlap": None}
    kk = min(k, n)
    top_x = set(part["component"].to_numpy()[np.argsort(-x, kind="stable")[:kk]])
    top_y = set(part["component"].to_numpy()[np.argsort(-y, kind="stable")[:kk]])
    spearman = float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])
    return {
        "n": n,
        "pearson": float(np.corrcoef(x, y)[0, 1]),
        "spearman": spearman,
        f"top{k}_overlap": len(top_x & top_y) / kk,
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    return pd.Series(x).rank(method="average").to_numpy(float)
