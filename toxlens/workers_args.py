"""``--workers``, ``--ray-address`` and ``--worker-threads``: run a subcommand's work on Ray actors
(:class:`lens.ray_pool.WorkerPool`). Shared by ``toxlens locate`` and ``toxlens evaluate``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from lens.errors import ToxlensError


def worker_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distributed run (Ray; pip install 'toxlens[ray]')")
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Ray worker processes, each loading the model once (default 1: in this process, no Ray)",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join this Ray cluster (auto, HOST:PORT or ray://HOST:PORT) instead of starting a local one",
    )
    g.add_argument(
        "--worker-threads",
        type=int,
        default=None,
        metavar="T",
        help="torch threads per worker (default: max(1, CPU cores // workers))",
    )


def check_worker_args(args: argparse.Namespace) -> None:
    """Refuse bad --workers / --ray-address / --worker-threads before any model is loaded or file written:
    workers < 1, Ray not installed when workers > 1, an address that is malformed or unreachable."""
    workers = args.workers
    if workers < 1:
        raise ToxlensError(f"--workers must be >= 1, got {workers}")
    if args.worker_threads is not None and args.worker_threads < 1:
        raise ToxlensError(f"--worker-threads must be >= 1, got {args.worker_threads}")
    if workers == 1:
        if args.ray_address is not None:
            raise ToxlensError("--ray-address needs --workers N with N > 1 (one worker runs in this process)")
        return
    if getattr(args, "device_map", None) is not None:
        raise ToxlensError(
            "--device-map spreads one model over devices; it cannot be combined with --workers"
        )
    from lens.ray_pool import check_address, require_ray

    require_ray(workers)
    if args.ray_address is not None:
        check_address(args.ray_address)


def worker_threads(args: argparse.Namespace) -> int:
    """Torch threads per worker: --worker-threads, else ``max(1, cpu_count // workers)``."""
    if args.worker_threads is not None:
        return int(args.worker_threads)
    return max(1, (os.cpu_count() or 1) // args.workers)


def open_pool(args: argparse.Namespace, setup: Callable[[], Any], workers: int | None = None) -> Any:
    """A :class:`lens.ray_pool.WorkerPool` of ``workers`` (default ``args.workers``) actors running
    ``setup``; with a CUDA device the workers share the local GPUs."""
    from lens.ray_pool import WorkerPool

    n = args.workers if workers is None else workers
    gpus = 0.0
    if str(args.device or "").startswith("cuda") or (args.device is None and _cuda_available()):
        import torch

        gpus = min(1.0, max(1, torch.cuda.device_count()) / n)
    return WorkerPool(n, setup, address=args.ray_address, threads=worker_threads(args), gpus_per_worker=gpus)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
