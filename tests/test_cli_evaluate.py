"""`toxlens evaluate` end to end on a tiny Llama saved as a Hugging Face directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TOXIC_WORDS, hf_model, make_tokenizer

from interventions.evaluate import SUMMARY_COLUMNS
from lens.probe import Probe
from toxlens.cli import main

ALL = "none,ablate,steer,edit,rollback,rollback+steer"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("eval")
    model_dir = d / "model"
    tok = make_tokenizer(model_dir)
    hf = hf_model("llama", seed=2)
    hf.save_pretrained(str(model_dir))
    emb = hf.model.embed_tokens.weight.detach()
    ids = [tok.convert_tokens_to_ids(w) for w in TOXIC_WORDS]
    w = emb[ids].mean(0)
    cut = float((emb[ids] @ w).min()) - 1e-3
    Probe(0, "resid_pre", "token", w * 50, -50 * cut, torch.zeros(48), torch.ones(48)).save(d / "probe")
    (d / "prompts.txt").write_text("you are a\nthe cat is very\nmy dog and\n")
    (d / "neutral.jsonl").write_text(
        "\n".join(
            json.dumps({"text": t}) for t in ["the sun is red", "my friend has a car", "we are at home"]
        )
    )
    loc = d / "loc"
    loc.mkdir()
    pd.DataFrame(
        {
            "component": ["L1H1", "L2.mlp"],
            "kind": ["head", "mlp"],
            "layer": [1, 2],
            "head": [1, None],
            "rank": [1, 2],
        }
    ).to_csv(loc / "components.csv", index=False)
    return {"root": d, "model": model_dir, "probe": d / "probe", "loc": loc}


def base(s: dict[str, Path], out: Path, conditions: str = ALL) -> list[str]:
    return [
        "evaluate",
        "--model",
        str(s["model"]),
        "--prompts",
        str(s["root"] / "prompts.txt"),
        "--samples",
        "2",
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
        "--conditions",
        conditions,
        "--probe",
        str(s["probe"]),
        "--threshold",
        "0.5",
        "--ablate-from",
        str(s["loc"]),
        "--top-k",
        "2",
        "--steer-layer",
        "1",
        "--steer-scale",
        "-2",
        "--perplexity-text",
        str(s["root"] / "neutral.jsonl"),
        "--out",
        str(out),
    ]


def test_evaluate_writes_the_contract(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ev"
    code = main([*base(setup, out), "--sweep-scales", "0,-2"])
    _, err = capsys.readouterr()
    assert code == 0, err
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert list(summary["condition"]) == ALL.split(",")
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 * 3 * 2
    assert {s["condition"] for s in samples} == set(ALL.split(","))
    none = summary.set_index("condition").loc["none"]
    assert none["perplexity"] > 1
    sweep = pd.read_csv(out / "sweep.csv")
    assert list(sweep["scale"]) == [0.0, -2.0]
    # scale 0 of the sweep is the unsteered model: same samples, same statistics as "none"
    assert sweep.loc[0, "toxicity_probability"] == none["toxicity_probability"]
    assert sweep.loc[0, "perplexity"] == pytest.approx(none["perplexity"])
    assert (out / "figures" / "toxicity_by_condition.html").is_file()
    assert (out / "figures" / "toxicity_vs_perplexity.html").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["seed_rule"].startswith("sample j of prompt i")
    assert config["conditions"]["ablate"]["components"] == ["L1H1", "L2.mlp"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (["--conditions", "none,bogus"], "unknown conditions"),
        (["--samples", "0"], "--samples"),
        (["--threshold", "1.5"], "--threshold"),
        (["--prompts", "/nonexistent/prompts.txt"], "does not exist"),
        (["--steer-vector", "/nonexistent/v.safetensors"], "does not exist"),
        (["--scorer", "no-such-scorer"], "scorer"),
    ],
)
def test_bad_input_one_line_nothing_written(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], change: list[str], needle: str
) -> None:
    out = tmp_path / "ev"
    code = main([*base(setup, out, "none,steer"), *change])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and needle in err, err
    assert not out.exists()
    assert not list(tmp_path.glob(".ev*"))


def test_missing_inputs_for_conditions(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "evaluate",
        "--model",
        str(setup["model"]),
        "--prompts",
        str(setup["root"] / "prompts.txt"),
        "--conditions",
        "rollback",
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(args) == 2
    assert "needs --probe" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
