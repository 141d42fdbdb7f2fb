"""scripts/exclude_prompts.py: a training CSV without the tweets some prompt sets were cut from."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "exclude_prompts.py"

ROWS = [
    ("you are a stupid idiot and more", "1", "x"),
    ("a calm day at the lake", "2", "y"),
    ("you are a stupid idiot again", "1", "z"),  # same prompt, second source tweet
    ("this tweet was never a prompt", "0", "w"),
    ("dear friends, see you soon", "2", "v"),
]


def write(tmp: Path) -> tuple[Path, Path, Path]:
    src = tmp / "train.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tweet", "class", "extra"])
        w.writerows(ROWS)
    a, b = tmp / "a.jsonl", tmp / "b.jsonl"
    a.write_text(json.dumps({"prompt": "you are a stupid"}) + "\n", encoding="utf-8")
    b.write_text(json.dumps({"prompt": "dear friends,"}) + "\n" + json.dumps({"prompt": "not there"}) + "\n")
    return src, a, b


def call(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


def test_leaves_out_every_source_tweet_of_every_prompt_set(tmp_path: Path) -> None:
    src, a, b = write(tmp_path)
    out = tmp_path / "clean.csv"
    done = call("--texts", str(src), "--text-col", "tweet", "--exclude-prompts", str(a),
                "--exclude-prompts", str(b), "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote 2 of 5 rows" in done.stdout and "3 left out" in done.stdout
    with out.open(newline="", encoding="utf-8") as f:
        kept = list(csv.reader(f))
    # same columns and order; only the rows starting with no prompt survive
    assert kept == [["tweet", "class", "extra"], list(ROWS[1]), list(ROWS[3])]


def test_bad_input_one_error_exit_2_nothing_written(tmp_path: Path) -> None:
    src, a, _ = write(tmp_path)
    out = tmp_path / "clean.csv"
    cases = [
        (["--texts", str(tmp_path / "nope.csv"), "--text-col", "tweet"], "no such file"),
        (["--texts", str(src), "--text-col", "text"], "'text' is not a column"),
        (
            ["--texts", str(src), "--text-col", "tweet", "--exclude-prompts", str(tmp_path / "none.jsonl")],
            "no such file",
        ),
    ]
    for args, msg in cases:
        extra = [] if "--exclude-prompts" in args else ["--exclude-prompts", str(a)]
        done = call(*args, *extra, "--out", str(out))
        assert done.returncode == 2, (args, done.stderr)
        assert msg in done.stderr, (args, done.stderr)
        assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    done = call("--texts", str(src), "--text-col", "tweet", "--exclude-prompts", str(a), "--out", str(src))
    assert done.returncode == 2 and "is --texts itself" in done.stderr
    assert len(src.read_text(encoding="utf-8").splitlines()) == len(ROWS) + 1
