"""`toxlens locate --workers 2` (issue 9, item 2) on a local Ray cluster and a tiny model: sharded --pairs
and --texts runs give output identical to one process, a killed worker loses nothing, bad worker flags
give one clear error and exit 2 with nothing written.

One Ray session (2 CPUs) is shared by the module; each sharded run starts its own two actors.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from test_neurons import random_texts
from tiny import TOXIC_WORDS, hf_model, make_tokenizer

from lens.errors import ToxlensError
from toxlens.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [  # four token lengths (3, 4, 5, 6), so four length groups to shard
    {"toxic": "you are my idiot", "benign": "you are my friend"},
    {"toxic": "he is a jerk and", "benign": "he is a pal and"},
    {"toxic": "what a jerk", "benign": "what a pal"},
    {"toxic": "idiot you are", "benign": "friend you are"},
    {"toxic": "she was a real jerk to me", "benign": "she was a real pal to me"},
    {"toxic": "you are an idiot", "benign": "you are an friend"},
    {"toxic": "they said you jerk", "benign": "they said you pal"},
    {"toxic": "my dog is so idiot", "benign": "my dog is so friend"},
    {"toxic": "this jerk is very red", "benign": "this pal is very red"},
]
TIMING_KEYS = {"timings", "wall_time_s", "seconds", "forward_equivalents", "workers", "argv", "versions"}


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",  # a cluster of our own, not one another process started on this machine
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ray_locate")
    model = d / "model"
    make_tokenizer(model)
    hf_model("llama", seed=3, n_layers=2).save_pretrained(str(model))
    words = d / "words.txt"
    words.write_text("\n".join(TOXIC_WORDS) + "\n")
    pairs = d / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    texts, labels = random_texts(10, seed=5)
    texts_csv = d / "texts.csv"
    with texts_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([t, "toxic" if y else "ok"] for t, y in zip(texts, labels))
    return {"model": model, "words": words, "pairs": pairs, "texts": texts_csv, "dir": d}


def pair_args(f: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["locate", "--model", str(f["model"]), "--device", "cpu", "--pairs", str(f["pairs"]),
            "--toxic-words", str(f["words"]), "--no-progress", "--out", str(out), *extra]  # fmt: skip


def text_args(f: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["locate", "--model", str(f["model"]), "--device", "cpu", "--texts", str(f["texts"]),
            "--positive-labels", "toxic", "--toxic-words", str(f["words"]), "--n-attribution", "3",
            "--batch-size", "3", "--no-progress", "--out", str(out), *extra]  # fmt: skip


def strip_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if k not in TIMING_KEYS and not k.endswith("_s")}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


def assert_same_outputs(a: Path, b: Path) -> None:
    """Every CSV byte-identical, every tensor bit-identical, every JSON equal up to timing fields."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and "figures" not in p.parts)
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and "figures" not in p.parts)
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix == ".csv":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        elif rel.suffix == ".safetensors":
            ta, tb = load_file(str(a / rel)), load_file(str(b / rel))
            assert ta.keys() == tb.keys(), rel
            for k in ta:
                x, y = ta[k], tb[k]
                if x.is_floating_point():
                    assert torch.equal(x.isnan(), y.isnan()), (rel, k)
                    x, y = x.nan_to_num(0.0), y.nan_to_num(0.0)
                assert torch.equal(x, y), (rel, k)
        elif rel.suffix == ".json":
            ja, jb = json.loads((a / rel).read_text()), json.loads((b / rel).read_text())
            assert strip_timings(ja) == strip_timings(jb), rel


def test_sharded_pairs_identical_to_one_process_with_a_killed_worker(
    ray_session: Any, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, one of them killed (``ray.kill``) as it gets shard 1 for the first time: the shard
    runs again on a fresh worker, the run records one retry, and every output equals one process's."""
    from lens.ray_pool import WorkerPool

    killed: list[int] = []

    def kill_first_run_of_item_1(actor: Any, i: int) -> None:
        if i == 1 and not killed:
            killed.append(i)
            ray_session.kill(actor)

    original = WorkerPool.map

    def map_killing_one(self: WorkerPool, fn: Any, payloads: Any, on_result: Any = None, **_: Any) -> Any:
        return original(self, fn, payloads, on_result=on_result, on_dispatch=kill_first_run_of_item_1)

    monkeypatch.setattr(WorkerPool, "map", map_killing_one)
    d = files["dir"]
    extra = ("--method", "all", "--positions", "--rank-by", "diff")
    assert main(pair_args(files, d / "pairs1", *extra)) == 0
    assert main(pair_args(files, d / "pairs2", *extra, "--workers", "2")) == 0
    assert killed == [1]
    assert_same_outputs(d / "pairs1", d / "pairs2")
    info = json.loads((d / "pairs2" / "result.json").read_text())["workers"]
    assert info["workers"] == 2 and info["shards"] == 4 and info["retried_shards"] == [1]
    assert sum(s["pairs"] for s in info["per_shard"]) == len(PAIRS)
    assert "workers" not in json.loads((d / "pairs1" / "result.json").read_text())


def test_sharded_texts_identical_to_one_process(ray_session: Any, files: dict[str, Path]) -> None:
    d = files["dir"]
    assert main(text_args(files, d / "texts1")) == 0
    assert main(text_args(files, d / "texts2", "--workers", "2")) == 0
    assert_same_outputs(d / "texts1", d / "texts2")
    info = json.loads((d / "texts2" / "result.json").read_text())["workers"]
    assert info["workers"] == 2 and info["retried_shards"] == []
    assert info["shards"] > 2 and sum(s["texts"] for s in info["per_shard"]) == 20


# -- the shard and merge logic, in this process (no Ray) ------------------------------------------------
def test_shards_merged_in_process_equal_one_run(files: dict[str, Path]) -> None:
    from lens.loading import load_model
    from lens.prompts import load_pairs
    from patching.locate import locate
    from patching.result import PatchResult
    from patching.text_stats import PooledBatch, collect_pooled
    from toxlens.common import pair_metric
    from toxlens.locate_sharded import run_shard, shard_pairs
    from toxlens.locate_texts_sharded import pool_shard, shard_batches, shard_payloads

    model = load_model(str(files["model"]), "cpu")
    pairs = load_pairs(files["pairs"], model)
    metric_args = argparse.Namespace(metric="toxic-mass", toxic_words=str(files["words"]), multi_token="skip")
    metric = pair_metric(metric_args, model, pairs)
    one = locate(model, pairs, metric, "all", 1024, False)
    shards = shard_pairs(pairs, 3)
    assert len(shards) == 3 and sorted(i for s in shards for i in s) == list(range(len(PAIRS)))
    jobs = [(m, m, "components") for m in one.results]
    outs = [run_shard((model, pairs, metric), {"indices": s, "jobs": jobs, "opts": {}}) for s in shards]
    for m, whole in one.results.items():
        merged = PatchResult.concat([o["results"][m] for o in outs], shards)
        for key in ("patched", "m_toxic", "m_benign", "mean", "ci_low", "ci_high"):
            assert torch.equal(getattr(merged, key), getattr(whole, key)), (m, key)
    with pytest.raises(ToxlensError, match="cover pairs"):
        PatchResult.concat([o["results"]["activation"] for o in outs], [shards[0], shards[0], shards[2]])

    texts, labels = random_texts(6, seed=1)
    base = torch.tensor(labels) == 0

    def in_process(
        batches: list[list[int]], ids: list[list[int]], in_base: torch.Tensor
    ) -> list[PooledBatch]:
        runs = shard_batches(batches, ids, 3)
        assert len(runs) == 3 and [b for r in runs for b in r] == list(range(len(batches)))
        return [
            p
            for pl in shard_payloads(batches, ids, in_base, runs, "max")
            for p in pool_shard(model, pl)["parts"]
        ]

    a = collect_pooled(model, texts, "max", 2, baseline=base)
    b = collect_pooled(model, texts, "max", 2, baseline=base, pooler=in_process)
    for key in ("neurons", "z", "mlp_out", "resid", "n_tokens", "baseline_neurons"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key


# -- bad inputs: one line, exit 2, nothing written ----------------------------------------------------
def one_error(code: int, err: str, needle: str, out: Path) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("toxlens: error: ") and needle in lines[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--workers", "2", "--worker-threads", "0"], "--worker-threads must be >= 1"),
        (["--ray-address", "127.0.0.1:1"], "no Ray head reachable at 127.0.0.1:1"),
        (["--workers", "2", "--ray-address", "nonsense"], "expected auto, HOST:PORT"),
    ],
)
def test_bad_worker_flags(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    for out, args in ((tmp_path / "p", pair_args), (tmp_path / "t", text_args)):
        code = main(args(files, out, *flags))
        one_error(code, capsys.readouterr().err, needle, out)


def test_ray_missing(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    for out, args in ((tmp_path / "p", pair_args), (tmp_path / "t", text_args)):
        code = main(args(files, out, "--workers", "2"))
        one_error(code, capsys.readouterr().err, "--workers 2 needs Ray, which is not installed", out)


def test_unreachable_ray_address(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    for out, args in ((tmp_path / "p", pair_args), (tmp_path / "t", text_args)):
        code = main(args(files, out, "--workers", "2", "--ray-address", "127.0.0.1:1"))
        one_error(code, capsys.readouterr().err, "no Ray head reachable at 127.0.0.1:1", out)
