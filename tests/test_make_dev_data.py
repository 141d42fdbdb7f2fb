"""scripts/make_dev_data.py: a held-out split that leaves out a locate run's texts and another split's prompts."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_dev_data.py"

# eight-word offensive tweets: a prompt is their first four words (clamp(8 // 2, 4, 12))
OFFENSIVE = [f"w{i}a w{i}b w{i}c w{i}d w{i}e w{i}f w{i}g w{i}h" for i in range(8)]
NEITHER = [f"n{i}a n{i}b n{i}c n{i}d n{i}e n{i}f" for i in range(6)]


def prompt(tweet: str) -> str:
    return " ".join(tweet.split()[:4])


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tweet", "class"])
        w.writerows(rows)


def setup(tmp_path: Path) -> tuple[Path, Path]:
    train = tmp_path / "probe_train.csv"
    write_csv(train, [(t, "1") for t in OFFENSIVE] + [(t, "2") for t in NEITHER])
    # a locate run over a file of its own: no --limit, no --balance, so every one of its rows was used
    texts = tmp_path / "located.csv"
    write_csv(texts, [(OFFENSIVE[0], "1"), (OFFENSIVE[1], "1"), (NEITHER[0], "2"), ("other text here", "2")])
    loc = tmp_path / "locate"
    loc.mkdir()
    data = {"file": str(texts), "text_col": "tweet", "label_col": "class", "positive_labels": ["1"]}
    data |= {"negative_labels": None, "limit": None, "balance": False, "seed": 0}
    (loc / "result.json").write_text(json.dumps({"ranking": {"data": data}}), encoding="utf-8")
    return train, loc


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_leaves_out_located_texts_and_other_prompts(tmp_path: Path) -> None:
    train, loc = setup(tmp_path)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": prompt(OFFENSIVE[2])}) + "\n", encoding="utf-8")
    out = tmp_path / "heldout"
    args = ["--train", str(train), "--out", str(out), "--n-prompts", "5", "--n-neutral", "5", "--seed", "3"]
    done = run(*args, "--exclude-located", str(loc), "--exclude-prompts", str(other))
    assert done.returncode == 0, done.stderr
    got = {json.loads(line)["prompt"] for line in (out / "prompts.jsonl").read_text().splitlines()}
    assert got == {prompt(t) for t in OFFENSIVE[3:]}  # 0, 1 located, 2 another split's prompt
    neutral = set((out / "neutral.txt").read_text().splitlines())
    assert neutral == set(NEITHER[1:])  # NEITHER[0] was located
    # one more prompt than is left: one clear error, exit 2, nothing written
    fresh = tmp_path / "fresh"
    done = run("--train", str(train), "--out", str(fresh), "--n-prompts", "6", "--n-neutral", "5")
    assert done.returncode == 0, done.stderr  # without the exclusions there are enough
    done = run(
        *["--train", str(train), "--out", str(tmp_path / "none"), "--n-prompts", "6", "--n-neutral", "5"],
        *["--exclude-located", str(loc), "--exclude-prompts", str(other)],
    )
    assert done.returncode == 2 and done.stderr.startswith("make_dev_data: error: "), done.stderr
    assert not (tmp_path / "none").exists()


def test_bad_exclude_inputs_fail_cleanly(tmp_path: Path) -> None:
    train, _ = setup(tmp_path)
    out = tmp_path / "heldout"
    base = ["--train", str(train), "--out", str(out), "--n-prompts", "2", "--n-neutral", "2"]
    for extra, needle in (
        (["--exclude-located", str(tmp_path)], "no result.json"),
        (["--exclude-prompts", str(tmp_path / "missing.jsonl")], "no such file"),
    ):
        done = run(*base, *extra)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith("make_dev_data: error: ") and needle in lines[0], done.stderr
        assert not out.exists()
