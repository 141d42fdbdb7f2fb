"""``toxlens locate --pairs --workers N``: the patching sweeps sharded over Ray workers, merged exactly.

* **Shards.** The pairs are cut along their length groups (every method batches a whole length group,
  and activation patching its first-difference subgroups within it), packed into at most
  ``2 × workers`` shards of about equal tokens. A worker therefore runs exactly the batches the single
  process runs, so every per-pair value is bit-identical to ``--workers 1``.
* **Workers.** Each loads the model, the whole pair file and builds the metric exactly as the single
  process does (:func:`setup_pairs`), then runs the methods on a shard (:func:`run_shard`) and returns
  the shard's rows of each :class:`~patching.result.PatchResult` (per-pair values only).
* **Driver.** :func:`sharded_locate` checks the separation and times one forward (as :func:`locate`
  does), merges the shards with :meth:`PatchResult.concat` in pair order and derives means, CIs, ranks
  and agreement with the unchanged single-process code. A worker that dies has its shard re-run on a
  fresh worker (:class:`lens.ray_pool.WorkerPool`); nothing is lost or counted twice.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import sys
import time
from typing import Any

from lens.metrics import Metric
from lens.model import LensModel
from lens.prompts import ContrastPairs
from patching.activation import pairs_metadata
from patching.locate import LocateResult, check_separation, time_one_forward
from patching.methods import METHODS, run_method
from patching.result import PatchResult

POSITIONS_LABEL = "positions"  # the components_by_class activation sweep of --positions


def shard_pairs(pairs: ContrastPairs, n_shards: int) -> list[list[int]]:
    """Whole length groups packed into at most ``n_shards`` shards of about equal tokens (largest group
    first into the lightest shard); each shard's indices ascending. Empty shards are dropped."""
    groups = sorted(pairs.length_groups().items(), key=lambda g: (-g[0] * len(g[1]), g[0]))
    shards: list[list[int]] = [[] for _ in range(max(1, min(n_shards, len(groups))))]
    load = [0] * len(shards)
    for length, idx in groups:
        k = load.index(min(load))
        shards[k].extend(idx)
        load[k] += length * len(idx)
    return [sorted(s) for s in shards if s]


def setup_pairs(args: argparse.Namespace) -> tuple[LensModel, ContrastPairs, Metric]:
    """A worker's state: the model, the whole pair set and the metric, built as the single process does."""
    from lens.prompts import load_pairs
    from toxlens.common import load_from_args, pair_metric

    model = load_from_args(args)
    pairs = load_pairs(args.pairs, model, prepend_bos=args.prepend_bos)
    return model, pairs, pair_metric(args, model, pairs)


def run_shard(state: tuple[LensModel, ContrastPairs, Metric], payload: dict[str, Any]) -> dict[str, Any]:
    """Run every ``(label, method, target)`` job of ``payload`` on its pairs; return their rows."""
    model, pairs, metric = state
    indices: list[int] = payload["indices"]
    view = pairs.restricted(indices)
    results: dict[str, PatchResult] = {}
    seconds: dict[str, float] = {}
    for label, method, target in payload["jobs"]:
        t0 = time.perf_counter()
        full = run_method(method, model, view, metric, target, payload["opts"])
        seconds[label] = time.perf_counter() - t0
        results[label] = full.select(indices)
    return {"results": results, "seconds": seconds, "pid": os.getpid(), "host": socket.gethostname()}


def sharded_locate(
    args: argparse.Namespace,
    model: LensModel,
    pairs: ContrastPairs,
    metric: Metric,
    methods: list[str],
    settings: dict[str, Any],
    positions: bool = False,
    on_dispatch: Any = None,
) -> tuple[LocateResult, PatchResult | None, dict[str, Any]]:
    """:func:`patching.locate.locate` (and the ``--positions`` sweep) over ``args.workers`` Ray workers.

    Returns the merged result, the merged position-class result (or None) and what to record about the
    workers (count, threads, shards, per-shard seconds, retried shards)."""
    from toxlens.workers_args import open_pool, worker_threads

    check_separation(model, pairs, metric)
    timings: dict[str, float] = {}
    if "activation" in methods and any(METHODS[m].gradient for m in methods):
        timings["forward_s"] = time_one_forward(model, pairs)
    jobs = [(m, m, "components") for m in methods]
    if positions:
        jobs.append((POSITIONS_LABEL, "activation", "components_by_class"))
    opts = {"batch_size": args.batch_size, "progress": False, **settings}
    shards = shard_pairs(pairs, 2 * args.workers)
    payloads = [{"indices": idx, "jobs": jobs, "opts": opts} for idx in shards]
    say = _progress(args, len(shards))
    n_workers = min(args.workers, len(shards))
    if n_workers < args.workers and not args.no_progress:
        print(
            f"[locate] the pairs have {len(shards)} token length(s), the unit of a shard: "
            f"starting {n_workers} of {args.workers} workers",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    pool = open_pool(args, functools.partial(setup_pairs, args), n_workers)
    try:
        t_start = time.perf_counter() - t0
        outs = pool.map(run_shard, payloads, on_result=say, on_dispatch=on_dispatch)
        retried = list(pool.retried)
    finally:
        pool.close()
    merged: dict[str, PatchResult] = {}
    for label, _method, _target in jobs:
        parts = [o["results"][label] for o in outs]
        merged[label] = PatchResult.concat(parts, shards, _metadata(parts, pairs))
        timings[f"{label}_s"] = sum(o["seconds"][label] for o in outs)
    by_class = merged.pop(POSITIONS_LABEL, None)
    positions_s = timings.pop(f"{POSITIONS_LABEL}_s", None)
    info = {
        "workers": args.workers,
        "workers_started": n_workers,
        "ray_address": args.ray_address,
        "threads_per_worker": worker_threads(args),
        "shards": len(shards),
        "shard_unit": "whole length groups (the batches of the single-process run)",
        "start_s": t_start,
        "map_s": time.perf_counter() - t0 - t_start,
        "per_shard": [
            {"pairs": len(idx), "pid": o["pid"], "host": o["host"], "seconds": o["seconds"]}
            for idx, o in zip(shards, outs)
        ],
        "retried_shards": retried,
        "method_seconds": "summed over shards (worker compute time)",
    }
    if positions_s is not None:
        info["positions_s"] = positions_s
    return LocateResult(merged, timings), by_class, info


def _metadata(parts: list[PatchResult], pairs: ContrastPairs) -> dict[str, Any]:
    """The shards' metadata with the whole pair set's description and the timings summed over shards."""
    meta = dict(parts[0].metadata)
    meta["pairs"] = pairs_metadata(pairs)
    keys = dict.fromkeys(k for p in parts for k in p.metadata.get("timings", {}))
    meta["timings"] = {k: sum(p.metadata.get("timings", {}).get(k, 0.0) for p in parts) for k in keys}
    return meta


def _progress(args: argparse.Namespace, n: int) -> Any:
    if args.no_progress:
        return None
    done: list[int] = []

    def say(i: int, _out: Any) -> None:
        done.append(i)
        print(f"[locate] shard {i + 1} done ({len(done)}/{n})", file=sys.stderr)

    return say
