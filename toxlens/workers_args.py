"""``--workers``, ``--ray-address``, ``--worker-threads`` and ``--gpus-per-worker``: run a subcommand's work on
Ray actors (:class:`lens.ray_pool.WorkerPool`). Shared by ``toxlens locate`` and ``toxlens evaluate``."""

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
        help="Ray worker processes, each loading the model once (default 1: in this process, no Ray, "
        "unless --ray-address is given)",
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
        help="torch threads per worker (default: CPU cores // workers on a local cluster, else torch's)",
    )
    g.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        metavar="G",
        help="GPUs each worker reserves (default when the model runs on CUDA: min(1, GPUs / workers); else 0)",
    )


def use_ray(args: argparse.Namespace) -> bool:
    """Ray runs the work with --workers >= 2, or with a --ray-address (even for one worker)."""
    return bool(args.workers > 1 or args.ray_address is not None)


def check_worker_args(args: argparse.Namespace) -> None:
    """Refuse bad worker flags before any model is loaded or file written: workers < 1, bad thread or GPU
    counts, --device-map with Ray, Ray not installed, an address that is malformed or unreachable."""
    if args.workers < 1:
        raise ToxlensError(f"--workers must be >= 1, got {args.workers}")
    if args.worker_threads is not None and args.worker_threads < 1:
        raise ToxlensError(f"--worker-threads must be >= 1, got {args.worker_threads}")
    if args.gpus_per_worker is not None and not 0 <= args.gpus_per_worker < 1e6:
        raise ToxlensError(f"--gpus-per-worker must be a number >= 0, got {args.gpus_per_worker}")
    if not use_ray(args):
        return
    if getattr(args, "device_map", None) is not None:
        raise ToxlensError(
            "--device-map spreads one model over devices; it cannot be combined with --workers"
        )
    from lens.ray_pool import check_address, require_ray

    require_ray(args.workers)
    if args.ray_address is not None:
        check_address(args.ray_address)


def worker_threads(args: argparse.Namespace) -> int | None:
    """Torch threads per worker: --worker-threads, else on a local cluster ``max(1, cores // workers)``;
    None (torch's default) on a joined cluster, whose nodes' cores are not known here."""
    if args.worker_threads is not None:
        return int(args.worker_threads)
    if args.ray_address is None:
        return max(1, (os.cpu_count() or 1) // args.workers)
    return None


def gpus_per_worker(args: argparse.Namespace, workers: int | None = None) -> float:
    """--gpus-per-worker, else when the model runs on CUDA (``--device cuda…``, or no --device and this
    machine has a GPU) ``min(1, GPUs / workers)`` so the workers share the GPUs evenly; 0 otherwise."""
    if args.gpus_per_worker is not None:
        return float(args.gpus_per_worker)
    device = getattr(args, "device", None)
    import torch

    if (device is None and torch.cuda.is_available()) or str(device or "").startswith("cuda"):
        n = args.workers if workers is None else workers
        return min(1.0, max(1, torch.cuda.device_count()) / n)
    return 0.0


def open_pool(args: argparse.Namespace, setup: Callable[[], Any], workers: int | None = None) -> Any:
    """A :class:`lens.ray_pool.WorkerPool` of ``workers`` (default ``args.workers``) actors running ``setup``."""
    from lens.ray_pool import WorkerPool

    n = args.workers if workers is None else workers
    return WorkerPool(
        n,
        setup,
        address=args.ray_address,
        threads=worker_threads(args),
        gpus_per_worker=gpus_per_worker(args, n),
    )
