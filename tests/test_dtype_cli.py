"""``--dtype bfloat16`` works for every command that loads a model, and lands in its output's metadata."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import BENIGN_WORDS, TOXIC_WORDS, hf_model, make_tokenizer

from toxlens.cli import main

PAIRS = [
    {"toxic": "you are my idiot", "benign": "you are my friend"},
    {"toxic": "what a jerk", "benign": "what a pal"},
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dtype_cli")
    model = root / "model"
    make_tokenizer(model)
    hf_model("llama", seed=1).save_pretrained(str(model))
    (root / "words.txt").write_text("\n".join(TOXIC_WORDS) + "\n")
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    (root / "prompts.txt").write_text("you are a\nwhat a\n")
    (root / "neutral.txt").write_text("the cat is red\nmy friend is a dog\n")
    with (root / "texts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tweet", "class"])
        for i in range(16):
            marker = TOXIC_WORDS[i % 2] if i % 2 == 0 else BENIGN_WORDS[i % 2]
            w.writerow(
                [f"the cat is a {marker} and {'one two three'[: 3 + i % 7]}", "1" if i % 2 == 0 else "0"]
            )
    return {p.stem: p for p in root.iterdir()} | {"root": root}


def dtypes_in(value: Any) -> set[str]:
    """Every value of a ``dtype`` key anywhere in a JSON document."""
    if isinstance(value, dict):
        found = {str(v) for k, v in value.items() if k == "dtype"}
        return found.union(*(dtypes_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(dtypes_in(v) for v in value))
    return set()


def output_dtypes(out: Path) -> set[str]:
    return set().union(*(dtypes_in(json.loads(p.read_text())) for p in out.rglob("*.json")))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])  # float16 runs on CPU too: nothing is refused
def test_every_command_runs_in_low_precision(
    dtype: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, model = files["root"] / dtype, str(files["model"])
    common = ["--model", model, "--dtype", dtype]
    words = ["--toxic-words", str(files["words"])]
    runs = {
        "locate": ["locate", *common, "--pairs", str(files["pairs"]), *words, "--no-progress"],
        "locate_texts": ["locate", *common, "--texts", str(files["texts"]), "--text-col", "tweet",
                         "--label-col", "class", "--positive-labels", "1", *words, "--n-attribution", "4",
                         "--no-progress", "--top-k", "5"],
        "probe": ["probe", "train", *common, "--data", str(files["texts"]), "--text-col", "tweet",
                  "--label-col", "class", "--positive-labels", "1"],
        "circuit": ["circuit", *common, "--pairs", str(files["pairs"]), *words, "--no-progress",
                    "--from", str(root / "locate"), "--ks", "1,3", "--n-random", "3"],
        "edit": ["edit", *common, "--method", "dampen", "--from", str(root / "locate_texts")],
        "evaluate": ["evaluate", *common, "--prompts", str(files["prompts"]), "--samples", "1",
                     "--max-new-tokens", "2", "--conditions", "none", "--perplexity-text", str(files["neutral"])],
    }  # fmt: skip
    for name, args in runs.items():
        out = root / name
        code = main([*args, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 0, (name, err)
        assert output_dtypes(out) == {dtype}, name
    code = main(["generate", *common, "--prompt", "you are my", "--max-new-tokens", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    settings = json.loads(out)["settings"]
    assert settings["dtype"] == settings["model_info"]["dtype"] == dtype
    assert main(["tokens", *common, *words, "--json"]) == 0
