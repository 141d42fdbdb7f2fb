"""`toxlens evaluate --workers 2` on a local Ray cluster: the same files as one process, no sample lost
when a worker is killed, and one clear error for every bad worker flag."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_evaluate import ALL, base
from test_cli_evaluate import setup as setup

from interventions.conditions import build_conditions
from interventions.evaluate import evaluate, make_protocol
from lens.loading import load_model
from lens.probe import Probe
from toxlens.cli import main

ray = pytest.importorskip("ray")

# timing columns: the only ones allowed to differ between runs
TIMING = ["tokens_per_second", "generation_s"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_joins_a_running_cluster(setup: dict[str, Path], tmp_path: Path) -> None:
    """--ray-address HOST:PORT joins a cluster started with `ray start --head` (stopped by its own PID)."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    ray_cli = Path(sys.executable).parent / "ray"
    start = [str(ray_cli), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2"]
    head = subprocess.Popen(
        [*start, "--include-dashboard", "false", "--disable-usage-stats"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and head.poll() is None, "ray head did not start"
                time.sleep(0.5)
        out = tmp_path / "joined"
        cmd = [sys.executable, "-m", "toxlens", *base(setup, out, "none,steer"), "--batch-size", "2"]
        cmd += ["--workers", "2", "--ray-address", f"127.0.0.1:{port}"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        config = json.loads((out / "config.json").read_text())
        assert config["workers"] == 2 and config["ray_address"] == f"127.0.0.1:{port}"
        assert len((out / "samples.jsonl").read_text().splitlines()) == 2 * 3 * 2
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local Ray cluster for the module (WorkerPool joins it and leaves it running)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _run(s: dict[str, Path], out: Path, *extra: str) -> None:
    args = [*base(s, out, ALL), "--batch-size", "2", "--sweep-scales", "0,-2", *extra]
    assert main(args) == 0


def test_two_workers_write_what_one_process_writes(
    setup: dict[str, Path],
    cluster: None,
    tmp_path: Path,
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _run(setup, one)
    _run(setup, two, "--workers", "2")
    assert sorted(p.name for p in one.rglob("*")) == sorted(p.name for p in two.rglob("*"))
    for name in ("summary.csv", "sweep.csv"):
        a, b = pd.read_csv(one / name), pd.read_csv(two / name)
        pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING), check_exact=True)
    assert (one / "samples.jsonl").read_text() == (two / "samples.jsonl").read_text()
    c1, c2 = (json.loads((d / "config.json").read_text()) for d in (one, two))
    assert c2.pop("workers") == 2 and c2.pop("retried_tasks") == 0 and c2.pop("ray_address") is None
    for c in (c1, c2):
        c.pop("wall_time_s")
        c.pop("startup_s")
        c["args"].pop("out")
        c["args"].pop("workers")
    assert c1 == c2
    # 3 prompts × 2 samples, batch 2: three generation tasks per condition, so both workers generated
    assert len(pd.read_csv(two / "summary.csv")) == len(ALL.split(","))


def test_a_killed_worker_loses_no_sample(setup: dict[str, Path], cluster: None) -> None:
    from interventions.evaluate_ray import evaluate_on_ray

    prompts = (setup["root"] / "prompts.txt").read_text().splitlines()
    probe = Probe.load(setup["probe"])
    make = functools.partial(build_conditions, names=["none", "rollback"], probe=probe, threshold=0.5)
    kw: dict[str, Any] = {"samples": 3, "max_new_tokens": 5, "seed": 4, "batch_size": 2}
    load = functools.partial(load_model, str(setup["model"]), "cpu")  # importable: Ray sends it by reference
    model = load()
    alone = evaluate(model, prompts, make(model), **kw)
    killed: list[int] = []

    def kill_first(actor: Any, i: int) -> None:
        if i == 2 and not killed:  # a generation task, while others are in flight
            killed.append(i)
            ray.kill(actor)

    spread = evaluate_on_ray(
        load,
        make,
        make_protocol(prompts, **kw),
        workers=2,
        threads=1,
        progress=False,
        on_dispatch=kill_first,
    )
    assert killed == [2]
    assert spread.settings["retried_tasks"] == 1
    assert len(spread.samples) == len(alone.samples) == 2 * 3 * 3
    assert [(s["condition"], s["prompt_index"], s["sample_index"]) for s in spread.samples] == [
        (s["condition"], s["prompt_index"], s["sample_index"]) for s in alone.samples
    ]
    assert spread.samples == alone.samples
    pd.testing.assert_frame_equal(
        spread.summary.drop(columns=TIMING), alone.summary.drop(columns=TIMING), check_exact=True
    )


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--workers", "0"], "--workers must be >= 1"),
        (["--workers", "2", "--worker-threads", "0"], "--worker-threads must be >= 1"),
        (["--workers", "2", "--gpus-per-worker", "nan"], "--gpus-per-worker must be a number >= 0"),
        (["--workers", "2", "--ray-address", "127.0.0.1:1"], "no Ray head reachable at 127.0.0.1:1"),
        (["--workers", "2", "--ray-address", "somewhere"], "expected auto, HOST:PORT"),
    ],
)
def test_bad_worker_flags(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    needle: str,
) -> None:
    out = tmp_path / "ev"
    assert main([*base(setup, out, "none"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not out.exists() and not list(tmp_path.glob(".ev*"))


def test_ray_missing(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    out = tmp_path / "ev"
    assert main([*base(setup, out, "none"), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs Ray, which is not installed" in err and "toxlens[ray]" in err, err
    assert not out.exists()


def _processes_marked(mark: str) -> list[int]:
    """PIDs whose environment holds ``TOXLENS_TEST_MARK=mark``: the interrupted run's driver and every Ray
    process it started (they inherit its environment), and no other run's."""
    needle = f"TOXLENS_TEST_MARK={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads process environments from /proc")
def test_ctrl_c_mid_run_writes_nothing_and_stops_the_workers(setup: dict[str, Path], tmp_path: Path) -> None:
    """SIGINT while the Ray workers generate: exit 130, no output, no staging directory, no actor left."""
    prompts = tmp_path / "many.txt"
    prompts.write_text("you are a\nthe cat is very\nmy dog and\n" * 20)
    out, log = tmp_path / "ev", tmp_path / "stderr.txt"
    args = [*base(setup, out, "none"), "--prompts", str(prompts), "--samples", "60", "--max-new-tokens", "20"]
    cmd = [sys.executable, "-m", "toxlens", *args, "--batch-size", "4", "--workers", "2"]
    mark = f"{os.getpid()}-{time.time_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOXLENS_TEST_MARK": mark}
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 180
            while "samples:" not in log.read_text():  # the workers are generating
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "no progress within 180 s"
                time.sleep(0.5)
            time.sleep(2)
            assert len(_processes_marked(mark)) > 2  # the driver, and Ray's processes with the mark
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert code == 130, text[-2000:]
    assert "interrupted; nothing was written" in text
    assert not out.exists() and not list(tmp_path.glob(".ev*"))
    deadline = time.monotonic() + 30
    while _processes_marked(mark) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _processes_marked(mark)  # no worker, raylet or driver of that run is left
