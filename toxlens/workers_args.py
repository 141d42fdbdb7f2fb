"""``--workers``, ``--ray-address`` and ``--worker-threads``: the flags of every command that can run on Ray."""

from __future__ import annotations

import argparse
import os

from lens.errors import ToxlensError


def worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Ray workers, each loading the model once (default 1: this process, no Ray, unless "
        "--ray-address is given); needs toxlens[ray]",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="join this Ray cluster (auto, HOST:PORT or ray://HOST:PORT); default: start a local one",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs each Ray worker reserves (default: 1 when the model runs on CUDA, else 0)",
    )
    p.add_argument(
        "--worker-threads",
        type=int,
        default=None,
        help="torch threads per Ray worker (default: CPU cores // workers on a local cluster, else torch's)",
    )


def gpus_per_worker(args: argparse.Namespace) -> float:
    """--gpus-per-worker, else 1 when the model runs on CUDA (``--device cuda…``, or no --device and
    this machine has a GPU), so that each worker gets its own GPU; 0 otherwise."""
    if args.gpus_per_worker is not None:
        return float(args.gpus_per_worker)
    device = getattr(args, "device", None)
    if device is not None:
        return 1.0 if str(device).startswith("cuda") else 0.0
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def check_worker_args(args: argparse.Namespace) -> None:
    """Refuse bad worker flags before any model is loaded or file written: workers < 1, Ray missing with
    workers > 1, a malformed or unreachable --ray-address, --worker-threads < 1."""
    from lens.ray_pool import check_address, require_ray

    if args.workers < 1:
        raise ToxlensError(f"--workers must be >= 1, got {args.workers}")
    if args.gpus_per_worker is not None and not 0 <= args.gpus_per_worker < 1e6:
        raise ToxlensError(f"--gpus-per-worker must be a number >= 0, got {args.gpus_per_worker}")
    if args.worker_threads is not None and args.worker_threads < 1:
        raise ToxlensError(f"--worker-threads must be >= 1, got {args.worker_threads}")
    if not use_ray(args):
        return
    require_ray(args.workers)
    if args.ray_address is not None:
        check_address(args.ray_address)


def use_ray(args: argparse.Namespace) -> bool:
    """Ray runs the work with --workers >= 2, or with a --ray-address (even for one worker)."""
    return bool(args.workers > 1 or args.ray_address is not None)


def threads_per_worker(args: argparse.Namespace) -> int | None:
    """--worker-threads, or on a local cluster the cores shared evenly (None: torch's default)."""
    if args.worker_threads is not None:
        return int(args.worker_threads)
    if args.ray_address is None:
        return max(1, (os.cpu_count() or 1) // args.workers)
    return None
