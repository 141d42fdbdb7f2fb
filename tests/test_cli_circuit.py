"""End-to-end ``toxlens circuit`` on a planted model saved as a Hugging Face directory: the three files,
the planted circuit's k80, and bad input refused (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from planted import PAIRS, chosen_names, planted_hf
from tiny import TOXIC_WORDS, hf_model, make_tokenizer

from patching.circuit_result import COLUMNS
from toxlens.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("circuit_cli")
    model = root / "planted"
    tok = make_tokenizer(model)
    planted_hf("gpt2", tok).save_pretrained(str(model))
    other = root / "other"
    make_tokenizer(other)
    hf_model("gpt2", seed=3, n_layers=2).save_pretrained(str(other))
    words = root / "words.txt"
    words.write_text("\n".join(TOXIC_WORDS) + "\n")
    pairs = root / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"toxic": t, "benign": b}) for t, b in PAIRS) + "\n")
    files = {"model": model, "other": other, "words": words, "pairs": pairs, "root": root}
    for name, method in (("loc", "activation"), ("loc_attr", "attribution")):
        code = main(["locate", *common(files), "--method", method, "--out", str(root / name)])
        assert code == 0
        files[name] = root / name
    return files


def common(f: dict[str, Path], model: str = "model") -> list[str]:
    return [
        "--model",
        str(f[model]),
        "--pairs",
        str(f["pairs"]),
        "--toxic-words",
        str(f["words"]),
        "--no-progress",
    ]


def circuit(
    f: dict[str, Path], out: Path, *extra: str, source: str = "loc", model: str = "model"
) -> list[str]:
    return ["circuit", *common(f, model), "--from", str(f[source]), "--out", str(out), *extra]


def test_circuit_writes_three_files(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "circ"
    code = main(circuit(setup, out, "--ks", "1,2,5", "--n-random", "6", "--seed", "2"))
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("faithfulness.csv", "result.json", "faithfulness.html"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "faithfulness.csv")
    assert list(table.columns) == COLUMNS and table["k"].tolist() == [1, 2, 5]
    info = json.loads((out / "result.json").read_text())
    assert info["k80"] is not None and info["k80"] <= 2
    assert info["random_k80"] is None or info["random_k80"] > 2
    assert set(info["top_sets"][1]["components"]) == chosen_names()
    meta = info["metadata"]
    assert (meta["ks"], meta["n_random"], meta["seed"], meta["threshold"]) == ([1, 2, 5], 6, 2, 0.8)
    assert meta["ranking_source"]["rank_from"] == "score_activation"
    assert meta["ranking_source"]["column"] == "rank" and meta["ranking_source"]["source"] == str(
        setup["loc"]
    )
    assert meta["metric"]["name"] == "toxic_log_mass" and meta["pairs"]["n_pairs"] == len(PAIRS)
    assert len(meta["pool"]) == 15
    assert "k80 =" in printed


def test_method_column_orders_the_ranking(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "circ"
    assert (
        main(
            circuit(setup, out, "--ks", "2", "--n-random", "2", "--method", "attribution", source="loc_attr")
        )
        == 0
    )
    info = json.loads((out / "result.json").read_text())
    assert info["metadata"]["ranking_source"]["column"] == "score_attribution"
    table = pd.read_csv(setup["loc_attr"] / "components.csv")
    assert info["top_sets"][0]["components"] == table.nlargest(2, "score_attribution")["component"].tolist()


@pytest.mark.parametrize(
    ("extra", "source", "model", "needle"),
    [
        ([], "root", "model", "not a locate output directory"),
        ([], "pairs", "model", "not a locate output directory"),
        ([], "loc", "other", "locate run of model"),
        (["--method", "attribution"], "loc", "model", "score_attribution"),
        (["--method", "relp"], "loc", "model", "no column 'score_relp'"),
        (["--ks", "0,2"], "loc", "model", "positive integers"),
        (["--ks", "1,x"], "loc", "model", "positive integers"),
        (["--ks", "1.5"], "loc", "model", "positive integers"),
        (["--ks", "16"], "loc", "model", "larger than"),
        (["--ks", "4", "--kind", "mlp"], "loc", "model", "larger than"),
        (["--n-random", "0"], "loc", "model", "--n-random"),
        (["--seed", "-1"], "loc", "model", "--seed"),
    ],
)
def test_bad_input_exit_2_nothing_written(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    source: str,
    model: str,
    needle: str,
) -> None:
    out = tmp_path / "circ"
    code = main(circuit(setup, out, *extra, source=source, model=model))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("toxlens: error: ") and needle in lines[0], err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".circ")]


def test_locate_run_of_a_model_with_other_shape_is_refused(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "loc"
    fake.mkdir()
    (fake / "components.csv").write_text((setup["loc"] / "components.csv").read_text())
    info = json.loads((setup["loc"] / "result.json").read_text())
    info["model"]["n_heads"] = 8
    (fake / "result.json").write_text(json.dumps(info))
    setup = {**setup, "fake": fake}
    out = tmp_path / "circ"
    code = main(circuit(setup, out, "--ks", "1", source="fake"))
    err = capsys.readouterr().err
    assert code == 2 and "n_heads = 8" in err, err
    assert not out.exists()
