"""``scripts/dose_edits.py``: the dosing rule (edit and random control both within the fluency budget,
then the highest human-label selectivity) and the held-out texts it measures selectivity on (never a row
the locate run used)."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from dose_edits import choose, heldout_texts  # noqa: E402

from lens.errors import ToxlensError  # noqa: E402
from toxlens.common import file_sha256, select_rows  # noqa: E402


def test_choose_rules() -> None:
    table = pd.DataFrame(
        [
            # the most selective and strongest edit, but its control costs 30 %
            {"method": "project", "strength": 4.0, "ratio": 1.05, "control_ratio": 1.30, "selectivity": 0.30},
            {"method": "project", "strength": 2.0, "ratio": 1.02, "control_ratio": 1.05, "selectivity": 0.20},
            {"method": "project", "strength": 3.0, "ratio": 1.08, "control_ratio": 0.97, "selectivity": 0.10},
            # over budget itself
            {"method": "project", "strength": 8.0, "ratio": 1.20, "control_ratio": 1.00, "selectivity": 0.50},
            # a method with nothing admissible under "controlled"
            {"method": "surgery", "strength": 1.0, "ratio": 1.50, "control_ratio": 1.01, "selectivity": 0.40},
            {
                "method": "surgery",
                "strength": 0.5,
                "ratio": 1.01,
                "control_ratio": math.nan,
                "selectivity": 0.4,
            },
        ]
    )
    got = choose(table, budget=0.10, rule="controlled")
    assert got["admissible"].tolist() == [False, True, True, False, False, False]
    assert got["chosen"].tolist() == [False, True, False, False, False, False]
    assert "chosen" not in table  # a copy
    got = choose(table, budget=0.10)  # "strength": the control is not consulted
    assert got["admissible"].tolist() == [True, True, True, False, False, True]
    assert got["chosen"].tolist() == [True, False, False, False, False, True]
    assert got["rule"].str.contains("max strength").all()
    with pytest.raises(ToxlensError, match="unknown rule"):
        choose(table, budget=0.10, rule="best")


def _write(tmp_path: Path, n_pos: int, n_neg: int) -> tuple[Path, list[str], list[int]]:
    rows = [(f"toxic text number {i} has enough words here", "1") for i in range(n_pos)]
    rows += [(f"plain text number {i} has enough words here", "2") for i in range(n_neg)]
    rows.append(("too short", "1"))
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tweet", "class"])
        w.writerows(rows)
    return path, [r[0] for r in rows], [1 if r[1] == "1" else 0 for r in rows]


def test_heldout_texts_skip_the_locate_rows(tmp_path: Path) -> None:
    path, texts, labels = _write(tmp_path, 30, 30)
    data = {
        "file": str(path),
        "sha256": file_sha256(path),
        "text_col": "tweet",
        "label_col": "class",
        "positive_labels": ["1"],
        "negative_labels": None,
        "limit": 20,
        "balance": True,
        "seed": 0,
    }
    used = {texts[i] for i in select_rows(labels, 20, True, 0)}
    assert len(used) == 20
    exclude = {texts[-2]}  # a non-toxic text the caller holds back (the dev neutral texts)
    toxic, nontoxic = heldout_texts(data, 8, seed=0, exclude=exclude)
    assert len(toxic) == len(nontoxic) == 8
    assert all(t.startswith("toxic") for t in toxic) and all(t.startswith("plain") for t in nontoxic)
    assert not (set(toxic) | set(nontoxic)) & (used | exclude)
    assert "too short" not in toxic
    assert heldout_texts(data, 8, seed=0, exclude=exclude) == (toxic, nontoxic)  # seeded
    with pytest.raises(ToxlensError, match="needs 25"):
        heldout_texts(data, 25, seed=0)  # 30 - 10 used = 20 unused per class
    with pytest.raises(ToxlensError, match="sha256 differs"):
        heldout_texts({**data, "sha256": "0" * 64}, 8, seed=0)
    with pytest.raises(ToxlensError, match="does not exist"):
        heldout_texts({**data, "file": str(tmp_path / "gone.csv")}, 8, seed=0)
