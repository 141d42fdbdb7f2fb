"""``toxlens locate --texts --workers N``: the pooling pass over the texts sharded over Ray workers.

:func:`patching.text_stats.collect_pooled` cuts the texts into batches (by token length, ``batch_size``
at a time). :class:`RayPooler` hands contiguous runs of those batches to the workers (each loaded the
model once, :func:`setup_model`); a worker returns each batch's per-text pooled values and its float64
baseline sums (:func:`pool_shard`). ``collect_pooled`` gathers them in text order and adds the sums in
batch order, as the single process does, so the statistics every AUROC, the probe and the value-vector
statistics are computed from are bit-identical to ``--workers 1``. The rest (AUROC, probe fit, the
attribution over toxic texts) runs in the driver, unchanged.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from torch import Tensor

from lens.model import LensModel
from patching.text_stats import PooledBatch, pool_batch


def setup_model(args: argparse.Namespace) -> LensModel:
    """A worker's state: the model, loaded as the single process loads it."""
    from toxlens.common import load_from_args

    model: LensModel = load_from_args(args)
    return model


def pool_shard(model: LensModel, payload: dict[str, Any]) -> dict[str, Any]:
    """Pool every batch of ``payload`` (token rows, baseline flags) → one PooledBatch per batch."""
    t0 = time.perf_counter()
    parts = [
        pool_batch(model, rows, payload["pooling"], base)
        for rows, base in zip(payload["rows"], payload["in_base"], strict=True)
    ]
    seconds = time.perf_counter() - t0
    return {"parts": parts, "seconds": seconds, "pid": os.getpid(), "host": socket.gethostname()}


def shard_batches(batches: list[list[int]], ids: list[list[int]], n_shards: int) -> list[list[int]]:
    """Contiguous runs of batch numbers, at most ``n_shards``, of about equal tokens."""
    cost = [sum(len(ids[i]) for i in rows) for rows in batches]
    target = sum(cost) / max(1, min(n_shards, len(batches)))
    shards: list[list[int]] = [[]]
    load = 0.0
    for b, c in enumerate(cost):
        if shards[-1] and load + c / 2 > target and len(shards) < n_shards:
            shards.append([])
            load = 0.0
        shards[-1].append(b)
        load += c
    return shards


def shard_payloads(
    batches: list[list[int]], ids: list[list[int]], in_base: Tensor, shards: list[list[int]], pooling: str
) -> list[dict[str, Any]]:
    """One :func:`pool_shard` payload per shard: its batches' token rows and baseline flags."""
    return [
        {
            "pooling": pooling,
            "rows": [[ids[i] for i in batches[b]] for b in shard],
            "in_base": [in_base[batches[b]] for b in shard],
        }
        for shard in shards
    ]


class RayPooler:
    """A :data:`patching.text_stats.Pooler` that runs the batches on ``args.workers`` Ray workers and
    keeps what to record about them in :attr:`info`."""

    def __init__(
        self, args: argparse.Namespace, pooling: str, on_dispatch: Callable[..., None] | None = None
    ) -> None:
        self.args, self.pooling, self.on_dispatch = args, pooling, on_dispatch
        self.info: dict[str, Any] = {}

    def __call__(self, batches: list[list[int]], ids: list[list[int]], in_base: Tensor) -> list[PooledBatch]:
        from toxlens.workers_args import open_pool, worker_threads

        args = self.args
        shards = shard_batches(batches, ids, 2 * args.workers)
        payloads = shard_payloads(batches, ids, in_base, shards, self.pooling)
        n_workers = min(args.workers, len(shards))
        t0 = time.perf_counter()
        pool = open_pool(args, functools.partial(setup_model, args), n_workers)
        try:
            t_start = time.perf_counter() - t0
            say = None if args.no_progress else _say(len(shards))
            outs = pool.map(pool_shard, payloads, on_result=say, on_dispatch=self.on_dispatch)
            retried = list(pool.retried)
        finally:
            pool.close()
        self.info = {
            "workers": args.workers,
            "workers_started": n_workers,
            "ray_address": args.ray_address,
            "threads_per_worker": worker_threads(args),
            "shards": len(shards),
            "shard_unit": "contiguous runs of the pooling pass's batches (texts of one length)",
            "start_s": t_start,
            "map_s": time.perf_counter() - t0 - t_start,
            "per_shard": [
                {
                    "texts": sum(len(batches[b]) for b in shard),
                    "pid": o["pid"],
                    "host": o["host"],
                    "seconds": o["seconds"],
                }
                for shard, o in zip(shards, outs)
            ],
            "retried_shards": retried,
        }
        return [part for o in outs for part in o["parts"]]


def _say(n: int) -> Callable[[int, Any], None]:
    done: list[int] = []

    def say(i: int, _out: Any) -> None:
        done.append(i)
        print(f"[locate] shard {i + 1} pooled ({len(done)}/{n})", file=sys.stderr)

    return say
