"""``--device-map`` / ``--max-memory``: a tiny model split by accelerate over two placement groups.

This machine has no GPU, so the split is ``cpu`` + ``disk`` (accelerate's offload: the disk-placed
blocks keep their weights in an offload folder and are loaded onto the CPU when they run). That
exercises accelerate's per-module hooks under the bridge; moving activations between two *different*
accelerators is not exercised here (no second device exists).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TOXIC_WORDS, hf_model, make_tokenizer

from lens import hooks
from lens.errors import ToxlensError
from lens.loading import load_model
from lens.placement import parse_max_memory
from toxlens.cli import main

# The cap that makes accelerate put the embedding and block 0 on cpu and blocks 1-2 on disk.
CAPS = {"gpt2": "cpu=150KB", "llama": "cpu=200KB"}
PAIRS = [
    {"toxic": "you are my idiot", "benign": "you are my friend"},
    {"toxic": "what a jerk", "benign": "what a pal"},
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for kind in ("gpt2", "llama"):
        d = tmp_path_factory.mktemp(f"tiny_{kind}")
        make_tokenizer(d)
        hf_model(kind, seed=1).save_pretrained(str(d))
        out[kind] = d
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_split_model_matches_one_device_and_hooks_fire(kind: str, dirs: dict[str, Path]) -> None:
    one = load_model(str(dirs[kind]), "cpu")
    split = load_model(str(dirs[kind]), None, device_map="auto", max_memory=CAPS[kind])
    placement = split.info.device_map
    assert placement is not None and len(set(placement.values())) >= 2, placement  # (i) two groups
    assert set(placement.values()) == {"cpu", "disk"}
    assert one.info.device_map is None and split.device == torch.device("cpu")  # the embedding's device
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9]])
    calls: list[str] = []
    names = [hooks.resid_post_name(layer) for layer in range(split.n_layers)]
    names += [hooks.z_name(layer) for layer in range(split.n_layers)]
    with hooks.attach(split.bridge, [(n, lambda act, n=n: calls.append(n)) for n in names]):  # type: ignore[misc]
        got = split.bridge(tokens)
    assert sorted(calls) == sorted(names)  # (iii) every hook fired once, on cpu and on disk blocks
    want = one.bridge(tokens)
    assert (got - want).abs().max().item() <= 1e-5


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_locate_and_generate_split_equal_one_device(
    dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(dirs["gpt2"])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    words = tmp_path / "words.txt"
    words.write_text("\n".join(TOXIC_WORDS) + "\n")
    base = ["locate", "--model", model, "--pairs", str(pairs), "--toxic-words", str(words), "--no-progress"]
    split_flags = ["--device-map", "auto", "--max-memory", CAPS["gpt2"]]
    assert cli([*base, "--out", str(tmp_path / "one"), "--device", "cpu"], capsys)[0] == 0
    code, _, err = cli([*base, "--out", str(tmp_path / "split"), *split_flags], capsys)
    assert code == 0, err
    one = pd.read_csv(tmp_path / "one" / "components.csv").set_index("component")
    split = pd.read_csv(tmp_path / "split" / "components.csv").set_index("component")
    for col in ("score_activation", "score_attribution"):  # (ii)
        assert (one[col] - split.loc[one.index, col]).abs().max() <= 1e-5, col
    info = json.loads((tmp_path / "split" / "result.json").read_text())
    assert set(info["model"]["device_map"].values()) == {"cpu", "disk"}
    gen = ["generate", "--model", model, "--prompt", "you are my", "--max-new-tokens", "6", "--json"]
    code, out_one, err = cli([*gen, "--device", "cpu"], capsys)
    assert code == 0, err
    code, out_split, err = cli([*gen, *split_flags], capsys)
    assert code == 0, err
    rec_one, rec_split = json.loads(out_one), json.loads(out_split)
    assert rec_split["tokens"] == rec_one["tokens"]
    assert rec_split["settings"]["device_map"] and rec_one["settings"]["device_map"] is None
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("you are a\nwhat a\n")
    ev = ["evaluate", "--model", model, "--prompts", str(prompts), "--samples", "1", "--max-new-tokens", "3",
          "--conditions", "none", "--perplexity-text", str(prompts)]  # fmt: skip
    assert cli([*ev, "--device", "cpu", "--out", str(tmp_path / "ev_one")], capsys)[0] == 0
    code, _, err = cli([*ev, *split_flags, "--out", str(tmp_path / "ev_split")], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "ev_split" / "config.json").read_text())
    assert set(config["model"]["device_map"].values()) == {"cpu", "disk"}
    samples = [(tmp_path / d / "samples.jsonl").read_text() for d in ("ev_one", "ev_split")]
    assert samples[0] == samples[1]  # same tokens, same scores (summary.csv differs only in timings)


def test_parse_max_memory() -> None:
    assert parse_max_memory("cpu=1GB") == {"cpu": 10**9}
    assert parse_max_memory(" cpu = 1.5GiB , mps=200 ") == {"cpu": int(1.5 * 2**30), "mps": 200}
    for bad in ("", "cpu", "cpu=", "cpu=1XB", "gpu=1GB", "cpu=1GB,cpu=2GB", "cpu=1GB,", "cpu=0"):
        with pytest.raises(ToxlensError, match="--max-memory"):
            parse_max_memory(bad)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device-map", "auto", "--max-memory", "cpu:1GB"], "has no '='"),
        (["--device-map", "auto", "--max-memory", "cpu=lots"], "malformed"),
        (["--max-memory", "cpu=1GB"], "needs --device-map"),
        (["--device-map", "auto", "--device", "cpu"], "exclude each other"),
        (["--device-map", "auto", "NO_ACCELERATE"], "needs the package accelerate"),
    ],
)
def test_device_map_bad_input(
    extra: list[str],
    message: str,
    dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "NO_ACCELERATE" in extra:
        extra = [e for e in extra if e != "NO_ACCELERATE"]
        monkeypatch.setattr("lens.placement.accelerate_available", lambda: False)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(PAIRS[0]) + "\n")
    out = tmp_path / "out"
    args = ["locate", "--model", str(dirs["gpt2"]), "--pairs", str(pairs), "--out", str(out), *extra]
    code, _, err = cli(args, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    gen = ["generate", "--model", str(dirs["gpt2"]), "--prompt", "a", "--max-new-tokens", "2", *extra]
    code, _, err = cli(gen, capsys)
    assert code == 2 and message in err, err


@pytest.mark.parametrize("command", ["locate", "generate", "evaluate"])
def test_unknown_device_map_exits_2(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--device-map", "everywhere"])
    assert e.value.code == 2
    assert "--device-map" in capsys.readouterr().err
