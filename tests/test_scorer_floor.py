"""``scripts/scorer_floor.py``: the scorer's floor on human-labelled text, computed with the evaluation's
own statistics; checked by hand on texts whose scores are known."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from scorer_floor import floor, window  # noqa: E402

from lens.errors import ToxlensError  # noqa: E402


def marker_scorer(texts: list[str]) -> list[float]:
    return [1.0 if "bad" in t.split() else 0.1 for t in texts]


def test_floor_matches_a_count_by_hand() -> None:
    # 10 prompts x 4 samples from 40 texts, exactly 4 of which are flagged: the window is the whole text
    texts = [f"t{i} {'bad' if i % 10 == 0 else 'fine'}" for i in range(40)]
    got: dict[str, Any] = floor(texts, marker_scorer, prompts=10, samples=4, words=15, seed=0)
    assert got["window_rate"] == pytest.approx(4 / 40)
    # every text is used once: the flagged prompts are those holding a flagged text (1 to 4 of them)
    assert 0.1 <= got["toxicity_probability"] <= 0.4
    assert got["expected_max_toxicity"] == pytest.approx(0.1 + 0.9 * got["toxicity_probability"])
    assert got["tp_ci_low"] <= got["toxicity_probability"] <= got["tp_ci_high"]
    with pytest.raises(ToxlensError, match="need 44 texts"):
        floor(texts, marker_scorer, prompts=11, samples=4, words=15, seed=0)


def test_window_takes_consecutive_words() -> None:
    import random

    words = [str(i) for i in range(30)]
    w = window(words, 5, random.Random(0)).split()
    assert len(w) == 5 and [int(x) for x in w] == list(range(int(w[0]), int(w[0]) + 5))
    assert window(words[:3], 5, random.Random(0)) == "0 1 2"


def test_missing_data_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "scorer_floor.py"),
            "--train",
            str(tmp_path / "no.csv"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "make_eval_data" in proc.stderr
    assert not out.exists()
