"""The second scorer (better-profanity) and several scorers in one evaluation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TOXIC_WORDS, hf_model, make_tokenizer, tiny

from interventions.conditions import Condition
from interventions.evaluate import SCORER_COLUMNS, SUMMARY_COLUMNS, evaluate
from interventions.scoring import SCORER_SPECS, get_scorer, parse_scorers
from interventions.toxicity_stats import toxicity_stats
from lens.errors import ToxlensError
from toxlens.cli import main


def test_better_profanity_is_binary() -> None:
    scorer = get_scorer("better-profanity")
    assert scorer.name == "better-profanity" and "better-profanity" in SCORER_SPECS
    out = scorer(["what the hell is this shit", "the weather is nice today", "", "SHIT!"])
    assert out == [1.0, 0.0, 0.0, 1.0]
    assert scorer([]) == []
    with pytest.raises(ToxlensError, match="must be strings"):
        scorer([None])  # type: ignore[list-item]


def test_better_profanity_ignores_the_global_word_list() -> None:
    from better_profanity import profanity

    profanity.add_censor_words(["cat"])
    try:
        assert get_scorer("better-profanity")(["the cat is red"]) == [0.0]
    finally:
        profanity.load_censor_words()


def test_better_profanity_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "better_profanity", None)
    with pytest.raises(ToxlensError, match="pip install better-profanity"):
        get_scorer("better-profanity")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("profanity,", "comma-separated"),
        ("profanity,profanity", "more than once"),
        ("profanity,perspective", "unknown scorer"),
    ],
)
def test_parse_scorers(spec: str, needle: str) -> None:
    assert parse_scorers("profanity, better-profanity") == ["profanity", "better-profanity"]
    with pytest.raises(ToxlensError, match=needle):
        parse_scorers(spec)


def marker(texts: list[str]) -> list[float]:
    return [1.0 if any(w in t.split() for w in TOXIC_WORDS) else 0.0 for t in texts]


def never(texts: list[str]) -> list[float]:
    return [0.0] * len(texts)


def test_extra_scorer_columns_match_the_samples(tmp_path: Path) -> None:
    m, _ = tiny("llama", tmp_path, seed=3)
    prompts = ["you are a", "the cat is very", "my dog and your"]
    res = evaluate(
        m, prompts, [Condition("none")], samples=3, max_new_tokens=6, scorer=never, extra_scorers=[marker]
    )
    cols = list(res.summary.columns)
    assert cols[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS
    assert cols[-len(SCORER_COLUMNS) :] == [f"{c}_marker" for c in SCORER_COLUMNS]
    row = res.summary.iloc[0]
    assert row["toxicity_probability"] == 0.0  # the headline scorer keeps its columns
    scores = [s["score_marker"] for s in res.samples]
    assert scores == marker([s["text"] for s in res.samples])
    st = toxicity_stats([scores[i : i + 3] for i in range(0, 9, 3)])
    for c in SCORER_COLUMNS:
        assert row[f"{c}_marker"] == st[c], c
    assert res.settings["extra_scorers"] == ["marker"]


def test_cli_evaluate_two_scorers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "model"
    make_tokenizer(model_dir)
    hf_model("llama", seed=2).save_pretrained(str(model_dir))
    (tmp_path / "prompts.txt").write_text("you are a\nthe cat is\n")
    base = ["evaluate", "--model", str(model_dir), "--prompts", str(tmp_path / "prompts.txt")]
    base += ["--samples", "2", "--max-new-tokens", "4"]
    out = tmp_path / "ev"
    assert main([*base, "--scorer", "profanity,better-profanity", "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert "toxicity_probability_better-profanity" in summary.columns
    assert "tp_ci_high_better-profanity" in summary.columns
    config = json.loads((out / "config.json").read_text())
    assert config["scorer"] == "profanity" and config["extra_scorers"] == ["better-profanity"]
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert all(s["score_better-profanity"] in (0.0, 1.0) for s in samples)
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main([*base, "--scorer", "profanity,nope", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown scorer" in err and not bad.exists()
