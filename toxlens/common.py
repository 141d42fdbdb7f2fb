"""Helpers shared by every ``toxlens`` subcommand module (imported by them, importing none of them)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="gpt2",
        help="HF/TransformerLens name, local HF directory, .gguf file, or smollm2-135m (default: gpt2)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])


def token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--toxic-words",
        default=None,
        help="word list, one per line (default: derived from "
        "alt-profanity-check's shipped model; see `toxlens tokens`)",
    )
    p.add_argument(
        "--multi-token",
        default="skip",
        choices=["skip", "first"],
        help="words that are no single token: skip them (default) or use their first token",
    )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def select_rows(labels: list[int], limit: int | None, balance: bool, seed: int) -> list[int]:
    """Row indices (in file order) to use: with ``balance`` every row of the minority class and a seeded
    random subset of the majority class of the same size; then, with ``limit``, a seeded random subset of
    at most ``limit`` rows (half of each class when balanced)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    pos = [i for i, v in enumerate(labels) if v == 1]
    neg = [i for i, v in enumerate(labels) if v == 0]

    def pick(rows: list[int], k: int) -> list[int]:
        return [rows[j] for j in torch.randperm(len(rows), generator=gen)[:k].tolist()]

    if balance:
        n = min(len(pos), len(neg))
        if limit is not None:
            n = min(n, limit // 2)
        return sorted(pick(pos, n) + pick(neg, n))
    rows = list(range(len(labels)))
    return sorted(pick(rows, limit)) if limit is not None and limit < len(rows) else rows
