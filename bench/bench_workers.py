"""Benchmark: ``toxlens evaluate`` in one process vs on N Ray workers, same work, same threads in total.

    .venv/bin/python bench/bench_workers.py [--model smollm2-135m] [--prompts runs/eval-data/prompts.jsonl]
        [--n-prompts 24] [--samples 4] [--max-new-tokens 20] [--batch-size 16] [--workers 2]
        [--threads 2] [--conditions none] [--out runs/bench-workers.json]

Runs, one after the other, the same ``toxlens evaluate`` command (same prompts, samples, seeds,
sampling — temperature 1, top-p 0.9 — and scorer) as a whole process:

  (a) ``--workers 1`` with ``--threads`` torch threads (``OMP_NUM_THREADS`` and torch's own count);
  (b) ``--workers N`` on a fresh local Ray cluster with ``--worker-threads threads // N``.

Reports each run's wall time and its start-up (model load; Ray: cluster start and every worker's load) (the whole process: import, model load — Ray workers load in parallel —,
generation, perplexity, writing), the generation seconds summed over tasks, kept tokens, tokens per
second of wall time, the speed-up (a)/(b), and whether samples.jsonl and summary.csv (without the
timing columns) are identical. Also the per-token cost on this machine — wall seconds per kept token
per core — that docs/scaling.md projects from. The prompts file is made by
``scripts/make_eval_data.py`` (needs the Davidson data); any .txt/.jsonl prompt file works.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

TIMING = ["tokens_per_second", "generation_s"]


def run_eval(args: argparse.Namespace, out: Path, workers: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "toxlens", "evaluate", "--model", args.model, "--prompts", args.prompts]
    cmd += ["--limit-prompts", str(args.n_prompts), "--samples", str(args.samples)]
    cmd += ["--max-new-tokens", str(args.max_new_tokens), "--seed", "0", "--top-p", "0.9"]
    cmd += ["--conditions", args.conditions, "--batch-size", str(args.batch_size), "--out", str(out)]
    env = dict(os.environ)
    if workers > 1:
        cmd += ["--workers", str(workers), "--worker-threads", str(max(1, args.threads // workers))]
        env["OMP_NUM_THREADS"] = str(max(1, args.threads // workers))
    else:
        env["OMP_NUM_THREADS"] = str(args.threads)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"evaluate --workers {workers} failed:\n{proc.stderr[-3000:]}")
    summary = pd.read_csv(out / "summary.csv")
    tokens = sum(json.loads(x)["n_tokens"] for x in (out / "samples.jsonl").read_text().splitlines())
    startup = json.loads((out / "config.json").read_text())["startup_s"]
    return {
        "wall_s": wall,
        "startup_s": startup,
        "wall_after_startup_s": wall - startup,
        "generation_s_summed": float(summary["generation_s"].sum()),
        "kept_tokens": tokens,
        "tokens_per_wall_second": tokens / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", default="runs/eval-data/prompts.jsonl")
    ap.add_argument("--n-prompts", type=int, default=24)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in total, in both runs")
    ap.add_argument("--conditions", default="none")
    ap.add_argument("--out", default="runs/bench-workers.json")
    args = ap.parse_args()
    if not Path(args.prompts).is_file():
        sys.exit(f"no prompts file {args.prompts}: make one with scripts/make_eval_data.py or pass --prompts")
    with tempfile.TemporaryDirectory() as tmp:
        one = run_eval(args, Path(tmp) / "one", 1)
        print(f"1 process, {args.threads} threads: {one}", flush=True)
        many = run_eval(args, Path(tmp) / "many", args.workers)
        print(
            f"{args.workers} Ray workers, {args.threads // args.workers} thread(s) each: {many}", flush=True
        )
        a, b = (pd.read_csv(Path(tmp) / d / "summary.csv").drop(columns=TIMING) for d in ("one", "many"))
        same_summary = a.equals(b)
        differ = {}
        for col in a.columns:
            if not a[col].equals(b[col]):
                x, y = a[col], b[col]
                numeric = pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y)
                differ[col] = float((x - y).abs().max()) if numeric else "differs"
        same_samples = (Path(tmp) / "one" / "samples.jsonl").read_text() == (
            Path(tmp) / "many" / "samples.jsonl"
        ).read_text()
    report = {
        "model": args.model,
        "prompts": args.prompts,
        "n_prompts": args.n_prompts,
        "samples": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "sampling": "temperature 1, top-p 0.9, seed 0",
        "conditions": args.conditions,
        "threads_total": args.threads,
        "cpu_count": os.cpu_count(),
        "one_process": one,
        "workers": args.workers,
        "ray": many,
        "speedup_wall": one["wall_s"] / many["wall_s"],
        "speedup_after_startup": one["wall_after_startup_s"] / many["wall_after_startup_s"],
        "identical_samples": same_samples,
        "identical_summary_without_timing": same_summary,
        "summary_columns_that_differ_max_abs": differ,
        "wall_s_per_kept_token_per_core": {
            "one_process": one["wall_s"] * args.threads / one["kept_tokens"],
            "ray": many["wall_s"] * args.threads / many["kept_tokens"],
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("speedup_wall", "speedup_after_startup", "identical_samples")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
