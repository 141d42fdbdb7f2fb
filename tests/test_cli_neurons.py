"""End-to-end `toxlens locate --texts`, `toxlens edit` (export) and the edit conditions of
`toxlens evaluate`, on a tiny model saved as a Hugging Face directory; bad inputs exit 2 writing nothing."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_neurons import random_texts
from tiny import TOXIC_WORDS, hf_model, make_tokenizer

from interventions.edit_methods import get_method
from lens.loading import load_model
from patching.neuron_result import NeuronRanking
from toxlens.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny_llama")
    make_tokenizer(d)
    hf_model("llama", seed=2).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def texts_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts, labels = random_texts(12, seed=4)
    path = tmp_path_factory.mktemp("data") / "texts.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tweet", "class"])
        for t, y in zip(texts, labels):
            w.writerow([t, "1" if y else "2"])
    return path


@pytest.fixture(scope="module")
def located(model_dir: Path, texts_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("loc") / "locate"
    words = out.parent / "words.txt"
    words.write_text("\n".join(TOXIC_WORDS) + "\n")
    code = main(
        ["locate", "--model", str(model_dir), "--texts", str(texts_csv), "--text-col", "tweet", "--label-col",
         "class", "--positive-labels", "0,1", "--toxic-words", str(words), "--n-attribution", "4",
         "--no-progress", "--top-k", "5", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    return out


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_locate_texts_writes_everything(located: Path) -> None:
    names = {p.name for p in located.iterdir()}
    assert {
        "neurons.csv",
        "components.csv",
        "result.json",
        "ranking.json",
        "ranking.safetensors",
        "figures",
    } <= names
    neurons = pd.read_csv(located / "neurons.csv")
    assert list(neurons.columns[:4]) == ["component", "layer", "neuron", "auroc"]
    assert {"cos_probe", "toxic_logit_mass", "top_tokens", "rank", "attribution"} <= set(neurons.columns)
    assert neurons["rank"].tolist() == list(range(1, len(neurons) + 1))
    comps = pd.read_csv(located / "components.csv")
    assert set(comps["kind"]) == {"head", "mlp"} and comps["rank"].min() == 1
    info = json.loads((located / "result.json").read_text())
    assert info["kind"] == "locate-texts" and len(info["top_neurons"]) == 5
    assert info["ranking"]["data"]["positive_labels"] == ["0", "1"]
    assert "no scorer is used" in info["ranking"]["labels"]
    assert (located / "figures" / "auroc_by_layer.html").is_file()
    assert (located / "figures" / "top_neurons.html").is_file()
    r = NeuronRanking.load(located)
    assert r.top_k(1)["component"].iloc[0] == neurons["component"].iloc[0]


def test_edit_export_matches_in_memory_edit(
    model_dir: Path, located: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "edited"
    code, stdout, err = run(
        ["edit", "--model", str(model_dir), "--method", "dampen", "--from", str(located), "--out", str(out)],
        capsys,
    )
    assert code == 0, err
    assert "parameters changed" in stdout
    record = json.loads((out / "toxlens_edit.json").read_text())
    assert record["method"] == "dampen" and record["params_changed"] > 0
    toks = torch.tensor([[5, 9, 12, 40, 7]])
    model = load_model(str(model_dir), "cpu")
    ranking = NeuronRanking.load(located)
    with torch.no_grad(), get_method("dampen")(model, ranking) as edit:
        expect = model.bridge(toks)
        assert edit.n_changed == record["params_changed"]
        unedited = model.bridge.original_model
    with torch.no_grad():
        exported = AutoModelForCausalLM.from_pretrained(str(out)).eval()
        torch.testing.assert_close(exported(toks).logits, expect, atol=1e-5, rtol=0)
        assert not torch.allclose(unedited(toks).logits, expect)
        again = load_model(str(out), "cpu")
        torch.testing.assert_close(again.bridge(toks), expect, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "subtract"], "invalid choice"),
        (["--method", "dampen", "--edit-param", "alpha=3"], "no parameter"),
        (["--method", "dampen", "--edit-param", "min_auroc"], "METHOD.KEY=VALUE"),
        (["--method", "surgery", "--edit-param", "alpha=1e300"], "NaN/inf"),
    ],
)
def test_edit_bad_flags(
    model_dir: Path,
    located: Path,
    tmp_path: Path,
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "o"
    try:
        code, _, err = run(
            ["edit", "--model", str(model_dir), "--from", str(located), "--out", str(out), *args], capsys
        )
    except SystemExit as exc:  # argparse choices
        code, err = int(exc.code or 0), capsys.readouterr().err
    assert code == 2 and message in err
    assert not out.exists()


def test_from_dir_of_the_wrong_kind_or_model(
    model_dir: Path, located: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    pairs_locate = tmp_path / "pairs_locate"
    pairs_locate.mkdir()
    (pairs_locate / "components.csv").write_text("component,kind,rank\nL0H0,head,1\n")
    code, _, err = run(
        [
            "edit",
            "--model",
            str(model_dir),
            "--method",
            "dampen",
            "--from",
            str(pairs_locate),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 2 and "no neuron ranking" in err and not out.exists()
    other = tmp_path / "gpt2"
    make_tokenizer(other)
    hf_model("gpt2", seed=0).save_pretrained(str(other))
    code, _, err = run(
        ["edit", "--model", str(other), "--method", "project", "--from", str(located), "--out", str(out)],
        capsys,
    )
    assert code == 2 and "neuron ranking is for" in err and not out.exists()


def test_locate_texts_bad_input(
    model_dir: Path, texts_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    base = [
        "locate",
        "--model",
        str(model_dir),
        "--text-col",
        "tweet",
        "--label-col",
        "class",
        "--out",
        str(out),
    ]
    cases = [
        (["--texts", str(texts_csv), "--positive-labels", "7"], "at least 2 of each class"),
        (["--texts", str(texts_csv), "--positive-labels", "0,1,2"], "at least 2 of each class"),
        (["--texts", str(texts_csv)], "--positive-labels"),
        (["--texts", str(tmp_path / "missing.csv"), "--positive-labels", "1"], "does not exist"),
        (["--texts", str(texts_csv), "--positive-labels", "1", "--pairs", str(texts_csv)], "exactly one of"),
        (["--texts", str(texts_csv), "--positive-labels", "1", "--limit", "2"], "--limit"),
        (
            ["--texts", str(texts_csv), "--positive-labels", "1", "--negative-labels", "1"],
            "both positive and negative",
        ),
    ]
    for extra, message in cases:
        code, _, err = run(base + extra, capsys)
        assert code == 2, extra
        assert message in err, (extra, err)
        assert not out.exists()


def test_evaluate_runs_edit_conditions(
    model_dir: Path, located: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("you are a\nthe cat is\nwhat a\n")
    neutral = tmp_path / "neutral.txt"
    neutral.write_text("the cat is red\nmy friend is a dog\n")
    out = tmp_path / "eval"

    def scorer_free_args(conds: str) -> list[str]:
        return ["evaluate", "--model", str(model_dir), "--prompts", str(prompts), "--samples", "2",
                "--max-new-tokens", "3", "--conditions", conds, "--dampen-from", str(located),
                "--perplexity-text", str(neutral), "--edit-param", "surgery.k=3", "--out", str(out)]  # fmt: skip

    code, _, err = run(scorer_free_args("none,dampen,dampen-random,surgery,project,subtract"), capsys)
    assert code == 0, err
    summary = pd.read_csv(out / "summary.csv")
    assert summary["condition"].tolist() == [
        "none",
        "dampen",
        "dampen-random",
        "surgery",
        "project",
        "subtract",
    ]
    changed = dict(zip(summary["condition"], summary["params_changed"]))
    assert changed["none"] == 0 and changed["subtract"] == 0
    assert changed["dampen"] == changed["dampen-random"] > 0
    assert changed["surgery"] > 0 and changed["project"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["conditions"]["surgery"]["params"]["k"] == 3
    # a +rollback condition needs the monitor; refused before the model loads, nothing written
    out2 = tmp_path / "eval2"
    args = scorer_free_args("dampen+rollback")
    args[args.index(str(out))] = str(out2)
    code, _, err = run(args, capsys)
    assert code == 2 and "--probe DIR and --threshold T" in err and not out2.exists()
    args = scorer_free_args("dampen")
    args[args.index(str(out))] = str(out2)
    args[args.index(str(located))] = str(tmp_path)
    code, _, err = run(args, capsys)
    assert code == 2 and "no neuron ranking" in err and not out2.exists()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_export_hf_folds_weight_edits_and_refuses_hook_edits(kind: str, tmp_path: Path) -> None:
    from test_neurons import LABELS, TEXTS
    from tiny import tiny
    from transformers import AutoModelForCausalLM

    from lens.errors import ToxlensError
    from lens.export import export_hf
    from patching.neurons import rank_from_texts
    from toxlens.cli_edit import export_model

    model, _ = tiny(kind, tmp_path)
    ranking = rank_from_texts(model, TEXTS, LABELS, n_attribution=0)
    toks = torch.tensor([[5, 9, 12, 40, 7]])
    with torch.no_grad(), get_method("surgery")(model, ranking, {"k": 5}):
        expect = model.bridge(toks)
        export_hf(model, tmp_path / "out")
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()(toks).logits
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=0)
    with get_method("subtract")(model, ranking), pytest.raises(ToxlensError, match="hook edits"):
        export_model(model, tmp_path / "out2")


def test_select_rows_balances_and_limits() -> None:
    from toxlens.common import select_rows

    labels = [1] * 30 + [0] * 10
    rows = select_rows(labels, None, True, seed=0)
    assert sum(labels[i] for i in rows) == 10 and len(rows) == 20 and rows == sorted(rows)
    rows = select_rows(labels, 8, True, seed=0)
    assert sum(labels[i] for i in rows) == 4 and len(rows) == 8
    assert select_rows(labels, 8, True, seed=0) == rows and select_rows(labels, 8, True, seed=1) != rows
    assert select_rows(labels, None, False, seed=0) == list(range(40))
    assert len(select_rows(labels, 5, False, seed=0)) == 5


def test_parse_edit_params() -> None:
    from lens.errors import ToxlensError
    from toxlens.common import parse_edit_params

    got = parse_edit_params(["dampen.min_auroc=0.6", "surgery.layers=[1,2]", "surgery.k=4"])
    assert got == {"dampen": {"min_auroc": 0.6}, "surgery": {"layers": [1, 2], "k": 4}}
    for bad, message in (
        (["dampen.min_auroc"], "METHOD.KEY=VALUE"),
        (["nosuch.k=1"], "unknown edit method"),
        (["surgery.k=many"], "expected int"),
    ):
        with pytest.raises(ToxlensError, match=message):
            parse_edit_params(bad)
