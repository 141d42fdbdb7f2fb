"""Regression tests for issue 10 on `toxlens evaluate` / `toxlens generate` (tiny seeded models, no network)."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import hf_model, make_tokenizer

import lens.loading
from lens.errors import ToxlensError
from lens.textfiles import read_text_source
from toxlens.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad_eval")
    make_tokenizer(d / "model")
    hf_model("llama", seed=2, n_layers=2).save_pretrained(str(d / "model"))
    (d / "prompts.txt").write_text("you are a\nthe cat is very\n")
    (d / "neutral.txt").write_text("the sun is red\nmy friend has a car\n")
    loc = d / "loc"
    loc.mkdir()
    (loc / "components.csv").write_text("component,kind,layer,head,rank\nL1H1,head,1,1,1\nL0.mlp,mlp,0,,2\n")
    return {"root": d, "model": d / "model", "loc": loc}


@pytest.fixture()
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as loading the model."""

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(lens.loading, "load_model", refuse)


def evaluate_args(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--model",
        str(s["model"]),
        "--prompts",
        str(s["root"] / "prompts.txt"),
        "--samples",
        "2",
        "--max-new-tokens",
        "3",
        "--perplexity-text",
        str(s["root"] / "neutral.txt"),
        "--out",
        str(out),
        *extra,
    ]


def one_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("toxlens: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# -- cause 11: --seed beyond 64 bits ------------------------------------------------------------------
def test_seed_beyond_64_bits_is_refused(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    gen = ["generate", "--model", str(setup["model"]), "--prompt", "you are", "--max-new-tokens", "2"]
    one_error(capsys, main([*gen, "--seed", str(2**64)]), "--seed", str(2**64))
    one_error(capsys, main([*gen, "--seed", "-1"]), "--seed")
    # evaluate draws seed + i*K + j: the last one must fit too
    code = main(evaluate_args(setup, tmp_path / "o", "--seed", str(2**64 - 2)))
    one_error(capsys, code, "--seed")
    assert not (tmp_path / "o").exists()


# -- cause 12 (+ 5's consequence): a ranking with an empty or NaN rank --------------------------------------
@pytest.mark.parametrize("rank", ["", "nan"])
def test_components_csv_with_empty_rank_is_refused_before_loading(
    rank: str, setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    loc = tmp_path / "loc"
    loc.mkdir()
    (loc / "components.csv").write_text(f"component,kind,layer,head,rank\nL1H1,head,1,1,{rank}\n")
    code = main(evaluate_args(setup, tmp_path / "o", "--conditions", "ablate", "--ablate-from", str(loc)))
    one_error(capsys, code, "'L1H1'", "expected a number")


# -- cause 21: an unterminated CSV quote ---------------------------------------------------------------------
def test_unterminated_csv_quote_is_named(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    loc = tmp_path / "loc"
    loc.mkdir()
    (loc / "components.csv").write_text('component,kind,layer,head,rank\n"L1H1,head,1,1,1\nL0.mlp,mlp,0,,2\n')
    code = main(evaluate_args(setup, tmp_path / "o", "--conditions", "ablate", "--ablate-from", str(loc)))
    one_error(capsys, code, "line 2", "never closed")


# -- cause 20: negative / zero limits ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value"), [("--limit-prompts", "-1"), ("--limit-perplexity", "-1"), ("--limit-perplexity", "0")]
)
def test_negative_or_zero_limits_are_refused(
    flag: str,
    value: str,
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
) -> None:
    one_error(capsys, main(evaluate_args(setup, tmp_path / "o", flag, value)), flag, value)


# -- cause 22: condition names, their inputs and layers are checked before the model loads -------------------
@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--conditions", "none,ablat"], "'ablat'"),
        (["--conditions", "none,none"], "twice"),
        (["--conditions", "rollback"], "'rollback' needs --probe DIR"),
        (["--conditions", "ablate"], "'ablate' needs --ablate-from"),
        (["--conditions", "steer", "--steer-vector", "L0.mlp:1", "--steer-scale", "2"], "--steer-layer"),
        (
            [
                "--conditions",
                "steer",
                "--steer-vector",
                "L0.mlp:1",
                "--steer-scale",
                "2",
                "--steer-layer",
                "7",
            ],
            "--steer-layer (a steering layer) must be in [0, 2)",
        ),
    ],
)
def test_plan_is_checked_before_loading(
    extra: list[str],
    needle: str,
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
) -> None:
    one_error(capsys, main(evaluate_args(setup, tmp_path / "o", *extra)), needle)


# -- cause 23: --sweep-scales without --steer-layer, or with nan ---------------------------------------------
@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--sweep-scales", "0,-2"], "--sweep-scales needs --steer-layer"),
        (["--sweep-scales", "0,nan", "--steer-vector", "L0.mlp:1", "--steer-layer", "1"], "finite"),
        (["--sweep-scales", "1,inf", "--steer-vector", "L0.mlp:1", "--steer-layer", "1"], "finite"),
    ],
)
def test_sweep_scales_are_checked_before_loading(
    extra: list[str],
    needle: str,
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
) -> None:
    one_error(capsys, main(evaluate_args(setup, tmp_path / "o", *extra)), needle)


# -- cause 25: a huge steering scale overflows to NaN logits --------------------------------------------------
def test_overflowing_steer_scale_is_named(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gen = ["generate", "--model", str(setup["model"]), "--prompt", "you are", "--max-new-tokens", "2"]
    steer = ["--steer-vector", "L0.mlp:1", "--steer-layer", "1", "--steer-scale", "1e39", "--seed", "0"]
    one_error(capsys, main([*gen, *steer]), "NaN/inf logits", "steer scale 1e+39")


# -- cause 26: an unreachable datasets name fails at once, from the cache only ---------------------------------
def test_unreachable_dataset_fails_fast_from_cache_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    config = types.SimpleNamespace(HF_HUB_OFFLINE=False, HF_DATASETS_OFFLINE=False)

    def load_dataset(*args: object, **kwargs: object) -> None:
        calls.append(config.HF_HUB_OFFLINE)
        raise ConnectionError("Couldn't reach 'nosuch/dataset' on the Hub (LocalEntryNotFoundError)")

    fake = types.SimpleNamespace(load_dataset=load_dataset, config=config)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(
        lens.loading, "hub_unreachable_reason", lambda: "cannot connect to huggingface.co:443"
    )
    t0 = time.perf_counter()
    with pytest.raises(
        ToxlensError, match=r"from the local datasets cache .* and the hub is unreachable"
    ) as e:
        read_text_source("hf:nosuch/dataset:test")
    assert time.perf_counter() - t0 < 3
    assert calls == [True]  # one attempt, offline
    assert config.HF_HUB_OFFLINE is False  # restored
    assert "\n" not in str(e.value)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import toxlens

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"toxlens {toxlens.__version__}"
    assert json.dumps(toxlens.__version__)


def test_facade_exposes_the_entry_points_lazily() -> None:
    import subprocess

    code = (
        "import sys, toxlens; assert 'torch' not in sys.modules, 'import toxlens loaded torch'; "
        "from interventions.edits import ablate; from lens.probe import Probe; "
        "assert toxlens.ablate is ablate and toxlens.Probe is Probe; "
        "names = ['load_model', 'load_pairs', 'locate', 'generate', 'evaluate', 'scale', "
        "'subtract_direction', 'project_out_weights']; "
        "assert all(callable(getattr(toxlens, n)) for n in names); print(toxlens.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    import toxlens as tl

    assert set(tl.__all__) == {"__version__", *tl._EXPORTS}
    import toxlens

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = toxlens.nope  # type: ignore[attr-defined]
