"""End-to-end `toxlens locate` / `toxlens tokens` on a tiny model saved as a Hugging Face directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import BENIGN_WORDS, TOXIC_WORDS, hf_model, make_tokenizer

from toxlens.cli import main

PAIRS = [
    {"toxic": "you are my idiot", "benign": "you are my friend"},
    {"toxic": "he is a jerk and", "benign": "he is a pal and"},
    {"toxic": "what a jerk", "benign": "what a pal"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny_llama")
    make_tokenizer(d)
    hf_model("llama", seed=1).save_pretrained(str(d))
    return d


@pytest.fixture()
def words(tmp_path: Path) -> Path:
    p = tmp_path / "words.txt"
    p.write_text("# marker words\n" + "\n".join(TOXIC_WORDS) + "\n")
    return p


def write_pairs(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_locate_writes_everything(
    model_dir: Path, words: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "out"
    code, stdout, err = run(
        [
            "locate",
            "--model",
            str(model_dir),
            "--pairs",
            str(pairs),
            "--toxic-words",
            str(words),
            "--out",
            str(out),
            "--top-k",
            "5",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(out / "components.csv")
    assert list(table.columns) == [
        "component",
        "kind",
        "layer",
        "head",
        "score_activation",
        "score_attribution",
        "ci_low",
        "ci_high",
        "rank",
    ]
    n_layers, n_heads = 3, 6
    assert len(table) == n_layers * (n_heads + 1)
    assert set(table["kind"]) == {"head", "mlp"}
    assert table.loc[table["kind"] == "mlp", "head"].isna().all()
    assert sorted(table["rank"]) == list(range(1, len(table) + 1))
    assert table.sort_values("rank")["score_activation"].is_monotonic_decreasing
    assert (table["ci_low"] <= table["score_activation"] + 1e-6).all()
    info = json.loads((out / "result.json").read_text())
    assert info["model"]["architecture"] and info["counts"]["pairs"] == 3
    assert info["prepend_bos"] is False
    assert info["metric"]["name"] == "toxic_log_mass" and "logsumexp" in info["metric"]["formula"]
    assert {"activation_s", "attribution_s", "load_model_s", "total_s"} <= set(info["wall_time_s"])
    assert "torch" in info["versions"] and "transformer-lens" in info["versions"]
    assert info["m_toxic"] == pytest.approx(sum(info["m_toxic_per_pair"]) / 3)
    for name in ("heads_heatmap.html", "mlp_bar.html", "attribution_vs_activation.html"):
        assert (out / "figures" / name).is_file(), name
    assert "top 5 components" in stdout
    # only the output directory was created next to it: no staging leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pairs.jsonl", "words.txt"]


def test_locate_single_method_writes_only_its_column(
    model_dir: Path, words: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    code, _, err = run(
        [
            "locate",
            "--model",
            str(model_dir),
            "--pairs",
            str(pairs),
            "--toxic-words",
            str(words),
            "--method",
            "attribution",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "o" / "components.csv")
    assert "score_activation" not in table.columns and table["score_attribution"].notna().all()
    assert table.sort_values("rank")["score_attribution"].is_monotonic_decreasing


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([PAIRS[0], "{not json"], "line 2"),
        (
            [PAIRS[0], {"toxic": "you are my idiot", "benign": "you are"}],
            "line 2: the toxic prompt is 4 tokens and the benign prompt is 2",
        ),
        ([], "empty"),
        ([{"toxic": "you are", "kind": "x"}], "line 1"),
        (
            [{"toxic": " ".join(["the"] * 70), "benign": " ".join(["a"] * 70)}],
            "past the model's context length 64",
        ),
    ],
    ids=["malformed-json", "unequal-lengths", "empty", "missing-field", "past-context"],
)
def test_locate_bad_pairs(
    rows: list[object],
    needle: str,
    model_dir: Path,
    words: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "" if not rows else "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    )
    out = tmp_path / "out"
    code, _stdout, err = run(
        [
            "locate",
            "--model",
            str(model_dir),
            "--pairs",
            str(pairs),
            "--toxic-words",
            str(words),
            "--out",
            str(out),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2
    assert needle in err and err.startswith("toxlens: error:") and err.count("\n") == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl", "words.txt"]


def test_locate_unknown_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    code, _, err = run(
        [
            "locate",
            "--model",
            "no-such-org/no-such-model",
            "--pairs",
            str(pairs),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2
    assert "no-such-org/no-such-model" in err and "offline options" in err
    assert not (tmp_path / "out").exists()


def test_locate_missing_files(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        [
            "locate",
            "--model",
            str(model_dir),
            "--pairs",
            str(tmp_path / "nope.jsonl"),
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2 and "nope.jsonl" in err and "does not exist" in err
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    code, _, err = run(
        [
            "locate",
            "--model",
            str(model_dir),
            "--pairs",
            str(pairs),
            "--toxic-words",
            str(tmp_path / "nowords.txt"),
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2 and "nowords.txt" in err
    assert not (tmp_path / "out").exists()


def test_locate_refuses_existing_output(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(
        ["locate", "--model", str(model_dir), "--pairs", str(pairs), "--out", str(out)], capsys
    )
    assert code == 2 and "already exists" in err
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_tokens_lists_token_set(model_dir: Path, words: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["tokens", "--model", str(model_dir), "--toxic-words", str(words), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert sorted(w for t in data["tokens"] for w in t["words"]) == sorted(TOXIC_WORDS)
    assert not set(BENIGN_WORDS) & {t["text"].strip() for t in data["tokens"]}
    code, out, _ = run(["tokens", "--model", str(model_dir), "--toxic-words", str(words)], capsys)
    assert code == 0 and "idiot" in out


def test_locate_all_methods_records_agreement_and_cost(
    model_dir: Path, words: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "o"
    args = ["locate", "--model", str(model_dir), "--pairs", str(pairs), "--toxic-words", str(words)]
    code, stdout, err = run(
        [
            *args,
            "--method",
            "ig,relp,activation,attribution",
            "--ig-steps",
            "3",
            "--out",
            str(out),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(out / "components.csv")
    scores = ["score_activation", "score_attribution", "score_relp", "score_ig"]
    assert [c for c in table.columns if c.startswith("score_")] == scores  # registry order
    assert table[scores].notna().all().all()
    info = json.loads((out / "result.json").read_text())
    assert info["methods"] == ["activation", "attribution", "relp", "ig"]
    assert info["method_settings"]["ig"]["steps"] == 3 and info["method_settings"]["ig"]["mode"] == "inputs"
    assert info["method_settings"]["relp"]["ah_rule"] is False
    agreement = info["agreement_with_activation"]
    assert set(agreement) == {"attribution", "relp", "ig"}
    for method, stats in agreement.items():
        for part, n in (("heads", 18), ("mlps", 3), ("all", 21)):
            assert stats[part]["n"] == n
            # Recomputed by hand from the written table.
            sub = table if part == "all" else table[table["kind"] == part[:-1]]
            r = float(np.corrcoef(sub["score_activation"], sub[f"score_{method}"])[0, 1])
            assert stats[part]["pearson"] == pytest.approx(r, abs=1e-6)
        assert 0 <= stats["all"]["top10_overlap"] <= 1
        assert stats["cost"]["forward_equivalents"] > 0
    assert info["pearson_r_heads"] == pytest.approx(agreement["attribution"]["heads"]["pearson"])
    for name in ("attribution_vs_activation", "relp_vs_activation", "ig_vs_activation", "agreement"):
        assert (out / "figures" / f"{name}.html").is_file(), name
    for method in ("relp", "ig"):
        assert (out / method / "result.safetensors").is_file()
        assert f"{method} vs activation Pearson r" in stdout


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--method", "activation,lrp"], "unknown method 'lrp'"),
        (["--method", "activation,,ig"], "empty entry"),
        (["--method", "ig", "--ig-steps", "0"], "--ig-steps must be >= 1, got 0"),
    ],
)
def test_locate_bad_method_options(
    model_dir: Path,
    words: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    args = ["locate", "--model", str(model_dir), "--pairs", str(pairs), "--toxic-words", str(words)]
    code, _, err = run([*args, *extra, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and needle in err
    assert not (tmp_path / "o").exists()
