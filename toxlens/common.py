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
