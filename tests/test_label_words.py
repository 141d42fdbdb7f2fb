"""lens.label_words and scripts/label_words.py: toxic words from text labels, checked by hand."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from lens.errors import ToxlensError
from lens.label_words import label_words, words_of
from lens.tokens import read_words

ROOT = Path(__file__).resolve().parents[1]

# 20 toxic and 20 non-toxic texts: "zorg" in 12 toxic / 0 non-toxic, "blip" in 10 / 10, "wum" in 12 / 6
# (log-odds below 2), "qix" in 2 toxic only (below min_count); "plain text" in every text
TOXIC = ["plain text" + (" zorg" if i < 12 else "") for i in range(20)]
TOXIC = [t + (" blip" if i < 10 else "") + (" wum" if i < 12 else "") for i, t in enumerate(TOXIC)]
TOXIC[0] += " qix"
TOXIC[1] += " Qix!"
NONTOX = ["plain text" + (" blip" if i < 10 else "") + (" wum" if i < 6 else "") for i in range(20)]
TEXTS, LABELS = TOXIC + NONTOX, [1] * 20 + [0] * 20


def by_hand(t: int, n: int, a: float = 0.5, big_t: int = 20, big_n: int = 20) -> tuple[float, float]:
    delta = math.log((t + a) / (big_t - t + a)) - math.log((n + a) / (big_n - n + a))
    return delta, delta / math.sqrt(1 / (t + a) + 1 / (n + a))


def test_words_of_lowercases_and_drops_short_words() -> None:
    assert words_of("Zorg, zorg! it's OK a b", 3) == {"zorg", "its"}


def test_planted_word_found_with_hand_computed_score() -> None:
    got = label_words(TEXTS, LABELS, top=10, min_count=5)
    assert [w.word for w in got] == ["zorg"]  # blip: no association; wum: below 2 log-odds; qix: 2 texts
    delta, z = by_hand(12, 0)
    assert got[0].toxic_texts == 12 and got[0].nontoxic_texts == 0
    assert got[0].log_odds == pytest.approx(delta) and got[0].z == pytest.approx(z)
    loose = {w.word: w for w in label_words(TEXTS, LABELS, top=10, min_count=2, min_log_odds=0.5)}
    assert set(loose) == {"zorg", "wum", "qix"}
    assert loose["wum"].z == pytest.approx(by_hand(12, 6)[1])
    assert loose["qix"].toxic_texts == 2  # "Qix!" counts as qix
    assert [w.word for w in label_words(TEXTS, LABELS, top=1, min_count=2, min_log_odds=0.5)] == ["zorg"]


@pytest.mark.parametrize(
    ("labels", "kw", "needle"),
    [
        ([1] * 40, {}, "both classes"),
        ([1] * 39, {}, "one label per text"),
        ([2] * 40, {}, "0 or 1"),
        (LABELS, {"top": 0}, "top must be"),
        (LABELS, {"alpha": 0.0}, "alpha must be"),
        (LABELS, {"min_log_odds": float("nan")}, "min_log_odds"),
    ],
)
def test_bad_input_raises(labels: list[int], kw: dict, needle: str) -> None:
    with pytest.raises(ToxlensError, match=needle):
        label_words(TEXTS, labels, **kw)


def test_script_writes_a_word_file_or_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    rows = [f'"{t}",{"yes" if y else "no"}' for t, y in zip(TEXTS, LABELS)]
    data.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "words.txt"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "label_words.py"),
        "--texts",
        str(data),
        "--text-col",
        "text",
    ]
    cmd += ["--label-col", "label", "--min-count", "5"]
    done = subprocess.run(
        [*cmd, "--positive-labels", "yes", "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert read_words(out) == ["zorg"]  # the comments are ignored by the reader of --toxic-words
    bad = tmp_path / "bad.txt"
    done = subprocess.run(
        [*cmd, "--positive-labels", "maybe", "--out", str(bad)], capture_output=True, text=True
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("label_words: error: "), (
        done.stderr
    )
    assert "both classes" in lines[0] and not bad.exists()
    done = subprocess.run(
        [*cmd, "--positive-labels", "yes", "--limit", "0", "--out", str(bad)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--limit must be >= 1, got 0" in done.stderr and not bad.exists()
    done = subprocess.run(
        [*cmd, "--positive-labels", "yes", "--limit", "1", "--out", str(bad)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "both classes" in done.stderr and not bad.exists()  # one row, one class
