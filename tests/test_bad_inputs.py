"""Regression tests for issue 10: bad or awkward input gives one clear line, exit 2, and nothing written.

Every test runs on tiny seeded models saved as Hugging Face directories (nothing downloads).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TOXIC_WORDS, hf_model, make_tokenizer, tiny, vocab_size

from lens.errors import ToxlensError
from lens.io import MARKER, check_output_dir, json_safe
from lens.loading import check_model_spec
from lens.metrics import ToxicLogMass
from lens.prompts import load_pairs
from lens.textfiles import read_prompts
from lens.tokens import read_words
from patching.locate import locate
from toxlens.cli import main

PAIRS = [
    {"toxic": "you are my idiot", "benign": "you are my friend"},
    {"toxic": "he is a jerk and", "benign": "he is a pal and"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad_inputs") / "model"
    make_tokenizer(d)
    hf_model("llama", seed=1, n_layers=2).save_pretrained(str(d))
    return d


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    words = tmp_path / "words.txt"
    words.write_text("\n".join(TOXIC_WORDS) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    return {"words": words, "pairs": pairs}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def locate_args(model: Path | str, inp: dict[str, Path], out: Path | str) -> list[str]:
    m = ["--model", str(model), "--pairs", str(inp["pairs"]), "--toxic-words", str(inp["words"])]
    return ["locate", *m, "--method", "attribution", "--no-progress", "--out", str(out)]


def one_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("toxlens: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# -- cause 1: --overwrite deletes unrelated files -------------------------------------------------------
def test_overwrite_refuses_directory_not_written_by_toxlens(
    model_dir: Path, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    code, _, err = run([*locate_args(model_dir, inputs, out), "--overwrite"], capsys)
    one_error(code, err, "not written by toxlens", MARKER)
    assert (out / "thesis.tex").read_text() == "precious"


def test_overwrite_replaces_toxlens_output_and_keeps_normal_permissions(
    model_dir: Path, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run(locate_args(model_dir, inputs, out), capsys)[0] == 0
    assert (out / MARKER).is_file()
    # cause 27: output directories respect the umask (were 0700)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()
    code, _, err = run([*locate_args(model_dir, inputs, out), "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run")) == []


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# -- cause 2: --out pointing at an input ----------------------------------------------------------------
def test_out_that_is_or_contains_an_input_is_refused(
    model_dir: Path, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / MARKER).write_text("")  # even a marked directory is refused when it holds an input
    code, _, err = run([*locate_args(model_dir, inputs, tmp_path), "--overwrite"], capsys)
    one_error(code, err, "is or contains the input")
    assert inputs["pairs"].is_file()
    code, _, err = run([*locate_args(model_dir, inputs, model_dir), "--overwrite"], capsys)
    one_error(code, err)
    assert (model_dir / "config.json").is_file()


# -- cause 3: --out . with --overwrite --------------------------------------------------------------------
def test_out_dot_is_refused_and_leaves_nothing(
    model_dir: Path,
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", ".."):
        code, _, err = run([*locate_args(model_dir, inputs, out), "--overwrite"], capsys)
        one_error(code, err, "current directory")
    assert list(work.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name or ".partial-" in p.name]


# -- cause 4: a pair whose two prompts are the same text --------------------------------------------------
def test_identical_pair_is_refused_before_the_model_loads(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs["pairs"].write_text(json.dumps({"toxic": "you are my pal", "benign": "you are my pal"}) + "\n")
    # the model path does not exist: the pairs are checked first
    code, _, err = run(locate_args(tmp_path / "no-model", inputs, tmp_path / "out"), capsys)
    one_error(code, err, "line 1", "same text")
    args = locate_args(tmp_path / "no-model", inputs, tmp_path / "out")
    inputs["pairs"].write_text(
        json.dumps({"toxic": "a idiot", "benign": "a pal", "toxic_target": "x", "benign_target": "x"}) + "\n"
    )
    code, _, err = run([*args, "--metric", "logit-diff"], capsys)
    one_error(code, err, "line 1", "both 'x'")
    assert not (tmp_path / "out").exists()


# -- cause 5: m(toxic) == m(benign) for every pair ------------------------------------------------------------
def test_zero_denominator_is_a_clear_error(tmp_path: Path) -> None:
    model, _ = tiny("llama", tmp_path, seed=3, n_layers=2)
    pairs_file = tmp_path / "p.jsonl"
    pairs_file.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    pairs = load_pairs(pairs_file, model)
    everything = ToxicLogMass(list(range(vocab_size())))  # log of total mass: 0 for every prompt
    with pytest.raises(ToxlensError, match="divide by zero"):
        locate(model, pairs, everything, "attribution")


def test_result_json_is_strict_json(
    model_dir: Path, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert json_safe({"a": [float("nan"), 1.0, float("-inf")]}) == {"a": [None, 1.0, None]}
    out = tmp_path / "out"
    assert run(locate_args(model_dir, inputs, out), capsys)[0] == 0

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in result.json")

    for path in (out / "result.json", out / "attribution" / "result.json"):
        json.loads(path.read_text(), parse_constant=refuse)


# -- cause 6: a .gguf path that is a text file; an existing file that is not a model ------------------------
@pytest.mark.parametrize("name", ["x.gguf", "FAKE.GGUF"])
def test_gguf_that_is_text_is_one_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / name
    fake.write_text("hello\n")
    code, _, err = run(["tokens", "--model", fake], capsys)
    one_error(code, err, "not a GGUF file")


def test_existing_non_model_file_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "ok.csv"
    f.write_text("a,b\n")
    code, _, err = run(["tokens", "--model", f], capsys)
    one_error(code, err, "is a file but not a .gguf model")


# -- cause 7: incomplete or broken model directories --------------------------------------------------------
@pytest.mark.parametrize("damage", ["config_only", "truncated_weights", "broken_config", "no_tokenizer"])
def test_broken_model_directory_is_one_line(
    damage: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "m"
    d.mkdir()
    for f in model_dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    if damage == "config_only":
        for f in d.iterdir():
            if f.name != "config.json":
                f.unlink()
        needle = "holds no weights"
    elif damage == "truncated_weights":
        w = d / "model.safetensors"
        w.write_bytes(w.read_bytes()[:1000])
        needle = "could not be loaded"
    elif damage == "broken_config":
        (d / "config.json").write_text('{"model_type": "llama",')
        needle = "config.json is not valid JSON"
    else:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (d / name).unlink(missing_ok=True)
        needle = "holds no tokenizer"
    code, _, err = run(["tokens", "--model", d], capsys)
    one_error(code, err, needle)


# -- cause 8: --device cuda on a CPU-only torch ----------------------------------------------------------
def test_cuda_without_cuda_is_one_line(
    model_dir: Path, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = run([*locate_args(model_dir, inputs, tmp_path / "o"), "--device", "cuda"], capsys)
    one_error(code, err, "'cuda'", "no usable CUDA")


# -- cause 10 (+ part of 16): non-UTF-8 or directory --toxic-words ----------------------------------------------
def test_toxic_words_not_utf8_or_a_directory(
    model_dir: Path, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs["words"].write_bytes(b"idiot\n\xff\xfejerk\n")
    code, _, err = run(locate_args(model_dir, inputs, tmp_path / "o"), capsys)
    one_error(code, err, "toxic word file", "not valid UTF-8")
    inputs["words"] = tmp_path
    code, _, err = run(locate_args(model_dir, inputs, tmp_path / "o"), capsys)
    one_error(code, err, "is a directory")
    assert not (tmp_path / "o").exists()


# -- cause 13: a non-string toxic_target ---------------------------------------------------------------------
def test_non_string_target_is_refused(
    model_dir: Path, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = {"toxic": "a idiot", "benign": "a pal", "toxic_target": 7, "benign_target": "pal"}
    inputs["pairs"].write_text(json.dumps(row) + "\n")
    code, _, err = run([*locate_args(model_dir, inputs, tmp_path / "o"), "--metric", "logit-diff"], capsys)
    one_error(code, err, "line 1", "'toxic_target' must be a non-empty string")


# -- cause 14: an unwritable --out is refused before any work ------------------------------------------------
def test_out_under_a_file_is_refused_before_loading(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    # a model that does not exist: the output is checked before the model is looked at
    code, _, err = run(locate_args(tmp_path / "missing-model", inputs, blocker / "sub" / "out"), capsys)
    one_error(code, err, "cannot be created", "is a file")


def test_out_on_a_read_only_parent_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda *_a, **_k: False)  # what a read-only mount reports
    with pytest.raises(ToxlensError, match="not writable"):
        check_output_dir(tmp_path / "new")


# -- cause 15: hub names with a dot ------------------------------------------------------------------------------
def test_dotted_hub_names_are_hub_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("EleutherAI/pythia-70m-v1.5", "Qwen/Qwen2.5-0.5B", "toxlens-test/no-such-model-v1.5"):
        assert check_model_spec(name) == "hub"
    for path in ("./missing.gguf", "/no/such/dir", "a/b/c", "https://huggingface.co/gpt2"):
        with pytest.raises(ToxlensError, match="does not exist"):
            check_model_spec(path)
    with pytest.raises(ToxlensError, match="--model is empty"):
        check_model_spec("")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(["tokens", "--model", "toxlens-test/no-such-model-v1.5"], capsys)
    one_error(code, err, "not in the local Hugging Face cache")


# -- cause 18: UTF-8 byte-order marks ----------------------------------------------------------------------
def test_byte_order_mark_is_dropped(model_dir: Path, tmp_path: Path) -> None:
    words = tmp_path / "w.txt"
    words.write_bytes(b"\xef\xbb\xbfidiot\njerk\n")
    assert read_words(words) == ["idiot", "jerk"]
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(b"\xef\xbb\xbfyou are\nthe cat\n")
    assert read_prompts(prompts) == ["you are", "the cat"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "you are"}).encode() + b"\n")
    assert read_prompts(jsonl) == ["you are"]


# -- cause 19: U+2028 inside a JSONL string ---------------------------------------------------------------------
def test_pairs_jsonl_is_split_on_newline_only(tmp_path: Path) -> None:
    model, _ = tiny("gpt2", tmp_path, seed=0, n_layers=1)
    p = tmp_path / "pairs.jsonl"
    row = {"toxic": "you are\u2028my idiot", "benign": "you are\u2028my friend"}
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(row, ensure_ascii=False).encode() + b"\n")
    pairs = load_pairs(p, model)
    assert len(pairs) == 1 and pairs.pairs[0].toxic == row["toxic"]


# -- cause 24: SIGTERM while writing leaves nothing behind ---------------------------------------------------
def test_sigterm_while_writing_leaves_no_partial_directory(
    model_dir: Path,
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import figures.render

    def killed(*_a: object, **_k: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(figures.render, "render", killed)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    code, _, err = run(locate_args(model_dir, inputs, out), capsys)
    assert code == 130, err
    assert "nothing was written" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert signal.getsignal(signal.SIGTERM) == before
