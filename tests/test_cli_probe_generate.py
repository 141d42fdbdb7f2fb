"""End-to-end `toxlens probe train` and `toxlens generate` on a tiny Llama saved as a HF directory."""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import BENIGN_WORDS, TOXIC_WORDS, WORDS, hf_model, make_tokenizer

from interventions.steering import save_vector
from lens.loading import load_model
from lens.probe import Probe, collect_residuals, load_labelled, train_probe
from toxlens.cli import main

FILLER = [w for w in WORDS if w not in TOXIC_WORDS + BENIGN_WORDS][:8]
PROBE_JSON_KEYS = {
    "format_version",
    "layer",
    "hook",
    "pooling",
    "bias",
    "accuracy",
    "auc",
    "n_train",
    "n_test",
    "data_hash",
    "data_sha256",
    "spec",
    "model",
    "data",
    "text_col",
    "label_col",
    "positive_labels",
    "negative_labels",
    "limit",
    "balance",
    "counts",
    "C",
    "seed",
    "test_fraction",
    "prepend_bos",
}
GENERATION_KEYS = {
    "prompt",
    "prompt_tokens",
    "text",
    "tokens",
    "token_texts",
    "scores",
    "rollbacks",
    "forward_tokens",
    "recomputed",
    "finish_reason",
    "seed",
    "threshold",
    "safe_threshold",
    "settings",
}


def texts_and_labels(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Filler sentences with one marker word planted; label 1 iff the text contains a toxic marker."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(3, 7))
        words.insert(rng.randint(0, len(words)), rng.choice(TOXIC_WORDS if i % 3 == 0 else BENIGN_WORDS))
        rows.append((" ".join(words), int(any(w in TOXIC_WORDS for w in words))))
    return rows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny_llama")
    make_tokenizer(d)
    hf_model("llama", seed=1).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("data") / "labelled.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "tweet", "class"])
        for i, (text, label) in enumerate(texts_and_labels(90)):
            w.writerow([i, text, "toxic" if label else "ok"])
    return p


@pytest.fixture(scope="module")
def probe_dir(model_dir: Path, data_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probes") / "probe"
    code = main(train_args(model_dir, data_csv, out, "--all-layers", "--pooling", "mean"))
    assert code == 0
    return out


@pytest.fixture(scope="module")
def monitor_dir(model_dir: Path, data_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A probe trained with no optional flag: the default MIL token monitor at the default layer."""
    out = tmp_path_factory.mktemp("probes") / "monitor"
    assert main(train_args(model_dir, data_csv, out)) == 0
    return out


def train_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "probe",
        "train",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--text-col",
        "tweet",
        "--label-col",
        "class",
        "--positive-labels",
        "toxic",
        "--out",
        str(out),
        *extra,
    ]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> None:
    assert code == 2
    assert err.startswith("toxlens: error:") and err.count("\n") == 1, err


# -- probe train ------------------------------------------------------------------------------
def test_probe_train_one_layer(
    model_dir: Path, data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "probe"
    code, stdout, err = run(train_args(model_dir, data_csv, out, "--layer", "1", "--pooling", "mean"), capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.name != ".toxlens-output") == [
        "probe.json",
        "probe.safetensors",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe"]  # no staging leftovers
    meta = json.loads((out / "probe.json").read_text())
    assert set(meta) >= PROBE_JSON_KEYS
    assert meta["layer"] == 1 and meta["hook"] == "resid_post" and meta["pooling"] == "mean"
    assert meta["spec"] == str(model_dir) and meta["model"]["n_layers"] == 3
    assert meta["data"] == str(data_csv) and meta["text_col"] == "tweet" and meta["label_col"] == "class"
    assert meta["positive_labels"] == ["toxic"] and meta["limit"] is None and meta["balance"] is False
    assert meta["counts"] == {
        "rows_read": 90,
        "positive_read": 30,
        "negative_read": 60,
        "used": 90,
        "positive": 30,
        "negative": 60,
    }
    assert meta["n_train"] + meta["n_test"] == 90
    assert 0 <= meta["accuracy"] <= 1 and 0 <= meta["auc"] <= 1
    assert "layer 1" in stdout and f"{meta['accuracy']:.4f}" in stdout and f"{meta['auc']:.4f}" in stdout

    # the saved probe is the library's probe, and scores exactly as the one trained in memory
    model = load_model(str(model_dir), "cpu")
    texts, labels = load_labelled(data_csv, "tweet", "class", ["toxic"])
    mem = train_probe(model, texts, labels, 1, positive_labels=["toxic"])
    loaded = Probe.load(out)
    assert loaded.metadata["data_hash"] == mem.metadata["data_hash"]
    assert loaded.metadata["auc"] == mem.metadata["auc"]
    feats = collect_residuals(model, texts, [1])[1]
    for name in ("weight", "mean", "std"):
        assert torch.equal(getattr(loaded, name), getattr(mem, name)), name
    assert loaded.bias == mem.bias and (loaded.layer, loaded.hook, loaded.pooling) == (
        1,
        "resid_post",
        "mean",
    )
    # equal parameters; the scores may differ in the last bit (a memory-mapped tensor's alignment can
    # change the summation order of the dot product)
    torch.testing.assert_close(loaded.score(feats), mem.score(feats), atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded.direction, mem.direction, atol=1e-7, rtol=0)


def test_probe_train_jsonl_limit_balance(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"sentence": t, "y": lab}) + "\n" for t, lab in texts_and_labels(80, seed=3))
    )
    out = tmp_path / "probe"
    args = [
        "probe",
        "train",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--text-col",
        "sentence",
        "--label-col",
        "y",
        "--positive-labels",
        "1",
        "--negative-labels",
        "0",
        "--limit",
        "60",
        "--balance",
        "--pooling",
        "last",
        "--hook",
        "resid_pre",
        "--layer",
        "2",
        "--seed",
        "5",
        "--out",
        str(out),
    ]
    code, _, err = run(args, capsys)
    assert code == 0, err
    meta = json.loads((out / "probe.json").read_text())
    assert meta["limit"] == 60 and meta["balance"] is True and meta["seed"] == 5
    assert meta["pooling"] == "last" and meta["hook"] == "resid_pre" and meta["layer"] == 2
    assert meta["negative_labels"] == ["0"] and meta["positive_labels"] == ["1"]
    c = meta["counts"]
    assert c["rows_read"] == 60 and c["positive_read"] == 20 and c["negative_read"] == 40
    assert c["positive"] == c["negative"] == 20 and c["used"] == 40
    assert meta["n_train"] + meta["n_test"] == 40


def test_probe_train_all_layers_keeps_best(probe_dir: Path) -> None:
    assert sorted(p.name for p in probe_dir.iterdir() if p.name != ".toxlens-output") == [
        "layers.csv",
        "probe.json",
        "probe.safetensors",
    ]
    with (probe_dir / "layers.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["layer", "accuracy", "auc", "n_train", "n_test"]
    assert [int(r["layer"]) for r in rows] == [0, 1, 2]
    meta = json.loads((probe_dir / "probe.json").read_text())
    best = max(rows, key=lambda r: (float(r["auc"]), float(r["accuracy"]), -int(r["layer"])))
    assert meta["layer"] == int(best["layer"]) and meta["auc"] == float(best["auc"])
    assert meta["all_layers"] is True and len(meta["layers"]) == 3


def test_probe_train_all_layers_prints_table(
    model_dir: Path, data_csv: Path, probe_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = train_args(model_dir, data_csv, tmp_path / "p", "--all-layers", "--pooling", "mean")
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "<- best" in stdout and stdout.count("\n") >= 5
    # same flags, same data: the same probe as the module fixture's
    assert (tmp_path / "p" / "layers.csv").read_text() == (probe_dir / "layers.csv").read_text()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"--data": "MISSING"}, "does not exist"),
        ({"--text-col": "text"}, "missing column"),
        ({"--positive-labels": "nope"}, "need at least 2 of each class"),
        ({"--layer": "7"}, "--layer 7 is out of range"),
        ({"--layer": "1", "--all-layers": None}, "exclude each other"),
        ({"--test-fraction": "1.5"}, "--test-fraction"),
        ({"--hook": "resid_mid"}, "unknown --hook"),
        ({"EXISTING": None}, "already exists"),
    ],
    ids=[
        "missing-file",
        "missing-column",
        "single-class",
        "layer-range",
        "layer-and-all",
        "test-fraction",
        "unknown-hook",
        "existing-out",
    ],
)
def test_probe_train_bad_input(
    change: dict[str, str | None],
    needle: str,
    model_dir: Path,
    data_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    if "EXISTING" in change:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    data = tmp_path / "nope.csv" if change.get("--data") == "MISSING" else data_csv
    args = train_args(model_dir, data, out)
    for flag, value in change.items():
        if flag in ("--data", "EXISTING"):
            continue
        if flag in args:
            args[args.index(flag) + 1] = str(value)
        else:
            args += [flag] if value is None else [flag, value]
    if "--layer" not in args and "--all-layers" not in args:
        args += ["--layer", "0"]
    code, stdout, err = run(args, capsys)
    one_line_error(code, err)
    assert needle in err and stdout == ""
    if "EXISTING" in change:
        assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    else:
        assert not out.exists() and list(tmp_path.iterdir()) == []


# -- generate ---------------------------------------------------------------------------------
def gen_args(
    model_dir: Path, *extra: str, seed: int = 0, prompts: tuple[str, ...] = ("you are my",)
) -> list[str]:
    args = ["generate", "--model", str(model_dir), "--max-new-tokens", "8", "--seed", str(seed), "--json"]
    for p in prompts:
        args += ["--prompt", p]
    return args + list(extra)


def generate_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    return [json.loads(line) for line in stdout.splitlines()]


def test_generate_json_deterministic(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(gen_args(model_dir, "--ignore-eos"), capsys)
    assert code == 0, err
    rec = json.loads(stdout)  # exactly one JSON object
    assert set(rec) >= GENERATION_KEYS
    assert len(rec["tokens"]) == 8 and len(rec["token_texts"]) == 8 and rec["finish_reason"] == "length"
    assert rec["scores"] == [] and rec["rollbacks"] == [] and rec["threshold"] is None
    assert rec["forward_tokens"] == len(rec["prompt_tokens"]) + 8 - 1  # the last token is never fed
    s = rec["settings"]
    assert s["seed"] == 0 and s["max_new_tokens"] == 8 and s["stop_at_eos"] is False
    assert s["sampling"] == {"temperature": 1.0, "top_k": None, "top_p": None, "greedy": False}
    again = generate_json(gen_args(model_dir, "--ignore-eos"), capsys)
    assert again == [rec]
    other = generate_json(gen_args(model_dir, "--ignore-eos", seed=1), capsys)[0]
    assert other["tokens"] != rec["tokens"]
    greedy = generate_json(gen_args(model_dir, "--ignore-eos", "--greedy"), capsys)[0]
    assert (
        generate_json(gen_args(model_dir, "--ignore-eos", "--greedy", seed=7), capsys)[0]["tokens"]
        == (greedy["tokens"])
    )


def test_generate_several_prompts_jsonl(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = ("you are my", "the cat is", "what a")
    code, stdout, err = run(gen_args(model_dir, "--batch-size", "2", prompts=prompts, seed=3), capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    assert len(lines) == 3
    recs = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in recs] == list(prompts) and [r["seed"] for r in recs] == [3, 4, 5]
    # prompt i with --seed S in a batch == prompt i alone with --seed S+i
    alone = generate_json(gen_args(model_dir, prompts=(prompts[1],), seed=4), capsys)[0]
    assert alone["tokens"] == recs[1]["tokens"]


def test_generate_text_output(model_dir: Path, probe_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in gen_args(model_dir, "--probe", str(probe_dir)) if a != "--json"]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "prompt: 'you are my'" in stdout and "continuation:" in stdout
    assert "rollbacks:" in stdout and "forward_tokens" in stdout and "probe scores" in stdout


def test_generate_with_probe_rollback_accounting(
    model_dir: Path, monitor_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = ("you are my", "the cat is", "what a")
    extra = ["--probe", str(monitor_dir), "--threshold", "0.3", "--safe-threshold", "0.2", "--on-budget"]
    extra += ["continue", "--ignore-eos", "--max-new-tokens", "12"]
    recs = generate_json(gen_args(model_dir, *extra, prompts=prompts), capsys)
    assert len(recs) == 3
    for rec in recs:
        assert len(rec["scores"]) == len(rec["tokens"]) == len(rec["token_texts"])
        assert rec["threshold"] == 0.3 and rec["safe_threshold"] == 0.2
        assert rec["finish_reason"] == "length" and len(rec["tokens"]) == 12
        assert rec["forward_tokens"] == len(rec["prompt_tokens"]) + len(rec["tokens"]) + rec["recomputed"]
        for rb in rec["rollbacks"]:
            assert set(rb) >= {"at", "to", "discarded"} and rb["discarded"] == rb["at"] + 1 - rb["to"]
        s = rec["settings"]
        assert s["policy"]["on_budget"] == "continue" and s["policy"]["forbid_token"] is True
        assert s["probe"]["layer"] == json.loads((monitor_dir / "probe.json").read_text())["layer"]
    assert sum(len(r["rollbacks"]) for r in recs) > 0  # the accounting was exercised with rollbacks
    # scores only (no --threshold): recorded, never acted on
    plain = generate_json(gen_args(model_dir, "--probe", str(monitor_dir), "--ignore-eos"), capsys)[0]
    assert len(plain["scores"]) == len(plain["tokens"]) and plain["rollbacks"] == []
    assert plain["settings"]["policy"] is None


def test_generate_steering(
    model_dir: Path, probe_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = generate_json(gen_args(model_dir, "--ignore-eos"), capsys)[0]
    vec = save_vector(torch.randn(48, generator=torch.Generator().manual_seed(0)), tmp_path / "v.safetensors")
    for source in (str(vec), "probe", "L1.mlp:3"):
        extra = ["--steer-vector", source, "--steer-layer", "1", "--steer-scale", "8", "--ignore-eos"]
        extra += ["--probe", str(probe_dir)] if source == "probe" else []
        rec = generate_json(gen_args(model_dir, *extra), capsys)[0]
        steer = rec["settings"]["steer"]
        assert steer["vector"] == source and steer["layer"] == 1 and steer["scale"] == 8.0
        assert steer["positions"] == "all" and steer["site"] == "resid_pre"
        assert rec["tokens"] != base["tokens"], source


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--steer-vector", "probe", "--steer-layer", "1"], "needs --probe"),
        (["--steer-vector", "WRONG_SIZE", "--steer-layer", "1"], "shape (48,)"),
        (["--steer-vector", "nope.safetensors", "--steer-layer", "1"], "does not exist"),
        (["--steer-vector", "sideways", "--steer-layer", "1"], "unknown --steer-vector"),
        (["--steer-vector", "L1.mlp:3"], "needs --steer-layer"),
        (["--steer-vector", "L1.mlp:3", "--steer-layer", "9"], "steering layer"),
        (["--steer-scale", "2"], "only apply with --steer-vector"),
        (["--threshold", "0.5"], "needs --probe"),
        (["--budget", "2"], "only apply with --threshold"),
        (["--probe", "NOPROBE"], "holds no saved probe"),
        (["--top-p", "2"], "top_p"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
    ],
    ids=[
        "probe-vector-without-probe",
        "wrong-size",
        "missing-file",
        "unknown-vector",
        "no-steer-layer",
        "steer-layer-range",
        "steer-flag-alone",
        "threshold-without-probe",
        "rollback-flag-alone",
        "missing-probe",
        "bad-top-p",
        "zero-tokens",
    ],
)
def test_generate_bad_input(
    extra: list[str], needle: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "WRONG_SIZE" in extra:
        extra[extra.index("WRONG_SIZE")] = str(save_vector(torch.ones(7), tmp_path / "small.safetensors"))
    extra = [str(tmp_path / "nope") if a == "NOPROBE" else a for a in extra]
    code, stdout, err = run(gen_args(model_dir, *extra), capsys)
    one_line_error(code, err)
    assert needle in err and stdout == ""


# -- a monitor in two flags, and what refuses to be one ----------------------------------------
def test_probe_train_defaults_give_a_mil_monitor(
    model_dir: Path, monitor_dir: Path, data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = json.loads((monitor_dir / "probe.json").read_text())
    assert meta["pooling"] == "max" and meta["monitor"] is True and meta["monitor_reason"] is None
    assert meta["aggregation"] == "max" and "text-level only" in meta["labels"]
    assert meta["layer"] == 2  # round(0.6 * 3 layers)
    assert set(meta["defaults_applied"]) == {"layer", "limit", "balance"}
    assert meta["limit"] == 4000 and meta["balance"] is True
    assert meta["counts"]["positive"] == meta["counts"]["negative"] == 30
    assert meta["C"] == 1.0 and meta["steps"] == 300 and meta["seed"] == 0 and meta["max_tokens"] == 64
    assert set(meta["token_eval"]) >= {"thresholds", "token_fire_rate_nontoxic_texts", "text_recall"}
    # an explicit flag is not a default, and is recorded as given
    code, stdout, err = run(
        train_args(model_dir, data_csv, tmp_path / "p", "--layer", "2", "--no-balance"), capsys
    )
    assert code == 0, err
    meta2 = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert meta2["layer"] == 2 and meta2["balance"] is False and set(meta2["defaults_applied"]) == {"limit"}
    assert "defaults: limit=4000" in stdout


def test_generate_threshold_alone_derives_safe_threshold_and_seed(
    model_dir: Path, monitor_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["generate", "--model", str(model_dir), "--prompt", "you are my", "--max-new-tokens", "6"]
    args += ["--probe", str(monitor_dir), "--threshold", "0.2", "--json"]
    rec = generate_json(args, capsys)[0]
    assert rec["threshold"] == 0.2 and rec["safe_threshold"] == 0.1
    assert rec["seed"] == 0 and rec["settings"]["seed"] == 0
    assert generate_json([*args, "--seed", "0"], capsys) == [rec]


def test_text_probe_is_refused_as_monitor(
    model_dir: Path, probe_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = json.loads((probe_dir / "probe.json").read_text())
    assert meta["monitor"] is False and "text classifier" in meta["monitor_reason"]
    code, stdout, err = run(gen_args(model_dir, "--probe", str(probe_dir), "--threshold", "0.3"), capsys)
    one_line_error(code, err)
    assert "cannot monitor" in err and "pooling=mean" in err and stdout == ""
    # scores only, or its direction as a steering vector: still fine
    assert run(gen_args(model_dir, "--probe", str(probe_dir)), capsys)[0] == 0
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("you are a\n")
    out = tmp_path / "ev"
    ev = ["evaluate", "--model", str(model_dir), "--prompts", str(prompts), "--samples", "1"]
    ev += [
        "--conditions",
        "none,rollback",
        "--probe",
        str(probe_dir),
        "--threshold",
        "0.3",
        "--out",
        str(out),
    ]
    code, stdout, err = run(ev, capsys)
    one_line_error(code, err)
    assert "cannot monitor" in err and not out.exists()


def test_evaluate_rollback_with_the_default_monitor(
    model_dir: Path, monitor_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("you are a\nthe cat is\n")
    out = tmp_path / "ev"
    ev = ["evaluate", "--model", str(model_dir), "--prompts", str(prompts), "--samples", "2"]
    ev += ["--max-new-tokens", "4", "--conditions", "none,rollback", "--probe", str(monitor_dir)]
    ev += ["--threshold", "0.3", "--out", str(out)]
    code, _, err = run(ev, capsys)
    assert code == 0, err
    rb = json.loads((out / "config.json").read_text())["conditions"]["rollback"]
    assert rb["threshold"] == 0.3 and rb["safe_threshold"] == 0.15  # derived: half the threshold


def _break_probe(src: Path, dst: Path, how: str) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    st, js = dst / "probe.safetensors", dst / "probe.json"
    if how == "truncated-safetensors":
        st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    elif how == "broken-json":
        js.write_text(js.read_text()[:-20])
    elif how == "missing-tensor":
        t = load_file(str(st))
        del t["std"]
        save_file(t, str(st))
    elif how == "json-list":
        js.write_text("[1, 2]")
    elif how == "bad-hook":
        meta = json.loads(js.read_text())
        meta["hook"] = "resid_mid"
        js.write_text(json.dumps(meta))
    return dst


BAD_PROBES = {
    "truncated-safetensors": "not a readable safetensors file",
    "broken-json": "not valid JSON",
    "missing-tensor": "missing tensor(s) ['std']",
    "json-list": "expected a JSON object",
    "bad-hook": "hook 'resid_mid'",
}


@pytest.mark.parametrize("how", list(BAD_PROBES))
def test_damaged_probe_one_line_for_generate_and_evaluate(
    how: str, model_dir: Path, monitor_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _break_probe(monitor_dir, tmp_path / "bad", how)
    code, stdout, err = run(gen_args(model_dir, "--probe", str(bad), "--threshold", "0.3"), capsys)
    one_line_error(code, err)
    assert BAD_PROBES[how] in err and stdout == ""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("you are a\n")
    out = tmp_path / "ev"
    ev = ["evaluate", "--model", str(model_dir), "--prompts", str(prompts), "--conditions", "rollback"]
    ev += ["--probe", str(bad), "--threshold", "0.3", "--out", str(out)]
    code, stdout, err = run(ev, capsys)
    one_line_error(code, err)
    assert BAD_PROBES[how] in err and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "prompts.txt"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"id,tweet,class\n1,caf\xe9 au lait,ok\n2,the cat,toxic\n", "is not UTF-8"),
        (b'id,tweet,class\n1,"the cat is red,ok\n2,the dog,toxic\n3,a sun,ok\n', "never closed"),
        (b"id,tweet,class\n1,the cat,ok,extra\n", "4 fields, expected 3"),
    ],
    ids=["non-utf8", "unterminated-quote", "extra-field"],
)
def test_probe_csv_bad_input(
    content: bytes,
    needle: str,
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "bad.csv"
    data.write_bytes(content)
    out = tmp_path / "out"
    code, stdout, err = run(train_args(model_dir, data, out), capsys)
    one_line_error(code, err)
    assert needle in err and f"{data}:2" in err and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_probe_csv_bom_is_dropped(tmp_path: Path) -> None:
    data = tmp_path / "bom.csv"
    data.write_bytes("\ufefftweet,class\nthe cat,1\nthe dog,0\n".encode())
    assert load_labelled(data, "tweet", "class", ["1"]) == (["the cat", "the dog"], [1, 0])


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--aggregation", "mean"], "unknown --aggregation"),
        (["--steps", "0"], "--steps"),
        (["--lr", "nan"], "--lr"),
        (["--pooling", "mean", "--aggregation", "noisy-or"], "apply to --pooling max only"),
        (["--all-layers"], "one layer at a time"),
        (["--max-tokens", "0"], "--max-tokens"),
    ],
)
def test_mil_flags_bad_input(
    extra: list[str],
    needle: str,
    model_dir: Path,
    data_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, err = run(train_args(model_dir, data_csv, tmp_path / "out", *extra), capsys)
    one_line_error(code, err)
    assert needle in err and stdout == "" and list(tmp_path.iterdir()) == []
