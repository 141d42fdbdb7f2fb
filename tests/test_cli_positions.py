"""`toxlens locate --positions --rank-by`: components_by_position.csv, the ranking of components.csv and
result.json (the numbers themselves are checked against the raw-HF reference in test_position_classes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_cli import PAIRS, model_dir, run, words, write_pairs  # noqa: F401 (fixtures)


def locate(
    model: Path, word_file: Path, tmp: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    pairs = write_pairs(tmp / "pairs.jsonl", PAIRS)
    args = ["locate", "--model", str(model), "--pairs", str(pairs), "--toxic-words", str(word_file)]
    args += ["--method", "activation", "--no-progress", "--out", str(tmp / "out"), *extra]
    return run(args, capsys)


@pytest.mark.parametrize("rank_by", ["all", "diff"])
def test_positions_csv_and_rank_by(
    model_dir: Path,  # noqa: F811
    words: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rank_by: str,
) -> None:
    code, _stdout, err = locate(model_dir, words, tmp_path, ["--positions", "--rank-by", rank_by], capsys)
    assert code == 0, err
    out = tmp_path / "out"
    positions = pd.read_csv(out / "components_by_position.csv")
    assert list(positions.columns) == ["component", "score_diff", "score_after", "score_final", "score_all"]
    table = pd.read_csv(out / "components.csv")
    assert len(positions) == len(table) == 3 * 7
    merged = table.merge(positions, on="component")
    assert (merged["score_all"] - merged["score_activation"]).abs().max() < 1e-6
    key = "score_activation" if rank_by == "all" else f"score_{rank_by}"
    assert merged.sort_values("rank")[key].is_monotonic_decreasing
    assert sorted(table["rank"]) == list(range(1, len(table) + 1))
    info = json.loads((out / "result.json").read_text())
    assert info["rank_by"] == rank_by and "diff" in info["definitions"]["position_classes"]
    assert info["top_k"][0]["component"] == table.sort_values("rank")["component"].iloc[0]
    assert "positions_s" in info["wall_time_s"]
    # a real effect at the differing tokens
    assert positions["score_diff"].abs().max() > 1e-3


def test_rank_by_needs_positions(
    model_dir: Path,  # noqa: F811
    words: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _stdout, err = locate(model_dir, words, tmp_path, ["--rank-by", "diff"], capsys)
    assert code == 2 and "--rank-by diff needs --positions" in err
    assert not (tmp_path / "out").exists()
