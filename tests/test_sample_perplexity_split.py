"""``scripts/sample_perplexity_split.py`` recomputes, from a run's written samples alone (prompts
re-tokenized), the sample perplexity that ``evaluate`` computed from the token ids it generated — over all
samples and over the non-toxic ones — and refuses what is not an evaluate run (exit 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import TOXIC_WORDS, hf_model, make_tokenizer

from interventions.conditions import Condition
from interventions.evaluate import evaluate
from lens.loading import load_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sample_perplexity_split.py"


def marker(texts: list[str]) -> list[float]:
    return [1.0 if any(w in t.split() for w in TOXIC_WORDS) or len(t) % 2 == 0 else 0.0 for t in texts]


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_split_recomputed_from_the_samples_equals_evaluate(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    hf_model("llama", seed=5).save_pretrained(str(model_dir))
    make_tokenizer(model_dir)
    m = load_model(str(model_dir), "cpu")
    prompts = ["you are a", "the cat is very", "my dog and your", "she is"]
    res = evaluate(m, prompts, [Condition("none")], samples=3, max_new_tokens=6, scorer=marker)
    run = tmp_path / "run"
    res.write(run)
    done = run_script(str(run))
    assert done.returncode == 0, done.stderr
    row = res.summary.loc[0]
    assert row["sample_perplexity_nontoxic"] != pytest.approx(row["sample_perplexity"], rel=1e-6)
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("none:"))
    assert float(re.search(r"all ([\d.]+)", line).group(1)) == pytest.approx(
        row["sample_perplexity"], abs=0.006
    )
    scorer_line = next(x for x in done.stdout.splitlines() if "non-toxic" in x)
    value = float(re.search(r"non-toxic ([\d.]+)", scorer_line).group(1))
    assert value == pytest.approx(row["sample_perplexity_nontoxic"], abs=0.006)
    n_nontoxic = sum(s["score"] < 0.5 for s in res.samples)
    assert f"({n_nontoxic} samples" in scorer_line


@pytest.mark.parametrize("case", ["missing", "not-a-run", "unknown-condition"])
def test_bad_input_exits_2(tmp_path: Path, case: str) -> None:
    run = tmp_path / "run"
    if case != "missing":
        run.mkdir()
    if case == "unknown-condition":
        (run / "samples.jsonl").write_text("")
        (run / "config.json").write_text(json.dumps({"model": {"spec": "x"}, "scorer": "profanity"}))
        (run / "summary.csv").write_text("condition,sample_perplexity\nnone,1.0\n")
    extra = ["--conditions", "project"] if case == "unknown-condition" else []
    done = run_script(str(run), *extra)
    assert done.returncode == 2
    expected = "no conditions" if case == "unknown-condition" else "expected a toxlens evaluate output"
    assert expected in done.stderr and "Traceback" not in done.stderr
